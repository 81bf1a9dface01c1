"""``geodml compare``: plan, then run every plan for real on the same data, and report.

1. The planner (:mod:`geodml.planning.planner`) predicts every plan's bytes, modeled time and
   dollars.
2. The centralized baseline runs for real: every site exports its rows home, then the
   home DC trains. A site whose policy forbids export refuses it; the refusal is
   reported, and when a second server of that site with an export exception is given
   (``exception_addresses``), the baseline runs again through it, to show what copying
   would cost.
3. Every geo-distributed plan runs for real, metered per link, with an audit log.
4. The report directory gets ``report.json``, ``report.md``, plots and the audit logs;
   each real run is recorded in the calibration store, so the next plan of the same
   job is exact.

Every run stops at the workload's ``gtol``; ``run_compare(max_iterations=...,
max_seconds=...)`` also caps each real run (not the planner's calibration runs) at that
many outer iterations (L-BFGS iterations for the centralized baseline) or that much wall
time, checked each time the run records an iteration, so no call is in flight. A run
cut short has ``converged = False`` and its ``reason``; it is not recorded in the
calibration store. The centralized baseline's export time, when its budget runs out, is
taken as the time of its first recorded iteration (export, concatenation and one
evaluation).

Modeled time: a geo run's rounds, as its federation's meter numbered them, over the
deployment's links plus the slowest site's measured call time
(:func:`geodml.planning.wan.model_run`); the centralized plan's copy over the links
into the home DC plus its measured training time
(:func:`geodml.planning.wan.model_centralized`). Suboptimality is relative to the lowest
objective any run reached.
"""

from __future__ import annotations

import bisect
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geodml import metrics
from geodml.algorithms.centralize import Refused, train_centralized_baseline
from geodml.algorithms.record import RoundRow, RunRecorder, RunResult
from geodml.algorithms.registry import TrainSpec, train
from geodml.data.dataset import Dataset
from geodml.federation.meter import RoundTraffic, wan_links
from geodml.planning.calibration import DEFAULT_CALIBRATION_ROWS, CalibrationStore, count_rounds
from geodml.planning.connect import FederationFactory
from geodml.planning.deployment import Deployment
from geodml.planning.planner import make_plan
from geodml.planning.plans import PRIVATE_METHODS, Calibrate, GeoVariant, Optimize, Plan, Workload
from geodml.planning.wan import ModeledRun, model_centralized, model_run


@dataclass
class RunReport:
    """One plan as it ran: quality, metered bytes, modeled time and dollars."""

    plan: str
    kind: str
    permitted: bool
    objective: float | None = None
    test: dict[str, float] = field(default_factory=dict)
    wan_bytes: int = 0
    rounds: int = 0
    vector_rounds: float = 0.0
    modeled_seconds: float = 0.0
    usd: float = 0.0
    wall_seconds: float = 0.0
    predicted_bytes: int | None = None
    prediction_error: float | None = None  # bytes: (predicted - metered) / metered
    # the planner's error on modeled seconds and on dollars, the same way
    time_error: float | None = None
    usd_error: float | None = None
    per_link: dict[str, int] = field(default_factory=dict)
    refused_by: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    audit: str = ""
    curve: list[dict] = field(default_factory=list)  # per iteration: objective, bytes, time
    converged: bool | None = None
    reason: str = ""
    privacy: dict = field(default_factory=dict)  # a private run: each site's budget spent


class _OutOfTimeError(Exception):
    """A run's wall-time budget ran out; raised after its iteration was recorded."""

    def __init__(self, w: np.ndarray, row: RoundRow, budget: float):
        super().__init__(f"wall-time budget of {budget:g} s reached")
        self.w, self.row = w, row


