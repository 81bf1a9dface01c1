"""A strong-Wolfe line search that asks for a *batch* of step sizes per round.

Along ``phi(a) = F(w + a p)`` with ``phi(0) = f0`` and ``phi'(0) = d0 < 0``, a step
``a`` is accepted when it satisfies the strong Wolfe conditions

    phi(a) <= f0 + c1 a d0            (sufficient decrease)
    |phi'(a)| <= c2 |d0|              (curvature)

When ``phi`` is only known to within ``eps`` (sums rounded to fixed point under
secure aggregation), a decrease below ``eps`` cannot be seen: then a step with
``phi(a) <= f0 + eps`` and the curvature condition is accepted too (the approximate
Wolfe conditions of Hager and Zhang, which rely on the accurate derivative).

Each round sends a batch of candidates to the oracle, which returns ``phi`` and
``phi'`` at all of them at once (over the WAN: scalars only, one round trip). The
search keeps a bracket ``[lo, hi]``: ``lo`` is the largest step known to decrease
enough while still descending, ``hi`` the smallest known to be too long. Next
candidates: beyond ``lo`` by doubling while ``hi`` is unknown; otherwise the
safeguarded cubic-interpolation minimizer inside the bracket, plus evenly spaced
points when the batch has room.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geodml.models.objective import ObjectiveOracle


@dataclass
class LineSearchResult:
    alpha: float  # 0.0 when no acceptable step was found
    f: float
    rounds: int  # oracle calls (WAN rounds of scalars)
    points: int  # step sizes evaluated
    wolfe: bool  # strong Wolfe satisfied (else: best decrease found)


def _cubic_min(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float:
    """Minimizer of the cubic through (a, fa, da), (b, fb, db), kept inside the bracket."""
    lo, hi = min(a, b), max(a, b)
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    rad = d1 * d1 - da * db
    if rad >= 0.0:
        d2 = math.copysign(math.sqrt(rad), b - a)
        denom = db - da + 2.0 * d2
        if denom != 0.0:
            x = b - (b - a) * (db + d2 - d1) / denom
            margin = 0.1 * (hi - lo)
            if math.isfinite(x):
                return min(max(x, lo + margin), hi - margin)
    return 0.5 * (lo + hi)


def wolfe_line_search(
    oracle: ObjectiveOracle,
    f0: float,
    d0: float,
    alpha0: float = 1.0,
    batch: int = 1,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_rounds: int = 30,
    eps: float = 0.0,
) -> LineSearchResult:
    """Find a strong-Wolfe step along the direction cached in ``oracle`` (``eps``: the
    noise in ``phi``'s values)."""
    if not d0 < 0:
        raise ValueError(f"not a descent direction: phi'(0) = {d0}")
    lo, f_lo, d_lo = 0.0, f0, d0
    hi, f_hi, d_hi = math.inf, math.nan, math.nan
    best = (0.0, f0)  # best sufficient-decrease point seen
    candidates = [alpha0 * 2.0**j for j in range(batch)] if batch > 1 else [alpha0]
    points = 0
    for rnd in range(1, max_rounds + 1):
        alphas = np.array(sorted(set(candidates)))
        fs, ds = oracle.line_values(alphas)
        points += len(alphas)
        accepted = [
            (f, a) for a, f, d in zip(alphas, fs, ds, strict=True)
            if f <= f0 + c1 * a * d0 + eps and abs(d) <= c2 * abs(d0)
        ]
        if accepted:
            f, a = min(accepted)
            return LineSearchResult(float(a), float(f), rnd, points, True)
        for a, f, d in zip(alphas, fs, ds, strict=True):
            if not (math.isfinite(f) and math.isfinite(d)):
                if a < hi:
                    hi, f_hi, d_hi = a, math.inf, math.inf
                continue
            sufficient = f <= f0 + c1 * a * d0 + eps
            if sufficient and f < best[1]:
                best = (float(a), float(f))
            if not sufficient or d >= 0 or f >= f_lo + eps:
                if a < hi:
                    hi, f_hi, d_hi = a, f, d
            elif a > lo:
                lo, f_lo, d_lo = a, f, d
        if math.isinf(hi):
            start = max(lo, alphas[-1])
            candidates = [start * 2.0 ** (j + 1) for j in range(batch)]
            continue
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
        if math.isfinite(f_hi) and math.isfinite(d_hi):
            x = _cubic_min(lo, f_lo, d_lo, hi, f_hi, d_hi)
        else:
            x = lo + 0.1 * (hi - lo) if lo == 0.0 else 0.5 * (lo + hi)
        candidates = [x] + [lo + (hi - lo) * (j + 1) / batch for j in range(batch - 1)]
    return LineSearchResult(best[0], best[1], max_rounds, points, False)
