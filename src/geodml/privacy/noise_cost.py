r"""What DP-GD's noise costs in objective, predicted before the run.

DP-GD (:mod:`geodml.algorithms.dpgd`) steps ``w_{t+1} = w_t - eta (g(w_t) + xi_t)`` for
``t = 0 .. R-1``, where ``xi_t ~ N(0, s^2 I_d)`` is the noise of the mean gradient,

    s = C sqrt(sum_k sigma_k^2) / N                  (site k adds N(0, (sigma_k C)^2 I)
                                                      to its sum; the coordinator divides
                                                      by the N rows of all sites)

and returns the mean of the last ``m = R - floor(R/2)`` iterates.

Near the optimum the objective is quadratic: ``F(w) ~ F* + 1/2 e^T H e``. In an
eigendirection of ``H`` with curvature ``h`` the noise part of the error follows

    e_{t+1} = a e_t - eta xi_t,        a = 1 - eta h,      e_0 = 0

(the noise-free part is separate: it is what a run with ``s = 0`` does, and the cross
term vanishes in expectation). With ``T0 = floor(R/2)`` the output's error
``e_bar = (1/m) sum_{t=T0+1}^{R} e_t`` is ``-(eta/m) sum_u c_u xi_u`` with

    c_u = sum_{t=max(T0, u)+1}^{R} a^{t-1-u}
        = a^{T0-u} (1 - a^m) / (1 - a)          for u <  T0
        = (1 - a^{R-u}) / (1 - a)               for u >= T0,

so ``E[1/2 h e_bar^2] = 1/2 h (eta s / m)^2 sum_u c_u^2 =: q(h)``. Summed over the
``d`` directions (the noise is added to every coordinate), the expected objective the
noise adds is at most

    d * max_h q(h)     over lambda <= h <= 1/eta,

which needs no knowledge of the data's spectrum. ``h <= 1/eta`` is the step rule DP-GD
uses (``eta = 1 / L`` with ``L = C^2/4 + lambda``, the logistic smoothness for rows of
norm ``C``); ``h >= lambda`` since the regularizer is in ``H``. Clipping's bias (the
clipped objective has another optimum) and the distance the noise-free run is from
the optimum after ``R`` rounds are *not* in this number: it is what the privacy noise
adds, on top of a noise-free run with the same clip and rounds.

It is a bound only where its assumptions hold (rows of norm at most about ``C``, so
that no curvature exceeds ``1/eta``, and noise small enough for the quadratic model);
the planner reports it as an estimate. Measured (BENCHMARKS.md, "Differential
privacy"): on synthetic CTR rows the cost was 0.76 times the estimate; on a9a,
whose rows have norm 3.74 against ``C = 1`` (curvatures up to 3.5 where
``1/eta = 0.25``, kept stable only by clipping), the noise cost 1.6 to 1.7 times the
estimate at epsilon 0.1 to 1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

GRID = 256  # curvatures tried between lambda and 1/eta (log-spaced)


def mean_gradient_noise_std(noise_multipliers: Mapping[str, float], clip: float,
                            rows: int) -> float:
    """``s = C sqrt(sum_k sigma_k^2) / N``: the std of one coordinate of the noise in the
    mean gradient the coordinator steps along."""
    return clip * math.sqrt(sum(z * z for z in noise_multipliers.values())) / max(1, rows)


def direction_cost(h: np.ndarray, step: float, rounds: int, noise_std: float) -> np.ndarray:
    """``q(h)``: the expected objective the noise adds along one direction of curvature
    ``h`` (an array), for the tail-averaged iterate (see the module docstring)."""
    h = np.atleast_1d(np.asarray(h, dtype=np.float64))
    T0 = rounds // 2
    m = rounds - T0
    a = np.clip(1.0 - step * h, 0.0, 1.0)[:, None]  # (grid, 1)
    u = np.arange(rounds)[None, :]  # (1, R)
    one_minus_a = np.maximum(1.0 - a, 1e-300)
    with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
        head = a ** np.maximum(T0 - u, 0) * (1.0 - a**m) / one_minus_a
        tail = (1.0 - a ** (rounds - u)) / one_minus_a
    c = np.where(u < T0, head, tail)
    c = np.where(a >= 1.0, np.where(u < T0, m, rounds - u), c)  # h = 0: plain sums
    return 0.5 * h * (step * noise_std / m) ** 2 * (c * c).sum(axis=1)


def noise_objective_cost(features: int, step: float, rounds: int, noise_std: float,
                         lam: float) -> float:
    """``d * max_h q(h)`` over ``lambda <= h <= 1/step``: the expected objective DP-GD's
    noise adds to a noise-free run, bounded on the quadratic model (an estimate where the
    model's assumptions fail: see the module docstring)."""
    if noise_std <= 0 or rounds < 1:
        return 0.0
    top = 1.0 / step
    low = min(max(lam, top * 1e-12), top)
    grid = np.geomspace(low, top, GRID)
    per_chunk = max(1, (1 << 22) // rounds)  # bounded memory: chunk x rounds values
    worst = max(float(direction_cost(grid[i:i + per_chunk], step, rounds, noise_std).max())
                for i in range(0, GRID, per_chunk))
    return features * worst


def noise_free_dp_gd(X, y: np.ndarray, loss, lam: float, clip: float, step: float,
                     rounds: int) -> np.ndarray:
    """DP-GD's output on rows ``X, y`` with the noise left out: the run the
    noise is added to (for checking the estimate against measured runs). Same clip, step,
    rounds and tail average as :func:`geodml.algorithms.dpgd.train_dp_gd`."""
    from geodml.privacy.dp import clipped_gradient_sum, row_l2_norms

    norms = row_l2_norms(X)
    n = X.shape[0]
    w, tail = np.zeros(X.shape[1]), np.zeros(X.shape[1])
    for t in range(1, rounds + 1):
        w = w - step * (clipped_gradient_sum(X, y, w, loss, clip, norms) / n + lam * w)
        if t > rounds // 2:
            tail += w
    return tail / (rounds - rounds // 2)
