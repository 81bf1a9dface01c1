"""Limited-memory BFGS against an :class:`~geodml.models.ObjectiveOracle`.

The direction is ``p = -H g`` with ``H`` the L-BFGS inverse-Hessian estimate from
the last ``m`` pairs ``s = w_{k+1} - w_k``, ``y = g_{k+1} - g_k`` (two-loop
recursion, initial scaling ``H0 = (s.y / y.y) I``; first step ``p = -g / ||g||``, or
``p = -g`` with ``unit_first_step`` where the variables are preconditioned so that
the Hessian's diagonal is one).
Per iteration the oracle caches ``p`` once (one product ``X p`` per DC), the line
search asks only for scalars, and the gradient is computed once, at the accepted
point, from the cached margins: one ``X p`` and one ``X^T r`` per iteration.

**Steps as trials** (``trial_step``; ``sqm-lbfgs`` turns it on, where every oracle
call is a WAN round; in process it saves nothing). Once curvature pairs exist the
unit step usually satisfies the strong Wolfe conditions, so the line search's
candidates are *moves*: the oracle steps to ``w + a p`` and returns ``F`` and its
gradient there, and ``phi'(a)`` is the oracle's exact ``step_slope`` when it has one
(sites send the slope sums beside a compressed gradient), else ``grad F.p``. An
accepted unit step then costs one oracle call (one WAN round) instead of a
line-search round plus a gradient round; a rejected one costs a round per further
candidate, each bringing its gradient (one vector up) along. The candidates, and so
the iterates, are those of the scalar search. The first iteration, whose step length
is a guess, searches in scalars (from zero with ``unit_first_step``, over
:data:`FIRST_GRID` in one round).

Stops when ``||g_k|| <= gtol * ||g_0||`` (relative gradient norm; a warm start
passes the reference norm of the original run instead of ``||g_0||``), when the
relative decrease ``(f_{k-1} - f_k) / max(|f_k|, 1) <= ftol`` (less twice ``f_noise``, the
noise in the objective's values), or after
``max_iter`` iterations. For a ``mu``-strongly convex ``F`` (``mu >= lambda``),
``F(w_k) - F* <= ||g_k||^2 / (2 mu)``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from geodml.models.objective import ObjectiveOracle
from geodml.optim.linesearch import wolfe_line_search

#: the first step's sizes, tried in one line-search round, where it is ``-D^(-1) g``
#: from zero (``unit_first_step``, no ``w0``): 2^-7 .. 1. In the diagonal metric the
#: unit step ignores the features' correlations (on hashed CTR data it was 20-25x too
#: long), which a search from 1 found in 3-4 rounds, and the grid's step made a better
#: first curvature pair (2^20 features, 2 x 100k rows: 21 L-BFGS iterations instead of
#: 33). A warm start (a lambda path's next step) searches from 1 as before: its unit
#: step is nearer the mark, and the grid cost it an iteration.
FIRST_GRID = (2.0**-7, 8)


#: curvature pairs kept by default: as many as :data:`PAIR_BYTES` of float64 pairs hold
#: (``16 d`` bytes a pair), within ``[MIN_MEMORY, MAX_MEMORY]``. 40 pairs against 10 cut
#: SQM L-BFGS's vector rounds to 1e-6 by 38% over bench_algorithms' 28 cells (a9a, w8a,
#: iPinYou, covtype; 1,853 against 3,000, none worse) and left the 2^20 CTR runs at gtol
#: 1e-3 as they were (25.5 against 25 vector rounds); the pairs live in the solver's
#: memory only (the coordinator's, for the federated methods), and the two-loop
#: recursion reads all of them every iteration, which at 2^20 features the budget holds
#: to 16 pairs.
PAIR_BYTES = 256 * 2**20
MIN_MEMORY, MAX_MEMORY = 10, 40


def default_memory(n_features: int) -> int:
    """Curvature pairs for ``n_features`` unknowns (see :data:`PAIR_BYTES`)."""
    return max(MIN_MEMORY, min(MAX_MEMORY, PAIR_BYTES // (16 * max(1, n_features))))


@dataclass
class LbfgsOptions:
    memory: int | None = None  # curvature pairs; None: default_memory(d)
    gtol: float = 1e-7
    ftol: float = 0.0
    max_iter: int = 2000
    line_search_batch: int = 1  # step sizes per line-search round
    reference_grad_norm: float | None = None  # gtol is relative to this (default: ||g(w0)||)
    f_noise: float = 0.0  # the objective's values are known to within this (fixed-point sums)
    # first step -g (a unit Newton step for a Hessian near the identity: preconditioned
    # variables) rather than -g/||g||
    unit_first_step: bool = False
    # once curvature pairs exist, every line-search candidate is a move with its gradient
    # (module doc): for oracles whose calls are WAN rounds (sqm-lbfgs turns it on)
    trial_step: bool = False
    # the norm of the stop test, gtol's reference and the records (default Euclidean in
    # the solver's variables; a preconditioned solve measures the original gradient)
    stop_norm: Callable[[np.ndarray], float] | None = None


@dataclass
class IterationRecord:
    iteration: int
    f: float
    grad_norm: float
    alpha: float
    line_rounds: int
    line_points: int
    seconds: float


@dataclass
class SolveResult:
    w: np.ndarray
    f: float
    grad_norm: float
    iterations: int
    converged: bool
    reason: str
    history: list[IterationRecord] = field(default_factory=list)


def _two_loop(g: np.ndarray, pairs: deque) -> np.ndarray:
    """``-H g`` by the L-BFGS two-loop recursion over ``(s, y, 1/(s.y))`` pairs."""
    q = g.copy()
    coeffs = []
    for s, y, rho in reversed(pairs):
        a = rho * float(s @ q)
        coeffs.append(a)
        q -= a * y
    s, y, _ = pairs[-1]
    q *= float(s @ y) / float(y @ y)
    for (s, y, rho), a in zip(pairs, reversed(coeffs), strict=True):
        b = rho * float(y @ q)
        q += (a - b) * s
    return -q


def two_loop_seconds(n_features: int, pairs: int, repeats: int = 3) -> float:
    """Seconds of one two-loop recursion over ``pairs`` curvature pairs of
    ``n_features`` unknowns on this machine (the quickest of ``repeats``): the part of an
    iteration that grows with the pairs held, ``4 pairs`` vector products over ``d``."""
    rng = np.random.default_rng(0)
    held = deque((rng.standard_normal(n_features), rng.standard_normal(n_features), 1.0)
                 for _ in range(max(1, pairs)))
    g = rng.standard_normal(n_features)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        _two_loop(g, held)
        best = min(best, time.perf_counter() - start)
    return best


def lbfgs(
    oracle: ObjectiveOracle,
    w0: np.ndarray | None = None,
    options: LbfgsOptions | None = None,
    callback: Callable[[IterationRecord, np.ndarray], bool | None] | None = None,
) -> SolveResult:
    """Minimize the oracle's objective from ``w0`` (zeros by default).

    ``callback(record, w)`` runs after every iteration; returning True stops the run.
    """
    opt = options or LbfgsOptions()
    start = time.perf_counter()
    w = np.zeros(oracle.n_features) if w0 is None else np.array(w0, dtype=np.float64)
    measure = opt.stop_norm or (lambda v: float(np.linalg.norm(v)))
    f, g = oracle.value_grad(w)
    gnorm, gstop = float(np.linalg.norm(g)), measure(g)
    g0_norm = opt.reference_grad_norm or gstop
    history = [IterationRecord(0, f, gstop, 0.0, 0, 0, time.perf_counter() - start)]
    if callback and callback(history[-1], w):
        return SolveResult(w, f, gstop, 0, False, "stopped by callback", history)
    memory = default_memory(oracle.n_features) if opt.memory is None else opt.memory
    pairs: deque = deque(maxlen=memory)
    if gnorm == 0.0:
        return SolveResult(w, f, gstop, 0, True, "gradient is zero", history)
    reason, converged = f"max_iter ({opt.max_iter}) reached", False
    first_unit = opt.unit_first_step
    for k in range(1, opt.max_iter + 1):
        p = _two_loop(g, pairs) if pairs else -g / (1.0 if first_unit else gnorm)
        # the cold start's first step in the metric is searched on FIRST_GRID
        grid, first_unit = first_unit and w0 is None, False
        d0 = float(g @ p)
        if not d0 < 0:  # lost descent: restart from steepest descent
            pairs.clear()
            p = -g / gnorm
            d0 = float(g @ p)
        applied = oracle.set_direction(p)
        if applied is not None:  # the direction as the oracle applies it (e.g. compressed)
            p = applied
            d0 = float(g @ p)
            if not d0 < 0:
                pairs.clear()
                p = oracle.set_direction(-g / gnorm)
                p = -g / gnorm if p is None else p
                d0 = float(g @ p)
        walk = _Walk(oracle, p) if opt.trial_step and pairs and opt.line_search_batch == 1 \
            else None
        alpha0, batch = 1.0, opt.line_search_batch
        if grid and batch == 1:
            alpha0, batch = FIRST_GRID
        ls = wolfe_line_search(walk or oracle, f, d0, alpha0=alpha0, batch=batch,
                               eps=opt.f_noise)
        if ls.alpha == 0.0:
            if pairs:  # the curvature model went bad: drop it and try steepest descent
                pairs.clear()
                oracle.value_grad(w)
                continue
            reason = "line search found no decrease"
            break
        f_new, g_new = oracle.step(ls.alpha) if walk is None else walk.move_to(ls.alpha)
        s = ls.alpha * p
        y = g_new - g
        sy = float(s @ y)
        if sy > 1e-12 * float(y @ y):
            pairs.append((s, y, 1.0 / sy))
        decrease = f - f_new
        w, f, g = w + s, f_new, g_new
        gnorm, gstop = float(np.linalg.norm(g)), measure(g)
        history.append(
            IterationRecord(k, f, gstop, ls.alpha, ls.rounds, ls.points,
                            time.perf_counter() - start)
        )
        stop = bool(callback and callback(history[-1], w))
        if gstop <= opt.gtol * g0_norm:
            reason, converged = "relative gradient norm below gtol", True
            break
        if decrease <= opt.ftol * max(abs(f), 1.0) - 2 * opt.f_noise:
            reason, converged = "relative decrease below ftol", True
            break
        if stop:
            reason = "stopped by callback"
            break
    return SolveResult(w, f, gstop, len(history) - 1, converged, reason, history)


class _Walk:
    """The line search's oracle when every candidate is a move: ``line_values([a])``
    steps the oracle from where it stands to ``w + a p`` and keeps ``F`` and the
    gradient there, so the accepted candidate's gradient is already at hand."""

    def __init__(self, oracle: ObjectiveOracle, p: np.ndarray):
        self.oracle, self.p = oracle, p
        self.alpha, self.f, self.g = 0.0, 0.0, p

    def line_values(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        (a,) = np.asarray(alphas, dtype=np.float64)  # batch 1
        self.f, self.g = self.oracle.step(float(a) - self.alpha)
        self.alpha = float(a)
        slope = getattr(self.oracle, "step_slope", None)  # exact where g is compressed
        return np.array([self.f]), np.array([float(self.g @ self.p) if slope is None else slope])

    def move_to(self, alpha: float) -> tuple[float, np.ndarray]:
        """``F`` and its gradient at ``w + alpha p`` (a step unless already there)."""
        if alpha != self.alpha:
            self.line_values(np.array([alpha]))
        return self.f, self.g
