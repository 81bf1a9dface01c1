"""``admm_local``: a site's step of consensus ADMM, with its dual kept in the session.

Consensus ADMM (Boyd et al. 2011, section 7.1) for
``F(z) = sum_k f_k(z) + g(z)`` with ``f_k(x) = (1/N) L_k(x)`` and
``g(z) = (lambda/2)||z||^2``, scaled dual ``u_k``:

    x_k^{t+1} = argmin_x (1/N) L_k(x) + (rho/2) ||x - z^t + u_k^t||^2      (here)
    z^{t+1}   = rho sum_k (x_k^{t+1} + u_k^t) / (lambda + K rho)             (coordinator)
    u_k^{t+1} = u_k^t + x_k^{t+1} - z^{t+1}                                  (here, next call)

The coordinator's ``Federation.local_solve`` sends the *same* inputs to every site,
so the per-site state ``(x_k, u_k)`` stays at the site, in the session's state
(it lives and dies with the session; calls of a session are serialized). Call
``t`` sends ``z^t`` only:

* ``t = 0``: ``u_k = 0``, the inner solve starts from ``z^0``;
* ``t >= 1``: first the dual update ``u_k^t = u_k^{t-1} + x_k^t - z^t``, rescaled by
  ``rho_{t-1} / rho_t`` when the coordinator changed ``rho`` (the unscaled dual
  ``rho u`` is what is kept); the inner solve is warm-started from ``x_k^t``.

A repeated ``t`` (the coordinator redoing a round) restarts from the state before
``t``, so the call is idempotent; any other ``t`` is refused. The inner problem is
solved by L-BFGS with ``max_iter`` iterations and relative gradient tolerance
``gtol``. The z-update needs only ``x_k^{t+1} + u_k^t``; on a coordinate no row of
the site touches, ``x_k^{t+1} = z^t - u_k^t`` exactly, so the site returns
``d_k = x_k^{t+1} + u_k^t - z^t``, which is 0 there (a support-restricted reply loses
nothing; state and residuals are then kept over the support), and the coordinator
adds ``z^t`` back. Info: ``loss_sum = L_k(z^t)`` (so the coordinator knows ``F(z^t)``
with no extra round), ``primal_sq = ||x_k^t - z^t||^2``, ``dual_sq = ||u_k^t||^2``,
inner ``iterations``.

Params (:data:`geodml.job.procedure_params.ADMM_LOCAL`): ``iteration`` (t >= 0),
``rho`` (> 0), ``n_total`` (N, >= the site's rows), ``max_iter``, ``gtol``. Input: ``z^t``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from geodml.job.procedure_params import ADMM_LOCAL
from geodml.optim.lbfgs import LbfgsOptions, lbfgs
from geodml.site.local_objective import LocalObjective

if TYPE_CHECKING:
    from geodml.site.procedures import ProcedureContext


@dataclass
class AdmmState:
    """A site's ADMM state after iteration ``t``: ``x = x_k^{t+1}``, ``u = u_k^t``."""

    t: int
    x: np.ndarray
    u: np.ndarray
    rho: float
    before: AdmmState | None = None  # the state after iteration t - 1 (to redo t)


_KEY = "admm"


def _base_state(session_state: dict, t: int) -> AdmmState | None:
    """The state after iteration ``t - 1`` (None for ``t = 0``), or a ValueError."""
    if t == 0:
        return None
    state = session_state.get(_KEY)
    if state is not None and state.t == t - 1:
        return state
    if state is not None and state.t == t:
        return state.before
    at = "none" if state is None else f"iteration {state.t}"
    raise ValueError(f"parameter iteration is {t}, but this session's ADMM state is at {at} "
                     "(start with iteration 0)")


def run_admm_local(ctx: ProcedureContext, params: dict, inputs: list[np.ndarray]
                   ) -> tuple[np.ndarray, dict]:
    p = ADMM_LOCAL.read("admm_local", params)
    t, rho = p["iteration"], p["rho"]
    n_total = ctx.n_rows if p["n_total"] is None else p["n_total"]
    if n_total < ctx.n_rows:
        raise ValueError(f"parameter n_total must be at least the site's {ctx.n_rows} rows, "
                         f"got {n_total}")
    options = LbfgsOptions(max_iter=p["max_iter"], gtol=p["gtol"])
    z = np.asarray(inputs[0], dtype=np.float64)
    base = _base_state(ctx.state, t)
    if base is None:
        u, x0, primal_sq = np.zeros_like(z), z, 0.0
    else:
        r = base.x - z
        u = (base.u + r) * (base.rho / rho)
        x0, primal_sq = base.x, float(r @ r)
    loss_sum = ctx.executor.evaluate(z, need_grad=False).loss
    objective = LocalObjective(ctx.executor, ctx.dim, 1.0 / n_total, mu=rho, center=z - u)
    result = lbfgs(objective, w0=x0, options=options)
    state = AdmmState(t, result.w, u, rho, None if base is None else replace(base, before=None))
    ctx.state[_KEY] = state
    return result.w + u - z, {"loss_sum": float(loss_sum), "primal_sq": primal_sq,
                          "dual_sq": float(u @ u), "iterations": result.iterations,
                          "converged": bool(result.converged)}
