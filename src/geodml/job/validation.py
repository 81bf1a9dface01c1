"""Validation: a held-out share of every site's rows, scored while a run trains.

Stopping at statistical precision needs the loss on rows the model did not train on.
The rows never leave their DC; only scalars do.

Site half. Row ``i`` of a site with ``n`` rows is held out when ``u_i < share``, with
``u = Generator(PCG64([seed, n])).random(n)``: a fixed pseudo-random choice, the same
in every session of the job's seed (a resumed run holds out the same rows). Held-out
rows take no part in the job's sums (``N`` counts the training rows only). On an
Evaluate that asks for it, the site scores them at the evaluated point ``w``,
``z_i = x_i . w``, and returns

    V_k = sum_{i held out} l(y_i, z_i),   m_k = |held out|,
    H_k[c, b] = #{i held out : y_i = c, bin(z_i) = b},

with ``bin(z) = floor((clip(z, -M, M) + M) / (2M) * B)`` (capped at ``B - 1``),
``B = VALIDATION_BINS`` equal bins of the margin over ``[-M, M]``,
``M = VALIDATION_MARGIN``: ``2B`` counts, no row's score.

Coordinator half. The validation log loss is ``sum_k V_k / sum_k m_k`` (exact), and
the AUC is read from ``sum_k H_k`` (pairs within one bin count one half, so it is
within the bins' resolution of the exact AUC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from geodml.errors import ConfigError
from geodml.metrics import auc_from_histogram
from geodml.models.losses import Loss
from geodml.wire.errors import SiteCallError

VALIDATION_METRIC = "val_log_loss"  # the metric the stop rule watches
VALIDATION_BINS = 64
VALIDATION_MARGIN = 8.0
DEFAULT_SHARE = 0.1


# -- the coordinator's half -----------------------------------------------------------
@dataclass(frozen=True)
class ValidationJob:
    """Hold out ``share`` of every site's rows (the choice fixed by ``seed``)."""

    share: float = DEFAULT_SHARE
    seed: int = 0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.share) and 0 < self.share < 1):
            raise ConfigError(f"validation share must be in (0, 1), got {self.share}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"validation seed must be in [0, 2^63), got {self.seed}")


@dataclass(frozen=True)
class SiteValidation:
    """One site's reply: held-out loss sum, rows and ``(2, B)`` margin histogram."""

    loss_sum: float
    rows: int
    histogram: np.ndarray


def combine(parts: Sequence[SiteValidation]) -> dict[str, float]:
    """``{"val_log_loss", "val_auc", "val_rows"}`` over every site's held-out rows."""
    rows = sum(p.rows for p in parts)
    if rows == 0:
        return {}
    hist = np.sum([p.histogram for p in parts], axis=0)
    return {VALIDATION_METRIC: sum(p.loss_sum for p in parts) / rows,
            "val_auc": auc_from_histogram(hist), "val_rows": float(rows)}


def histogram_from_wire(counts: Sequence[int], site: str) -> np.ndarray:
    """The ``(2, B)`` histogram of a reply's ``validation_histogram`` field."""
    if len(counts) != 2 * VALIDATION_BINS:
        raise SiteCallError(site, "Evaluate", "INTERNAL",
                            f"validation histogram has {len(counts)} counts, expected "
                            f"{2 * VALIDATION_BINS}")
    return np.asarray(counts, dtype=np.int64).reshape(2, VALIDATION_BINS)


# -- the site's half ----------------------------------------------------------------------
def held_out(n_rows: int, share: float, seed: int) -> np.ndarray:
    """A boolean mask of the held-out rows (see the module docstring)."""
    if share <= 0:
        return np.zeros(n_rows, dtype=bool)
    return np.random.Generator(np.random.PCG64([seed, n_rows])).random(n_rows) < share


def margin_histogram(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``H[c, b]``: rows of label ``c`` whose margin falls in bin ``b``."""
    scaled = (np.clip(z, -VALIDATION_MARGIN, VALIDATION_MARGIN) + VALIDATION_MARGIN) * (
        VALIDATION_BINS / (2 * VALIDATION_MARGIN))
    idx = np.minimum(scaled.astype(np.int64), VALIDATION_BINS - 1)
    pos = y > 0.5
    return np.stack([np.bincount(idx[~pos], minlength=VALIDATION_BINS),
                     np.bincount(idx[pos], minlength=VALIDATION_BINS)])


class ValidationRows:
    """A site's held-out rows (columns numbered as the session's), scored at a point."""

    def __init__(self, X: sp.csr_matrix, y: np.ndarray, loss: Loss):
        self.X, self.y, self.loss = X, np.asarray(y, dtype=np.float64), loss

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]

    def score(self, w: np.ndarray) -> SiteValidation:
        """``(V_k, m_k, H_k)`` at ``w``."""
        z = np.asarray(self.X @ w, dtype=np.float64)
        return SiteValidation(float(self.loss.value(self.y, z).sum()), self.n_rows,
                              margin_histogram(self.y, z))


__all__ = ["DEFAULT_SHARE", "VALIDATION_BINS", "VALIDATION_MARGIN", "VALIDATION_METRIC",
           "SiteValidation",
           "ValidationJob", "ValidationRows", "combine", "held_out", "histogram_from_wire",
           "margin_histogram"]
