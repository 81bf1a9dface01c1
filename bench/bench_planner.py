"""Is the planner right? Plan, then run every plan for real, in both regimes.

Usage:
    python bench/bench_planner.py [--regimes ipinyou,synthetic,airline] [--rows 2000000]
        [--bits 18] [--methods fadl-subspace] [--gtol 1e-3]
        [--calibration-rows 200000] [--calibration-points 2] [--work DIR]

Regimes (4 DCs named us-east (home), eu-west, ap-south, sa-east, priced by the
region table of ``geodml.planning.wan``; every site allows export so both plans can run):

* ``ipinyou``: iPinYou split by region into 4 DCs (``../shared/datasets``): few rows,
  many features; centralizing should be cheaper.
* ``synthetic``: the regional CTR generator, ``--rows`` rows per DC at 2^``--bits``
  hashed features: many rows per feature; geo-distributed should be cheaper.
* any tabular preset of ``bench/bench_presets.py`` (``airline``, ``taxi``, ``adult``,
  ``covtype``, ``avazu``): the shared dataset split into 4 DCs by its natural column
  (airline by origin airport, covtype by wilderness area, ...), no test set.

For each regime it runs ``geodml.planning.compare.run_compare`` over in-process sites (the same
messages and byte counts as gRPC) with ``calibrate="always"`` and a fresh calibration
store: the planner predicts every plan (geo plans from a calibration run on a row
sample), then the centralized baseline and every geo plan run to ``--gtol``. It prints
the predicted (with its range) and metered WAN bytes of every plan, the relative errors
of bytes, modeled time and dollars, the plan the planner recommends ("leaning" where
the ranges overlap) and the plan that was actually cheapest (egress dollars).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from _regional import (
    deployment_for,
    federation_factory,
    geo_variants,
    in_process_sites,
    markdown_table,
    regional_data,
    rich_table,
)
from bench_presets import PRESETS, SHARED, split
from geodml.data import load_dataset
from geodml.data.dataset import Dataset
from geodml.data.partition import PartitionSpec, partition_source, site_dirs
from geodml.data.readers import open_source, read_dataset
from geodml.data.source import KeySpec
from geodml.planning.compare import run_compare
from geodml.planning.planner import CalibrationStore, Workload

NAMES = ("us-east", "eu-west", "ap-south", "sa-east")  # the first 4 of _regional.DC_NAMES


def ipinyou_sites(work: Path) -> tuple[dict[str, Dataset], Dataset]:
    options = {"n_features": 133465, "dtype": np.float32,
               "featindex": SHARED / "ipinyou_deepctr" / "featindex.fm.txt"}
    src = open_source(SHARED / "ipinyou_deepctr" / "train.fm.txt", "libsvm", **options)
    out = work / "ipinyou"
    if not (out / "manifest.json").is_file():
        partition_source(src, out, PartitionSpec("by-column", k=4,
                                                 key=KeySpec(feature_prefix="region:")))
    parts = [load_dataset(p) for p in site_dirs(out).values()]
    test = read_dataset(SHARED / "ipinyou_deepctr" / "test.fm.txt", "libsvm", **options)
    return dict(zip(NAMES, parts, strict=True)), test


def synthetic_sites(work: Path, rows: int, bits: int) -> tuple[dict[str, Dataset], Dataset]:
    train, test, _ = regional_data(work / "data", NAMES, rows, bits, min(50_000, rows // 10))
    return train, test


def run_regime(name: str, sites: dict[str, Dataset], test: Dataset | None, args,
               console: Console, work: Path) -> list[list[str]]:
    services = in_process_sites(sites)
    deployment = deployment_for(list(sites))
    variants = geo_variants(args.methods.split(","), args.compress.split(","))
    out = work / f"report-{name}"
    shutil.rmtree(out, ignore_errors=True)
    rows = sum(d.n_rows for d in sites.values())
    console.print(f"[bold]{name}[/]: {rows:,} rows in 4 DCs, "
                  f"{next(iter(sites.values())).n_features:,} features")
    start = time.perf_counter()
    c = run_compare(federation_factory(services, NAMES[0]), deployment, variants, out,
                    Workload(gtol=args.gtol), test=test, calibrate_mode="always",
                    store=CalibrationStore(out / "calibration.json"),
                    calibration_rows=args.calibration_rows,
                    calibration_points=args.calibration_points,
                    progress=lambda m: console.print(f"  [dim]{m}[/]"))
    cheapest = min((r for r in c.runs if r.objective is not None), key=lambda r: r.usd)
    table = []
    for r in c.runs:
        if r.objective is None:
            continue
        est = c.plan.estimate("centralize" if r.kind == "centralized" else r.plan)
        low, high = est.range_of("wan_bytes")
        verdict = "yes" if c.plan.decided else "leaning"
        table.append([name, r.plan, f"{est.wan_bytes / 1e6:,.2f} ({low / 1e6:,.2f}-"
                      f"{high / 1e6:,.2f})", f"{r.wan_bytes / 1e6:,.2f}",
                      *(f"{100 * e:+.1f}%" for e in (r.prediction_error, r.time_error,
                                                     r.usd_error)),
                      f"{est.seconds:,.1f}", f"{r.modeled_seconds:,.1f}",
                      f"{est.usd:.4f}", f"{r.usd:.4f}",
                      f"{r.test.get('auc', float('nan')):.5f}", f"{r.wall_seconds:.0f}",
                      est.basis.split(";")[0],
                      verdict if c.plan.recommended == est.plan else "",
                      "yes" if r is cheapest else ""])
    console.print(f"  {name}: {time.perf_counter() - start:.0f} s; report in {out}")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regimes", default="ipinyou,synthetic")
    ap.add_argument("--rows", type=int, default=2_000_000, help="synthetic rows per DC")
    ap.add_argument("--bits", type=int, default=18, help="synthetic hash bits")
    ap.add_argument("--methods", default="fadl-subspace")
    ap.add_argument("--compress", default="none", help="comma list: none, float16, ...")
    ap.add_argument("--gtol", type=float, default=1e-3)
    ap.add_argument("--calibration-rows", type=int, default=50_000,
                    help="rows of the median site in a calibration run (the planner's default)")
    ap.add_argument("--calibration-points", type=int, choices=(1, 2), default=2)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    console = Console(width=200)
    work = args.work or Path(tempfile.mkdtemp(prefix="geodml-bench-planner-"))
    work.mkdir(parents=True, exist_ok=True)
    cols = ["regime", "plan", "predicted MB", "metered MB", "err bytes", "err time", "err $",
            "predicted s", "modeled s", "predicted $", "metered $", "test AUC", "wall s",
            "basis", "recommended", "cheapest"]
    rows: list[list[str]] = []
    for regime in args.regimes.split(","):
        if regime == "ipinyou":
            if not SHARED.is_dir():
                console.print(f"skipping ipinyou: {SHARED} not found")
                continue
            sites, test = ipinyou_sites(work)
        elif regime == "synthetic":
            sites, test = synthetic_sites(work, args.rows, args.bits)
        elif regime in PRESETS:
            if not SHARED.is_dir():
                console.print(f"skipping {regime}: {SHARED} not found")
                continue
            parts = split(regime, work / regime)
            sites, test = dict(zip(NAMES, map(load_dataset, parts.values()), strict=True)), None
        else:
            sys.exit(f"unknown regime {regime!r}")
        rows += run_regime(regime, sites, test, args, console, work)
    console.print(rich_table(f"planner vs metered (gtol {args.gtol:g}, 4 DCs, home us-east)",
                             cols, rows, left=("regime", "plan", "basis")))
    console.print(markdown_table(cols, rows), soft_wrap=True)


if __name__ == "__main__":
    main()
