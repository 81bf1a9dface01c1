"""The curvature-weighted warm start of the federated exact methods (Agarwal et al.,
JMLR 2014), with the per-feature metric in the same round.

Every site solves its own regularized problem and returns, as per-row means, its
solution weighted by its Hessian diagonal there, that diagonal, its diagonal at zero
and its loss gradient at zero (:mod:`geodml.site.local_warm`). The coordinator forms

    w_j = sum_k n_k a_kj / sum_k n_k b_kj       (0 where no site's rows touch j)
    D   = sum_k n_k c_k / N + lambda             (the metric of geodml.algorithms.metric)
    g_0 = sum_k n_k e_k / N                      (F's gradient at zero: gtol's reference)

One round, four vectors up per site (in the job's up-compression format) and none
down; it replaces the metric's own round (one vector up). ``gtol`` stays relative to
the gradient at zero, so a warm-started run stops where a cold one would. The exact
method then continues from ``w``: on skewed splits a site's solution can be poor,
but the method still converges to the exact optimum (it only starts elsewhere).
BENCHMARKS.md says where it pays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geodml.algorithms.metric import global_metric, resolve
from geodml.federation import Federation
from geodml.job.procedure_params import WARM_START
from geodml.optim.preconditioner import Preconditioner
from geodml.site.local_warm import WARM_START_OUTPUTS

# the sites' own tolerance (a start, not an answer) and iterations: the procedure's defaults
LOCAL_GTOL = WARM_START["gtol"].default
LOCAL_MAX_ITER = WARM_START["max_iter"].default


@dataclass(frozen=True)
class WarmStart:
    w: np.ndarray  # the curvature-weighted start
    metric: np.ndarray | None  # D (None: the preconditioner is off)
    grad_at_zero: np.ndarray  # grad F(0), lambda's term being zero there


def warm_start(fed: Federation, preconditioner: Preconditioner, lam: float) -> WarmStart:
    """The averaged start, the metric and the gradient at zero, in one round."""
    parts = fed.local_solve("warm_start", {"gtol": LOCAL_GTOL, "max_iter": LOCAL_MAX_ITER},
                            [], outputs=WARM_START_OUTPUTS)
    total = np.zeros(WARM_START_OUTPUTS * fed.n_features)
    for vector, _info, rows in parts:
        total += rows * np.asarray(vector, dtype=np.float64)
    weighted, weight, curvature, grad_sum = np.split(total, WARM_START_OUTPUTS)
    w = np.zeros(fed.n_features)
    touched = weight > 0
    w[touched] = weighted[touched] / weight[touched]
    metric = preconditioner.metric(curvature, fed.n_rows, lam) if preconditioner.active \
        else None
    return WarmStart(w, metric, grad_sum / fed.n_rows)


def start(fed: Federation, preconditioner: Preconditioner, lam: float,
          w0: np.ndarray | None, warm: bool
          ) -> tuple[Preconditioner, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """An exact method's ``(preconditioner, w0, D, grad F(0))``: ``auto`` settled
    (:func:`geodml.algorithms.metric.resolve`), then from the warm start when ``warm``
    and no ``w0`` is given (the metric in the same round), else ``w0`` as given, the
    metric's own round (:func:`geodml.algorithms.metric.global_metric`) and no gradient
    at zero."""
    preconditioner = resolve(fed, preconditioner)
    if warm and w0 is None:
        ws = warm_start(fed, preconditioner, lam)
        return preconditioner, ws.w, ws.metric, ws.grad_at_zero
    return preconditioner, w0, global_metric(fed, preconditioner, lam), None
