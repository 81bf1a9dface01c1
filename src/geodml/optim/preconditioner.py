"""Per-feature (Hessian-diagonal) preconditioning, as a change of variables.

With hashed, mostly rare features and ``lambda = 1/N`` the objective's curvature
along feature ``j`` is about ``c_j / (4N) + lambda`` for a feature seen ``c_j``
times, against about ``1/4`` for a frequent one: the condition number grows with
``N`` and so do the iterations of every first-order or quasi-Newton method. The
cure is the metric of the Hessian's diagonal

    D_j = (1/N) sum_i l''(z_i) x_ij^2 + lambda

at the best constant model (every row's ``l''`` that of the base rate:
:mod:`geodml.algorithms.metric` says why)

Solving in the variables ``v = D^(1/2) w`` gives

    F~(v) = F(D^(-1/2) v),   grad F~(v) = D^(-1/2) grad F(w),
    Hess F~(v) = D^(-1/2) Hess F(w) D^(-1/2),

whose diagonal is all ones: L-BFGS's first step becomes ``-D^(-1) g``, its initial
inverse Hessian ``D^(-1)`` (scaled), TRON's CG is diagonally preconditioned and
its trust region lies in the ``D``-norm.

The relative gradient-norm stop (``gtol``) is measured by ``stop``: ``euclidean``
(default) on the original gradient ``||g||``, so that ``gtol`` means the same with
and without the preconditioner; ``metric`` in the dual norm
``||g||_(D^-1) = sqrt(g . D^(-1) g)``, which weighs every feature by its inverse
curvature (``F(w) - F* <= ||g||_(D^-1)^2 / 2`` up to the Hessian's deviation from
its diagonal) and so asks more of the rare features.

A safeguard for data where diagonal scaling hurts (strongly correlated dense
columns): ``mix`` blends the diagonal with its mean, ``D' = (1 - mix) D + mix mean(D)``
(``mix = 1`` is the identity up to scale); ``kind = "none"`` turns it off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from geodml.errors import ConfigError
from geodml.models.objective import ObjectiveOracle
from geodml.optim.lbfgs import IterationRecord, LbfgsOptions, SolveResult, lbfgs
from geodml.optim.tron import tron

KINDS = ("diag", "none")
STOPS = ("euclidean", "metric")
FLOOR = 1e-12  # D_j >= FLOOR * max(D): features no row touches, with lambda = 0


@dataclass(frozen=True)
class Preconditioner:
    """Which metric the exact methods solve in: ``diag`` (the Hessian's diagonal at
    the starting point, mixed with its mean by ``mix``) or ``none`` (the identity)."""

    kind: str = "diag"
    mix: float = 0.0
    stop: str = "euclidean"  # the norm of the gtol test: see the module docstring

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"preconditioner {self.kind!r} is not one of: {', '.join(KINDS)}")
        if self.stop not in STOPS:
            raise ConfigError(f"preconditioner stop {self.stop!r} is not one of: "
                              f"{', '.join(STOPS)}")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"preconditioner mix must be in [0, 1], got {self.mix}")

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def metric(self, curvature_sum: np.ndarray, n_rows: int, lam: float) -> np.ndarray:
        """``D`` from the summed curvature ``sum_i l''(z_i) x_ij^2`` over all ``n_rows``."""
        curvature_sum = np.asarray(curvature_sum, dtype=np.float64)
        if not np.all(np.isfinite(curvature_sum)):
            raise ValueError("the Hessian diagonal has NaN or infinite entries")
        d = np.maximum(curvature_sum, 0.0) / n_rows + lam
        top = float(d.max()) if d.size else 0.0
        if top <= 0.0:
            return np.ones_like(d)
        d = np.maximum(d, FLOOR * top)
        if self.mix:
            d = (1.0 - self.mix) * d + self.mix * float(d.mean())
        return d

    def grad_norm(self, metric: np.ndarray | None) -> Callable[[np.ndarray], float]:
        """The norm of an original gradient ``g`` that ``gtol`` is measured in."""
        if metric is None or self.stop == "euclidean":
            return lambda g: float(np.linalg.norm(g))
        inverse = 1.0 / metric
        return lambda g: float(np.sqrt(g @ (inverse * g)))

    def describe(self) -> str:
        if not self.active:
            return "none"
        return "diag" if not self.mix else f"diag (mixed {self.mix:g} with the identity)"


DIAG = Preconditioner()
NONE = Preconditioner("none")


class ScaledObjective:
    """``F~(v) = F(s * v)`` with ``s = D^(-1/2)``: an :class:`ObjectiveOracle` over the
    oracle of ``F`` (see the module docstring)."""

    def __init__(self, oracle: ObjectiveOracle, metric: np.ndarray):
        self.oracle = oracle
        self.n_features = oracle.n_features
        self.s = 1.0 / np.sqrt(np.asarray(metric, dtype=np.float64))

    def to_w(self, v: np.ndarray) -> np.ndarray:
        return self.s * v

    def to_v(self, w: np.ndarray) -> np.ndarray:
        return np.asarray(w, dtype=np.float64) / self.s

    def value_grad(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = self.oracle.value_grad(self.to_w(v))
        return f, self.s * g

    def set_direction(self, p: np.ndarray) -> np.ndarray | None:
        applied = self.oracle.set_direction(self.to_w(p))
        return None if applied is None else self.to_v(applied)

    def line_values(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.oracle.line_values(alphas)  # w + a s p: the same step sizes

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        f, g = self.oracle.step(alpha)
        return f, self.s * g

    @property
    def step_slope(self) -> float | None:
        return getattr(self.oracle, "step_slope", None)  # the same line: the same slope

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        return self.s * self.oracle.hess_vec(self.to_w(v))


def solve(
    oracle: ObjectiveOracle,
    solver: str = "lbfgs",
    metric: np.ndarray | None = None,
    w0: np.ndarray | None = None,
    options: LbfgsOptions | None = None,
    callback: Callable[[IterationRecord, np.ndarray], bool | None] | None = None,
    stop: str = "euclidean",
) -> SolveResult:
    """Minimize with ``solver`` (lbfgs | gd | tron) in the metric ``D`` (None: the
    identity). ``callback`` and the result see ``w``, never the scaled variables;
    gradient norms (and ``gtol``) are measured as ``stop`` says (module docstring)."""
    opt = options or LbfgsOptions()
    if metric is None:
        target, w_of, v0 = oracle, (lambda v: v), w0
        stop_norm = None
    else:
        target = ScaledObjective(oracle, metric)
        w_of = target.to_w
        v0 = None if w0 is None else target.to_v(w0)
        # the solver sees g~ = s g: the original gradient is g~ / s
        s = target.s
        stop_norm = (lambda gv: float(np.linalg.norm(gv / s))) if stop == "euclidean" else None
    opt = dataclasses.replace(opt, stop_norm=stop_norm)
    inner = None if callback is None else (lambda rec, v: callback(rec, w_of(v)))
    if solver == "tron":
        result = tron(target, w0=v0, gtol=opt.gtol, max_iter=opt.max_iter, callback=inner,
                      reference_grad_norm=opt.reference_grad_norm, stop_norm=stop_norm,
                      f_noise=opt.f_noise)
    elif solver in ("lbfgs", "gd"):
        changes = {"memory": 0} if solver == "gd" else {}
        if metric is not None:
            changes["unit_first_step"] = True
        opt = dataclasses.replace(opt, **changes)
        result = lbfgs(target, w0=v0, options=opt, callback=inner)
    else:
        raise ConfigError(f"unknown solver {solver!r}; known: lbfgs, gd, tron")
    result.w = w_of(result.w)
    return result
