"""Throughput of the synthetic regional CTR generator, in memory and streamed to disk.

Usage: python bench/bench_synthetic.py [--rows 250000] [--test-rows 50000]
       [--regions 4] [--bits 20] [--workers 1,2] [--repeat 2] [--sync] [--dir PATH]

For each worker count it times ``write_regional`` (generate + append every block
to ``OUT/<region>/{train,test}``, manifest included) and reports rows/s and MB/s
of written data, best of ``--repeat``. With ``--sync`` the timing also covers
``os.sync()``, i.e. flushing the page cache to the device. A first row times
generation alone (one thread, no disk) for comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from geodml.data.synthetic import RegionalCTRConfig, RegionalCTRGenerator, write_regional


def generate_only(config: RegionalCTRConfig) -> float:
    """Seconds to generate every train and test block of every region in memory."""
    gen = RegionalCTRGenerator(config)
    _ = gen.intercept
    t0 = time.perf_counter()
    for r in range(len(config.regions)):
        params = gen.region_params(r)
        for split in ("train", "test"):
            for b in range(gen.n_blocks(split)):
                gen.block(params, r, split, b)
    return time.perf_counter() - t0


def to_disk(config: RegionalCTRConfig, root: Path, workers: int, sync: bool) -> tuple[float, int]:
    """Seconds and bytes of one ``write_regional`` run into a fresh directory."""
    out = root / f"run-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    manifest = write_regional(config, out, workers=workers)
    if sync:
        os.sync()
    seconds = time.perf_counter() - t0
    size = sum(s["bytes"] + s["test"]["bytes"] for s in manifest["sites"])
    shutil.rmtree(out, ignore_errors=True)
    return seconds, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=250_000, help="train rows per region")
    ap.add_argument("--test-rows", type=int, default=50_000, help="test rows per region")
    ap.add_argument("--regions", type=int, default=4)
    ap.add_argument("--bits", type=int, default=20, help="hash bits")
    ap.add_argument("--workers", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sync", action="store_true", help="include os.sync() in the timing")
    ap.add_argument("--dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()

    config = RegionalCTRConfig(
        regions=tuple(f"region{i}" for i in range(args.regions)),
        rows_per_region=args.rows,
        test_rows_per_region=args.test_rows,
        hash_bits=args.bits,
    )
    total = args.regions * (args.rows + args.test_rows)
    table = Table(title=f"synthetic CTR: {args.regions} regions x "
                  f"({args.rows:,} + {args.test_rows:,}) rows, 2^{args.bits} buckets, "
                  f"{os.cpu_count()} CPUs")
    for col in ("mode", "workers", "seconds", "rows/s", "MB/s"):
        table.add_column(col, justify="left" if col == "mode" else "right")

    best = min(generate_only(config) for _ in range(args.repeat))
    table.add_row("generate (memory)", "1", f"{best:.2f}", f"{total / best:,.0f}", "-")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for workers in (int(w) for w in args.workers.split(",")):
            runs = [to_disk(config, Path(tmp), workers, args.sync) for _ in range(args.repeat)]
            seconds, size = min(runs)
            mode = "write + sync" if args.sync else "write (page cache)"
            table.add_row(mode, str(workers), f"{seconds:.2f}", f"{total / seconds:,.0f}",
                          f"{size / seconds / 1e6:,.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
