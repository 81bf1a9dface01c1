"""`geodml compare`."""

from __future__ import annotations

import click

from geodml.cli.config import CompareConfig
from geodml.cli.output import console
from geodml.cli.plan_options import plan_options, progress_line
from geodml.cli.report_output import comparison_table, print_plan, print_summary, run_progress
from geodml.cli.sites import load_test


@click.command()
@click.argument("deployment", type=click.Path(exists=True, dir_okay=False))
@plan_options
@click.option("--test", "test_dir", type=click.Path(exists=True, file_okay=False),
              help="A dataset directory (or a generated sites directory) to evaluate on.")
@click.option("--exception-site", "exceptions", multiple=True, metavar="NAME=HOST:PORT",
              help="A second server of a site whose policy grants an export exception: the "
                   "refused centralized baseline runs again through it (repeat).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="geodml-report",
              show_default=True, help="The report directory.")
def compare(**params) -> None:
    """Plan, then run the centralized baseline and each geo-distributed plan for real over
    DEPLOYMENT's sites, and write a report (report.md, report.json, plots, audit logs)."""
    run_comparison(CompareConfig.from_params(params))


def run_comparison(config: CompareConfig) -> None:
    from geodml.planning.compare import run_compare
    from geodml.planning.connect import federation_factory
    from geodml.planning.deployment import load_deployment

    plan = config.plan
    dep = load_deployment(plan.deployment)
    overrides = dict(config.exceptions)
    with run_progress() as rows:
        serial = plan.serial_sites
        result = run_compare(
            federation_factory(dep, serial=serial), dep, plan.variants(), config.out_dir,
            plan.workload.workload(), test=load_test(config.test_dir),
            exception_federation=federation_factory(dep, overrides, serial) if overrides
            else None,
            exception_sites=list(overrides), optimize=plan.optimize,
            calibrate_mode=plan.calibrate_mode, store=plan.calibration_store(),
            **plan.calibration(), progress=progress_line, on_row_factory=rows)
    print_plan(result.plan)
    console.print(comparison_table(result, f"geodml compare: {len(dep.sites)} DCs, home "
                                           f"{dep.home}"))
    print_summary(result)
