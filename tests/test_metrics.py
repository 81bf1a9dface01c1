"""Metrics against scikit-learn, and AUC from summed per-DC histograms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from geodml import metrics


def _scores(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    z = rng.standard_normal(n) + 1.2 * y
    return y, z


def test_metrics_match_sklearn():
    y, z = _scores()
    assert metrics.roc_auc(y, z) == pytest.approx(roc_auc_score(y, z), abs=1e-12)
    assert metrics.log_loss(y, z) == pytest.approx(sk_log_loss(y, expit(z)), rel=1e-9)
    assert metrics.accuracy(y, z) == pytest.approx(np.mean((z > 0) == (y > 0.5)))


def test_auc_counts_ties_as_one_half():
    y = np.array([0, 1, 0, 1.0])
    z = np.array([0.0, 0.0, 1.0, 2.0])  # pairs: (1 vs 0)=tie, (1 vs 2)=lose, (3 vs both)=win
    assert metrics.roc_auc(y, z) == pytest.approx(roc_auc_score(y, z)) == pytest.approx(0.625)


def test_auc_from_summed_dc_histograms_matches_exact_auc():
    y, z = _scores(n=20000, seed=1)
    parts = np.array_split(np.arange(len(y)), 4)
    hist = sum(metrics.score_histogram(y[p], z[p]) for p in parts)
    assert hist.sum() == len(y)
    assert metrics.auc_from_histogram(hist) == pytest.approx(roc_auc_score(y, z), abs=1e-4)


def test_auc_is_nan_with_one_class_and_errors_on_mismatch():
    assert np.isnan(metrics.roc_auc(np.ones(3), np.arange(3.0)))
    with pytest.raises(ValueError, match="3 labels but 2 scores"):
        metrics.log_loss(np.ones(3), np.ones(2))
