"""int8 down compression and support restriction: the sites must hold the point the
coordinator holds. QINT8's scale is per chunk, so a support subset re-encoded gets its
own scale; the federation therefore sends int8 vectors dense (a bug found by the float8
work: the reported objective was below the optimum while the model was above it)."""

from __future__ import annotations

import pytest

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.centralized import train_centralized
from geodml.federation import CompressionConfig
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions

from .test_preconditioner import federation, rare_features, split


@pytest.mark.parametrize("method", ["fadl-subspace", "sqm-lbfgs"])
def test_int8_down_reports_the_objective_of_the_model_it_returns(method):
    data = rare_features(4000, 1 << 12, seed=5, zipf=1.2)
    lam = 1.0 / data.n_rows
    optimum = train_centralized(data, options=LbfgsOptions(gtol=1e-10, max_iter=5000))[1].f
    comp = CompressionConfig(up='{"kind": "quantize_int8", "error_feedback": true}',
                             down='{"kind": "quantize_int8"}')
    with federation(split(data, 3), compression=comp) as fed:
        result = train(fed, method, TrainSpec(gtol=1e-6), RunRecorder(fed))
        assert all(fed.support(site) is None for site in fed.names)  # sent dense
    objective = RegularizedObjective([SiteSums(data.X, data.y, get_loss("logistic"))], lam,
                                     data.n_features)
    true_f = objective.value(result.w)
    assert result.objective == pytest.approx(true_f, rel=1e-9)
    assert true_f >= optimum - 1e-12
