"""Consensus ADMM (Boyd, Parikh, Chu, Peleato & Eckstein 2011, section 7.1).

Split ``F(z) = sum_k f_k(z) + g(z)`` with ``f_k(x) = (1/N) L_k(x)`` (site k's loss) and
``g(z) = (lambda/2)||z||^2``, and solve ``min sum_k f_k(x_k) + g(z)`` s.t. ``x_k = z``.
With the scaled duals ``u_k`` each iteration is

    x_k^{t+1} = argmin_x (1/N) L_k(x) + (rho/2) ||x - z^t + u_k^t||^2       (site: admm_local)
    z^{t+1}   = argmin_z (lambda/2)||z||^2 + sum_k (rho/2)||x_k^{t+1} - z + u_k^t||^2
              = rho sum_k (x_k^{t+1} + u_k^t) / (lambda + K rho)                (coordinator)
    u_k^{t+1} = u_k^t + x_k^{t+1} - z^{t+1}                                    (site, next call)

The x-update is inexact: L-BFGS warm-started from ``x_k^t`` with at most
``inner_max_iter`` iterations and relative gradient tolerance
``max(inner_gtol_min, inner_gtol0 / (1 + t)^2)``, decreasing with ``t``. Because
``Federation.local_solve`` sends every site the same inputs, each site keeps its own
``(x_k, u_k)`` in its session (see :mod:`geodml.site.local_admm`); a round moves ``z^t``
down and ``x_k + u_k - z^t`` up (exact under support restriction): one vector each
way. Sites also report ``L_k(z^t)``, so ``F(z^t)`` is recorded with no extra round;
the last iterate costs one Evaluate round.

Residuals (Boyd 3.3): primal ``r^t = sqrt(sum_k ||x_k^t - z^t||^2)`` (from the sites'
info, over each site's support), dual ``s^t = rho sqrt(K) ||z^t - z^{t-1}||``. Without
``F*`` the run stops when ``r <= eps_rel sqrt(K) ||z||`` and ``s <= eps_rel ||rho u||``.
With ``adapt`` rho follows residual balancing (Boyd 3.4.1): ``rho *= tau`` when
``r > mu s``, ``rho /= tau`` when ``s > mu r`` (the sites rescale ``u_k``). It is off
by default: on a9a and covtype it drove rho up 256-1024x and slowed convergence
(a9a: 1e-4 relative not reached in 100 rounds instead of 10). The default
``rho = 4 lambda`` was tuned on those two: to reach 1e-4 relative, a9a (iid, K = 4)
takes 6-10 rounds for ``rho`` in ``[1, 4] lambda`` and 30 at ``16 lambda``; covtype
split by wilderness area takes 39-41 rounds at ``[4, 8] lambda``, 70 at
``2 lambda`` and over 100 at ``lambda``.

What it converges to: the exact minimizer ``w*`` of ``F`` (``z^t -> w*``, ``x_k^t ->
w*``) for any ``rho > 0`` and any data split, since all ``f_k`` and ``g`` are convex
and closed. The rate is linear (``g`` is strongly convex) but slow on
ill-conditioned problems: many rounds for high accuracy. Inexact inner solves need
errors that shrink over the iterations, which the decreasing tolerance and the
warm start provide in practice.

Params: ``rho`` (absolute) or ``rho_scale`` (4: ``rho = rho_scale * lambda``),
``adapt`` (False), ``mu`` (10), ``tau`` (2), ``inner_max_iter`` (30), ``inner_gtol0``
(1e-2), ``inner_gtol_min`` (1e-10), ``eps_rel`` (1e-7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geodml.algorithms.baseline import evaluate_objective, initial_point, objective_from_info
from geodml.algorithms.record import RunRecorder, RunResult
from geodml.federation import Federation
from geodml.job.procedure_params import ADMM_LOCAL, check_sent
from geodml.params import Param, Schema

if TYPE_CHECKING:
    from geodml.algorithms.spec import TrainSpec


#: rho goes to every site's admm_local as it is (that procedure's declaration); the
#: inner solve's settings as its max_iter and gtol
ADMM_PARAMS = Schema(
    rho=ADMM_LOCAL["rho"].with_default(None, "the penalty rho (unset: rho_scale * lambda)"),
    rho_scale=Param(4.0, "float", 0.0, None, "rho = rho_scale * lambda when rho is unset",
                    lo_open=True),
    adapt=Param(False, "bool", doc="residual balancing: rho follows the residuals"),
    mu=Param(10.0, "float", 1.0, None, "residual balancing: rho changes when one residual "
             "exceeds mu times the other", lo_open=True),
    tau=Param(2.0, "float", 1.0, None, "residual balancing: the factor rho changes by",
              lo_open=True),
    inner_max_iter=ADMM_LOCAL["max_iter"].with_default(30),
    inner_gtol0=ADMM_LOCAL["gtol"].with_default(
        1e-2, "the x-update's tolerance max(inner_gtol_min, inner_gtol0 / (1 + t)^2)"),
    inner_gtol_min=ADMM_LOCAL["gtol"].with_default(1e-10, "the x-update's tolerance, at least"),
    eps_rel=Param(1e-7, "float", 0.0, 1.0, "stop when both residuals are below eps_rel, "
                  "relative (0: never)"),
)


@dataclass(frozen=True)
class AdmmOptions:
    """One run's settings, read from ``--param`` by :data:`ADMM_PARAMS`."""

    rho: float
    adapt: bool
    mu: float
    tau: float
    inner_max_iter: int
    inner_gtol0: float
    inner_gtol_min: float
    eps_rel: float

    @classmethod
    def from_params(cls, params: dict, lam: float) -> AdmmOptions:
        p = ADMM_PARAMS.read("admm", params)
        rho, scale = p.pop("rho"), p.pop("rho_scale")
        opt = cls(rho=scale * lam if rho is None else rho, **p)
        if rho is None:  # rho_scale * lambda within rho's bounds (lambda may be 0)
            ADMM_PARAMS["rho"].read("admm", "rho", opt.rho)
        return opt

    def inner_gtol(self, t: int) -> float:
        return max(self.inner_gtol_min, self.inner_gtol0 / (1.0 + t) ** 2)


