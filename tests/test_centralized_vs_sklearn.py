"""Centralized L-BFGS reaches scikit-learn's optimum (1e-6 relative objective)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.svm import LinearSVC

from geodml.centralized import train_centralized
from geodml.data import Dataset, FeatureSpace
from geodml.errors import DataError
from geodml.models import RegularizedObjective, SiteSums, get_loss

from .datasets import load_shared_libsvm


def objective_value(data: Dataset, loss: str, lam: float, w: np.ndarray) -> float:
    obj = RegularizedObjective([SiteSums(data.X, data.y, get_loss(loss))], lam, data.n_features)
    return obj.value(w)


def sklearn_logistic(data: Dataset, lam: float) -> np.ndarray:
    """sklearn minimizes sum_i l_i + ||w||^2 / (2C): C = 1/(N lam) gives our F times N C."""
    C = 1.0 / (data.n_rows * lam)
    clf = LogisticRegression(C=C, fit_intercept=False, tol=1e-10, max_iter=10000)
    return clf.fit(data.X, data.y).coef_.ravel()


def assert_matches_sklearn(data: Dataset, lam: float, solver: str = "lbfgs") -> None:
    model, result = train_centralized(data, "logistic", lam, solver=solver)
    assert result.converged, result.reason
    f_ours = objective_value(data, "logistic", lam, model.w)
    f_sk = objective_value(data, "logistic", lam, sklearn_logistic(data, lam))
    assert (f_ours - f_sk) / abs(f_sk) <= 1e-6, (f_ours, f_sk)


def _synthetic(n=3000, d=200, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.05, format="csr", random_state=seed)
    w = rng.standard_normal(d) * 2
    y = (X @ w + 0.5 * rng.standard_normal(n) > 0).astype(float)
    return Dataset(X, y, FeatureSpace(d))


@pytest.mark.parametrize("lam_scale", [0.1, 1.0, 10.0])
def test_logistic_matches_sklearn_on_synthetic_data(lam_scale):
    data = _synthetic()
    assert_matches_sklearn(data, lam_scale / data.n_rows)


def test_squared_loss_matches_ridge():
    data = _synthetic()
    rng = np.random.default_rng(1)
    data.y = data.X @ rng.standard_normal(data.n_features) + rng.standard_normal(data.n_rows)
    lam = 1e-3
    model, _ = train_centralized(data, "squared", lam)
    # ridge: ||y - Xw||^2 + alpha ||w||^2 is 2N times our F when alpha = N lam
    ridge = Ridge(alpha=data.n_rows * lam, fit_intercept=False, tol=1e-12, solver="cholesky")
    w_ref = ridge.fit(data.X, data.y).coef_
    f_ref = objective_value(data, "squared", lam, w_ref)
    assert (objective_value(data, "squared", lam, model.w) - f_ref) / f_ref <= 1e-6


def test_squared_hinge_matches_linear_svc():
    data = _synthetic()
    lam = 1.0 / data.n_rows
    model, _ = train_centralized(data, "squared_hinge", lam)
    # LinearSVC: ||w||^2/2 + C sum max(0, 1 - s z)^2 is N C times our F when C = 1/(N lam)
    svc = LinearSVC(C=1.0 / (data.n_rows * lam), loss="squared_hinge", fit_intercept=False,
                    tol=1e-12, max_iter=100000, dual=False)
    f_ref = objective_value(data, "squared_hinge", lam, svc.fit(data.X, data.y).coef_.ravel())
    assert (objective_value(data, "squared_hinge", lam, model.w) - f_ref) / f_ref <= 1e-6


@pytest.mark.parametrize("name", ["a9a", "w8a", "ipinyou"])
def test_matches_sklearn_on_shared_datasets_with_lambda_one_over_n(name):
    data = load_shared_libsvm(name)
    assert_matches_sklearn(data, 1.0 / data.n_rows)


@pytest.mark.parametrize("name", ["a9a", "ipinyou"])
def test_tron_matches_sklearn_on_shared_datasets(name):
    data = load_shared_libsvm(name)
    assert_matches_sklearn(data, 1.0 / data.n_rows, solver="tron")


@pytest.mark.parametrize(("name", "lam_scale", "seed"), [("a9a", 0.2, 1), ("w8a", 5.0, 2)])
def test_matches_sklearn_on_shuffled_subsets_and_other_lambdas(name, lam_scale, seed):
    data = load_shared_libsvm(name)
    rng = np.random.default_rng(seed)
    rows = rng.permutation(data.n_rows)[: int(0.6 * data.n_rows)]
    subset = data.take(rows)
    assert_matches_sklearn(subset, lam_scale / subset.n_rows)


def test_bad_labels_and_nan_values_are_refused_with_the_reason():
    data = _synthetic(n=50, d=5)
    data.y[3] = 2.0
    with pytest.raises(DataError, match=r"needs labels 0/1, found \[2.0\]"):
        train_centralized(data)
    data = _synthetic(n=50, d=5)
    data.X.data[0] = np.nan
    with pytest.raises(DataError, match="1 feature values are NaN"):
        train_centralized(data)
