"""One frozen configuration object per command, built once from its click options.

``TrainConfig.from_params(params)`` takes the options of `geodml train` by their
click names (also a resumed run's saved ones, whose tuples came back as lists),
checks how they combine, and is passed whole from then on; ``PlanConfig`` and
``CompareConfig`` do the same for `geodml plan` and `geodml compare`. Option groups
that several commands share (compression, TLS, the stop rule, the workload) are
small objects of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from geodml.algorithms.defaults import DEFAULT_GTOL, DEFAULT_MAX_ROUNDS
from geodml.algorithms.stop import DEFAULT_PATIENCE
from geodml.cli.options import parse_addresses, parse_params

#: the method when --method is not given and the sites are a sites directory, remote
#: sites or a deployment's
DEFAULT_GEO_METHOD = "fadl-subspace"
DEFAULT_FULL_PRECISION_AT = 1e-3


def _spec(text: str | None, option: str) -> str | None:
    """A validated JSON compression spec; None and "none" are no compression."""
    if text is None or text == "none":
        return None
    from geodml.compression import CompressionError, spec_text

    try:
        return spec_text(text)
    except CompressionError as e:
        raise click.BadParameter(str(e), param_hint=option) from None


@dataclass(frozen=True)
class CompressionOptions:
    """``--compress`` (both directions) and its ``--compress-up`` / ``--compress-down``
    overrides; gradient sums sent up travel as changes (geodml.job.compression)."""

    both: str | None = None
    up: str | None = None
    down: str | None = None
    full_precision_at: float = DEFAULT_FULL_PRECISION_AT

    def _texts(self) -> tuple[str | None, str | None]:
        up = self.up if self.up is not None else self.both
        down = self.down if self.down is not None else self.both
        return (None if up == "none" else up), (None if down == "none" else down)

    def specs(self) -> tuple[str | None, str | None]:
        """``(up, down)`` JSON specs, None for an uncompressed direction."""
        up, down = self._texts()
        return (_spec(up, "--compress-up"), _spec(down, "--compress-down"))

    @property
    def active(self) -> bool:
        return any(self._texts())

    @property
    def label(self) -> str:
        """How reports name it: ``float16``, or ``up int8 down float16``."""
        up, down = self._texts()
        if up == down:
            return up or ""
        return " ".join(f"{d} {t}" for d, t in (("up", up), ("down", down)) if t)

    def config(self):
        """The federation's :class:`~geodml.federation.CompressionConfig`, or None."""
        if not self.active:
            return None
        from geodml.federation import CompressionConfig
        from geodml.job.compression import AdaptivePrecision

        up, down = self.specs()
        return CompressionConfig(up=up, down=down,
                                 precision=AdaptivePrecision(threshold=self.full_precision_at))


@dataclass(frozen=True)
class TlsOptions:
    """The coordinator's TLS files: ``--tls-dir`` and/or explicit ``--tls-ca``,
    ``--tls-cert``, ``--tls-key`` (see :mod:`geodml.cli.tls_files`); ``--insecure``
    for plaintext to loopback sites."""

    tls_dir: str | None = None
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    insecure: bool = False

    @property
    def given(self) -> bool:
        return any((self.tls_dir, self.ca, self.cert, self.key))


@dataclass(frozen=True)
class StopOptions:
    """When a run stops: relative gradient norm (``rule="gtol"``) or held-out loss
    (``rule="validation"``: ``patience`` rows without a relative gain of ``threshold``),
    outer iterations, WAN bytes. ``validation_share``: rows every site holds out (also
    with gtol, to report the held-out curve); None with validation means the default."""

    gtol: float = DEFAULT_GTOL
    max_rounds: int = DEFAULT_MAX_ROUNDS
    max_wan_bytes: int | None = None
    rule: str = "gtol"
    validation_share: float | None = None
    patience: int = DEFAULT_PATIENCE
    threshold: float = 1e-4
    validation_seed: int = 0

    @property
    def validation_job(self):
        """The federation's :class:`~geodml.job.validation.ValidationJob`, or None."""
        from geodml.job.validation import DEFAULT_SHARE, ValidationJob

        share = self.validation_share
        if share is None and self.rule == "validation":
            share = DEFAULT_SHARE
        return None if share is None else ValidationJob(share, self.validation_seed)

    @property
    def validation_stop(self):
        """The spec's :class:`~geodml.algorithms.stop.ValidationStop`, or None."""
        from geodml.algorithms.stop import ValidationStop

        return ValidationStop(self.patience, self.threshold) if (
            self.rule == "validation") else None


