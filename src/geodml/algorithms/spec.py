"""What a training run is asked to do (:class:`TrainSpec`), apart from the methods that
run it, so that every method module can name it without importing the registry."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geodml.algorithms.defaults import DEFAULT_GTOL, DEFAULT_MAX_ROUNDS
from geodml.algorithms.stop import StopRule, ValidationStop
from geodml.federation import Federation
from geodml.optim.preconditioner import DIAG, Preconditioner


@dataclass
class TrainSpec:
    loss: str = "logistic"
    lam: float | None = None  # default 1/N
    tol: float | None = None
    gtol: float = DEFAULT_GTOL
    max_rounds: int = DEFAULT_MAX_ROUNDS
    max_wan_bytes: int | None = None
    w0: np.ndarray | None = None
    grad_reference: float | None = None  # gtol relative to this norm (warm starts)
    params: dict = field(default_factory=dict)
    # the exact methods' metric (sqm-*, fadl, fadl-subspace; the others ignore it)
    preconditioner: Preconditioner = DIAG
    # start sqm-* / fadl / fadl-subspace from the sites' curvature-weighted solutions
    # (geodml.algorithms.warm_start); ignored when w0 is given
    warm_start: bool = False
    # stop when the sites' held-out loss stops improving (the federation must be
    # prepared with a validation share; see geodml.algorithms.stop)
    validation: ValidationStop | None = None

    def stop_rule(self, gtol: bool = True, max_rounds: int | None = None) -> StopRule:
        """The run's :class:`StopRule`: ``gtol=False`` for methods that see no exact
        gradient; ``max_rounds`` where the method counts its rounds itself (dp-gd)."""
        return StopRule(self.gtol if gtol else None, self.tol,
                        self.max_rounds if max_rounds is None else max_rounds,
                        self.max_wan_bytes, self.grad_reference, self.validation)

    def lam_for(self, fed: Federation) -> float:
        """``lam``, or ``1/N`` with ``N`` every row the sites hold (held-out rows and
        rows outside a calibration sample included, so that neither changes the
        regularization of the model)."""
        return 1.0 / fed.site_rows if self.lam is None else float(self.lam)
