"""The centralized baseline solves in the metric the sites build: each DC's rows at the
curvature of that DC's own base rate."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.algorithms.metric import global_metric
from geodml.centralized import train_centralized
from geodml.data.dataset import Dataset, FeatureSpace
from geodml.federation import Federation
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions
from geodml.optim.preconditioner import DIAG, solve
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

SOURCES = (150, 90, 60)


def _parts():
    """Three DCs whose base rates differ (about 5%, 30% and 60% positives)."""
    rng = np.random.default_rng(11)
    space = FeatureSpace(40)
    parts = []
    for n, rate in zip(SOURCES, (0.05, 0.3, 0.6), strict=True):
        X = sp.random(n, space.n_features, density=0.2, format="csr", random_state=rng,
                      dtype=np.float32)
        parts.append(Dataset(X, (rng.random(n) < rate).astype(float), space))
    return parts


def _expected_metric(parts, lam: float) -> np.ndarray:
    logistic = get_loss("logistic")
    total = sum(logistic.constant_curvature(float(p.y.mean()))
                * np.asarray(p.X.power(2).sum(axis=0), dtype=np.float64).ravel()
                for p in parts)
    return DIAG.metric(total, sum(p.n_rows for p in parts), lam)


def test_per_row_curvature_weights_each_row():
    parts = _parts()
    X = sp.vstack([p.X for p in parts]).tocsr()
    c = np.random.default_rng(2).random(X.shape[0])
    sums = SiteSums(X, np.concatenate([p.y for p in parts]), get_loss("logistic"))
    try:
        expected = np.asarray(X.power(2).T @ c).ravel()
        np.testing.assert_allclose(sums.hess_diag(c), expected, rtol=1e-5)
        with pytest.raises(ValueError, match="3 row curvatures for 300 rows"):
            sums.hess_diag(c[:3])
    finally:
        sums.close()


def test_the_baseline_metric_is_the_sites_metric():
    parts = _parts()
    lam = 1.0 / sum(SOURCES)
    expected = _expected_metric(parts, lam)
    services = [SiteService(f"dc{i}", "r", p) for i, p in enumerate(parts)]
    with Federation([InProcessTransport(s) for s in services], home="dc0") as fed:
        fed.prepare("logistic", lam, restrict_to_support=False)
        np.testing.assert_allclose(global_metric(fed, DIAG, lam), expected, rtol=1e-5)

    data = Dataset.concat(parts)
    options = LbfgsOptions(gtol=0.0, max_iter=5)  # the same 5 iterations each

    def path(**kwargs) -> list[float]:
        seen: list[float] = []
        train_centralized(data, lam=lam, options=options,
                          callback=lambda rec, _w: seen.append(rec.f), **kwargs)
        return seen

    by_source = path(sources=list(SOURCES))
    sums = SiteSums(data.X, data.y, get_loss("logistic"))
    try:
        reference: list[float] = []
        solve(RegularizedObjective([sums], lam, data.n_features), "lbfgs", expected, None,
              options, lambda rec, _w: reference.append(rec.f), DIAG.stop)
    finally:
        sums.close()
    np.testing.assert_allclose(by_source, reference, rtol=1e-7)  # D summed in float32
    pooled = path()  # one base rate for all rows: another metric, another path
    assert not np.allclose(pooled, by_source, rtol=1e-5)


def test_sources_must_add_up_to_the_rows():
    data = Dataset.concat(_parts())
    with pytest.raises(ValueError, match="do not add up to the 300 rows"):
        train_centralized(data, sources=[100, 100])