@dataclass(frozen=True)
class SiteSource:
    """Where the sites are: a sites directory run in this process (``data_dir``),
    remote sites (``remote``), or the sites a deployment file lists."""

    data_dir: str | None = None
    remote: tuple[tuple[str, str], ...] = ()
    deployment: str | None = None
    home: str | None = None
    allow_export: tuple[str, ...] = ()
    dp_budget: tuple[float, float] | None = None  # in-process sites' (epsilon, delta)
    tls: TlsOptions = field(default_factory=TlsOptions)

    @property
    def from_deployment(self) -> bool:
        """The deployment file names the sites (no DATA_DIR, no --site)."""
        return self.deployment is not None and self.data_dir is None and not self.remote


@dataclass(frozen=True)
class OutputOptions:
    """What a run reads besides its sites and what it writes."""

    out_path: str = "model.npz"
    record: str | None = None
    audit: str | None = None
    test_dir: str | None = None
    warm_start: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Everything `geodml train` was asked to do."""

    method: str
    sites: SiteSource
    loss: str = "logistic"
    lam: float | None = None
    solver: str = "lbfgs"
    threads: int | None = None
    params: tuple[tuple[str, Any], ...] = ()
    precondition: str = "diag"  # geodml.optim.preconditioner: diag | none | auto
    precondition_mix: float = 0.0
    local_warm_start: bool = False
    lam_path: tuple[float, ...] = ()  # train at each, keep the least held-out loss
    stop: StopOptions = field(default_factory=StopOptions)
    compression: CompressionOptions = field(default_factory=CompressionOptions)
    outputs: OutputOptions = field(default_factory=OutputOptions)
    site_deadline: float = 300.0
    drop_lost_sites: bool = False
    secure_aggregation: bool = False
    secure_fraction_bits: int | None = None
    nonce_seed: str | None = None  # hex; job nonces derive from it (a resumable run's)

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> TrainConfig:
        """From `geodml train`'s options by click name; checks how they combine."""
        remote = parse_addresses(tuple(p.get("remote") or ()), "--site")
        dp = (p.get("dp_epsilon"), p.get("dp_delta"))
        if (dp[0] is None) != (dp[1] is None):
            raise click.UsageError("--dp-epsilon and --dp-delta go together")
        sites = SiteSource(
            data_dir=p.get("data_dir"), remote=remote, deployment=p.get("deployment"),
            home=p.get("home"), allow_export=tuple(p.get("allow_export") or ()),
            dp_budget=dp if dp[0] is not None else None,
            tls=TlsOptions(p.get("tls_dir"), p.get("tls_ca"), p.get("tls_cert"),
                           p.get("tls_key"), bool(p.get("insecure"))))
        config = cls(
            method=p.get("method") or _default_method(sites), sites=sites,
            loss=p.get("loss", "logistic"), lam=p.get("lam"), solver=p.get("solver", "lbfgs"),
            threads=p.get("threads"), params=parse_params(tuple(p.get("params") or ())),
            precondition=p.get("precondition", "diag"),
            precondition_mix=p.get("precondition_mix", 0.0),
            local_warm_start=bool(p.get("local_warm_start")),
            lam_path=_floats(p.get("lam_path"), "--lam-path"),
            stop=StopOptions(p.get("gtol", DEFAULT_GTOL), p.get("max_iter", DEFAULT_MAX_ROUNDS),
                             p.get("max_wan_bytes"), p.get("stop_rule") or "gtol",
                             p.get("validation_share"), p.get("patience", DEFAULT_PATIENCE),
                             p.get("stop_threshold", 1e-4), p.get("validation_seed", 0)),
            compression=CompressionOptions(
                p.get("compress"), p.get("compress_up"), p.get("compress_down"),
                p.get("full_precision_at", DEFAULT_FULL_PRECISION_AT)),
            outputs=OutputOptions(p.get("out_path") or "model.npz", p.get("record"),
                                  p.get("audit"), p.get("test_dir"), p.get("warm_start")),
            site_deadline=p.get("site_deadline", 300.0),
            drop_lost_sites=bool(p.get("drop_lost_sites")),
            secure_aggregation=bool(p.get("secure_aggregation")),
            secure_fraction_bits=p.get("secure_fraction_bits"), nonce_seed=p.get("nonce_seed"))
        config.check()
        return config

    @property
    def preconditioner(self):
        """The :class:`geodml.optim.preconditioner.Preconditioner` asked for."""
        from geodml.optim.preconditioner import Preconditioner

        return Preconditioner(self.precondition, self.precondition_mix)

    @property
    def centralized(self) -> bool:
        """Trained here, on one dataset directory (no federation)."""
        return self.method == "centralized"

    def check(self) -> None:
        """Refuse options that do not combine, naming them."""
        s = self.sites
        if self.lam is not None and self.lam < 0:
            raise click.BadParameter("lambda must be >= 0", param_hint="--lam")
        if s.dp_budget is not None and (s.remote or s.from_deployment):
            raise click.UsageError("--dp-epsilon sets in-process sites' budgets; a remote "
                                   "site's budget is in its own configuration")
        if self.secure_aggregation and self.compression.active:
            raise click.UsageError("--secure-aggregation sums exact fixed-point values: it "
                                   "does not combine with --compress/--compress-up/"
                                   "--compress-down")
        held_out = self.stop.validation_job is not None
        if self.lam_path:
            from geodml.algorithms.lam_path import check_path
            from geodml.errors import ConfigError

            if self.lam is not None:
                raise click.UsageError("give --lam or --lam-path, not both")
            if not held_out:
                raise click.UsageError("--lam-path chooses lambda by held-out loss: add "
                                       "--validation-share S or --stop validation")
            try:
                check_path(self.lam_path)
            except ConfigError as e:
                raise click.BadParameter(str(e).removeprefix("--lam-path: "),
                                         param_hint="--lam-path") from None
        if held_out and (self.centralized or self.method == "centralized-export"):
            raise click.UsageError("--stop validation/--validation-share hold rows out at the "
                                   "sites: give a geo-distributed --method")
        if held_out and (self.secure_aggregation or self.method == "dp-gd"):
            raise click.UsageError("--stop validation/--validation-share: held-out scores "
                                   "travel in the clear, which --secure-aggregation and dp-gd "
                                   "forbid")
        if self.centralized:
            if s.data_dir is None or s.remote:
                raise click.UsageError(
                    "--method centralized trains on a DATA_DIR dataset directory; for "
                    "sites (--site, --deployment or a sites directory) give a "
                    f"geo-distributed --method such as {DEFAULT_GEO_METHOD}")
            return
        if s.data_dir is None and not s.remote and s.deployment is None:
            raise click.UsageError("give a sites DATA_DIR, --site NAME=HOST:PORT or "
                                   "--deployment FILE listing the sites")
        if s.allow_export and (s.remote or s.from_deployment):
            raise click.UsageError("--allow-export sets in-process sites' policies; a remote "
                                   "site's policy is in its own configuration")
        if s.data_dir is not None and s.remote:
            raise click.UsageError("give a sites DATA_DIR or --site NAME=HOST:PORT, not both")
        if s.tls.given and s.data_dir is not None:
            raise click.UsageError("--tls-dir/--tls-ca/--tls-cert/--tls-key are for remote "
                                   "sites; DATA_DIR's sites run in this process")


