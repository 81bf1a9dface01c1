"""Value+gradient throughput of a big site, as a fraction of this machine's memory
bandwidth.

Usage: python bench/bench_throughput.py [--rows 10000000] [--bits 20] [--threads 2]
           [--dtype float32,float64] [--order hot-first,given] [--repeat 5] [--work DIR]

1. **Memory bandwidth**: the best of ``--repeat`` copies of a 1 GiB float64 array
   (``np.copyto``, one thread: read 1 GiB + write 1 GiB), and the same split over
   ``--threads`` threads; bytes moved / second.
2. **A site's value+gradient**: ``--rows`` rows of the synthetic regional CTR
   generator (30 nonzeros per row, 2^``--bits`` hashed features), written once to
   ``--work`` and memory-mapped; one :class:`~geodml.models.site_sums.SiteSums` with
   ``--threads`` row blocks, timing ``evaluate(w)`` (margins ``z = X w``, then loss and
   gradient ``X^T l'(z)``), best of ``--repeat``, for each column order of ``--order``:
   ``hot-first`` (the default of an in-memory site: columns relabeled by decreasing
   count, see :mod:`geodml.models.site_sums`) and ``given`` (the hashed order). An
   evaluation reads the CSR arrays twice (``data`` + ``indices`` + ``indptr`` per
   pass), which is the number it reports as bytes of CSR read per second, and the
   ratio to the threaded copy bandwidth. The sums of both orders must be bitwise equal.
3. **float32 accuracy**: loss and gradient of the float32 data (float64 accumulation
   of per-row terms) against the same matrix in float64: relative errors.
4. **A direction's margins** over float32 data: ``set_direction(p)`` (``q = X p`` in
   float64, what SQM's and FADL's steps and line searches multiply), best and median
   of ``--repeat``, over the blocks' kept float64 copy of the values against a copy made
   for every product (the code before 2026-12-07, emulated by dropping the kept copy
   before each call), and one ``evaluate(w)`` for scale.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from geodml.data import load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.models import SiteSums, get_loss


def copy_bandwidth(nbytes: int, threads: int, repeat: int) -> float:
    """Bytes moved per second (read + write) by copying ``nbytes`` of float64."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    parts = np.array_split(np.arange(len(src)), threads)
    bounds = [(p[0], p[-1] + 1) for p in parts]
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b]))
                   for a, b in bounds]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best


def timings(fn, repeat: int, before=lambda: None) -> tuple[float, float]:
    """Best and median seconds of ``repeat`` calls of ``fn`` (``before`` untimed)."""
    seconds = []
    for _ in range(repeat):
        before()
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
    return min(seconds), float(np.median(seconds))


def direction_margins(X, y, loss, threads: int, repeat: int
                      ) -> dict[str, tuple[float, float]]:
    """Best and median seconds of a direction's margins over float32 rows, over the
    kept copy and a copy per product, and of one evaluate."""
    rng = np.random.default_rng(1)
    sums = SiteSums(X.astype(np.float32, copy=False), y, loss, n_threads=threads)
    sums.evaluate(rng.normal(scale=0.01, size=X.shape[1]))
    p = rng.normal(scale=0.01, size=X.shape[1])

    def drop() -> None:
        for b in sums._blocks:
            b._wide = None

    out = {"evaluate(w)": timings(lambda: sums.evaluate(p), repeat),
           "copy per product": timings(lambda: sums.set_direction(p), repeat, drop)}
    sums.set_direction(p)  # makes the kept copy
    out["kept copy"] = timings(lambda: sums.set_direction(p), repeat)
    sums.close()
    return out


def csr_bytes(X) -> int:
    return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--bits", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32,float64")
    ap.add_argument("--order", default="hot-first,given")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    console = Console()
    work = args.work or Path(tempfile.mkdtemp(prefix="geodml-throughput-"))
    out = work / f"site-{args.rows}-{args.bits}"
    if not (out / "manifest.json").is_file():
        console.print(f"generating {args.rows:,} rows into {out}")
        write_regional(RegionalCTRConfig(regions=("site",), rows_per_region=args.rows,
                                         test_rows_per_region=1, hash_bits=args.bits),
                       out, overwrite=True, workers=args.threads)
    one = copy_bandwidth(1 << 30, 1, args.repeat)
    many = copy_bandwidth(1 << 30, args.threads, args.repeat)
    data = load_dataset(site_dirs(out)["site"], mmap=True)
    loss = get_loss("logistic")
    w = np.random.default_rng(0).normal(scale=0.01, size=data.n_features)
    table = Table(title=f"value+gradient on {data.n_rows:,} rows, {data.nnz:,} nonzeros, "
                        f"{args.threads} threads")
    for col in ("dtype", "columns", "CSR GB", "best s", "CSR GB/s read",
                "of copy bandwidth", "Gnnz/s"):
        table.add_column(col, justify="right")
    results = {}
    for dtype in args.dtype.split(","):
        X = data.X if data.X.dtype == np.dtype(dtype) else data.X.astype(dtype)
        for order in args.order.split(","):
            sums = SiteSums(X, data.y, loss, n_threads=args.threads,
                            hot_first=order == "hot-first")
            sums.evaluate(w)  # warm: page the memory-mapped arrays in
            best = float("inf")
            for _ in range(args.repeat):
                start = time.perf_counter()
                results[dtype, order] = sums.evaluate(w)
                best = min(best, time.perf_counter() - start)
            read = 2 * csr_bytes(X)
            table.add_row(dtype, order, f"{csr_bytes(X) / 1e9:.2f}", f"{best:.3f}",
                          f"{read / best / 1e9:.2f}", f"{read / best / many:.2f}",
                          f"{2 * X.nnz / best / 1e9:.2f}")
            sums.close()
            del sums
        a, b = results.get((dtype, "hot-first")), results.get((dtype, "given"))
        if a is not None and b is not None and (a.loss != b.loss
                                                or not np.array_equal(a.grad, b.grad)):
            raise SystemExit(f"{dtype}: hot-first and given column orders disagree")
    console.print(f"copy bandwidth: {one / 1e9:.2f} GB/s on 1 thread, {many / 1e9:.2f} GB/s "
                  f"on {args.threads} (read + write)")
    console.print(table)
    order = args.order.split(",")[0]
    if {("float32", order), ("float64", order)} <= set(results):
        a, b = results["float32", order], results["float64", order]
        console.print(f"float32 vs float64 data: loss rel. error "
                      f"{abs(a.loss - b.loss) / abs(b.loss):.2e}, gradient rel. error "
                      f"{np.linalg.norm(a.grad - b.grad) / np.linalg.norm(b.grad):.2e}")
    margins = direction_margins(data.X, data.y, loss, args.threads, args.repeat)
    ratio = [a / b for a, b in zip(margins["copy per product"], margins["kept copy"],
                                   strict=True)]
    console.print("a direction's margins X p in float64 over float32 rows (best, median): "
                  + ", ".join(f"{k} {a:.3f} / {m:.3f} s" for k, (a, m) in margins.items())
                  + f"; copy per product / kept copy {ratio[0]:.2f}x / {ratio[1]:.2f}x")


if __name__ == "__main__":
    main()
