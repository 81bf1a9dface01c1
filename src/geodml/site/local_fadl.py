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
"""

from __future__ import annotations

import numpy as np

from geodml.optim.tron import tron
from geodml.site.local_objective import LocalObjective


def run_fadl_local(ctx, params: dict, inputs: list[np.ndarray]) -> tuple[np.ndarray, dict]:
    from geodml.site.procedures import _float_param, _int_param

    if ctx.point is None:
        raise ValueError("fadl_local needs a current point: Evaluate first")
    inner = _int_param(params, "inner_iterations", 10, 1, 1000)
    gtol = _float_param(params, "inner_gtol", 1e-3, 0.0, 1.0)
    mu = _float_param(params, "mu", 0.0, 0.0, 1e12)
    g = inputs[0]
    w = np.asarray(ctx.point, dtype=np.float64)
    scale = 1.0 / ctx.n_rows
    f_w, grad_w = LocalObjective(ctx.executor, ctx.dim, scale, lam=ctx.lam).value_grad(w)
    # G_p(v) = F_p(v) - (grad F_p(w) - g).v + (mu/2)||v - w||^2: DANE's form with eta = 1
    shift = grad_w - g
    approx = LocalObjective(ctx.executor, ctx.dim, scale, lam=ctx.lam, mu=mu, center=w,
                            linear=shift)
    result = tron(approx, w0=w, gtol=gtol, max_iter=inner)
    direction = result.w - w
    if ctx.touched is not None:
        direction[~ctx.touched] = 0.0
    return direction, {"inner_iterations": result.iterations,
                          "local_decrease": float(f_w - shift @ w - result.f)}
