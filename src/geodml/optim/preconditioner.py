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

``kind = "auto"`` chooses between the two before the run (:func:`choose`): L-BFGS
solves one DC's own problem ``(1/n_k) L_k(w) + (lambda/2)||w||^2`` from zero to
``||g|| <= PROBE_GTOL ||g_0||`` in ``D_k`` (that DC's diagonal), then in the identity
with at most ``1/PROBE_MARGIN`` of the diagonal's iterations; the identity is chosen
only when it gets there. The DC's rows stand in for all rows: SQM L-BFGS's iterates
are the centralized solver's, and on every dataset measured the winner on the home
DC's rows was the winner on the pooled rows (covtype 34 against 48 iterations: the
identity; iPinYou 20 against 7, the CTR generator 81 against 18 at 2^20: the diagonal;
w8a 18 against 19: a tie, the diagonal; BENCHMARKS.md).
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

KINDS = ("diag", "none", "auto")
STOPS = ("euclidean", "metric")
FLOOR = 1e-12  # D_j >= FLOOR * max(D): features no row touches, with lambda = 0
PROBE_GTOL = 1e-3  # auto: the probe solves' relative gradient-norm tolerance
PROBE_MAX_ITER = 60  # auto: the diagonal's probe solve stops here at the latest
PROBE_MARGIN = 1.2  # auto: the identity must need this many times fewer iterations


@dataclass(frozen=True)
class Preconditioner:
    """Which metric the exact methods solve in: ``diag`` (the Hessian's diagonal at
    the starting point, mixed with its mean by ``mix``), ``none`` (the identity) or
    ``auto`` (one of the two by a probe before the run, :func:`choose`; until
    :meth:`resolved`, ``auto`` acts as ``diag``). ``note`` says how it was chosen."""

    kind: str = "diag"
    mix: float = 0.0
    stop: str = "euclidean"  # the norm of the gtol test: see the module docstring
    note: str = ""

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

    def resolved(self, kind: str, note: str) -> Preconditioner:
        """``auto`` settled on ``kind``, with the reason."""
        return dataclasses.replace(self, kind=kind, note=note)

    def describe(self) -> str:
        name = "none" if not self.active else "auto" if self.kind == "auto" else (
            "diag" if not self.mix else f"diag (mixed {self.mix:g} with the identity)")
        return f"{name} ({self.note})" if self.note else name


@dataclass(frozen=True)
class Probe:
    """What :func:`choose` measured: L-BFGS iterations to ``PROBE_GTOL`` in the
    diagonal and in the identity (None: not within ``1/PROBE_MARGIN`` of the
    diagonal's)."""

    kind: str
    diag_iterations: int
    none_iterations: int | None

    def describe(self, where: str) -> str:
        other = (f"the identity {self.none_iterations}" if self.none_iterations is not None
                 else f"the identity not within {int(self.diag_iterations / PROBE_MARGIN)}")
        return (f"auto: L-BFGS to gtol {PROBE_GTOL:g} on {where}: the diagonal "
                f"{self.diag_iterations} iterations, {other}")


def probe_on(objective: ObjectiveOracle, metric: np.ndarray) -> Probe:
    """:func:`choose` over one objective (one DC's rows) whose diagonal is ``metric``."""
    def iterations_in(diagonal: bool, max_iter: int) -> tuple[int, bool]:
        result = solve(objective, "lbfgs", metric if diagonal else None, None,
                       LbfgsOptions(gtol=PROBE_GTOL, max_iter=max_iter))
        return result.iterations, result.converged

    return choose(iterations_in)


def choose(iterations_in: Callable[[bool, int], tuple[int, bool]]) -> Probe:
    """``auto``'s choice. ``iterations_in(diagonal, max_iter)`` runs the probe solve (in
    the diagonal metric or the identity, at most ``max_iter`` iterations) and returns
    its iterations and whether it reached ``PROBE_GTOL``. The identity wins only by
    converging within ``1/PROBE_MARGIN`` of the diagonal's iterations (ties and
    near-ties keep the diagonal, which is what keeps 2^20 CTR rounds flat)."""
    diag_iterations, _ = iterations_in(True, PROBE_MAX_ITER)
    cap = int(diag_iterations / PROBE_MARGIN)
    if cap < 1:
        return Probe("diag", diag_iterations, None)
    none_iterations, converged = iterations_in(False, cap)
    if converged and none_iterations <= cap:
        return Probe("none", diag_iterations, none_iterations)
    return Probe("diag", diag_iterations, None)


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
