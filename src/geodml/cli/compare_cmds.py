"""`geodml plan`, `geodml compare` and `geodml demo`."""

from __future__ import annotations

import contextlib
from pathlib import Path

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from geodml.cli.train_cmds import _compression_spec, _load_test, _parse_params, console


def _variants(methods: tuple[str, ...], compress: tuple[str, ...], dense: bool,
              params: tuple[str, ...], secure: bool = False):
    """One plan per method, per compression (none unless given) and, with --dense,
    per wire shape; with --secure-aggregation, also each method with masked sums."""
    from geodml.algorithms.registry import METHODS
    from geodml.planner import GeoVariant

    for m in methods:
        if m not in METHODS:
            raise click.BadParameter(f"unknown method {m!r}; known: {', '.join(sorted(METHODS))}",
                                     param_hint="--method")
    extra = tuple(sorted(_parse_params(params).items()))
    out = []
    for m in methods:
        for c in compress or (None,):
            up = _compression_spec(c, feedback=True, option="--compress")
            down = _compression_spec(c, feedback=False, option="--compress")
            for restrict in ((None, False) if dense else (None,)):
                out.append(GeoVariant(m, up, down, restrict, extra, label=c or ""))
    if secure:
        from geodml.algorithms.registry import SECURE_METHODS

        out += [GeoVariant(m, None, None, False, extra, secure=True)
                for m in methods if m in SECURE_METHODS]
    return out


def _workload(loss, lam, gtol, runs, days, growth):
    from geodml.planner import Workload

    return Workload(loss=loss, lam=lam, gtol=gtol, runs_per_snapshot=runs, days=days,
                    growth_per_day=growth)


def plan_table(plan) -> Table:
    from geodml.compare import fmt_bytes

    w = plan.workload
    title = (f"the planner's predictions (one run; workload: {w.runs_per_snapshot} run(s) per "
             f"snapshot, {w.days} day(s), growth {w.growth_per_day:.1%}/day)")
    table = Table(title=title)
    for col in ("plan", "permitted", "WAN bytes", "modeled", "$", "workload bytes",
                "workload $", "basis"):
        table.add_column(col, justify="left" if col in ("plan", "basis") else "right")
    for e in plan.estimates:
        style = "bold green" if e.plan == plan.recommended else (None if e.permitted else "red")
        table.add_row(e.plan, "yes" if e.permitted else "no", fmt_bytes(e.wan_bytes),
                      f"{e.seconds:,.1f} s", f"{e.usd:.4f}", fmt_bytes(e.workload_bytes),
                      f"{e.workload_usd:.4f}", e.basis, style=style)
    return table


def _print_plan(plan) -> None:
    console.print(plan_table(plan))
    for e in plan.estimates:
        if not e.permitted:
            console.print(f"[red]{e.plan} is not permitted:[/] {e.why_not}")
        for site, b in sorted((e.privacy or {}).get("sites", {}).items()):
            console.print(f"{e.plan}: site {site} adds noise x{b['noise_multiplier']:.3g} and "
                          f"will have spent epsilon {b['epsilon_spent_after']:.3g} of "
                          f"{b['epsilon']:g} (delta {b['delta']:g})")
    if plan.recommended:
        console.print(f"[bold]recommended: {plan.recommended}[/] ({plan.reason})")
    else:
        console.print(f"[red]{plan.reason}[/]")


def comparison_table(c, title: str) -> Table:
    from geodml.compare import table_rows

    rows = table_rows(c)
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("plan", "status") else "right")
    for r in rows:
        table.add_row(*r.values(), style="red" if r["status"] == "refused" else None)
    return table


def _summary(c) -> None:
    central = next((r for r in c.runs if r.kind == "centralized" and r.objective is not None),
                   None)
    for r in c.runs:
        if r.refused_by:
            console.print(f"[red]{r.plan}: refused[/] by {', '.join(r.refused_by)} "
                          f"({r.messages[0]})")
    for r in c.runs:
        if r.kind != "geo" or central is None or r.refused_by:
            continue
        ratio = central.wan_bytes / max(1, r.wan_bytes)
        than = f"{ratio:.1f}x fewer" if ratio >= 1 else f"{1 / ratio:.1f}x more"
        line = f"{r.plan} moved {than} WAN bytes than {central.plan}"
        if "auc" in r.test and "auc" in central.test:
            line += f"; |test AUC difference| = {abs(r.test['auc'] - central.test['auc']):.5f}"
        console.print(line)
    console.print(f"report: {c.out_dir / 'report.md'} (plots, report.json, audit logs beside "
                  f"it; {c.seconds:.0f} s)")


