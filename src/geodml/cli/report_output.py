"""What `geodml plan`, `compare` and `demo` print: the plan, the comparison, the
live progress of every run."""

from __future__ import annotations

import contextlib

from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from geodml.cli.output import console


def plan_table(plan) -> Table:
    from geodml.planning.compare import fmt_bytes, span

    w = plan.workload
    title = (f"the planner's predictions (one run; workload: {w.runs_per_snapshot} run(s) per "
             f"snapshot, {w.days} day(s), growth {w.growth_per_day:.1%}/day)")
    table = Table(title=title)
    for col in ("plan", "permitted", "WAN bytes", "modeled", "$", "workload bytes",
                "workload $", "planning cost", "basis"):
        table.add_column(col, justify="left" if col in ("plan", "basis") else "right")
    for e in plan.estimates:
        style = "bold green" if e.plan == plan.recommended else (None if e.permitted else "red")
        table.add_row(e.plan, "yes" if e.permitted else "no",
                      span(e, "wan_bytes", fmt_bytes), span(e, "seconds", "{:,.1f} s".format),
                      span(e, "usd", "{:.4f}".format), span(e, "workload_bytes", fmt_bytes),
                      span(e, "workload_usd", "{:.4f}".format), planning_cost(e), e.basis,
                      style=style)
    return table


def planning_cost(e) -> str:
    """The calibration this estimate took: its WAN bytes and modeled seconds ("-": none,
    the estimate came from site statistics, a bound or a recorded run)."""
    from geodml.planning.compare import fmt_bytes

    if not e.calibration_wan_bytes:
        return "-"
    return f"{fmt_bytes(e.calibration_wan_bytes)}, {e.calibration_seconds:,.1f} s"


def print_plan(plan) -> None:
    console.print(plan_table(plan))
    for e in plan.estimates:
        if not e.permitted:
            console.print(f"[red]{e.plan} is not permitted:[/] {e.why_not}")
        for site, b in sorted((e.privacy or {}).get("sites", {}).items()):
            console.print(f"{e.plan}: site {site} adds noise x{b['noise_multiplier']:.3g} and "
                          f"will have spent epsilon {b['epsilon_spent_after']:.3g} of "
                          f"{b['epsilon']:g} (delta {b['delta']:g})")
    if plan.recommended and plan.decided:
        console.print(f"[bold]recommended: {plan.recommended}[/] ({plan.reason})")
    elif plan.recommended:
        console.print(f"[bold yellow]no clear winner; the point estimates favour "
                      f"{plan.recommended}[/] ({plan.reason})")
    else:
        console.print(f"[red]{plan.reason}[/]")


def comparison_table(c, title: str) -> Table:
    from geodml.planning.compare import table_rows

    rows = table_rows(c)
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(col, justify="left" if col in ("plan", "status") else "right")
    for r in rows:
        table.add_row(*r.values(), style="red" if r["status"] == "refused" else None)
    return table


def print_summary(c) -> None:
    """Refusals, every geo plan's WAN bytes and modeled time against centralizing's, the
    report."""
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
        if r.modeled_seconds and central.modeled_seconds:
            faster = central.modeled_seconds / r.modeled_seconds
            line += (f" in {faster:.1f}x less modeled time" if faster >= 1
                     else f" in {1 / faster:.1f}x more modeled time")
        if "auc" in r.test and "auc" in central.test:
            line += f"; |test AUC difference| = {abs(r.test['auc'] - central.test['auc']):.5f}"
        console.print(line)
    console.print(f"report: {c.out_dir / 'report.md'} (plots, report.json, audit logs beside "
                  f"it; {c.seconds:.0f} s)")


@contextlib.contextmanager
def run_progress():
    """A live line per run: iteration, WAN bytes and objective. Runs are sequential:
    when the next starts (and at the end), the previous line stops spinning, and the
    line of a run that never reported a row (refused) is removed."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=False) as bars:
        tasks: list[tuple[int, list[bool]]] = []

        from geodml.planning.compare import fmt_bytes

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
