"""``dane_local``: a site's DANE subproblem (Shamir, Srebro & Zhang 2014).

Given the global point ``w`` and the exact global gradient ``g = grad F(w)``, the
site solves

    v_k = argmin_v  F_k(v) - (grad F_k(w) - eta g).v + (mu/2) ||v - w||^2,
    F_k(v) = (1/n_k) L_k(v) + (lambda/2) ||v||^2,

i.e. its own objective with the gradient corrected to the global one at ``w``
(at ``v = w`` the subproblem's gradient is ``eta g``). The site computes
``grad F_k(w)`` itself (one pass over its rows), then runs L-BFGS from ``w`` with
``max_iter`` iterations and relative gradient tolerance ``gtol``.

On a coordinate no row of the site touches only the quadratic terms act, and
there ``v_k = w - eta g / (lambda + mu)`` exactly (so ``lambda + mu > 0`` is required).
The site returns ``d_k = v_k - (w - eta g / (lambda + mu))``, which is 0 there — a
support-restricted reply loses nothing — and the coordinator adds the shift back.

Params (:data:`geodml.job.procedure_params.DANE_LOCAL`): ``eta`` (> 0), ``mu`` (>= 0;
> 0 when lambda is 0), ``max_iter``, ``gtol``.
Inputs: ``w``, ``g``. Returns ``d_k`` and info with the inner ``iterations``,
``converged`` and the subproblem's decrease ``phi(w) - phi(v_k)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from geodml.job.procedure_params import DANE_LOCAL
from geodml.optim.lbfgs import LbfgsOptions, lbfgs
from geodml.site.local_objective import LocalObjective

if TYPE_CHECKING:
    from geodml.site.procedures import ProcedureContext


def run_dane_local(ctx: ProcedureContext, params: dict, inputs: list[np.ndarray]
                   ) -> tuple[np.ndarray, dict]:
    p = DANE_LOCAL.read("dane_local", params)
    eta, mu = p["eta"], p["mu"]
    options = LbfgsOptions(max_iter=p["max_iter"], gtol=p["gtol"])
    if ctx.lam + mu <= 0:
        raise ValueError("parameter mu must be > 0 when lambda is 0 (the local problem is "
                         "unbounded on coordinates the site's rows do not touch)")
    w = np.asarray(inputs[0], dtype=np.float64)
    g = np.asarray(inputs[1], dtype=np.float64)
    scale = 1.0 / ctx.n_rows
    sums = ctx.executor.evaluate(w)
    grad_k = scale * sums.grad + ctx.lam * w
    objective = LocalObjective(ctx.executor, ctx.dim, scale, lam=ctx.lam, mu=mu, center=w,
                               linear=grad_k - eta * g)
    f_w = scale * sums.loss + 0.5 * ctx.lam * float(w @ w) - float((grad_k - eta * g) @ w)
    result = lbfgs(objective, w0=w, options=options)
    shift = w - (eta / (ctx.lam + mu)) * g
    return result.w - shift, {"iterations": result.iterations,
                              "converged": bool(result.converged),
                              "decrease": float(f_w - result.f)}