@contextlib.contextmanager
def _progress():
    """A live line per run: iteration, WAN bytes and objective. Runs are sequential:
    when the next starts (and at the end), the previous line stops spinning, and the
    line of a run that never reported a row (refused) is removed."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as bars:
        tasks: list[tuple[int, list[bool]]] = []

        from geodml.compare import fmt_bytes

        def finish_last() -> None:
            if tasks:
                task, reported = tasks[-1]
                if reported:
                    bars.stop_task(task)
                    bars.update(task, completed=1, total=1)  # no spinner once done
                else:
                    bars.remove_task(task)

        def factory(name: str):
            finish_last()
            task = bars.add_task(f"{name}: starting", total=None)
            reported: list[bool] = []
            tasks.append((task, reported))

            def on_row(row) -> None:
                reported[:] = [True]
                bars.update(task, description=(
                    f"{name}: iteration {row.iteration}, rounds {row.rounds}, "
                    f"WAN {fmt_bytes(row.wan_bytes)}, F = {row.objective:.8f}"))
            return on_row

        try:
            yield factory
        finally:
            finish_last()


_common = [
    click.option("--method", "methods", multiple=True, default=("fadl-subspace",),
                 show_default=True, help="A geo-distributed method (repeat)."),
    click.option("--compress", multiple=True, metavar="SPEC",
                 help="Also plan each method with vectors compressed both ways: float32, "
                      "float16, bfloat16, int8 or a JSON spec (repeat)."),
    click.option("--dense", is_flag=True,
                 help="Also plan each method with dense vectors (not support-restricted)."),
    click.option("--secure-aggregation", "secure", is_flag=True,
                 help="Also plan each method under secure aggregation (masked dense sums)."),
    click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                 help="A method parameter (repeat)."),
    click.option("--loss", default="logistic", show_default=True),
    click.option("--lam", type=float, default=None, help="L2 weight (default 1/N)."),
    click.option("--gtol", type=float, default=1e-3, show_default=True,
                 help="Stop when ||grad|| <= gtol * ||grad at start||."),
    click.option("--runs-per-snapshot", "runs", type=click.IntRange(min=1), default=1,
                 show_default=True, help="J: training runs per data snapshot."),
    click.option("--days", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Planning horizon: one snapshot per day."),
    click.option("--growth", type=click.FloatRange(min=0), default=0.0, show_default=True,
                 help="New rows per day, as a share of today's rows."),
    click.option("--optimize", type=click.Choice(["usd", "bytes", "seconds"]), default="usd",
                 show_default=True, help="What the recommendation minimizes."),
    click.option("--calibrate", "calibrate_mode", type=click.Choice(["auto", "always", "never"]),
                 default="auto", show_default=True,
                 help="Calibration runs on a row sample: auto skips plans whose lower bound "
                      "already loses to a permitted centralized plan."),
    click.option("--calibration-rows", type=click.IntRange(min=1), default=None,
                 help="Rows of the median site a calibration samples, at most all (default "
                      "50,000); raise it for large sparse models, whose rounds small samples "
                      "under-predict (docs/planner.md)."),
    click.option("--store", type=click.Path(dir_okay=False),
                 help="Calibration store (default: .geodml/calibration.json beside the "
                      "deployment file)."),
]


def _with_common(fn):
    for option in reversed(_common):
        fn = option(fn)
    return fn


def _calibration(rows: int | None) -> dict:
    """The planner's keyword for ``--calibration-rows``; absent, its own default (the
    planner is imported only when a command runs: it pulls in gRPC)."""
    return {} if rows is None else {"calibration_rows": rows}


def _store(store: str | None, deployment: str):
    from geodml.planner import CalibrationStore

    return CalibrationStore(store or Path(deployment).resolve().parent / ".geodml"
                            / "calibration.json")


@click.command()
@click.argument("deployment", type=click.Path(exists=True, dir_okay=False))
@_with_common
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write the plan as JSON here.")
def plan(deployment, methods, compress, dense, secure, params, loss, lam, gtol, runs, days, growth,
         optimize, calibrate_mode, calibration_rows, store, json_out) -> None:
    """Predict bytes, modeled time and dollars of centralizing and of each geo-distributed
    plan over DEPLOYMENT's sites and links, and recommend one."""
    import json

    from geodml.connect import federation_factory
    from geodml.deployment import load_deployment
    from geodml.planner import make_plan

    dep = load_deployment(deployment)
    variants = _variants(methods, compress, dense, params, secure)
    result = make_plan(federation_factory(dep), dep, variants,
                       _workload(loss, lam, gtol, runs, days, growth), optimize, calibrate_mode,
                       _store(store, deployment), **_calibration(calibration_rows),
                       progress=lambda m: console.print(f"[dim]{m}[/]"))
    _print_plan(result)
    if json_out:
        Path(json_out).write_text(json.dumps(result.to_dict(), indent=2))


