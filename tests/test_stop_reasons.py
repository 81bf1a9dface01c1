"""Stop reasons say what happened: TRON's trust-region collapse at the noise level of F
(converged) or away from it (not), and the rounds limit named with its value."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

from geodml.algorithms.registry import TrainSpec, train
from geodml.centralized import train_centralized
from geodml.data import Dataset, FeatureSpace
from geodml.data.readers import read_dataset
from geodml.federation import Federation
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions, lbfgs, tron
from geodml.optim.tron import noise_of
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

from .conftest import shared_path


def _data(n: int = 2000, d: int = 30, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.3, format="csr", random_state=seed)
    y = (X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(n) > 0).astype(float)
    return Dataset(X, y, FeatureSpace(d))


def _objective(data: Dataset, lam: float) -> RegularizedObjective:
    return RegularizedObjective([SiteSums(data.X, data.y, get_loss("logistic"))], lam,
                                data.n_features)


class OffsetTrials:
    """The objective, but every trial value ``F(w + a p)`` reads ``offset`` too high:
    a wrong oracle whose ratio test fails while real decrease is still available."""

    def __init__(self, inner: RegularizedObjective, offset: float):
        self.inner, self.offset, self.n_features = inner, offset, inner.n_features

    def value_grad(self, w):
        return self.inner.value_grad(w)

    def set_direction(self, p):
        return self.inner.set_direction(p)

    def line_values(self, alphas):
        f, df = self.inner.line_values(alphas)
        return f + self.offset, df

    def step(self, alpha):
        return self.inner.step(alpha)

    def hess_vec(self, v):
        return self.inner.hess_vec(v)


def test_tron_collapse_at_the_noise_level_counts_as_converged():
    data = _data()
    lam = 1.0 / data.n_rows
    result = tron(_objective(data, lam), gtol=0.0, max_iter=200)
    assert result.converged, result.reason
    assert result.reason == "trust region collapsed at the noise level of F"
    # the gradient is at the noise floor: a Newton step could gain at most ~||g||^2/lam
    assert result.grad_norm**2 / (2 * lam) <= noise_of(result.f)


def test_tron_collapse_away_from_the_optimum_is_a_failure():
    data = _data()
    result = tron(OffsetTrials(_objective(data, 1.0 / data.n_rows), 1e-4), gtol=0.0,
                  max_iter=500)
    assert not result.converged and result.reason == "trust region collapsed"
    assert result.grad_norm > 1e-4 * result.history[0].grad_norm


def test_tron_and_lbfgs_name_their_iteration_limit():
    data = _data()
    lam = 1.0 / data.n_rows
    assert tron(_objective(data, lam), gtol=0.0, max_iter=2).reason == "max_iter (2) reached"
    result = lbfgs(_objective(data, lam), options=LbfgsOptions(gtol=0.0, max_iter=3))
    assert not result.converged and result.reason == "max_iter (3) reached"


@pytest.mark.parametrize("method", ["sqm-lbfgs", "sqm-tron", "fadl", "fadl-subspace"])
def test_exact_methods_name_their_rounds_limit(method):
    data = _data()
    halves = np.array_split(np.arange(data.n_rows), 2)
    services = [SiteService(f"dc{i}", f"r{i}", data.take(rows))
                for i, rows in enumerate(halves)]
    fed = Federation([InProcessTransport(s) for s in services], home="dc0")
    try:
        result = train(fed, method, TrainSpec(gtol=1e-14, max_rounds=2))
    finally:
        fed.close()
    assert not result.converged and result.reason == "max_rounds (2) reached"


def test_tron_on_covtype_at_ten_over_n_converges_at_the_noise_level():
    """The issue's case: TRON at lambda = 10/N ran into a collapsed trust region with its
    objective at scikit-learn's to 1e-11, and said it had not converged."""
    data = read_dataset(shared_path("covtype_20k/covtype.20k.data"), "csv", preset="covtype",
                        dtype=np.float64)
    lam = 10.0 / data.n_rows
    _, result = train_centralized(data, "logistic", lam, LbfgsOptions(gtol=1e-12),
                                  solver="tron")
    assert result.converged, result.reason
    w_sk = LogisticRegression(C=1.0 / (data.n_rows * lam), fit_intercept=False,
                              solver="newton-cg", tol=1e-12, max_iter=10_000
                              ).fit(data.X, data.y).coef_.ravel()
    f_sk = _objective(data, lam).value(w_sk)
    assert abs(result.f - f_sk) / f_sk <= 1e-11