class _BudgetRecorder(RunRecorder):
    """A recorder that stops its run once ``max_seconds`` have passed since it started."""

    def __init__(self, *args, max_seconds: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_seconds = max_seconds

    def add(self, iteration: int, objective: float, w: np.ndarray,
            grad_norm: float | None = None) -> RoundRow:
        row = super().add(iteration, objective, w, grad_norm)
        if self.max_seconds is not None and row.seconds >= self.max_seconds:
            raise _OutOfTimeError(np.array(w, dtype=np.float64), row, self.max_seconds)
        return row


def _stopped(method: str, stop: _OutOfTimeError, recorder: RunRecorder, fed,
             info: dict | None = None) -> RunResult:
    """The result of a run its budget stopped: its last recorded point."""
    return RunResult(method, stop.w, stop.row.objective, False, str(stop), recorder.rows,
                     fed.meter.snapshot(), info or {})


@dataclass
class Comparison:
    plan: Plan
    runs: list[RunReport]
    out_dir: Path
    seconds: float
    f_star: float | None

    def run(self, plan: str) -> RunReport:
        for r in self.runs:
            if r.plan == plan:
                return r
        raise KeyError(plan)

    def to_dict(self) -> dict:
        return {"plan": self.plan.to_dict(), "f_star": self.f_star, "seconds": self.seconds,
                "runs": [{k: v for k, v in asdict(r).items()} for r in self.runs]}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")


def _geo_curve(rows: list[RoundRow], rounds: list[RoundTraffic],
               modeled: ModeledRun) -> list[dict]:
    """Per recorded iteration: objective, WAN bytes and modeled seconds so far.

    ``modeled.round_seconds`` follows the meter's rounds; an iteration's time is the
    sum up to the last round whose number it has counted (rounds without one, such as
    Describe and Prepare, count where they fall; a final Close does not).
    """
    cumulative = np.cumsum(modeled.round_seconds)
    numbered = [(r.round, i) for i, r in enumerate(rounds) if r.round is not None]
    ids = [rid for rid, _ in numbered]
    curve = []
    for row in rows:
        k = bisect.bisect_right(ids, row.rounds)
        t = float(cumulative[numbered[k - 1][1]]) if k else 0.0
        curve.append({"iteration": row.iteration, "objective": row.objective,
                      "wan_bytes": row.wan_bytes, "modeled_seconds": t,
                      "wall_seconds": row.seconds})
    return curve


def _run_geo(open_federation: FederationFactory, variant: GeoVariant, workload: Workload,
             deployment: Deployment, out: Path, evaluate, on_row,
             max_iterations: int | None = None, max_seconds: float | None = None,
             ) -> tuple[RunReport, RunResult, int]:
    """The run's report and result, and how many Evaluate rounds it made."""
    slug = _slug(variant.name)
    audit = out / "audit" / f"{slug}.jsonl"
    audit.unlink(missing_ok=True)
    with open_federation(compression=variant.compression(), audit=str(audit),
                         secure=variant.secure_aggregation()) as fed:
        recorder = _BudgetRecorder(fed, path=out / "runs" / f"{slug}.jsonl", on_row=on_row,
                                   max_seconds=max_seconds)
        limit = {} if max_iterations is None else {"max_rounds": max_iterations}
        spec = TrainSpec(loss=workload.loss, lam=workload.lam, gtol=workload.gtol,
                         params=dict(variant.params), **limit)
        try:
            result = train(fed, variant.method, spec, recorder)
        except _OutOfTimeError as stop:
            result = _stopped(variant.method, stop, recorder, fed)
        fed.close_sessions()
        snapshot = fed.meter.snapshot()
        rounds = fed.meter.rounds
    modeled = model_run(rounds, deployment)
    links = wan_links(snapshot)
    last = result.rows[-1]
    objective = result.objective if np.isfinite(result.objective) else None  # dp-gd: none
    report = RunReport(
        variant.name, "geo", True, objective, evaluate(result.w) if evaluate else {},
        snapshot["wan_bytes"], last.rounds, last.vector_rounds, modeled.seconds, modeled.usd,
        last.seconds, per_link=links, audit=str(audit.relative_to(out)),
        curve=_geo_curve(result.rows, rounds, modeled), converged=result.converged,
        reason=result.reason, privacy=result.info.get("privacy", {}))
    return report, result, count_rounds(rounds, "Evaluate")


def _run_central(open_federation: FederationFactory, workload: Workload,
                 deployment: Deployment, out: Path, evaluate, on_row, name: str,
                 max_iterations: int | None = None, max_seconds: float | None = None,
                 ) -> tuple[RunReport, RunResult | Refused]:
    slug = _slug(name)
    audit = out / "audit" / f"{slug}.jsonl"
    audit.unlink(missing_ok=True)
    with open_federation(audit=str(audit)) as fed:
        recorder = _BudgetRecorder(fed, path=out / "runs" / f"{slug}.jsonl", on_row=on_row,
                                   max_seconds=max_seconds)
        limit = {} if max_iterations is None else {"max_iter": max_iterations}
        try:
            result = train_centralized_baseline(fed, workload.loss, workload.lam,
                                                workload.gtol, recorder=recorder, **limit)
        except _OutOfTimeError as stop:  # export time: up to the first iteration's record
            export_seconds = recorder.rows[0].seconds
            result = _stopped("centralized", stop, recorder, fed, {
                "export_seconds": export_seconds,
                "train_seconds": stop.row.seconds - export_seconds})
        snapshot = fed.meter.snapshot()
    if isinstance(result, Refused):
        return RunReport(name, "centralized", False, refused_by=result.sites,
                         messages=result.messages, audit=str(audit.relative_to(out)),
                         reason=str(result)), result
    links = wan_links(snapshot)
    exports = {}
    for link, nbytes in links.items():
        src, _, dst = link.partition("->")
        if dst == deployment.home:
            exports[src] = exports.get(src, 0) + nbytes
    modeled = model_centralized(exports, deployment, result.info["train_seconds"])
    last = result.rows[-1]
    copy = modeled.seconds - result.info["train_seconds"]
    curve = [{"iteration": r.iteration, "objective": r.objective, "wan_bytes": r.wan_bytes,
              "modeled_seconds": copy + (r.seconds - result.info["export_seconds"]),
              "wall_seconds": r.seconds} for r in result.rows]
    report = RunReport(
        name, "centralized", True, result.objective, evaluate(result.w) if evaluate else {},
        snapshot["wan_bytes"], last.rounds, 0.0, modeled.seconds, modeled.usd, last.seconds,
        per_link=links, audit=str(audit.relative_to(out)), curve=curve,
        converged=result.converged, reason=result.reason)
    return report, result


def run_compare(open_federation: FederationFactory, deployment: Deployment,
                variants: Sequence[GeoVariant], out: str | Path, workload: Workload | None = None,
                test: Dataset | None = None,
                exception_federation: FederationFactory | None = None,
                exception_sites: Sequence[str] = (), optimize: Optimize = "usd",
                calibrate_mode: Calibrate = "auto", store: CalibrationStore | None = None,
                calibration_rows: int = DEFAULT_CALIBRATION_ROWS,
                calibration_points: int = 2,
                progress: Callable[[str], None] | None = None,
                on_row_factory: Callable[[str], Callable[[RoundRow], None]] | None = None,
                max_iterations: int | None = None, max_seconds: float | None = None,
                ) -> Comparison:
    """Plan, run the centralized baseline and every geo plan, and write the report.

    ``max_iterations`` / ``max_seconds``: caps on every real run (see the module
    docstring); None leaves the methods' own limits."""
    workload = workload or Workload()
    start = time.perf_counter()
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _m: None)
    rows_hook = on_row_factory or (lambda _name: None)
    evaluate = metrics.held_out_evaluator(test)
    store = store or CalibrationStore(out / "calibration.json")
    say("planning: site statistics and calibration")
    plan = make_plan(open_federation, deployment, variants, workload, optimize,
                     calibrate_mode, store, calibration_rows, progress=say,
                     calibration_points=calibration_points)
    runs: list[RunReport] = []
    say("centralized baseline: exporting every DC's rows to the home DC")
    limits = {"max_iterations": max_iterations, "max_seconds": max_seconds}
    central, outcome = _run_central(open_federation, workload, deployment, out, evaluate,
                                    rows_hook("centralize"), "centralize", **limits)
    runs.append(central)
    if isinstance(outcome, Refused) and exception_federation is not None:
        label = f"centralize (exception for {', '.join(exception_sites)})"
        say(f"{outcome}; running it again with an export exception for "
            f"{', '.join(exception_sites)}")
        exc, outcome = _run_central(exception_federation, workload, deployment, out,
                                    evaluate, rows_hook(label), label, **limits)
        exc.permitted = False  # it ran only through the exception
        runs.append(exc)
    with open_federation() as fed:  # what the store keys real runs by
        sites = list(fed.sites.values())
    lam = 1.0 / sum(s.rows for s in sites) if workload.lam is None else workload.lam
    if not isinstance(outcome, Refused) and outcome.converged:  # the home DC's training
        store.put(CalibrationStore.key(sites, workload, lam, None),
                  {"iterations": outcome.rows[-1].iteration,
                   "train_seconds": outcome.info["train_seconds"]})
    for variant in variants:
        estimate = plan.estimate(variant.name)
        if not estimate.permitted:  # its sites would refuse it: say why, run nothing
            say(f"geo-distributed: {variant.name} is not permitted: {estimate.why_not}")
            runs.append(RunReport(variant.name, "geo", False, refused_by=_refusing(estimate),
                                  messages=[estimate.why_not], reason=estimate.why_not))
            continue
        say(f"geo-distributed: {variant.name}")
        report, result, evaluations = _run_geo(open_federation, variant, workload,
                                               deployment, out, evaluate,
                                               rows_hook(variant.name), **limits)
        runs.append(report)
        if variant.method in PRIVATE_METHODS:
            continue  # its rounds are fixed: the planner prices it without a record
        if not result.converged and (max_iterations is not None or max_seconds is not None):
            continue  # cut short by this call's limits: it predicts nothing
        store.put(CalibrationStore.key(sites, workload, lam, variant),
                  {"rounds": report.rounds, "vector_rounds": report.vector_rounds,
                   "iterations": result.rows[-1].iteration, "links": report.per_link,
                   "wan_bytes": report.wan_bytes, "seconds": report.modeled_seconds,
                   "evaluations": evaluations})
    for run in runs:
        estimate = _estimate_for(plan, run)
        if estimate is not None and run.wan_bytes:
            run.predicted_bytes = estimate.wan_bytes
            run.prediction_error = _relative(estimate.wan_bytes, run.wan_bytes)
            run.time_error = _relative(estimate.seconds, run.modeled_seconds)
            run.usd_error = _relative(estimate.usd, run.usd)
    objectives = [r.objective for r in runs if r.objective is not None]
    f_star = min(objectives) if objectives else None
    comparison = Comparison(plan, runs, out, time.perf_counter() - start, f_star)
    write_report(comparison, deployment)
    return comparison


