"""The run record: what every method reports, round by round.

A record row is written after each outer iteration: the objective, relative
suboptimality ``(F(w) - F*) / |F*|`` when a reference optimum ``F*`` is known,
the gradient norm when the method has it, cumulative WAN bytes (total, and per
directed link in ``links``), cumulative rounds (calls to every site) and *vector
rounds* (rounds that moved a model-sized vector each way), wall time, and test
metrics when a test set was given, and the sites' held-out metrics (``val_log_loss``,
``val_auc``) when the run holds rows out. Rows go to a JSON-lines file as they are
made, so an interrupted run keeps what it did.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geodml.federation import Federation
from geodml.job.validation import VALIDATION_METRIC


@dataclass
class RoundRow:
    iteration: int
    objective: float
    suboptimality: float | None
    grad_norm: float | None
    wan_bytes: int
    total_bytes: int
    rounds: int
    vector_rounds: float
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    links: dict[str, int] = field(default_factory=dict)  # cumulative bytes per link


@dataclass
class RunResult:
    method: str
    w: np.ndarray
    objective: float
    converged: bool
    reason: str
    rows: list[RoundRow]
    meter: dict
    info: dict = field(default_factory=dict)

    @property
    def wan_bytes(self) -> int:
        return int(self.meter.get("wan_bytes", 0))

    def first_reaching(self, tolerance: float) -> RoundRow | None:
        """The first row whose relative suboptimality is at most ``tolerance``."""
        for row in self.rows:
            if row.suboptimality is not None and row.suboptimality <= tolerance:
                return row
        return None

    def summary(self) -> dict:
        last = self.rows[-1] if self.rows else None
        return {"method": self.method, "objective": self.objective,
                "converged": self.converged, "reason": self.reason,
                "iterations": last.iteration if last else 0,
                "rounds": last.rounds if last else 0,
                "vector_rounds": last.vector_rounds if last else 0,
                "wan_bytes": self.wan_bytes, "seconds": last.seconds if last else 0.0,
                **({f"test_{k}": v for k, v in last.metrics.items()} if last else {}),
                **self.info}


class RunRecorder:
    """Collects :class:`RoundRow` s from a method as it runs."""

    def __init__(self, federation: Federation | None, f_star: float | None = None,
                 path: str | Path | None = None,
                 evaluate: Callable[[np.ndarray], dict[str, float]] | None = None,
                 evaluate_every: int = 1,
                 on_row: Callable[[RoundRow], None] | None = None,
                 append: bool = False, tags: dict[str, float] | None = None):
        """``path``: write each row as a JSON line (``append``: after what the file
        holds, e.g. the earlier runs of a lambda path); ``tags``: metrics every row
        carries (e.g. ``{"lam": 1e-5}``)."""
        self.fed = federation
        self.f_star = f_star
        self.evaluate = evaluate
        self.evaluate_every = max(1, evaluate_every)
        self.on_row = on_row  # e.g. a progress display
        self.rows: list[RoundRow] = []
        # (validation loss, iteration, objective, w) of the best held-out row so far
        self.best_validation: tuple[float, int, float, np.ndarray | None] = (
            math.inf, -1, math.nan, None)
        self.start = time.perf_counter()
        self.path = Path(path) if path else None
        self.tags = dict(tags or {})
        if self.path and not append:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def add(self, iteration: int, objective: float, w: np.ndarray,
            grad_norm: float | None = None) -> RoundRow:
        sub = None
        if self.f_star is not None:
            sub = max(0.0, (objective - self.f_star) / abs(self.f_star))
        metrics = dict(self.tags)
        if self.evaluate is not None and iteration % self.evaluate_every == 0:
            metrics.update(self.evaluate(w))
        fed = self.fed
        if fed is not None:  # the sites' held-out metrics at w (geodml.job.validation)
            metrics.update(fed.take_validation())
            v = metrics.get(VALIDATION_METRIC)
            if v is not None and v < self.best_validation[0]:
                self.best_validation = (v, iteration, objective, np.array(w, copy=True))
        snapshot = fed.meter.snapshot() if fed else {"links": {}, "wan_bytes": 0}
        row = RoundRow(
            iteration, float(objective), sub, grad_norm, snapshot["wan_bytes"],
            sum(v["bytes"] for v in snapshot["links"].values()),
            fed.rounds if fed else 0, fed.vector_rounds if fed else 0.0,
            time.perf_counter() - self.start, metrics,
            {name: v["bytes"] for name, v in snapshot["links"].items()})
        self.rows.append(row)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(asdict(row)) + "\n")
        if self.on_row is not None:
            self.on_row(row)
        return row
