"""Trust-region Newton-CG (TRON; Lin, Weng & Keerthi, JMLR 2008).

At ``w`` with gradient ``g`` and Hessian ``H`` (seen only through products ``H v``),
the step ``s`` approximately minimizes the quadratic model

    m(s) = g.s + (1/2) s.H s     subject to ||s|| <= delta

by conjugate gradients stopped at ``||H s + g|| <= cg_tol * ||g||`` or at the
trust-region boundary (Steihaug). The step is accepted when the actual decrease
``F(w) - F(w + s)`` is at least ``eta0`` times the predicted ``-m(s)``; the
radius ``delta`` grows or shrinks with their ratio ``rho`` (LIBLINEAR's rules).
``F(w + s)`` comes from the oracle's line search at step 1 (scalars only) and the
gradient only at accepted points. Each CG iteration costs one ``H v`` — one
vector round when the objective is spread over DCs.

The radius can also collapse because ``F``'s values no longer resolve the decrease
still available: near the optimum the most any step can gain is the Newton
decrement ``g.H^(-1).g / 2``, and once that falls below the rounding noise of ``F``
(``NOISE_ULPS`` machine epsilons of ``max(|F|, 1)``, plus ``f_noise`` for sums
known only to a resolution) the ratio test compares noise with noise. On a
collapse TRON estimates the decrement by one unconstrained CG solve (a few more
``H v`` products) and reports convergence ("trust region collapsed at the noise
level of F") when it is below that noise, a failure ("trust region collapsed")
otherwise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from geodml.models.objective import ObjectiveOracle
from geodml.optim.lbfgs import IterationRecord, SolveResult

ETA0, ETA1, ETA2 = 1e-4, 0.25, 0.75
SIGMA1, SIGMA2, SIGMA3 = 0.25, 0.5, 4.0
NOISE_ULPS = 1000.0  # F's rounding noise: this many machine epsilons of max(|F|, 1)


def _steihaug_cg(
    oracle: ObjectiveOracle, g: np.ndarray, delta: float, cg_tol: float, max_cg: int
) -> tuple[np.ndarray, int]:
    """Approximate minimizer of the quadratic model inside the trust region."""
    s = np.zeros_like(g)
    r = -g
    d = r.copy()
    rr = float(r @ r)
    stop = cg_tol * math.sqrt(rr)
    for it in range(1, max_cg + 1):
        if math.sqrt(rr) <= stop:
            return s, it - 1
        Hd = oracle.hess_vec(d)
        dHd = float(d @ Hd)
        alpha = rr / dHd if dHd > 0 else math.inf
        s_next = s + alpha * d if math.isfinite(alpha) else None
        if s_next is None or np.linalg.norm(s_next) >= delta:
            # go to the boundary along d: ||s + tau d|| = delta, tau >= 0
            sd, dd, ss = float(s @ d), float(d @ d), float(s @ s)
            tau = (-sd + math.sqrt(max(sd * sd + dd * (delta * delta - ss), 0.0))) / dd
            return s + tau * d, it
        s = s_next
        r = r - alpha * Hd
        rr_new = float(r @ r)
        d = r + (rr_new / rr) * d
        rr = rr_new
    return s, max_cg


def noise_of(f: float) -> float:
    """The rounding noise of a value ``f`` of ``F``: ``NOISE_ULPS`` epsilons of ``max(|f|, 1)``."""
    return NOISE_ULPS * float(np.finfo(np.float64).eps) * max(abs(f), 1.0)


def _newton_decrement(oracle: ObjectiveOracle, g: np.ndarray, cg_tol: float,
                      max_cg: int) -> float:
    """``g.H^(-1).g / 2`` (the most the quadratic model can still gain), estimated by
    CG without a trust region (to ``min(cg_tol, 0.01)``): ``-(g.s + s.H s / 2)`` at its
    approximate minimizer; infinite where CG meets non-positive curvature."""
    s, _ = _steihaug_cg(oracle, g, math.inf, min(cg_tol, 0.01), max_cg)
    if not np.all(np.isfinite(s)):
        return math.inf
    return max(-(float(g @ s) + 0.5 * float(s @ oracle.hess_vec(s))), 0.0)


def tron(
    oracle: ObjectiveOracle,
    w0: np.ndarray | None = None,
    gtol: float = 1e-7,
    max_iter: int = 500,
    cg_tol: float = 0.1,
    max_cg: int = 250,
    callback: Callable[[IterationRecord, np.ndarray], bool | None] | None = None,
    reference_grad_norm: float | None = None,
    stop_norm: Callable[[np.ndarray], float] | None = None,
    f_noise: float = 0.0,
) -> SolveResult:
    """Minimize the oracle's objective by trust-region Newton-CG from ``w0``.

    ``f_noise``: the objective's values are known only to within this (fixed-point
    sums); it adds to the rounding noise of the collapse test (module docstring).

    ``callback(record, w)`` runs after every iteration; returning True stops the run.
    """
    start = time.perf_counter()
    w = np.zeros(oracle.n_features) if w0 is None else np.array(w0, dtype=np.float64)
    measure = stop_norm or (lambda v: float(np.linalg.norm(v)))
    f, g = oracle.value_grad(w)
    gnorm = measure(g)
    g0 = reference_grad_norm or gnorm
    delta = float(np.linalg.norm(g))
    history = [IterationRecord(0, f, gnorm, 0.0, 0, 0, 0.0)]
    reason, converged = f"max_iter ({max_iter}) reached", False
    if gnorm == 0.0:
        return SolveResult(w, f, gnorm, 0, True, "gradient is zero", history)
    for k in range(1, max_iter + 1):
        s, cg_iters = _steihaug_cg(oracle, g, delta, cg_tol, max_cg)
        predicted = -(float(g @ s) + 0.5 * float(s @ oracle.hess_vec(s)))
        applied = oracle.set_direction(s)
        if applied is not None:  # the step as the oracle applies it (e.g. compressed)
            s = applied
            predicted = -(float(g @ s) + 0.5 * float(s @ oracle.hess_vec(s)))
        f_new = float(oracle.line_values(np.array([1.0]))[0][0])
        actual = f - f_new
        snorm = float(np.linalg.norm(s))
        if k == 1:
            delta = min(delta, snorm)
        gs = float(g @ s)
        denom = f_new - f - gs
        alpha = SIGMA3 if denom <= 0 else max(SIGMA1, -0.5 * (gs / denom))
        rho = actual / predicted if predicted > 0 else -math.inf
        if rho < ETA0:
            delta = min(max(alpha, SIGMA1) * snorm, SIGMA2 * delta)
        elif rho < ETA1:
            delta = max(SIGMA1 * delta, min(alpha * snorm, SIGMA2 * delta))
        elif rho < ETA2:
            delta = max(SIGMA1 * delta, min(alpha * snorm, SIGMA3 * delta))
        else:
            delta = max(delta, min(alpha * snorm, SIGMA3 * delta))
        if rho > ETA0:
            f, g = oracle.step(1.0)
            w = w + s
            gnorm = measure(g)
        history.append(IterationRecord(k, f, gnorm, 1.0 if rho > ETA0 else 0.0, 1, cg_iters,
                                       time.perf_counter() - start))
        stop = bool(callback and callback(history[-1], w))
        if gnorm <= gtol * g0:
            reason, converged = "relative gradient norm below gtol", True
            break
        if stop:
            reason = "stopped by callback"
            break
        if delta < 1e-14 * max(1.0, float(np.linalg.norm(w))):
            if _newton_decrement(oracle, g, cg_tol, max_cg) <= f_noise + noise_of(f):
                reason, converged = "trust region collapsed at the noise level of F", True
            else:
                reason = "trust region collapsed"
            break
    return SolveResult(w, f, gnorm, len(history) - 1, converged, reason, history)
