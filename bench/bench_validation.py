"""Stopping at statistical precision on the demo's data: `--stop validation` against gtol.

Usage: python bench/bench_validation.py [--rows 200000] [--bits 12] [--share 0.1]
       [--patience 1,2,3] [--threshold 1e-4] [--compress float16]
       [--method fadl-subspace] [--work DIR]

Generates (or reuses under ``--work``) the demo's data (:func:`geodml.demo.run_demo`'s
generator: 4 regions, ``rows`` training rows each, 2^bits hashed features) and trains
``--method`` (FADL-subspace; the demo's own is sqm-lbfgs at 1,000,000 rows) over
in-process sites (the messages and metered bytes of gRPC), vectors
compressed both ways as in the demo:

- **gtol 1e-3**: the demo's stop, all rows training (no held-out share);
- **curve**: ``share`` of every site's rows held out, run on to gtol 1e-6 to see the
  whole held-out curve; its *knee* is the first row ``r`` after which no row improves
  the held-out log loss by the threshold, ``V_j >= (1 - threshold) V_r`` for all
  ``j > r``: where validation loss stops improving;
- **validation, patience P**: ``--stop validation`` with each patience (gtol 1e-8:
  only the held-out loss stops it).

For each: outer iterations, vector rounds, WAN bytes, test AUC and log loss on the
demo's test rows, and for the validation stops the vector rounds between the knee and
the stop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from _regional import markdown_table, rich_table
from bench_ctr import compression
from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.algorithms.stop import ValidationStop
from geodml.data.dataset import Dataset
from geodml.data.partition import site_dirs
from geodml.data.store import load_dataset
from geodml.demo import _data
from geodml.federation import Federation
from geodml.job.validation import ValidationJob
from geodml.metrics import log_loss, roc_auc
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

COLS = ["run", "iters", "vector rounds", "WAN MB", "test log loss", "test AUC",
        "best held-out", "knee (vr)", "stop - knee (vr)", "stop"]


def knee(rows, threshold: float):
    """The first row after which no row gains ``threshold`` (relative) held-out loss."""
    losses = [r.metrics["val_log_loss"] for r in rows]
    for i, v in enumerate(losses):
        if all(later >= (1 - threshold) * v for later in losses[i + 1:]):
            return rows[i]
    return rows[-1]


def run(sites: dict[str, Dataset], test: Dataset, comp: str, spec: TrainSpec,
        validation: ValidationJob | None, method: str):
    transports = [InProcessTransport(SiteService(n, n, d)) for n, d in sites.items()]
    with Federation(transports, next(iter(sites)), compression=compression(comp),
                    validation=validation) as fed:
        recorder = RunRecorder(fed)
        result = train(fed, method, spec, recorder)
        wan = fed.meter.snapshot()["wan_bytes"]
    z = test.X @ result.w
    return result, recorder.rows, wan, roc_auc(test.y, z), log_loss(test.y, z)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--bits", type=int, default=12)
    ap.add_argument("--share", type=float, default=0.1)
    ap.add_argument("--patience", default="1,2,3")
    ap.add_argument("--threshold", type=float, default=1e-4)
    ap.add_argument("--compress", default="float16")
    ap.add_argument("--method", default="fadl-subspace")
    ap.add_argument("--work", type=Path, default=Path("/tmp/geodml-bench-validation"))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    console = Console()
    data_dir = _data(args.work, args.rows, max(1000, args.rows // 10), args.bits, 0)
    sites = {n: load_dataset(p) for n, p in site_dirs(data_dir).items()}
    test = Dataset.concat([load_dataset(p) for p in site_dirs(data_dir, "test").values()])
    held = ValidationJob(args.share)
    out = []

    def row(name, result, rows, wan, auc, loss, knee_row=None):
        vr = rows[-1].vector_rounds
        best = "-"
        if "validation" in result.info:
            best = f"{result.info['validation']['best_log_loss']:.6f}"
        out.append([name, str(rows[-1].iteration), f"{vr:g}", f"{wan / 1e6:.3f}",
                    f"{loss:.6f}", f"{auc:.5f}", best,
                    "-" if knee_row is None else f"{knee_row.vector_rounds:g}",
                    "-" if knee_row is None or "validation" not in result.reason
                    else f"{vr - knee_row.vector_rounds:g}", result.reason])
        console.print(out[-1])

    row("gtol 1e-3", *run(sites, test, args.compress, TrainSpec(gtol=1e-3), None, args.method))
    curve = run(sites, test, args.compress, TrainSpec(gtol=1e-6), held, args.method)
    the_knee = knee(curve[1], args.threshold)
    row(f"curve: gtol 1e-6, {args.share:g} held out", *curve, the_knee)
    for p in (int(x) for x in args.patience.split(",")):
        spec = TrainSpec(gtol=1e-8, validation=ValidationStop(p, args.threshold))
        row(f"validation, patience {p}", *run(sites, test, args.compress, spec, held,
                                              args.method), the_knee)
    title = (f"demo data ({len(sites)} DCs x {args.rows:,} rows, 2^{args.bits}), "
             f"{args.method} {args.compress}, threshold {args.threshold:g}")
    console.print(rich_table(title, COLS, out, left=("run", "stop")))
    if args.markdown:
        print(markdown_table(COLS, out))


if __name__ == "__main__":
    main()
