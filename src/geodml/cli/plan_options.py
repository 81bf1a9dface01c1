"""The options `geodml plan` and `geodml compare` share: methods, compression, the
workload, what to optimize and how to calibrate."""

from __future__ import annotations

from collections.abc import Callable

import click

from geodml.cli.config import DEFAULT_GEO_METHOD
from geodml.cli.options import compression_options, objective_options

_OPTIONS = [
    click.option("--method", "methods", multiple=True, default=(DEFAULT_GEO_METHOD,),
                 show_default=True, help="A geo-distributed method (repeat)."),
    compression_options(repeat=True),
    click.option("--dense", is_flag=True,
                 help="Also plan each method with dense vectors (not support-restricted)."),
    click.option("--secure-aggregation", "secure", is_flag=True,
                 help="Also plan each method under secure aggregation (masked dense sums)."),
    objective_options,
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
    click.option("--calibration-points", type=click.IntRange(1, 2), default=2,
                 show_default=True,
                 help="Calibrations per plan: 2 also samples a quarter as many rows and "
                      "extrapolates the rounds' growth with the rows (when the sample is "
                      "under half the rows); 1: one sample, rounds taken as flat."),
    click.option("--store", type=click.Path(dir_okay=False),
                 help="Calibration store (default: .geodml/calibration.json beside the "
                      "deployment file)."),
    click.option("--serial-sites", is_flag=True,
                 help="Call one site at a time, for sites that share one machine (loopback): "
                      "each call's time is then its site's compute alone, and the modeled "
                      "time that of DCs with machines of their own."),
]


def plan_options(fn: Callable) -> Callable:
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def progress_line(message: str) -> None:
    """The planner's and comparison's progress messages, dimmed."""
    from geodml.cli.output import console

    console.print(f"[dim]{message}[/]")
