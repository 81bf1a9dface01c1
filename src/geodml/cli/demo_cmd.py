"""`geodml demo`."""

from __future__ import annotations

from pathlib import Path

import click

from geodml.cli.options import COMPRESSION
from geodml.cli.output import console
from geodml.cli.plan_options import progress_line
from geodml.cli.report_output import comparison_table, print_plan, print_summary, run_progress


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="geodml-demo",
              show_default=True, help="Where the data, certificates and report go.")
@click.option("--rows", type=click.IntRange(min=1000), default=1_000_000, show_default=True,
              help="Training rows per data center (geo is faster than centralizing over "
                   "the demo's links from about 800,000).")
@click.option("--hash-bits", type=click.IntRange(8, 24), default=12, show_default=True)
@click.option("--method", default="sqm-lbfgs", show_default=True,
              help="The geo-distributed method (see geodml train --help).")
@click.option("--compress", type=COMPRESSION, default="float16", show_default=True,
              help="Vector compression both ways (none, float32, float16, bfloat16, float8, "
                   "int8).")
def demo(out_dir: str, rows: int, hash_bits: int, method: str, compress: str) -> None:
    """Four DCs on this machine: geo-distributed training vs copying the data home."""
    from geodml.demo import run_demo

    with run_progress() as on_rows:
        c = run_demo(Path(out_dir), rows=rows, test_rows=max(1000, rows // 10),
                     hash_bits=hash_bits, method=method,
                     compress=None if compress == "none" else compress,
                     progress=progress_line, on_row_factory=on_rows)
    print_plan(c.plan)
    console.print(comparison_table(
        c, "geodml demo: 4 DCs, home us-east, logistic regression, lambda = 1/N, "
           "stop at ||grad|| <= 1e-3 ||grad_0||"))
    print_summary(c)
