"""The planner's vocabulary: a geo-distributed plan (:class:`GeoVariant`), the training
job and how often it runs (:class:`Workload`), one plan's prediction
(:class:`Estimate`) and the plan of them all (:class:`Plan`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from geodml.algorithms.defaults import DEFAULT_GTOL
from geodml.errors import ConfigError
from geodml.federation import CompressionConfig

PRIVATE_METHODS = frozenset({"dp-gd"})  # methods that release only noisy sums

Optimize = Literal["usd", "bytes", "seconds"]
QUANTITIES = ("wan_bytes", "seconds", "usd", "workload_bytes", "workload_seconds",
              "workload_usd")
Calibrate = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class GeoVariant:
    """A geo-distributed plan: a method, its compression, dense or support-restricted.

    ``compress_up`` / ``compress_down`` are JSON compression specs (or None);
    ``restrict_to_support`` None restricts vectors wherever sites share their support.
    """

    method: str
    compress_up: str | None = None
    compress_down: str | None = None
    restrict_to_support: bool | None = None
    params: tuple[tuple[str, object], ...] = ()
    label: str = ""  # how reports name the compression, e.g. "float16"
    secure: bool = False  # secure aggregation: dense, 8-byte masked sums up

    @property
    def name(self) -> str:
        parts = [self.method]
        if self.label:
            parts.append(self.label)
        if self.restrict_to_support is False and not self.secure:
            parts.append("dense")
        if self.secure:
            parts.append("secure")
        return " ".join(parts)

    def secure_aggregation(self):
        from geodml.federation import SecureAggregation

        return SecureAggregation() if self.secure else None

    def compression(self, full_precision_at: float = 1e-3) -> CompressionConfig | None:
        if not (self.compress_up or self.compress_down):
            return None
        from geodml.job.compression import AdaptivePrecision

        return CompressionConfig(up=self.compress_up, down=self.compress_down,
                                 precision=AdaptivePrecision(threshold=full_precision_at))

    def key(self) -> dict:
        key = {"method": self.method, "up": self.compress_up, "down": self.compress_down,
               "restrict": self.restrict_to_support, "params": list(self.params)}
        return {**key, "secure": True} if self.secure else key


@dataclass(frozen=True)
class Workload:
    """The training job and how often it runs."""

    loss: str = "logistic"
    lam: float | None = None  # None: 1 / (all rows)
    gtol: float = DEFAULT_GTOL
    runs_per_snapshot: int = 1  # J: e.g. a hyper-parameter sweep per snapshot
    days: int = 1  # D: one snapshot per day
    growth_per_day: float = 0.0  # g: new rows per day, as a share of the first day's

    def __post_init__(self) -> None:
        checks = [("runs_per_snapshot", self.runs_per_snapshot >= 1, ">= 1"),
                  ("days", self.days >= 1, ">= 1"),
                  ("growth_per_day", self.growth_per_day >= 0, ">= 0"),
                  ("gtol", 0 < self.gtol < 1, "in (0, 1)"),
                  ("lam", self.lam is None or (math.isfinite(self.lam) and self.lam >= 0),
                   "finite and >= 0")]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"workload: {name} must be {rule}, got {getattr(self, name)}")

    @property
    def runs(self) -> int:
        return self.runs_per_snapshot * self.days

    @property
    def copy_factor(self) -> float:
        """Bytes copied over the horizon, in units of the first snapshot."""
        return 1.0 + self.growth_per_day * (self.days - 1)


@dataclass
class Estimate:
    """One plan's prediction: one run (``wan_bytes``, ``seconds``, ``usd``, ``per_link``)
    and the whole workload (``workload_*``)."""

    plan: str
    kind: Literal["centralized", "geo"]
    permitted: bool
    wan_bytes: int
    seconds: float
    usd: float
    workload_bytes: int
    workload_seconds: float
    workload_usd: float
    basis: str  # where the rounds (or export size) come from
    why_not: str = ""  # why the plan is not permitted
    rounds: int = 0
    vector_rounds: float = 0.0
    calibration_wan_bytes: int = 0  # what planning this plan cost: the calibration's
    calibration_seconds: float = 0.0  # WAN bytes and modeled seconds (0: none was run)
    per_link: dict[str, int] = field(default_factory=dict)
    variant: dict | None = None
    privacy: dict | None = None  # a private plan: each site's noise and budget, its cost
    # (low, high) of a predicted quantity ("wan_bytes", "seconds", "usd" and their
    # "workload_" totals); absent: exact (the point); high = inf: a lower bound
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def range_of(self, quantity: str) -> tuple[float, float]:
        value = float(getattr(self, quantity))
        return self.ranges.get(quantity, (value, value))

    def with_ranges(self, factors: tuple[float, float], quantities=QUANTITIES) -> Estimate:
        """The same estimate with each of ``quantities`` spanning (low, high) multiples of
        its point."""
        for q in quantities:
            value = float(getattr(self, q))
            self.ranges[q] = (value * factors[0], value * factors[1])
        return self


@dataclass
class Plan:
    """Every plan's estimate and the recommendation: ``recommended`` is the permitted
    plan the point estimates favour; ``decided`` says whether its range on the
    optimized quantity lies below every other permitted plan's (else ``reason`` names
    the cheaper plan under each end)."""

    estimates: list[Estimate]
    recommended: str | None
    reason: str
    workload: Workload
    optimize: str
    sites: list[dict]
    decided: bool = True

    def estimate(self, plan: str) -> Estimate:
        for e in self.estimates:
            if e.plan == plan:
                return e
        raise KeyError(plan)

    def to_dict(self) -> dict:
        return {"recommended": self.recommended, "decided": self.decided,
                "reason": self.reason, "optimize": self.optimize,
                "workload": asdict(self.workload), "sites": self.sites,
                "estimates": [_finite(asdict(e)) for e in self.estimates]}


def _finite(estimate: dict) -> dict:
    """JSON has no infinity: an unbounded high end is written as None."""
    estimate["ranges"] = {q: [lo, None if math.isinf(hi) else hi]
                          for q, (lo, hi) in estimate["ranges"].items()}
    return estimate
