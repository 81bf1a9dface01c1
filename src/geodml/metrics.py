"""Evaluation metrics of a binary classifier's scores ``z = x.w``.

- log loss: ``(1/n) sum_i log(1 + exp(-s_i z_i))`` with ``s = 2y - 1``;
- accuracy: share of rows with ``[z_i > 0] == y_i``;
- ROC AUC: the probability that a random positive scores above a random negative,
  ties counting one half, i.e. ``(sum of positive ranks - P(P+1)/2) / (P N)`` with
  mid-ranks for ties (Mann-Whitney U).

Across DCs, AUC comes from *score histograms*: each DC counts its positives and
negatives per bin of ``sigmoid(z)`` over fixed edges; the coordinator adds the
counts and computes AUC with pairs inside one bin counting one half. With B
equal-width bins the error is at most the share of positive-negative pairs that
share a bin; 2^16 bins make it negligible for CTR-sized data.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit

from geodml.models.losses import Logistic

DEFAULT_BINS = 1 << 16


def _check(y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    z = np.asarray(z, dtype=np.float64).ravel()
    if y.shape != z.shape:
        raise ValueError(f"{y.size} labels but {z.size} scores")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    return y, z


def log_loss(y: np.ndarray, z: np.ndarray) -> float:
    """Mean logistic loss of margins ``z`` for labels ``y in {0, 1}``."""
    y, z = _check(y, z)
    return float(Logistic().value(y, z).mean())


def accuracy(y: np.ndarray, z: np.ndarray) -> float:
    y, z = _check(y, z)
    return float(np.mean((z > 0) == (y > 0.5)))


def roc_auc(y: np.ndarray, z: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U with mid-ranks); NaN if one class is absent."""
    y, z = _check(y, z)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata  # here: scipy.stats costs ~1 s to import

    ranks = rankdata(z)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def score_histogram(y: np.ndarray, z: np.ndarray, bins: int = DEFAULT_BINS) -> np.ndarray:
    """Counts ``(2, bins)``: negatives and positives per equal bin of ``sigmoid(z)``."""
    y, z = _check(y, z)
    idx = np.minimum((expit(z) * bins).astype(np.int64), bins - 1)
    pos = y > 0.5
    return np.stack(
        [np.bincount(idx[~pos], minlength=bins), np.bincount(idx[pos], minlength=bins)]
    ).astype(np.int64)


def auc_from_histogram(hist: np.ndarray) -> float:
    """ROC AUC from summed score histograms (pairs in one bin count one half)."""
    neg, pos = np.asarray(hist[0], np.float64), np.asarray(hist[1], np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))


def held_out_evaluator(test) -> Callable[[np.ndarray], dict[str, float]] | None:
    """``w -> {"log_loss", "auc"}`` on a held-out dataset (None without one)."""
    if test is None:
        return None

    def evaluate(w: np.ndarray) -> dict[str, float]:
        z = np.asarray(test.X @ w)
        return {"log_loss": log_loss(test.y, z), "auc": roc_auc(test.y, z)}
    return evaluate
