"""The baselines (one-shot, FedAvg, ADMM, DANE) beside SQM L-BFGS: rounds and WAN bytes.

Usage:
    python bench/bench_baselines.py [--datasets a9a,covtype]
        [--methods oneshot,fedavg,admm,dane,sqm-lbfgs] [--max-rounds 200]
        [--stop-tol 1e-6] [--markdown]

A method may carry parameters: ``dane:mu=1e-3`` or ``fedavg:decay=4;batch_size=128``
(values parsed as JSON when they can be).

Problems (logistic loss, lambda = 1/N, no intercept), each over an in-process
federation of 4 real site services (the messages and byte counts of gRPC) and a
coordinator in a DC of its own, so every byte to or from a site is WAN traffic:

* ``a9a``: the 32,561 rows split iid into 4 sites by a seeded permutation;
* ``covtype``: the 20,000-row covtype sample (class 2 vs rest) split by wilderness
  area (8,477 / 499 / 6,349 / 4,675 rows; class-2 rates 0.59 / 0.13 / 0.15 / 0.004),
  read with the ``covtype`` preset.

``F*`` is computed centrally (TRON, gtol 1e-10). Each method runs until
``--stop-tol`` relative suboptimality or ``--max-rounds`` outer iterations. For
1e-2, 1e-3 and 1e-4 the table gives ``rounds / WAN bytes`` at the first record row
reaching it ("-" if never), where rounds count calls to every site (Evaluate,
LineSearch, LocalSolve — FedAvg's step-size tuning included); then the final
suboptimality, the totals and the wall time. Needs ../shared/datasets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.registry import TrainSpec, train
from geodml.centralized import train_centralized
from geodml.data import Dataset
from geodml.data.readers import open_source, read_dataset
from geodml.data.source import KeySpec, read_all
from geodml.federation import Federation
from geodml.optim import LbfgsOptions
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TOLERANCES = (1e-2, 1e-3, 1e-4)
WILDERNESS = ("c10", "c11", "c12", "c13")


def a9a_sites(seed: int = 0) -> tuple[Dataset, list[Dataset]]:
    data = read_dataset(SHARED / "libsvm" / "a9a", "libsvm", n_features=123, dtype=np.float64)
    perm = np.random.default_rng(seed).permutation(data.n_rows)
    return data, [Dataset(data.X[i], data.y[i], data.space) for i in np.array_split(perm, 4)]


def covtype_sites() -> tuple[Dataset, list[Dataset]]:
    src = open_source(SHARED / "covtype_20k" / "covtype.20k.data", "csv", preset="covtype")
    data, keys = read_all(src, key=KeySpec(onehot=WILDERNESS))
    return data, [Dataset(data.X[keys == k], data.y[keys == k], data.space)
                  for k in WILDERNESS]


DATASETS = {"a9a": a9a_sites, "covtype": covtype_sites}


def reference_optimum(data: Dataset) -> float:
    _, result = train_centralized(data, "logistic", solver="tron",
                                  options=LbfgsOptions(gtol=1e-10, max_iter=1000))
    return result.f


def parse_method(text: str) -> tuple[str, dict]:
    """``name`` or ``name:key=value;key=value``."""
    name, _, rest = text.partition(":")
    params = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return name, params


def run(parts: list[Dataset], f_star: float, method: str, params: dict, max_rounds: int,
        stop_tol: float) -> tuple[RunResult, float]:
    services = [SiteService(f"dc{i}", f"region{i}", p) for i, p in enumerate(parts)]
    with Federation([InProcessTransport(s) for s in services], home="coordinator") as fed:
        start = time.perf_counter()
        result = train(fed, method, TrainSpec(tol=stop_tol, gtol=1e-7, max_rounds=max_rounds,
                                              params=params),
                       RunRecorder(fed, f_star=f_star))
        return result, time.perf_counter() - start


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def row(dataset: str, label: str, result: RunResult, seconds: float) -> list[str]:
    cells = [dataset, label]
    for tol in TOLERANCES:
        hit = result.first_reaching(tol)
        cells.append("-" if hit is None else f"{hit.rounds} / {human_bytes(hit.wan_bytes)}")
    last = result.rows[-1]
    cells += [f"{last.suboptimality:.1e}", f"{last.rounds}", human_bytes(result.wan_bytes),
              f"{seconds:.1f}", result.reason]
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="a9a,covtype")
    parser.add_argument("--methods", default="oneshot,fedavg,admm,dane,sqm-lbfgs")
    parser.add_argument("--max-rounds", type=int, default=200)
    parser.add_argument("--stop-tol", type=float, default=1e-6)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    header = ["data", "method", *(f"to {t:g}: rounds / WAN" for t in TOLERANCES),
              "final subopt", "rounds", "WAN bytes", "seconds", "stop"]
    rows = []
    for name in args.datasets.split(","):
        data, parts = DATASETS[name]()
        f_star = reference_optimum(data)
        for text in args.methods.split(","):
            method, params = parse_method(text)
            result, seconds = run(parts, f_star, method, params, args.max_rounds, args.stop_tol)
            rows.append(row(name, text, result, seconds))
            if not args.markdown:
                print(" | ".join(rows[-1]), flush=True)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    table = Table(*header, title="Baselines: rounds and WAN bytes to relative suboptimality")
    for r in rows:
        table.add_row(*r)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