def _refusing(estimate) -> list[str]:
    """The sites named in a plan's refusals (``site NAME ...``), or the plan itself."""
    names = re.findall(r"site (\S+?):? ", estimate.why_not)
    return sorted(set(names)) or [estimate.plan]


def _estimate_for(plan: Plan, run: RunReport):
    """The plan's estimate of ``run`` (None: the plan did not price it)."""
    name = "centralize" if run.kind == "centralized" else run.plan
    try:
        return plan.estimate(name)
    except KeyError:
        return None


def _relative(predicted: float, measured: float) -> float | None:
    """``(predicted - measured) / measured``; None when nothing was measured."""
    return None if not measured else (predicted - measured) / measured


# -- the report -------------------------------------------------------------------------

def span(e, quantity: str, fmt) -> str:
    """A predicted quantity and, where it has one, its range: ``point (low-high)``; an
    unbounded high end (a lower bound) as ``>= low``."""
    point = fmt(getattr(e, quantity))
    low, high = e.range_of(quantity)
    if low == high:
        return point
    if high == float("inf"):
        return f">= {fmt(low)}"
    return f"{point} ({fmt(low)}-{fmt(high)})"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1000.0
    return f"{n}"


def table_rows(c: Comparison) -> list[dict[str, str]]:
    """The report's table: one row per run (as strings, for Markdown and the terminal)."""
    rows = []
    for r in c.runs:
        status = "ran" if r.permitted else ("refused" if r.refused_by else "exception")
        rows.append({
            "plan": r.plan, "status": status,
            "objective": "-" if r.objective is None else f"{r.objective:.7f}",
            "log loss": f"{r.test['log_loss']:.5f}" if "log_loss" in r.test else "-",
            "AUC": f"{r.test['auc']:.5f}" if "auc" in r.test else "-",
            "WAN bytes": "-" if r.refused_by else fmt_bytes(r.wan_bytes),
            "modeled": "-" if r.refused_by else f"{r.modeled_seconds:,.1f} s",
            "egress $": "-" if r.refused_by else f"{r.usd:.4f}",
            "wall": "-" if r.refused_by else f"{r.wall_seconds:.1f} s",
            **{f"err {what}": "-" if err is None else f"{100 * err:+.1f}%"
               for what, err in (("bytes", r.prediction_error), ("time", r.time_error),
                                 ("$", r.usd_error))},
        })
    return rows


