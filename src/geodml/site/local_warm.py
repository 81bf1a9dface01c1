"""A site's half of the curvature-weighted warm start (Agarwal et al., "A reliable
effective terascale linear learning system", JMLR 2014).

Site ``k`` minimizes its own regularized objective

    F_k(v) = (1/n_k) L_k(v) + (lambda/2) ||v||^2

(L-BFGS in its own diagonal metric, a loose tolerance: a warm start, not an answer)
and returns four per-row means over its ``n_k`` rows, one after the other:

    a_k = (h_k(v_k) + lambda) * v_k,   b_k = h_k(v_k) + lambda,   c_k = h_k(const),
    e_k = (1/n_k) grad L_k(0),

with ``h_k(v) = (1/n_k) sum_i l''(x_i.v) x_ij^2`` its Hessian diagonal. The coordinator
forms the start ``w_j = sum_k n_k a_kj / sum_k n_k b_kj`` (each site's solution weighted
per coordinate by its curvature there), the global metric
``D = sum_k n_k c_k / N + lambda`` (``h_k(const)``: at the site's best constant model, as
:mod:`geodml.algorithms.metric` takes it) and the gradient at zero ``sum_k n_k e_k / N`` (the
reference ``gtol`` is relative to, as in a run from zero)
(:mod:`geodml.algorithms.warm_start`). Means, not sums,
so that they fit a compressed wire format; under secure aggregation the coordinator
sees only their row-weighted sums, which is all it needs.
"""

from __future__ import annotations

import numpy as np

from geodml.job.procedure_params import WARM_START
from geodml.models.objective import RegularizedObjective
from geodml.optim.lbfgs import LbfgsOptions
from geodml.optim.preconditioner import DIAG, solve

WARM_START_OUTPUTS = 4  # blocks of the reply: a_k, b_k, c_k, e_k


def run_warm_start(ctx, params: dict, inputs: list[np.ndarray]) -> tuple[np.ndarray, dict]:
    p = WARM_START.read("warm_start", params)
    max_iter, gtol = p["max_iter"], p["gtol"]
    n = max(1, ctx.n_rows)
    objective = RegularizedObjective([ctx.executor], ctx.lam, ctx.dim)
    grad_at_zero = ctx.executor.evaluate(np.zeros(ctx.dim)).grad / n
    # the metric's statistic at the site's best constant model (geodml.algorithms.metric)
    base = ctx.loss.constant_curvature(ctx.executor.label_sum() / n)
    at_base = ctx.executor.hess_diag(base) / n
    metric = DIAG.metric(at_base * n, n, ctx.lam)  # the site's own F_k's diagonal
    result = solve(objective, "lbfgs", metric, None, LbfgsOptions(gtol=gtol, max_iter=max_iter))
    objective.value(result.w)
    weight = ctx.executor.hess_diag() / n + ctx.lam
    out = np.concatenate([weight * result.w, weight, at_base, grad_at_zero])
    return out, {"iterations": result.iterations, "objective": result.f}
