"""The one stop rule every method runs through.

After each recorded row (one outer iteration) a method asks :meth:`StopRule.check`
why to stop, if at all; the first test that fires names the reason:

1. **diverged**: the objective is not finite, or exceeds ``blowup * max(1, |F_0|)``
   (watched only when the run's first objective was finite: dp-gd releases none);
2. **gtol**: ``||g_k|| <= gtol * ||g_ref||``, the relative gradient norm, for methods
   that see exact gradients (rows carry ``grad_norm``). ``g_ref`` is the spec's
   ``grad_reference`` (a warm start measures against the run from zero) or the first
   row's gradient norm; a zero gradient stops too;
3. **tol**: relative suboptimality ``(F_k - F*) / |F*| <= tol`` (needs ``F*``);
4. **validation**: the held-out log loss ``V_k`` has not improved on the best so far,
   ``V_k >= (1 - threshold) * min_{j<k} V_j``, for ``patience`` rows in a row
   (rows without a validation loss do not count);
5. **max_wan_bytes**: the WAN byte budget is spent;
6. **max_rounds**: the row's iteration reached ``max_rounds``.

Reasons 2-4 mean the run converged (to the optimum, or to statistical precision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from geodml.errors import ConfigError
from geodml.job.validation import VALIDATION_METRIC

if TYPE_CHECKING:
    from geodml.algorithms.record import RoundRow

GTOL_REASON = "relative gradient norm below gtol"
VALIDATION_REASON = "validation loss stopped improving"
_CONVERGED = ("relative gradient", "gradient is zero", "relative suboptimality",
              VALIDATION_REASON)


#: rows without a threshold's gain before ``--stop validation`` stops. The held-out loss
#: gains in bumps: on the demo's data (4 x 1M rows, SQM L-BFGS) rows gaining 4e-5, 3e-5,
#: 6e-5 relative came before rows gaining 1.2e-4 and 1.4e-4, so patience 1 and 2 stopped
#: 4 and 3 vector rounds before the held-out loss stopped improving, 3 stopped 2 before it
#: with 16% fewer bytes than gtol 1e-3 (BENCHMARKS.md, "`--stop validation`'s patience")
DEFAULT_PATIENCE = 3


@dataclass(frozen=True)
class ValidationStop:
    """Stop once the held-out loss has not improved by a relative ``threshold`` for
    ``patience`` consecutive rows."""

    patience: int = DEFAULT_PATIENCE
    threshold: float = 1e-4

    def __post_init__(self) -> None:
        if not 1 <= self.patience <= 1000:
            raise ConfigError(f"validation patience must be in 1..1000, got {self.patience}")
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"validation threshold must be in [0, 1), got {self.threshold}")


@dataclass
class StopRule:
    """See the module docstring; ``gtol=None`` for methods that see no exact gradient.
    A run's rule comes from :meth:`geodml.algorithms.spec.TrainSpec.stop_rule`."""

    gtol: float | None = None
    tol: float | None = None
    max_rounds: int | None = None
    max_wan_bytes: int | None = None
    reference: float | None = None  # ||g_ref|| (None: the first row's gradient norm)
    validation: ValidationStop | None = None
    blowup: float = 1e6
    f0: float | None = field(default=None, init=False)
    best_validation: float = field(default=math.inf, init=False)
    best_row: int | None = field(default=None, init=False)  # iteration of the best V
    stale: int = field(default=0, init=False)
    fired: str | None = field(default=None, init=False)  # the first reason check gave

    def check(self, row: RoundRow) -> str | None:
        """Why to stop after ``row``, or None (the first reason is kept in ``fired``)."""
        reason = self._why(row)
        if self.fired is None:
            self.fired = reason
        return reason

    def outcome(self, solver_reason: str, solver_converged: bool) -> tuple[str, bool]:
        """A solver run under this rule (its callback calling :meth:`check`): the rule's
        reason when it stopped the solver, else the solver's own; and whether it
        converged."""
        if self.fired is not None:
            return self.fired, self.converged(self.fired)
        return solver_reason, solver_converged

    def _why(self, row: RoundRow) -> str | None:
        if self.f0 is None:
            self.f0 = row.objective
        if math.isfinite(self.f0) and (not math.isfinite(row.objective) or (
                row.objective > self.blowup * max(1.0, abs(self.f0)))):
            return "diverged: the objective is not finite or exploded"
        if self.gtol is not None and row.grad_norm is not None:
            if self.reference is None:
                self.reference = row.grad_norm
            if row.grad_norm == 0.0:
                return "gradient is zero"
            if row.grad_norm <= self.gtol * self.reference:
                return GTOL_REASON
        if self.tol is not None and row.suboptimality is not None and (
                row.suboptimality <= self.tol):
            return f"relative suboptimality below {self.tol:g}"
        if self.validation is not None and (reason := self._validation(row)):
            return reason
        if self.max_wan_bytes is not None and row.wan_bytes >= self.max_wan_bytes:
            return f"WAN byte budget of {self.max_wan_bytes} reached"
        if self.max_rounds is not None and row.iteration >= self.max_rounds:
            return f"max_rounds ({self.max_rounds}) reached"
        return None

    def _validation(self, row: RoundRow) -> str | None:
        v = row.metrics.get(VALIDATION_METRIC)
        if v is None or not math.isfinite(v):
            return None
        if v < (1.0 - self.validation.threshold) * self.best_validation:
            self.best_validation, self.best_row, self.stale = v, row.iteration, 0
            return None
        if v < self.best_validation:  # below the threshold's gain: best, but stale
            self.best_validation, self.best_row = v, row.iteration
        self.stale += 1
        if self.stale >= self.validation.patience:
            return (f"{VALIDATION_REASON} (best {self.best_validation:.6g} at iteration "
                    f"{self.best_row}; patience {self.validation.patience})")
        return None

    @staticmethod
    def converged(reason: str | None) -> bool:
        """Whether ``reason`` (this rule's or a solver's) means the run converged."""
        return bool(reason) and reason.startswith(_CONVERGED)