def _markdown(c: Comparison, deployment: Deployment) -> str:
    rows = table_rows(c)
    cols = list(rows[0]) if rows else []
    lines = [f"# geodml compare: {len(deployment.sites)} DCs, home {deployment.home}", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[k] for k in cols) + " |" for r in rows]
    plan = c.plan
    verdict = "recommendation" if plan.decided else "leaning (ranges overlap)"
    lines += ["", f"**Planner's {verdict}:** {plan.recommended} ({plan.reason}).", "",
              "## The planner's predictions", "",
              "| plan | permitted | WAN bytes | modeled time | egress $ | workload $ | basis |",
              "|---|---|---|---|---|---|---|"]
    for e in plan.estimates:
        lines.append(f"| {e.plan} | {'yes' if e.permitted else 'no'} | "
                     f"{span(e, 'wan_bytes', fmt_bytes)} | "
                     f"{span(e, 'seconds', '{:,.1f} s'.format)} | "
                     f"{span(e, 'usd', '{:.4f}'.format)} | "
                     f"{e.workload_usd:.4f} | {e.basis} |")
    private = [r for r in c.runs if r.privacy]
    if private:
        lines += ["", "## Privacy budgets", "",
                  "| plan | site | epsilon spent | budget (epsilon, delta) | noise multiplier "
                  "| releases |", "|---|---|---|---|---|---|"]
        for r in private:
            lines += [f"| {r.plan} | {site} | {b['epsilon_spent']:.4f} | "
                      f"({b['epsilon']:g}, {b['delta']:g}) | {b['noise_multiplier']:.3f} | "
                      f"{b['releases']} |" for site, b in sorted(r.privacy.items())]
    refused = [r for r in c.runs if r.refused_by]
    if refused:
        lines += ["", "## Refused", ""]
        for r in refused:
            lines += [f"* {r.plan}: {m}" for m in r.messages]
    lines += ["", "## Bytes per link", "", "| plan | link | bytes |", "|---|---|---|"]
    for r in c.runs:
        for link, nbytes in sorted(r.per_link.items()):
            lines.append(f"| {r.plan} | {link} | {nbytes:,} |")
    lines += ["", "Plots: `suboptimality_vs_bytes.png`, `suboptimality_vs_time.png`, "
              "`bytes_per_link.png`. Audit logs: `audit/`. Run records: `runs/`.",
              f"Modeled time and dollars use the deployment's links; wall time is this run's "
              f"({c.seconds:.0f} s in all).", ""]
    return "\n".join(lines)


