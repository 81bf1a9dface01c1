"""The curvature-weighted warm start: one round, a good start, the same optimum."""

from __future__ import annotations

import numpy as np
import pytest

from geodml.algorithms.metric import global_metric
from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.algorithms.warm_start import warm_start
from geodml.centralized import train_centralized
from geodml.federation import SecureAggregation
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions
from geodml.optim.preconditioner import DIAG, NONE

from .test_preconditioner import federation, rare_features, split


@pytest.fixture(scope="module")
def data():
    return rare_features(6000, 1 << 13, seed=2, zipf=1.2)


@pytest.fixture(scope="module")
def optimum(data) -> float:
    return train_centralized(data, options=LbfgsOptions(gtol=1e-10, max_iter=5000))[1].f


def test_one_round_gives_a_good_start_the_metric_and_the_reference(data, optimum):
    lam = 1.0 / data.n_rows
    with federation(split(data, 3)) as fed:
        fed.prepare("logistic", lam)
        start = warm_start(fed, DIAG, lam)
        assert fed.rounds == 1 and fed.vector_rounds == pytest.approx(2.0)  # 4 vectors up
        assert warm_start(fed, NONE, lam).metric is None
        cold_metric = global_metric(fed, DIAG, lam)  # the metric's own round: the same D
    objective = RegularizedObjective([SiteSums(data.X, data.y, get_loss("logistic"))], lam,
                                     data.n_features)
    f0, g0 = objective.value_grad(np.zeros(data.n_features))
    np.testing.assert_allclose(start.grad_at_zero, g0, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(start.metric, cold_metric, rtol=1e-10)
    # the start closes most of the gap to the optimum
    assert objective.value(start.w) - optimum < 0.2 * (f0 - optimum)


# under secure aggregation the sums are fixed point: gtol 1e-8 lies below their noise
@pytest.mark.parametrize(("method", "secure"), [
    ("sqm-lbfgs", False), ("sqm-tron", False), ("fadl-subspace", False),
    ("sqm-lbfgs", True), ("fadl-subspace", True)])
def test_warm_started_methods_reach_the_exact_optimum(data, optimum, method, secure):
    kw = {"secure": SecureAggregation()} if secure else {}
    with federation(split(data, 3), **kw) as fed:
        spec = TrainSpec(gtol=1e-5 if secure else 1e-8, max_rounds=2000, warm_start=True)
        result = train(fed, method, spec, RunRecorder(fed, f_star=optimum))
    assert result.converged, result.reason
    assert result.info["warm_start"] is True
    assert result.objective == pytest.approx(optimum, rel=1e-7)


def test_gtol_stays_relative_to_the_gradient_at_zero(data):
    with federation(split(data, 2)) as fed:
        cold = train(fed, "sqm-lbfgs", TrainSpec(gtol=1e-3), RunRecorder(fed))
    with federation(split(data, 2)) as fed:
        warm = train(fed, "sqm-lbfgs", TrainSpec(gtol=1e-3, warm_start=True), RunRecorder(fed))
    assert warm.info["reference_grad_norm"] == pytest.approx(cold.info["reference_grad_norm"],
                                                             rel=1e-9)
    assert len(warm.rows) < len(cold.rows)
