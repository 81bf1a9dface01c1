"""FADL's local problem (Mahajan et al., JMLR 2018), solved at a site.

At the current point ``w`` with the global gradient ``g`` (sent by the
coordinator), site ``p`` minimizes its functional approximation of the global
objective

    G_p(v) = F_p(v) + (g - grad F_p(w)).v + (mu/2)||v - w||^2,
    F_p(v) = (1/n_p) L_p(v) + (lambda/2)||v||^2,

where ``F_p`` (the site's own rows standing in for all rows) is corrected by a
linear term so that ``grad G_p(w) = g``: the approximation agrees with the true
objective to first order at ``w``. A bounded number of TRON iterations (each a
few local Hessian-vector products) gives ``v_p``; the site returns the direction
``d_p = v_p - w``, zero outside the features its rows touch (where it knows
nothing beyond the regularizer; unless its policy hides that set). With IID rows
``F_p`` is close to ``F`` and ``d_p`` is close to the Newton step; with skewed
rows it can be poor, which the coordinator detects.

**Metric** (parameter ``metric``; the coordinator's per-feature preconditioner is
on). ``D``, the global Hessian diagonal, comes as a second input with
``metric = "send"`` (once per session, kept in the session's state) and is reused
with ``metric = "stored"``; the site keeps ``u = D^(-1) g`` as the input the coming
subspace reuses (the preconditioned gradient direction), and runs the TRON
iterations in its own diagonal metric
``D_p = (1/n_p) sum_i l''(z_i) x_ij^2 + lambda + mu`` at the first local point (kept
too), which at 2^20 hashed features turns a local solve of hundreds of CG steps
into a few.
"""

from __future__ import annotations

import numpy as np

from geodml.job.procedure_params import FADL_LOCAL
from geodml.optim.lbfgs import LbfgsOptions
from geodml.optim.preconditioner import DIAG, solve
from geodml.site.local_objective import LocalObjective


def fadl_local_slots(params: dict) -> int:
    """Input vectors of a call: ``[g]``, or ``[g, D]`` with ``metric = "send"``."""
    mode = FADL_LOCAL["metric"].read("fadl_local", "metric", params.get("metric"))
    return 2 if mode == "send" else 1


def _keep_metric(ctx, mode: str | None, inputs: list[np.ndarray]) -> None:
    """Store ``D`` (``metric = "send"``) and leave ``u = D^(-1) g`` for the subspace."""
    if mode is None:
        return
    if mode == "send":
        metric = np.asarray(inputs[1], dtype=np.float64)
        if not (np.all(np.isfinite(metric)) and np.all(metric > 0)):
            raise ValueError("the metric must be positive and finite")
        ctx.state["metric"] = metric
    metric = ctx.state.get("metric")
    if metric is None:
        raise ValueError('metric "stored" but none was sent in this session')
    ctx.state["last_local_input"] = inputs[0] / metric


def run_fadl_local(ctx, params: dict, inputs: list[np.ndarray]) -> tuple[np.ndarray, dict]:
    p = FADL_LOCAL.read("fadl_local", params)
    if ctx.point is None:
        raise ValueError("fadl_local needs a current point: Evaluate first")
    inner, gtol, mu = p["inner_iterations"], p["inner_gtol"], p["mu"]
    _keep_metric(ctx, p["metric"], inputs)
    g = inputs[0]
    w = np.asarray(ctx.point, dtype=np.float64)
    scale = 1.0 / ctx.n_rows
    f_w, grad_w = LocalObjective(ctx.executor, ctx.dim, scale, lam=ctx.lam).value_grad(w)
    # G_p(v) = F_p(v) - (grad F_p(w) - g).v + (mu/2)||v - w||^2: DANE's form with eta = 1
    shift = grad_w - g
    approx = LocalObjective(ctx.executor, ctx.dim, scale, lam=ctx.lam, mu=mu, center=w,
                            linear=shift)
    local_metric = None
    if p["metric"] is not None:  # the site's own diagonal, at the first point
        local_metric = ctx.state.get("local_metric")
        if local_metric is None:
            local_metric = DIAG.metric(ctx.executor.hess_diag(), ctx.n_rows, ctx.lam + mu)
            ctx.state["local_metric"] = local_metric
    result = solve(approx, "tron", local_metric, w,
                   LbfgsOptions(gtol=gtol, max_iter=inner))
    direction = result.w - w
    if ctx.touched is not None:
        direction[~ctx.touched] = 0.0
    return direction, {"inner_iterations": result.iterations,
                          "local_decrease": float(f_w - shift @ w - result.f)}