@click.command()
@click.argument("deployment", type=click.Path(exists=True, dir_okay=False))
@_with_common
@click.option("--test", "test_dir", type=click.Path(exists=True, file_okay=False),
              help="A dataset directory (or a generated sites directory) to evaluate on.")
@click.option("--exception-site", "exceptions", multiple=True, metavar="NAME=HOST:PORT",
              help="A second server of a site whose policy grants an export exception: the "
                   "refused centralized baseline runs again through it (repeat).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="geodml-report",
              show_default=True, help="The report directory.")
def compare(deployment, methods, compress, dense, secure, params, loss, lam, gtol, runs, days,
            growth, optimize, calibrate_mode, calibration_rows, store, test_dir, exceptions,
            out_dir) -> None:
    """Plan, then run the centralized baseline and each geo-distributed plan for real over
    DEPLOYMENT's sites, and write a report (report.md, report.json, plots, audit logs)."""
    from geodml.compare import run_compare
    from geodml.connect import federation_factory
    from geodml.deployment import load_deployment

    dep = load_deployment(deployment)
    overrides = {}
    for item in exceptions:
        name, sep, address = item.partition("=")
        if not sep or not name or not address:
            raise click.BadParameter(f"{item!r} is not NAME=HOST:PORT",
                                     param_hint="--exception-site")
        overrides[name] = address
    with _progress() as rows:
        result = run_compare(
            federation_factory(dep), dep, _variants(methods, compress, dense, params, secure),
            out_dir,
            _workload(loss, lam, gtol, runs, days, growth), test=_load_test(test_dir),
            exception_federation=federation_factory(dep, overrides) if overrides else None,
            exception_sites=list(overrides), optimize=optimize, calibrate_mode=calibrate_mode,
            store=_store(store, deployment), **_calibration(calibration_rows),
            progress=lambda m: console.print(f"[dim]{m}[/]"),
            on_row_factory=rows)
    _print_plan(result.plan)
    console.print(comparison_table(result, f"geodml compare: {len(dep.sites)} DCs, home "
                                           f"{dep.home}"))
    _summary(result)


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="geodml-demo",
              show_default=True, help="Where the data, certificates and report go.")
@click.option("--rows", type=click.IntRange(min=1000), default=200_000, show_default=True,
              help="Training rows per data center.")
@click.option("--hash-bits", type=click.IntRange(8, 24), default=12, show_default=True)
@click.option("--method", default="fadl-subspace", show_default=True,
              help="The geo-distributed method (see geodml train --help).")
@click.option("--compress", default="float16", show_default=True,
              help="Vector compression both ways (float32, float16, bfloat16, int8, none).")
def demo(out_dir: str, rows: int, hash_bits: int, method: str, compress: str) -> None:
    """Four DCs on this machine: geo-distributed training vs copying the data home."""
    from geodml.demo import run_demo

    with _progress() as on_rows:
        c = run_demo(Path(out_dir), rows=rows, test_rows=max(1000, rows // 10),
                     hash_bits=hash_bits, method=method,
                     compress=None if compress == "none" else compress,
                     progress=lambda m: console.print(f"[dim]{m}[/]"), on_row_factory=on_rows)
    _print_plan(c.plan)
    console.print(comparison_table(
        c, "geodml demo: 4 DCs, home us-east, logistic regression, lambda = 1/N, "
           "stop at ||grad|| <= 1e-3 ||grad_0||"))
    _summary(c)
