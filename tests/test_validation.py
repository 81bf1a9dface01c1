"""Held-out rows at the sites (geodml.job.validation) and stopping by them.

Each site holds out a fixed pseudo-random share of its rows; training sums skip them;
every gradient round scores them, and only a loss sum, a count and a margin
histogram cross. The coordinator's validation log loss must equal the one computed
centrally on the same held-out rows, and `--stop validation` must stop where it
stops improving and return the best row's model.
"""

from __future__ import annotations

import numpy as np
import pytest

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.algorithms.stop import ValidationStop
from geodml.centralized import train_centralized
from geodml.data.dataset import Dataset
from geodml.errors import ConfigError, GeodmlError
from geodml.federation import SecureAggregation
from geodml.job.validation import ValidationJob, held_out, margin_histogram
from geodml.metrics import auc_from_histogram, log_loss, roc_auc
from geodml.optim import LbfgsOptions

from .test_preconditioner import federation, rare_features, split

SHARE, SEED = 0.2, 7


@pytest.fixture(scope="module")
def parts() -> list[Dataset]:
    return split(rare_features(6000, 1 << 12, seed=3, zipf=1.2), 3)


def held_and_kept(parts: list[Dataset]) -> tuple[Dataset, Dataset]:
    """The held-out rows of every part, and the training rows, as the sites pick them."""
    masks = [held_out(p.n_rows, SHARE, SEED) for p in parts]
    held = Dataset.concat([p.take(np.flatnonzero(m)) for p, m in zip(parts, masks, strict=True)])
    kept = Dataset.concat([p.take(np.flatnonzero(~m)) for p, m in zip(parts, masks, strict=True)])
    return held, kept


def test_the_held_out_choice_is_fixed_by_the_seed_and_near_the_share():
    a, b = held_out(50_000, 0.1, 3), held_out(50_000, 0.1, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, held_out(50_000, 0.1, 4))
    assert abs(a.mean() - 0.1) < 0.01
    assert not held_out(10, 0.0, 3).any()


def test_training_skips_the_held_out_rows_and_validation_matches_central(parts):
    held, kept = held_and_kept(parts)
    with federation(parts, validation=ValidationJob(SHARE, SEED)) as fed:
        recorder = RunRecorder(fed)
        result = train(fed, "fadl-subspace", TrainSpec(gtol=1e-6), recorder)
        assert fed.n_rows == kept.n_rows  # the sums count the training rows only
    # lambda = 1/N counts every row the sites hold: holding rows out keeps it
    central = train_centralized(kept, lam=1.0 / sum(p.n_rows for p in parts),
                                options=LbfgsOptions(gtol=1e-10, max_iter=5000))[1]
    assert result.converged and result.objective == pytest.approx(central.f, rel=1e-7)
    last = recorder.rows[-1].metrics
    z = held.X @ result.w
    assert last["val_rows"] == held.n_rows
    assert last["val_log_loss"] == pytest.approx(log_loss(held.y, z), rel=1e-9)
    # the AUC from 64 margin bins is within the bins' resolution of the exact one
    assert abs(last["val_auc"] - roc_auc(held.y, z)) < 0.01
    assert last["val_auc"] == pytest.approx(auc_from_histogram(margin_histogram(held.y, z)))
    assert all("val_log_loss" in row.metrics for row in recorder.rows)


@pytest.mark.parametrize("method", ["fadl-subspace", "sqm-lbfgs"])
def test_stop_validation_stops_where_it_stops_improving_with_the_best_model(parts, method):
    stop = ValidationStop(patience=2, threshold=1e-4)
    with federation(parts, validation=ValidationJob(SHARE, SEED)) as fed:
        recorder = RunRecorder(fed)
        result = train(fed, method, TrainSpec(gtol=1e-10, validation=stop), recorder)
    assert result.reason.startswith("validation loss stopped improving"), result.reason
    losses = [row.metrics["val_log_loss"] for row in recorder.rows]
    best = int(np.argmin(losses))
    # stopped `patience` rows after the last row that improved by the threshold
    assert len(losses) - 1 - best <= stop.patience
    assert result.info["validation"]["best_iteration"] == recorder.rows[best].iteration
    held, _ = held_and_kept(parts)
    assert log_loss(held.y, held.X @ result.w) == pytest.approx(losses[best], rel=1e-9)
    assert result.rows[-1].iteration < 60  # far fewer rows than gtol 1e-10 needs


def test_validation_is_refused_where_it_cannot_hold(parts):
    with pytest.raises(GeodmlError, match="validation"):
        federation(parts, secure=SecureAggregation(), validation=ValidationJob())
    with federation(parts) as fed, pytest.raises(ConfigError, match="validation share"):
        train(fed, "sqm-lbfgs", TrainSpec(validation=ValidationStop()))
    with pytest.raises(ConfigError, match="share"):
        ValidationJob(share=1.0)
