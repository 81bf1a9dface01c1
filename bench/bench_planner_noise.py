"""What limits the planner's time predictions at 2^20 features: how the centralized
L-BFGS's iterations scatter, and how a geo run's calls grow with the rows.

Usage:
    python bench/bench_planner_noise.py iterations [--dcs 4] [--rows 100000] [--work DIR]
    python bench/bench_planner_noise.py trace [--dcs 4] [--rows 100000] [--work DIR]
    python bench/bench_planner_noise.py calls [--dcs 2] [--rows 1000000]
        [--method fadl-subspace] [--shares 0.005,0.02,0.1,1] [--work DIR]
    python bench/bench_planner_noise.py steps [--dcs 2] [--rows 1000000] [--work DIR]
    python bench/bench_planner_noise.py memory [--freed 0,0.5,2,3.5]
    python bench/bench_planner_noise.py setup [--dcs 4] [--rows 80000] [--bits 12]
        [--work DIR]

Both read (or generate) the regional CTR data of ``bench/paper.py`` (``bench/_regional.py``,
2^bits features, K DCs, ``--work`` its cache; the paper run's ``--work`` is reused).

``iterations``: the centralized solver (:func:`geodml.centralized.train_centralized`,
each DC's rows at its base rate's curvature, gtol 1e-3) on the pooled rows, on every
DC's rows alone, and on pooled evenly spaced samples (lambda / f, as the planner
samples), with 10, 15 and 40 curvature pairs: the iterations the planner must predict
and how far apart the same solver lands on the same data.

``trace``: the same solver (default memory) on the pooled rows and on the home DC's
alone, iteration by iteration: the relative gradient norm its stop rule reads, the
relative suboptimality, and the iteration's seconds (which grow as its curvature pairs
fill: what a timing of its first few iterations misses).

``calls``: one geo method (float8 both ways, as in the paper run) over in-process sites
on each share of the rows (lambda / f), with the median seconds of each call
(LocalSolve, Evaluate, Subspace, ...) and one value+gradient pass timed at the home
site: how a calibration's compute grows to the full run's.

``steps``: twelve full-size steps along a direction at the home site in each of three
sessions, each with its seconds and page faults: how far one timing of the same work
moves on this machine.

``memory``: the memory probe (:mod:`geodml.planning.memory_probe`) and a fixed 256 MB
first touch, each right after a child first touched and freed ``--freed`` GB.

``setup``: the centralized baseline's export, then its copy, setup and first iteration
right after the export and 10 s later, twice each: whether the copy finds the memory
the export freed still backed.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from _regional import (
    dc_names,
    federation_factory,
    geo_variants,
    in_process_sites,
    markdown_table,
    regional_data,
)
from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.centralized import train_centralized
from geodml.data.dataset import Dataset
from geodml.optim import LbfgsOptions
from geodml.planning.calibration import time_pass
from geodml.planning.memory_probe import memory_rates

MEMORIES = (10, 15, 40)
GTOL = 1e-3


def _sample(data: Dataset, share: float) -> Dataset:
    """An evenly spaced sample of ``share`` of the rows (as a site samples)."""
    k = max(1, round(share * data.n_rows))
    return data.take(np.unique(np.linspace(0, data.n_rows - 1, k).round().astype(np.int64)))


def _iterations(parts: list[Dataset], lam: float, memory: int) -> int:
    data = Dataset.concat(parts) if len(parts) > 1 else parts[0]
    _, result = train_centralized(data, "logistic", lam,
                                  LbfgsOptions(gtol=GTOL, max_iter=1000, memory=memory),
                                  sources=[p.n_rows for p in parts] if len(parts) > 1 else None)
    return result.iterations


def iterations(sites: dict[str, Dataset], shares: list[float]) -> list[list[str]]:
    names = list(sites)
    lam = 1.0 / sum(d.n_rows for d in sites.values())
    rows = []
    for share in shares:
        parts = [_sample(sites[n], share) if share < 1 else sites[n] for n in names]
        label = "all rows" if share >= 1 else f"{share:.2%} sample"
        rows.append([f"{len(names)} DCs pooled, {label}",
                     *(str(_iterations(parts, lam / share, m)) for m in MEMORIES)])
    for name in names:  # each DC alone: its share of lambda times the rows
        rows.append([f"{name} alone", *(str(_iterations([sites[name]], lam * len(names), m))
                                        for m in MEMORIES)])
    return rows


def trace(sites: dict[str, Dataset]) -> list[list[str]]:
    names = list(sites)
    lam = 1.0 / sum(d.n_rows for d in sites.values())
    columns = []
    # pooled rows at lambda = 1/N; the home DC's alone at its share of lambda times K
    for parts, scale in ((list(sites.values()), 1), ([sites[names[0]]], len(names))):
        data = Dataset.concat(parts) if len(parts) > 1 else parts[0]
        times: list[float] = []
        _, result = train_centralized(
            data, "logistic", lam * scale, LbfgsOptions(gtol=GTOL / 10, max_iter=1000),
            sources=[p.n_rows for p in parts] if len(parts) > 1 else None,
            callback=lambda _r, _w, times=times: times.append(time.perf_counter()))
        g0, f_star = result.history[0].grad_norm, result.history[-1].f
        columns.append([(f"{h.grad_norm / g0:.1e}", f"{(h.f - f_star) / abs(f_star):.0e}",
                         f"{(t1 - t0) * 1e3:.0f}")
                        for h, t0, t1 in zip(result.history[1:], times[:-1], times[1:],
                                             strict=True)])
    length = max(len(c) for c in columns)
    return [[str(k + 1), *(x for c in columns
                           for x in (c[k] if k < len(c) else ("", "", "")))]
            for k in range(length)]


def calls(sites: dict[str, Dataset], method: str, shares: list[float]) -> list[list[str]]:
    names = list(sites)
    open_federation = federation_factory(in_process_sites(sites), names[0])
    variant = geo_variants([method], ["float8"])[0]
    lam = 1.0 / sum(d.n_rows for d in sites.values())
    kinds = ("LocalSolve", "Subspace", "Evaluate")
    rows = []
    for share in shares:
        with open_federation(compression=variant.compression(), sample_fraction=share) as fed:
            spec = TrainSpec(loss="logistic", lam=lam / share, gtol=GTOL,
                             params=dict(variant.params))
            result = train(fed, variant.method, spec, RunRecorder(fed))
            seconds = defaultdict(list)
            for r in fed.meter.rounds:
                if r.round is not None:
                    seconds[r.call].append(r.seconds)
            one_pass = time_pass(fed, names[0], 3)
        rows.append([f"{share:.1%}", f"{one_pass * 1e3:.1f} ms",
                     *(f"{np.median(seconds[k]):.3f} s" if seconds[k] else "-" for k in kinds),
                     f"{result.rows[-1].vector_rounds:g}"])
    return rows


def steps(sites: dict[str, Dataset], sessions: int = 3, count: int = 12) -> list[list[str]]:
    names = list(sites)
    open_federation = federation_factory(in_process_sites(sites), names[0])
    lam = 1.0 / sum(d.n_rows for d in sites.values())
    rng = np.random.default_rng(0)
    rows = []
    for session in range(sessions):
        with open_federation(compression=geo_variants(["sqm-lbfgs"], ["float8"])[0]
                             .compression()) as fed:
            fed.prepare("logistic", lam)
            fed.evaluate(rng.normal(scale=1e-2, size=fed.n_features), sites=[names[0]])
            cells = []
            for _ in range(count):
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                fed.evaluate(step=0.5, direction=rng.normal(scale=1e-2, size=fed.n_features),
                             sites=[names[0]])
                faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
                cells.append(f"{fed.meter.rounds[-1].seconds * 1e3:.0f} ms / {faults / 1e3:.0f}k")
            fed.close_sessions()
        rows.append([str(session + 1), *cells])
    return rows


def memory(freed: list[float]) -> list[list[str]]:
    hog = "import sys, numpy as np; np.ones(int(float(sys.argv[1]) * 1e9) // 8)"
    fixed = ("import time, numpy as np; t = time.perf_counter(); a = np.empty(2**25); "
             "a.fill(1.0); print(2**28 / (time.perf_counter() - t))")
    rows = []
    for gb in freed:
        for probe in ("fixed", "probe"):
            if gb:
                subprocess.run([sys.executable, "-c", hog, str(gb)], check=True)
            start = time.perf_counter()
            rate = (float(subprocess.run([sys.executable, "-c", fixed], check=True,
                                         capture_output=True, text=True).stdout)
                    if probe == "fixed" else memory_rates.__wrapped__().fresh)
            rows.append([f"{gb:g} GB", "256 MB first touch" if probe == "fixed"
                         else "memory_probe", f"{rate / 1e6:,.0f} MB/s",
                         f"{time.perf_counter() - start:.2f} s"])
    return rows


def setup(sites: dict[str, Dataset], waits: tuple[float, ...] = (0, 10, 0, 10)
          ) -> list[list[str]]:
    """Per wait: the export's seconds, then the copy, setup and one iteration's (module
    doc)."""
    names = list(sites)
    open_federation = federation_factory(in_process_sites(sites), names[0])
    lam = 1.0 / sum(d.n_rows for d in sites.values())
    rows = []
    for wait in waits:
        with open_federation() as fed:
            fed.prepare("logistic", lam, restrict_to_support=False, job="export")
            start = time.perf_counter()
            parts = [fed.export(name) for name in names]
            exported = time.perf_counter() - start
            time.sleep(wait)  # the measured quantity: how long freed memory stays quick
            start = time.perf_counter()
            data = Dataset.concat(parts)
            train_centralized(data, "logistic", lam, LbfgsOptions(gtol=0.0, max_iter=1),
                              sources=[p.n_rows for p in parts])
            rows.append([f"{wait:g} s", f"{exported:.2f} s",
                         f"{time.perf_counter() - start:.3f} s", f"{data.X.nnz:,}"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("part", choices=("iterations", "trace", "calls", "steps", "memory",
                                         "setup"))
    ap.add_argument("--dcs", type=int, default=4)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--bits", type=int, default=20)
    ap.add_argument("--method", default="fadl-subspace")
    ap.add_argument("--shares", default=None,
                    help="iterations: 1,0.2,0.05,0.0125; calls: 0.005,0.02,0.1,1")
    ap.add_argument("--work", type=Path, default=Path("/tmp/paper/work20"))
    ap.add_argument("--freed", default="0,0.5,2,3.5", help="memory: GB freed before each probe")
    args = ap.parse_args()
    if args.part == "memory":
        print(markdown_table(["freed just before", "probe", "rate", "took"],
                             memory([float(x) for x in args.freed.split(",")])))
        return
    default = "1,0.2,0.05,0.0125" if args.part == "iterations" else "0.005,0.02,0.1,1"
    shares = [float(x) for x in (args.shares or default).split(",")]
    sites, _, _ = regional_data(args.work / "data", dc_names(args.dcs), args.rows, args.bits,
                                test_rows=20_000)
    if args.part == "iterations":
        cols = ["data", *(f"memory {m}" for m in MEMORIES)]
        print(markdown_table(cols, iterations(sites, shares)))
    elif args.part == "setup":
        print(markdown_table(["wait after the export", "export", "copy, setup, 1 iteration",
                              "nonzeros"], setup(sites)))
    elif args.part == "steps":
        print(markdown_table(["session", *(f"step {k + 1}" for k in range(12))], steps(sites)))
    elif args.part == "trace":
        cols = ["iteration", *(f"{who} {what}" for who in ("pooled", "home")
                               for what in ("|g| / |g0|", "subopt", "ms"))]
        print(markdown_table(cols, trace(sites)))
    else:
        cols = ["share of rows", "pass", "LocalSolve", "Subspace", "Evaluate",
                "vector rounds"]
        print(markdown_table(cols, calls(sites, args.method, shares)))


if __name__ == "__main__":
    main()
