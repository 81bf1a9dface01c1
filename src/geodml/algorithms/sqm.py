"""Statistical-query-model (SQM) methods: exact global sums every round.

Each round every DC returns sums over its rows (loss, gradient, Hessian-vector
product, or losses along a cached direction), and the coordinator adds them; the
iterates are exactly those of the same solver run centrally on the pooled rows.
Methods: ``lbfgs`` (line search in scalars, one vector each way per iteration),
``gd`` (steepest descent with the same line search), ``tron`` (trust-region
Newton-CG: one Hessian-vector round per CG step). All converge to the exact
optimum of ``F(w) = (1/N) sum_i l(y_i, x_i.w) + (lambda/2)||w||^2``.
"""

from __future__ import annotations

import numpy as np

from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.warm_start import start
from geodml.errors import ConfigError
from geodml.federation import Federation
from geodml.federation.objective import FederatedObjective
from geodml.optim import LbfgsOptions
from geodml.optim.preconditioner import DIAG, Preconditioner, solve

SQM_METHODS = ("lbfgs", "gd", "tron")


def train_sqm(
    fed: Federation,
    method: str = "lbfgs",
    loss: str = "logistic",
    lam: float | None = None,
    gtol: float = 1e-7,
    max_iter: int = 2000,
    w0: np.ndarray | None = None,
    recorder: RunRecorder | None = None,
    max_wan_bytes: int | None = None,
    tol: float | None = None,
    line_search_batch: int = 1,
    grad_reference: float | None = None,
    preconditioner: Preconditioner = DIAG,
    warm: bool = False,
) -> RunResult:
    """Train by an SQM method in the metric of ``preconditioner`` (default: the
    Hessian's diagonal, one extra round with one vector up per site; see
    :mod:`geodml.algorithms.metric`). Stops at ``gtol`` (relative gradient norm, in
    the metric's dual norm), at ``tol`` relative suboptimality (needs the recorder's
    ``f_star``), after ``max_iter`` iterations, or once ``max_wan_bytes`` have crossed
    the WAN. ``warm``: start from the sites' curvature-weighted solutions
    (:mod:`geodml.algorithms.warm_start`) unless ``w0`` is given."""
    if method not in SQM_METHODS:
        raise ConfigError(f"unknown SQM method {method!r}; known: {', '.join(SQM_METHODS)}")
    lam = 1.0 / fed.n_rows if lam is None else float(lam)
    fed.prepare(loss, lam)
    recorder = recorder or RunRecorder(fed)
    objective = FederatedObjective(fed, lam)
    warm = warm and w0 is None
    w0, metric, grad_at_zero = start(fed, preconditioner, lam, w0, warm)
    if grad_reference is None and grad_at_zero is not None:  # warm: gtol as from zero
        grad_reference = preconditioner.grad_norm(metric)(grad_at_zero)
    stop_reason: list[str] = []
    done = [0]  # iterations of earlier solves (a site dropped: the solve restarted)

    def callback(rec, w) -> bool:
        row = recorder.add(done[0] + rec.iteration, rec.f, w, rec.grad_norm)
        if tol is not None and row.suboptimality is not None and row.suboptimality <= tol:
            stop_reason.append(f"relative suboptimality below {tol:g}")
        elif max_wan_bytes is not None and row.wan_bytes >= max_wan_bytes:
            stop_reason.append(f"WAN byte budget of {max_wan_bytes} reached")
        return bool(stop_reason)

    while True:
        sites = len(fed.names)
        options = LbfgsOptions(gtol=gtol, max_iter=max_iter - done[0],
                               line_search_batch=line_search_batch,
                               reference_grad_norm=grad_reference,
                               f_noise=fed.sum_resolution / fed.n_rows)
        result = solve(objective, method, metric, w0, options, callback,
                       preconditioner.stop)
        grad_reference = grad_reference or result.history[0].grad_norm
        done[0] += len(result.history) - 1
        # a site dropped mid-solve changed the objective under the solver's feet (its
        # curvature pairs and last value are the old objective's): solve again from here
        if (len(fed.names) == sites or (result.converged and result.reason.startswith(
                "relative gradient")) or stop_reason or done[0] >= max_iter):
            break
        w0 = result.w
    converged = result.converged or (bool(stop_reason) and stop_reason[0].startswith("relative"))
    reason = stop_reason[0] if stop_reason else result.reason
    if reason.startswith("max_iter ("):  # the solver's iterations are this run's rounds
        reason = f"max_rounds ({max_iter}) reached"
    return RunResult(f"sqm-{method}", result.w, result.f, converged, reason, recorder.rows,
                     fed.meter.snapshot(), {"lam": lam, "loss": loss,
                                            "reference_grad_norm": grad_reference,
                                            "preconditioner": preconditioner.describe(),
                                            "warm_start": warm})
