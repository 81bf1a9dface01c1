"""`geodml plan`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geodml.cli.config import PlanConfig
from geodml.cli.plan_options import plan_options, progress_line
from geodml.cli.report_output import print_plan


@click.command()
@click.argument("deployment", type=click.Path(exists=True, dir_okay=False))
@plan_options
@click.option("--json", "json_out", type=click.Path(dir_okay=False),
              help="Also write the plan as JSON here.")
def plan(**params) -> None:
    """Predict bytes, modeled time and dollars of centralizing and of each geo-distributed
    plan over DEPLOYMENT's sites and links, and recommend one."""
    run_plan(PlanConfig.from_params(params))


def run_plan(config: PlanConfig) -> None:
    from geodml.planning.connect import federation_factory
    from geodml.planning.deployment import load_deployment
    from geodml.planning.planner import make_plan

    dep = load_deployment(config.deployment)
    result = make_plan(federation_factory(dep, serial=config.serial_sites), dep, config.variants(),
                       config.workload.workload(), config.optimize, config.calibrate_mode,
                       config.calibration_store(), **config.calibration(),
                       progress=progress_line)
    print_plan(result)
    if config.json_out:
        Path(config.json_out).write_text(json.dumps(result.to_dict(), indent=2))
