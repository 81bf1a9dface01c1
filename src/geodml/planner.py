r"""The planner: should these DCs centralize or train geo-distributed, and at what cost?

For every plan the planner predicts the WAN bytes, the modeled time and the egress
dollars of one training run over the deployment's links (:mod:`geodml.wan`), and of a
*workload* of retraining: ``J`` runs per data snapshot, one snapshot a day for ``D``
days, the data growing by a share ``g`` of the first day's rows every day.

Centralizing
------------
Each site's ``Describe`` reply carries ``export_bytes_estimate``: the size of its
Export (Arrow IPC, zstd), measured by encoding a sample of its rows. The first
snapshot copies everything home; each later day copies only the new rows::

    B_central = sum_{s != home} E_s * (1 + g (D - 1))

Training then runs at home ``J D`` times; one run takes about ``n_eval`` evaluations of
value and gradient over all rows (``n_eval`` from the SQM L-BFGS calibration, which
runs the same L-BFGS over exact sums, else :data:`DEFAULT_CENTRAL_EVALUATIONS`), each
costing ``nnz / r`` seconds, where ``r`` is this machine's measured value+gradient
throughput (nonzeros per second, :func:`home_throughput`): the coordinator runs in
the home DC, on the kind of machine that would train there.
A site whose policy forbids raw export makes the plan *not permitted*; it is still
priced, as "what it would cost with an exception".

Training geo-distributed
------------------------
A run's bytes are ``sum over rounds of the bytes of the round``: per round they follow
from the model dimension (or each site's support), the wire format and the method;
the number of rounds to the tolerance is what must be learned. The planner takes it

1. from the calibration store: the recorded rounds of the same method on the same
   data (the same sites' data fingerprints, loss, lambda, tolerance, compression):
   ``geodml compare`` records every real run there, so retraining plans are exact;
2. else from a *calibration run*: the method itself, over the same sites and wire,
   on an evenly spaced sample of a share ``f`` of each site's rows, with
   :math:`\lambda_f = \lambda / f^{3/4}` (:data:`LAMBDA_EXPONENT`). Support restriction
   keeps the full data's support, so every vector has its full-run size and the
   metered bytes of the calibration are the prediction. (With the same
   :math:`\lambda` a small sample is less regularized relative to its rows and needs
   more rounds; :math:`f^{-3/4}` matched the full run's rounds on the regional CTR
   data where :math:`f^{-1/2}` overshot by a third and :math:`f^{-1}` undershot:
   BENCHMARKS.md.) A
   calibration moves about as many WAN bytes as the run it predicts; it is reported
   as the plan's calibration cost;
3. else, when the plan's *lower bound* (:data:`MIN_VECTOR_ROUNDS` rounds moving one
   model-sized vector each way) already costs more than a permitted centralized plan
   in the workload's dollars or bytes (whichever ``optimize`` names; never for
   seconds, whose centralized side is itself an estimate), no calibration is run and
   the bound is reported (``calibrate="auto"``).

Modeled time per round adds the slowest site's call time measured in the
calibration, its compute scaled by ``1/f``: ``o + (c - o) / f`` with ``o`` the quickest
call of the calibration (the fixed overhead of a call). For the workload, a geo plan repeats its run
``J D`` times: ``B_geo = J D B_run`` (cold starts; warm starts from yesterday's model
usually need fewer rounds, so this is conservative).

Policies
--------
A geo plan that some site's policy refuses is *not permitted*, named with the site and
the rule, and is priced by its lower bound without a calibration run (the site would
refuse it): an unmasked plan where a site requires secure aggregation, a non-private
plan where a site has a differential-privacy budget, a private plan where one has none.
Secure-aggregation plans are calibrated under masking, so their bytes include the
dense 8-byte masked sums; their accuracy is the unmasked one (fixed point to 2^-44).

Private plans (``dp-gd``) are never calibrated on the sites, since every release
spends budget. Their rounds are fixed (``rounds``), so their bytes come from a *twin*:
the same method over in-process sites with the real names, feature spaces and budgets
but a handful of random rows each, run for :data:`TWIN_ROUNDS` rounds through the same
wire, its last gradient round repeated for the rest (every round moves the same dense
vectors). Compute per round is a value+gradient pass over the site's nonzeros at this
machine's throughput. Each site's noise multiplier is calibrated now against its
remaining budget, exactly as the run will, and the objective its noise costs is
estimated by :mod:`geodml.privacy.noise_cost`. A budget that cannot pay for the rounds, or a
workload of more than one run (``dp-gd`` spends what a site has left in one run),
makes the plan not permitted.

The recommendation is the permitted plan with the lowest workload dollars (or
bytes, or modeled time: ``optimize``); ties go to fewer bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from geodml.algorithms.defaults import DEFAULT_GTOL
from geodml.compression import wire_format_for
from geodml.deployment import Deployment
from geodml.errors import ConfigError, GeodmlError
from geodml.federation.base import CompressionConfig, SiteInfo
from geodml.wan import model_centralized, model_run, round_seconds
from geodml.wire.codec import WireFormat

MIN_VECTOR_ROUNDS = 5  # no method reached gtol 1e-3 in fewer on any benchmark (BENCHMARKS.md)
DEFAULT_CENTRAL_EVALUATIONS = 110  # L-BFGS to gtol 1e-3 on the benchmarks: 60-110
DEFAULT_CALIBRATION_ROWS = 50_000
LAMBDA_EXPONENT = 0.75  # calibration on a share f of the rows uses lambda / f**0.75
SESSION_BYTES = 400  # Prepare (down and up), Export's request and Close of one site
PRIVATE_METHODS = frozenset({"dp-gd"})  # methods that release only noisy sums
TWIN_ROUNDS = 3  # rounds a private plan's twin runs; the rest repeat its last round
TWIN_ROWS = 16  # random rows per twin site

Optimize = Literal["usd", "bytes", "seconds"]
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
        from geodml.federation.base import SecureAggregation

        return SecureAggregation() if self.secure else None

    def compression(self, full_precision_at: float = 1e-3) -> CompressionConfig | None:
        if not (self.compress_up or self.compress_down):
            return None
        from geodml.compression import AdaptivePrecision

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
    calibration_wan_bytes: int = 0
    per_link: dict[str, int] = field(default_factory=dict)
    variant: dict | None = None
    privacy: dict | None = None  # a private plan: each site's noise and budget, its cost


@dataclass
class Plan:
    estimates: list[Estimate]
    recommended: str | None
    reason: str
    workload: Workload
    optimize: str
    sites: list[dict]

    def estimate(self, plan: str) -> Estimate:
        for e in self.estimates:
            if e.plan == plan:
                return e
        raise KeyError(plan)

    def to_dict(self) -> dict:
        return {"recommended": self.recommended, "reason": self.reason,
                "optimize": self.optimize, "workload": asdict(self.workload),
                "sites": self.sites, "estimates": [asdict(e) for e in self.estimates]}


class CalibrationStore:
    """Recorded rounds and bytes of real runs, keyed by data and job (a JSON file)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    @staticmethod
    def key(sites: Sequence[SiteInfo], workload: Workload, lam: float,
            variant: GeoVariant) -> str:
        blob = json.dumps({"data": sorted((s.name, s.data_fingerprint) for s in sites),
                           "loss": workload.loss, "lam": lam, "gtol": workload.gtol,
                           **variant.key()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def _load(self) -> dict:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{self.path}: unreadable calibration store ({e}); delete it "
                              "to start afresh") from None

    def get(self, key: str) -> dict | None:
        return self._load().get(key)

    def put(self, key: str, record: dict) -> None:
        if self.path is None:
            return
        data = self._load()
        data[key] = {**record, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.path)


def _value_bytes(spec: str | None) -> int:
    """Bytes per value on the wire of a compression spec (the codec's own format for it;
    float64 without one)."""
    return wire_format_for(spec).itemsize if spec else WireFormat().itemsize


def _bound_links(sites: Sequence[SiteInfo], home: str, variant: GeoVariant) -> dict[str, int]:
    """Bytes per link of :data:`MIN_VECTOR_ROUNDS` rounds moving one model-sized vector
    (or the site's support) each way to and from every site outside the home DC."""
    down, up = _value_bytes(variant.compress_down), _value_bytes(variant.compress_up)
    if variant.secure:  # masked sums: 8-byte ring elements
        up = 8
    links: dict[str, int] = {}
    for s in sites:
        if s.name == home:
            continue
        restrict = (variant.restrict_to_support is not False and s.support_size > 0
                    and not variant.secure and variant.method not in PRIVATE_METHODS)
        dim = s.support_size if restrict else s.features
        links[f"{home}->{s.name}"] = MIN_VECTOR_ROUNDS * dim * down
        links[f"{s.name}->{home}"] = MIN_VECTOR_ROUNDS * dim * up
    return links


def lower_bound_bytes(sites: Sequence[SiteInfo], home: str, variant: GeoVariant) -> int:
    """WAN bytes of :data:`MIN_VECTOR_ROUNDS` rounds moving one model-sized vector each way
    to and from every site outside the home DC: no method needs fewer."""
    return sum(_bound_links(sites, home, variant).values())


def _site_rows(sites: Sequence[SiteInfo]) -> dict[str, dict]:
    return [{"site": s.name, "region": s.region, "rows": s.rows, "nnz": s.nnz,
             "features": s.features, "support": s.support_size,
             "raw_export_allowed": s.raw_export_allowed,
             "export_bytes_estimate": s.export_bytes_estimate} for s in sites]


def calibration_fraction(sites: Sequence[SiteInfo], rows: int) -> float:
    """The share of rows a calibration samples: ``rows`` from the median site, at most all."""
    counts = sorted(s.rows for s in sites)
    median = counts[len(counts) // 2]
    return min(1.0, rows / max(1, median))


def calibrate(open_federation, variant: GeoVariant, workload: Workload, lam: float,
              fraction: float, deployment: Deployment) -> dict:
    """Run ``variant`` on a ``fraction`` sample of every site's rows; return its metered
    rounds, bytes per link and modeled seconds (compute scaled by ``1 / fraction``)."""
    from geodml.algorithms.record import RunRecorder
    from geodml.algorithms.registry import TrainSpec, train
    from geodml.federation.meter import read_audit

    with tempfile.TemporaryDirectory(prefix="geodml-calibrate-") as scratch:
        audit = str(Path(scratch) / "audit.jsonl")
        with open_federation(compression=variant.compression(), sample_fraction=fraction,
                             audit=audit, secure=variant.secure_aggregation()) as fed:
            spec = TrainSpec(loss=workload.loss, lam=lam / fraction**LAMBDA_EXPONENT,
                             gtol=workload.gtol, params=dict(variant.params))
            result = train(fed, variant.method, spec, RunRecorder(fed))
            fed.close_sessions()
            links = {name: v["bytes"] for name, v in fed.meter.snapshot()["links"].items()
                     if v["wan"]}
        records = read_audit(audit)
    from geodml.wan import call_seconds_from_audit

    # a call's time is a fixed overhead o (the quickest call seen) plus compute over the
    # sample's rows, which the full run does on 1/f times as many
    calls = call_seconds_from_audit(records)
    overhead = min((c for c in calls if c > 0), default=0.0)
    compute = [overhead + max(0.0, c - overhead) / fraction for c in calls]
    modeled = model_run(records, deployment, compute)
    last = result.rows[-1]
    return {"rounds": last.rounds, "vector_rounds": last.vector_rounds,
            "iterations": last.iteration, "evaluations": count_calls(records, "Evaluate"),
            "links": links, "wan_bytes": sum(links.values()), "seconds": modeled.seconds,
            "converged": result.converged,
            "fraction": fraction}


def home_throughput(nnz_per_row: float, features: int, rows: int = 100_000,
                    seed: int = 0) -> float:
    """Nonzeros per second of one value+gradient evaluation on this machine, timed on a
    random CSR matrix shaped like the data (best of three)."""
    import numpy as np
    import scipy.sparse as sp

    from geodml.models import get_loss
    from geodml.models.site_sums import SiteSums

    rng = np.random.default_rng(seed)
    per_row = max(1, round(nnz_per_row))
    indices = rng.integers(0, max(1, features), size=rows * per_row).astype(np.int32)
    X = sp.csr_matrix((np.ones(len(indices), np.float32), indices,
                       np.arange(0, len(indices) + 1, per_row)), shape=(rows, max(1, features)))
    sums = SiteSums(X, (rng.random(rows) < 0.2).astype(np.float64), get_loss("logistic"))
    w = rng.normal(0, 0.01, max(1, features))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        sums.evaluate(w)
        best = min(best, time.perf_counter() - t0)
    return X.nnz / max(best, 1e-9)


def count_calls(records: list[dict], call: str) -> int:
    """Rounds of ``call`` in audit records (one round id per round)."""
    return len({r.get("round") for r in records if r.get("call") == call})


def _geo_estimate(variant: GeoVariant, record: dict, basis: str, deployment: Deployment,
                  workload: Workload, calibration_bytes: int = 0,
                  refusals: Sequence[str] = ()) -> Estimate:
    from geodml.wan import egress_usd

    links = {k: int(v) for k, v in record["links"].items()}
    wan = sum(links.values())
    usd = egress_usd(links, deployment)
    seconds = float(record["seconds"])
    return Estimate(variant.name, "geo", not refusals, wan, seconds, usd, wan * workload.runs,
                    seconds * workload.runs, usd * workload.runs, basis,
                    why_not="; ".join(refusals),
                    rounds=int(record.get("rounds", 0)),
                    vector_rounds=float(record.get("vector_rounds", 0.0)),
                    calibration_wan_bytes=calibration_bytes, per_link=links,
                    variant=variant.key())


def _lower_bound_estimate(variant: GeoVariant, sites: Sequence[SiteInfo],
                          deployment: Deployment, workload: Workload,
                          refusals: Sequence[str] = ()) -> Estimate:
    """The bound of :func:`lower_bound_bytes` as an estimate: its links' bytes, and the
    slowest site's path, one round at a time."""
    home = deployment.home
    links = _bound_links(sites, home, variant)
    per_round = {name: nbytes // MIN_VECTOR_ROUNDS for name, nbytes in links.items()}
    record = {"links": links, "rounds": MIN_VECTOR_ROUNDS, "vector_rounds": MIN_VECTOR_ROUNDS,
              "seconds": MIN_VECTOR_ROUNDS * round_seconds(per_round, deployment)}
    why = "not calibrated: refused by policy" if refusals else "cannot beat centralizing"
    return _geo_estimate(variant, record, f"lower bound ({MIN_VECTOR_ROUNDS} vector rounds): "
                         f"{why}", deployment, workload, refusals=refusals)


def policy_refusals(variant: GeoVariant, sites: Sequence[SiteInfo],
                    workload: Workload) -> list[str]:
    """Why the sites' policies (or budgets) refuse ``variant``; empty: it may run."""
    private = variant.method in PRIVATE_METHODS
    out = []
    for s in sites:
        if s.requires_secure_aggregation and not variant.secure:
            out.append(f"site {s.name} sends only masked sums "
                       "(require_secure_aggregation = true)")
        if s.privacy is not None and not private:
            out.append(f"site {s.name} sends only differentially private sums "
                       f"(dp_epsilon = {s.privacy.epsilon:g}): plan dp-gd")
        if s.privacy is None and private:
            out.append(f"site {s.name} has no privacy budget (dp_epsilon, dp_delta): "
                       f"{variant.method} needs one at every site")
    if private and workload.runs > 1:
        out.append(f"{variant.method} spends what every site's budget has left in one run; "
                   f"a workload of {workload.runs} runs cannot be trained privately")
    return out


def _twin_rounds(variant: GeoVariant, sites: Sequence[SiteInfo], home: str,
                 workload: Workload, lam: float, rounds: int) -> tuple[list[dict], list[bool]]:
    """Bytes per link of every round of a private run, and which rounds are gradient
    rounds, from its twin (see the module docstring); every site has a budget."""
    import numpy as np
    import scipy.sparse as sp

    from geodml.algorithms.record import RunRecorder
    from geodml.algorithms.registry import TrainSpec, train
    from geodml.data.dataset import Dataset
    from geodml.federation import AuditLog, Federation
    from geodml.federation.meter import read_audit
    from geodml.federation.transport import InProcessTransport
    from geodml.site.policy import Policy
    from geodml.site.service import SiteService
    from geodml.wan import group_audit, rounds_from_audit

    rng = np.random.default_rng(0)
    services = []
    for s in sites:
        X = sp.random(TWIN_ROWS, s.features, density=min(1.0, 4 / max(1, s.features)),
                      format="csr", random_state=rng, dtype=np.float32)
        data = Dataset(X, (rng.random(TWIN_ROWS) < 0.5).astype(np.float64), s.space)
        services.append(SiteService(s.name, s.region, data, Policy(  # an empty ledger
            dp_epsilon=s.privacy.epsilon, dp_delta=s.privacy.delta)))
    twin = min(rounds, TWIN_ROUNDS)
    params = {**dict(variant.params), "rounds": twin}
    with tempfile.TemporaryDirectory(prefix="geodml-twin-") as scratch:
        audit = str(Path(scratch) / "audit.jsonl")
        with Federation([InProcessTransport(s) for s in services], home,
                        audit=AuditLog(audit), compression=variant.compression(),
                        secure=variant.secure_aggregation()) as fed:
            spec = TrainSpec(loss=workload.loss, lam=lam, params=params)
            train(fed, variant.method, spec, RunRecorder(fed))
            fed.close_sessions()
        records = read_audit(audit)
    per_round = rounds_from_audit(records)
    gradient = [group[0].get("call") == "Evaluate" for group in group_audit(records)]
    last = max(i for i, g in enumerate(gradient) if g)
    extra = rounds - twin
    return (per_round[:last + 1] + [per_round[last]] * extra + per_round[last + 1:],
            gradient[:last + 1] + [True] * extra + gradient[last + 1:])


def _private_estimate(variant: GeoVariant, sites: Sequence[SiteInfo], deployment: Deployment,
                      workload: Workload, lam: float, nnz_per_second: float,
                      refusals: Sequence[str]) -> Estimate:
    """A private plan priced from its twin, with every site's noise and its cost."""
    from geodml.algorithms.dpgd import dp_gd_settings
    from geodml.algorithms.registry import TrainSpec
    from geodml.privacy.dp import calibrate_noise, epsilon_spent
    from geodml.privacy.noise_cost import mean_gradient_noise_std, noise_objective_cost

    rounds, clip, step = dp_gd_settings(dict(variant.params), lam, TrainSpec().max_rounds)
    refusals = list(refusals)
    sigma: dict[str, float] = {}
    privacy_sites = {}
    for s in sites:
        if s.privacy is None:
            continue
        b = s.privacy
        try:
            sigma[s.name] = calibrate_noise(b.epsilon, b.delta, rounds, b.noise_multipliers)
        except GeodmlError as e:
            refusals.append(f"site {s.name}: {e}")
            continue
        privacy_sites[s.name] = {
            "epsilon": b.epsilon, "delta": b.delta, "epsilon_spent_before": b.epsilon_spent,
            "noise_multiplier": sigma[s.name],
            "epsilon_spent_after": epsilon_spent([*b.noise_multipliers,
                                                  *[sigma[s.name]] * rounds], b.delta)}
    n_rows = sum(s.rows for s in sites)
    noise_std = mean_gradient_noise_std(sigma, clip, n_rows)
    cost = noise_objective_cost(sites[0].features, step, rounds, noise_std, lam)
    if all(s.privacy is not None for s in sites):
        per_round, gradient = _twin_rounds(variant, sites, deployment.home, workload, lam,
                                           rounds)
    else:  # refused, and no twin can run it: one dense vector each way per round
        vector = {k: v // MIN_VECTOR_ROUNDS
                  for k, v in _bound_links(sites, deployment.home, variant).items()}
        per_round, gradient = [vector] * rounds, [True] * rounds
    compute = max(s.nnz for s in sites) / max(nnz_per_second, 1e-9)
    modeled = model_run(per_round, deployment, [compute if g else 0.0 for g in gradient])
    record = {"links": {k: v["bytes"] for k, v in modeled.per_link.items()},
              "seconds": modeled.seconds, "rounds": len(per_round),
              "vector_rounds": float(rounds)}
    basis = (f"{rounds} private rounds (fixed); the noise adds ~{cost:.2g} to the "
             "objective (quadratic model; clipping bias not included)")
    estimate = _geo_estimate(variant, record, basis, deployment, workload, refusals=refusals)
    estimate.privacy = {"sites": privacy_sites, "clip": clip, "step": step,
                        "rounds": rounds, "noise_std": noise_std,
                        "noise_objective_cost": cost}
    return estimate


def _central_estimate(sites: Sequence[SiteInfo], deployment: Deployment, workload: Workload,
                      train_seconds: float, basis: str, describe: dict[str, int]) -> Estimate:
    """Export bytes plus the calls around them: Describe (as measured), Prepare and Close
    (:data:`SESSION_BYTES` per site)."""
    exports = {s.name: s.export_bytes_estimate + describe.get(f"{s.name}->{deployment.home}", 0)
               + SESSION_BYTES for s in sites if s.name != deployment.home}
    modeled = model_centralized(exports, deployment, train_seconds)
    refusing = [s.name for s in sites if not s.raw_export_allowed and s.name != deployment.home]
    masked = [s.name for s in sites if s.requires_secure_aggregation]
    reasons = []
    if refusing:
        reasons.append(f"the policy of site {', '.join(refusing)} forbids raw export "
                       "(allow_raw_export = false)")
    if masked:  # such a site refuses every unmasked session, the export's too
        reasons.append(f"site {', '.join(masked)} sends only masked sums "
                       "(require_secure_aggregation = true)")
        refusing += masked
    why = "; ".join(reasons) + "; priced as if granted an exception" if reasons else ""
    copy = modeled.seconds - train_seconds
    factor = workload.copy_factor
    # later days copy only their new rows, and every run trains on the day's data
    mean_rows = 1.0 + workload.growth_per_day * (workload.days - 1) / 2
    return Estimate(
        "centralize", "centralized", not refusing, modeled.wan_bytes, modeled.seconds,
        modeled.usd, int(modeled.wan_bytes * factor),
        copy * factor + train_seconds * mean_rows * workload.runs, modeled.usd * factor,
        basis, why,
        rounds=1, per_link={k: int(v["bytes"]) for k, v in modeled.per_link.items()})


def make_plan(open_federation, deployment: Deployment, variants: Sequence[GeoVariant],
              workload: Workload = Workload(), optimize: Optimize = "usd",
              calibrate_mode: Calibrate = "auto", store: CalibrationStore | None = None,
              calibration_rows: int = DEFAULT_CALIBRATION_ROWS, progress=None) -> Plan:
    """Predict every plan, calibrating geo plans as needed, and recommend one."""
    store = store or CalibrationStore(None)
    say = progress or (lambda _msg: None)
    with open_federation() as fed:
        sites = list(fed.sites.values())
        describe = {k: int(v["bytes"]) for k, v in fed.meter.snapshot()["links"].items()
                    if v["wan"]}
    n_rows = sum(s.rows for s in sites)
    lam = 1.0 / n_rows if workload.lam is None else float(workload.lam)
    fraction = calibration_fraction(sites, calibration_rows)
    # bytes and dollars of centralizing do not depend on its training time
    central_probe = _central_estimate(sites, deployment, workload, 0.0, "", describe)
    central_permitted = central_probe.permitted
    records: dict[str, tuple[dict, str, int]] = {}
    lower: list[Estimate] = []
    private: list[GeoVariant] = []
    refused: dict[str, list[str]] = {}
    for variant in variants:
        refused[variant.name] = policy_refusals(variant, sites, workload)
        if variant.method in PRIVATE_METHODS:
            private.append(variant)  # priced below, from a twin: no budget is spent
            continue
        if refused[variant.name]:
            lower.append(_lower_bound_estimate(variant, sites, deployment, workload,
                                               refused[variant.name]))
            continue
        key = CalibrationStore.key(sites, workload, lam, variant)
        recorded = store.get(key)
        if recorded is not None:
            records[variant.name] = (recorded, f"recorded run ({recorded.get('recorded')})", 0)
            continue
        bound = _lower_bound_estimate(variant, sites, deployment, workload)
        skip = calibrate_mode == "never" or (
            calibrate_mode == "auto" and central_permitted and optimize != "seconds"
            and _metric(bound, optimize) > _metric(central_probe, optimize))
        if skip:
            lower.append(bound)
            continue
        say(f"calibrating {variant.name} on {fraction:.0%} of every site's rows")
        rec = calibrate(open_federation, variant, workload, lam, fraction, deployment)
        records[variant.name] = (rec, f"calibrated on {fraction:.0%} of rows",
                                 rec["wan_bytes"])
    estimates: list[Estimate] = []
    # the home DC trains on all rows: evaluations of L-BFGS times every site's evaluate time
    lbfgs = next((r for v, (r, _, _) in records.items() if v.split()[0] == "sqm-lbfgs"), None)
    evaluations = lbfgs["evaluations"] if lbfgs else DEFAULT_CENTRAL_EVALUATIONS
    nnz = sum(s.nnz for s in sites)
    throughput = home_throughput(nnz / max(1, n_rows), sites[0].features)
    train_seconds = evaluations * nnz / throughput
    basis = "sampled export size"
    if not lbfgs:
        basis += f"; {DEFAULT_CENTRAL_EVALUATIONS} evaluations assumed"
    estimates.append(_central_estimate(sites, deployment, workload, train_seconds, basis,
                                       describe))
    for variant in variants:
        if variant.name in records:
            rec, why, cal = records[variant.name]
            estimates.append(_geo_estimate(variant, rec, why, deployment, workload, cal))
    for variant in private:
        say(f"pricing {variant.name} from a twin of the sites (no budget is spent)")
        estimates.append(_private_estimate(variant, sites, deployment, workload, lam,
                                           throughput, refused[variant.name]))
    estimates += lower
    recommended, reason = _recommend(estimates, optimize)
    return Plan(estimates, recommended, reason, workload, optimize, _site_rows(sites))


def _metric(estimate: Estimate, optimize: Optimize) -> float:
    return float(getattr(estimate, _METRICS[optimize]))


_METRICS = {"usd": "workload_usd", "bytes": "workload_bytes", "seconds": "workload_seconds"}


def _recommend(estimates: list[Estimate], optimize: Optimize) -> tuple[str | None, str]:
    metric = _METRICS[optimize]
    permitted = [e for e in estimates if e.permitted]
    if not permitted:
        return None, "no plan is permitted by every site's policy"
    best = min(permitted, key=lambda e: (getattr(e, metric), e.workload_bytes))
    others = [e for e in permitted if e is not best]
    reason = f"lowest workload {optimize}"
    if others:
        runner = min(others, key=lambda e: (getattr(e, metric), e.workload_bytes))
        ratio = getattr(runner, metric) / max(getattr(best, metric), 1e-12)
        reason += f" ({ratio:.1f}x less than {runner.plan})"
    central = next((e for e in estimates if e.kind == "centralized"), None)
    if central is not None and not central.permitted:
        reason += f"; centralizing is excluded: {central.why_not}"
    return best.plan, reason
