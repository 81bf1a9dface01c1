"""Pieces the baseline methods share: weighted averages, objectives from loss sums.

(Their parameters are :class:`geodml.params.Schema` declarations next to each method.)

With ``N = sum_k n_k`` rows, the averages are weighted by ``n_k / N`` and the global
objective is assembled from the sites' loss sums ``L_k(w)``:

    F(w) = (1/N) sum_k L_k(w) + (lambda/2) ||w||^2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from geodml.federation import Federation, SiteEval

if TYPE_CHECKING:
    from geodml.algorithms.spec import TrainSpec

SiteResult = tuple[np.ndarray, dict, int]  # (vector, info, rows) from Federation.local_solve


def weighted_average(results: Sequence[SiteResult]) -> np.ndarray:
    """``sum_k (n_k / N) v_k`` over the sites' returned vectors."""
    total = sum(rows for _, _, rows in results)
    out = np.zeros_like(np.asarray(results[0][0], dtype=np.float64))
    for v, _, rows in results:
        out += (rows / total) * v
    return out


def objective_from_loss_sums(loss_sums: Sequence[float], n_rows: int, lam: float,
                             w: np.ndarray) -> float:
    """``F(w)`` from the sites' ``L_k(w)``."""
    return float(sum(loss_sums)) / n_rows + 0.5 * lam * float(w @ w)


def objective_from_info(results: Sequence[SiteResult], n_rows: int, lam: float,
                        w: np.ndarray) -> float:
    """``F(w)`` from the ``loss_sum`` every site reported in its procedure info."""
    return objective_from_loss_sums([info["loss_sum"] for _, info, _ in results], n_rows,
                                    lam, w)


def objective_from_evals(evals: Sequence[SiteEval], n_rows: int, lam: float,
                         w: np.ndarray) -> float:
    """``F(w)`` from the ``loss_sum`` of every site's Evaluate reply at ``w``."""
    return objective_from_loss_sums([e.loss_sum for e in evals], n_rows, lam, w)


def evaluate_objective(fed: Federation, lam: float, w: np.ndarray) -> float:
    """``F(w)``: one Evaluate round (``w`` down, a loss sum up; no gradient)."""
    return objective_from_evals(fed.evaluate(w, want_grad=False), fed.n_rows, lam, w)


def initial_point(fed: Federation, spec: TrainSpec) -> np.ndarray:
    """``spec.w0`` (checked) or zeros."""
    if spec.w0 is None:
        return np.zeros(fed.n_features)
    w0 = np.array(spec.w0, dtype=np.float64)
    if w0.shape != (fed.n_features,):
        raise ValueError(f"w0 has shape {w0.shape}, expected ({fed.n_features},)")
    return w0