def train_admm(fed: Federation, spec: TrainSpec, recorder: RunRecorder) -> RunResult:
    """Run consensus ADMM (see the module docstring); one record row per iteration."""
    lam = spec.lam_for(fed)
    opt = AdmmOptions.from_params(spec.params, lam)
    fed.prepare(spec.loss, lam)
    rule = spec.stop_rule(gtol=False)
    K, N = len(fed.names), fed.n_rows
    z = initial_point(fed, spec)
    z_prev: np.ndarray | None = None
    rho, rho_prev = opt.rho, opt.rho  # rho of the coming x-update; of the one that made z
    history: list[dict] = []
    reason: str | None = None
    t = 0
    while True:
        if t == spec.max_rounds:
            f = evaluate_objective(fed, lam, z)
            reason = rule.check(recorder.add(t, f, z)) or (
                f"max_rounds ({spec.max_rounds}) reached")
            break
        params = {"iteration": t, "rho": rho, "n_total": N,
                  "max_iter": opt.inner_max_iter, "gtol": opt.inner_gtol(t)}
        results = fed.local_solve("admm_local", check_sent("admm_local", params), [z])
        f = objective_from_info(results, N, lam, z)
        r = math.sqrt(sum(info["primal_sq"] for _, info, _ in results))
        s = 0.0 if z_prev is None else rho_prev * math.sqrt(K) * float(np.linalg.norm(z - z_prev))
        u_norm = math.sqrt(sum(info["dual_sq"] for _, info, _ in results))
        history.append({"rho": rho, "primal": r, "dual": s,
                        "inner": [info["iterations"] for _, info, _ in results]})
        if reason := rule.check(recorder.add(t, f, z)):
            break
        if t > 0 and opt.eps_rel > 0 and r <= opt.eps_rel * math.sqrt(K) * float(
                np.linalg.norm(z)) and s <= opt.eps_rel * rho * u_norm:
            reason = f"primal and dual residuals below eps_rel {opt.eps_rel:g}"
            break
        # site k returned d_k = x_k^{t+1} + u_k^t - z^t (0 off its support)
        total = np.sum([v for v, _, _ in results], axis=0) + K * z
        z_prev, z = z, rho * total / (lam + K * rho)
        rho_prev = rho
        if opt.adapt and t > 0:
            if r > opt.mu * s:
                rho *= opt.tau
            elif s > opt.mu * r:
                rho /= opt.tau
        t += 1
    converged = rule.converged(reason) or reason.startswith("primal and dual")
    return RunResult("admm", z, f, converged, reason, recorder.rows, fed.meter.snapshot(),
                     {"lam": lam, "loss": spec.loss, "rho_final": rho, "history": history})