def _plots(c: Comparison) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ran = [r for r in c.runs if r.curve]
    for x_key, x_label, fname in (("wan_bytes", "WAN bytes", "suboptimality_vs_bytes.png"),
                                  ("modeled_seconds", "modeled time over the deployment's "
                                   "links (s)", "suboptimality_vs_time.png")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in ran:
            # the run that reached F* itself has suboptimality 0 there: not on a log scale
            points = [(p[x_key], (p["objective"] - c.f_star) / abs(c.f_star)) for p in r.curve]
            xs = [x for x, y in points if y > 0]
            ys = [y for x, y in points if y > 0]
            ax.plot(xs, ys, marker="." if len(xs) < 60 else None, label=r.plan)
        ax.set_xscale("symlog" if x_key == "wan_bytes" else "linear")
        ax.set_yscale("log")
        ax.set_xlabel(x_label)
        ax.set_ylabel("(F - F*) / |F*|, F* = lowest objective reached")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(c.out_dir / fname, dpi=110)
        plt.close(fig)
    links = sorted({link for r in ran for link in r.per_link})
    fig, ax = plt.subplots(figsize=(max(7, 0.6 * len(links) + 3), 4.5))
    width = 0.8 / max(1, len(ran))
    for i, r in enumerate(ran):
        xs = np.arange(len(links)) + i * width
        ax.bar(xs, [r.per_link.get(link, 0) for link in links], width, label=r.plan)
    ax.set_xticks(np.arange(len(links)) + width * (len(ran) - 1) / 2)
    ax.set_xticklabels(links, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("bytes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(c.out_dir / "bytes_per_link.png", dpi=110)
    plt.close(fig)


def write_report(c: Comparison, deployment: Deployment) -> None:
    """``report.json``, ``report.md`` and the plots, in ``c.out_dir``."""
    (c.out_dir / "report.json").write_text(json.dumps(c.to_dict(), indent=2, default=str))
    (c.out_dir / "report.md").write_text(_markdown(c, deployment))
    if c.f_star is not None:
        _plots(c)