def _floats(text: str | list | None, option: str) -> tuple[float, ...]:
    """A comma-separated list of numbers (a resumed run's saved list as it is)."""
    if not text:
        return ()
    if isinstance(text, list | tuple):
        return tuple(float(x) for x in text)
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers",
                                 param_hint=option) from None


def _default_method(sites: SiteSource) -> str:
    """centralized on a dataset directory, else the default geo-distributed method."""
    if sites.remote or sites.from_deployment:
        return DEFAULT_GEO_METHOD
    if sites.data_dir is not None:
        from geodml.data.partition import MANIFEST_NAME

        if (Path(sites.data_dir) / MANIFEST_NAME).is_file():
            return DEFAULT_GEO_METHOD
    return "centralized"


@dataclass(frozen=True)
class WorkloadOptions:
    """The training job a plan prices, and how often it runs."""

    loss: str = "logistic"
    lam: float | None = None
    gtol: float = DEFAULT_GTOL
    runs: int = 1
    days: int = 1
    growth: float = 0.0

    def workload(self):
        from geodml.planning.planner import Workload

        return Workload(loss=self.loss, lam=self.lam, gtol=self.gtol,
                        runs_per_snapshot=self.runs, days=self.days,
                        growth_per_day=self.growth)


@dataclass(frozen=True)
class PlanConfig:
    """Everything `geodml plan` was asked to do (and the planning half of compare)."""

    deployment: str
    methods: tuple[str, ...] = (DEFAULT_GEO_METHOD,)
    compressions: tuple[CompressionOptions, ...] = ()
    dense: bool = False
    secure: bool = False
    params: tuple[tuple[str, Any], ...] = ()
    workload: WorkloadOptions = field(default_factory=WorkloadOptions)
    optimize: str = "usd"
    calibrate_mode: str = "auto"
    calibration_rows: int | None = None
    calibration_points: int = 2
    store: str | None = None
    json_out: str | None = None
    serial_sites: bool = False  # one site's call at a time (sites sharing one machine)

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> PlanConfig:
        up, down = p.get("compress_up"), p.get("compress_down")
        both = tuple(p.get("compress") or ())
        compressions = tuple(CompressionOptions(c, up, down) for c in both or (None,)) \
            if both or up or down else ()
        return cls(
            deployment=p["deployment"], methods=tuple(p["methods"]),
            compressions=compressions, dense=bool(p.get("dense")),
            secure=bool(p.get("secure")), params=parse_params(tuple(p.get("params") or ())),
            workload=WorkloadOptions(p["loss"], p.get("lam"), p["gtol"], p["runs"], p["days"],
                                     p["growth"]),
            optimize=p["optimize"], calibrate_mode=p["calibrate_mode"],
            calibration_rows=p.get("calibration_rows"),
            calibration_points=p.get("calibration_points", 2), store=p.get("store"),
            json_out=p.get("json_out"), serial_sites=bool(p.get("serial_sites")))

    def variants(self) -> list:
        """One plan per method, per compression (none unless given) and, with --dense,
        per wire shape; with --secure-aggregation, also each method with masked sums."""
        from geodml.algorithms.registry import METHODS, SECURE_METHODS
        from geodml.planning.planner import GeoVariant

        for m in self.methods:
            if m not in METHODS:
                raise click.BadParameter(
                    f"unknown method {m!r}; known: {', '.join(sorted(METHODS))}",
                    param_hint="--method")
        extra = tuple(sorted(self.params))
        out = []
        for m in self.methods:
            for c in self.compressions or (CompressionOptions(),):
                up, down = c.specs()
                for restrict in ((None, False) if self.dense else (None,)):
                    out.append(GeoVariant(m, up, down, restrict, extra, label=c.label))
        if self.secure:
            out += [GeoVariant(m, None, None, False, extra, secure=True)
                    for m in self.methods if m in SECURE_METHODS]
        return out

    def calibration(self) -> dict:
        """The planner's keywords for ``--calibration-rows`` (absent: its own default; the
        planner is imported only when a command runs: it pulls in gRPC) and
        ``--calibration-points``."""
        rows = {} if self.calibration_rows is None else {
            "calibration_rows": self.calibration_rows}
        return {**rows, "calibration_points": self.calibration_points}

    def calibration_store(self):
        from geodml.planning.planner import CalibrationStore

        return CalibrationStore(self.store or Path(self.deployment).resolve().parent
                                / ".geodml" / "calibration.json")


@dataclass(frozen=True)
class CompareConfig:
    """Everything `geodml compare` was asked to do: a plan, then every plan run."""

    plan: PlanConfig
    test_dir: str | None = None
    exceptions: tuple[tuple[str, str], ...] = ()  # (site, address of its exception server)
    out_dir: str = "geodml-report"

    @classmethod
    def from_params(cls, p: Mapping[str, Any]) -> CompareConfig:
        return cls(plan=PlanConfig.from_params(p), test_dir=p.get("test_dir"),
                   exceptions=parse_addresses(tuple(p.get("exceptions") or ()),
                                              "--exception-site"),
                   out_dir=p["out_dir"])
