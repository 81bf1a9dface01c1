"""Geo-distributed methods against each other: rounds and WAN bytes to a tolerance.

Usage:
    python bench/bench_algorithms.py [--datasets a9a,w8a,ipinyou,covtype] [--k 2,4,8]
        [--methods sqm-lbfgs,fadl,fadl-subspace] [--partitions iid,natural,dirichlet]
        (a method may carry parameters: --methods "sqm-lbfgs trial_step=false,fadl")
        [--max-rounds 600] [--precondition diag|none|auto] [--markdown]

For every dataset, number of DCs K and partition (``iid``: seeded random;
``natural``: iPinYou by region, covtype by wilderness area (K = 4 only);
``dirichlet``: label skew with alpha = 0.3), the reference optimum F* is computed
centrally (TRON to 1e-10), then each method runs over an in-process federation of
real site services (the same messages and byte counts as gRPC) with
lambda = 1/N, logistic loss, until 1e-6 relative suboptimality or
``--max-rounds`` outer iterations. For 1e-3, 1e-4 and 1e-6 it prints
``vector rounds / WAN bytes`` at the first iteration reaching it ("-" if never),
and the final suboptimality. The home DC is the first site; its traffic is not
WAN traffic.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.cli.options import parse_params
from geodml.data import load_dataset
from geodml.data.partition import PartitionSpec, partition_source, site_dirs
from geodml.data.readers import open_source
from geodml.data.readers.table_presets import COVTYPE_WILDERNESS
from geodml.data.source import KeySpec
from geodml.federation import Federation
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import tron
from geodml.optim.preconditioner import Preconditioner
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TOLERANCES = (1e-3, 1e-4, 1e-6)


def source(name: str, with_keys: bool = False):
    if name in ("a9a", "w8a"):
        return open_source(SHARED / "libsvm" / name, "libsvm",
                           n_features=123 if name == "a9a" else 300, dtype=np.float64)
    if name == "ipinyou":
        return open_source(SHARED / "ipinyou_deepctr" / "train.fm.txt", "libsvm",
                           n_features=133465, dtype=np.float64,
                           featindex=SHARED / "ipinyou_deepctr" / "featindex.fm.txt")
    if name == "covtype":
        return open_source(SHARED / "covtype_20k" / "covtype.20k.data", "csv",
                           preset="covtype", dtype=np.float64)
    raise ValueError(f"unknown dataset {name}")


def partition_spec(dataset: str, partition: str, k: int) -> PartitionSpec | None:
    if partition == "iid":
        return PartitionSpec("iid", k=k, seed=0)
    if partition == "dirichlet":
        return PartitionSpec("dirichlet", k=k, seed=0, alpha=0.3)
    if dataset == "ipinyou":
        return PartitionSpec("by-column", k=k, key=KeySpec(feature_prefix="region:"))
    if dataset == "covtype" and k == 4:
        return PartitionSpec("by-column", key=KeySpec(onehot=tuple(COVTYPE_WILDERNESS)),
                             mapping={c: i for i, c in enumerate(COVTYPE_WILDERNESS)})
    return None  # no natural partition for this dataset and K


def reference_optimum(sites: dict[str, Path], lam: float) -> float:
    parts = [load_dataset(p) for p in sites.values()]
    sums = [SiteSums(p.X.astype(np.float64), p.y, get_loss("logistic")) for p in parts]
    return tron(RegularizedObjective(sums, lam, parts[0].n_features), gtol=1e-10,
                max_iter=1000).f


def federation(sites: dict[str, Path]) -> Federation:
    services = [SiteService(n, n, load_dataset(p)) for n, p in sites.items()]
    return Federation([InProcessTransport(s) for s in services], home=next(iter(sites)))


def cell(result, tol: float) -> str:
    row = result.first_reaching(tol)
    return "-" if row is None else f"{row.vector_rounds:.0f} / {row.wan_bytes / 1e6:.3g} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="a9a,w8a,ipinyou,covtype")
    ap.add_argument("--k", default="2,4,8")
    ap.add_argument("--methods", default="sqm-lbfgs,fadl,fadl-subspace")
    ap.add_argument("--partitions", default="iid,natural,dirichlet")
    ap.add_argument("--max-rounds", type=int, default=600)
    ap.add_argument("--precondition", choices=("diag", "none", "auto"), default="diag",
                    help="the exact methods' metric (geodml.optim.preconditioner)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} not found: this benchmark needs ../shared/datasets")
    console = Console(width=200)
    table = Table(title="vector rounds / WAN MB to reach relative suboptimality "
                  "(lambda = 1/N, logistic; '-' = not reached)")
    cols = ["data", "K", "partition", "method", *[f"{t:g}" for t in TOLERANCES], "final",
            "rounds", "wall s"]
    for col in cols:
        table.add_column(col, justify="right")
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    work = Path(tempfile.mkdtemp(prefix="geodml-bench-alg-"))
    for dataset in args.datasets.split(","):
        for k in (int(x) for x in args.k.split(",")):
            for partition in args.partitions.split(","):
                spec = partition_spec(dataset, partition, k)
                if spec is None:
                    continue
                out = work / f"{dataset}-{k}-{partition}"
                partition_source(source(dataset), out, spec)
                sites = site_dirs(out)
                n = sum(load_dataset(p).n_rows for p in sites.values())
                f_star = reference_optimum(sites, 1.0 / n)
                for plan in args.methods.split(","):
                    method, *items = plan.split()
                    fed = federation(sites)
                    start = time.perf_counter()
                    spec = TrainSpec(tol=1e-6, gtol=1e-7, max_rounds=args.max_rounds,
                                     preconditioner=Preconditioner(args.precondition),
                                     params=dict(parse_params(tuple(items))))
                    result = train(fed, method, spec, RunRecorder(fed, f_star=f_star))
                    fed.close()
                    last = result.rows[-1]
                    row = [dataset, str(k), partition, plan,
                           *[cell(result, t) for t in TOLERANCES],
                           f"{last.suboptimality:.1e}", str(last.rounds),
                           f"{time.perf_counter() - start:.1f}"]
                    table.add_row(*row)
                    md.append("| " + " | ".join(row) + " |")
                    console.print(" ".join(row))
                    if args.precondition == "auto":
                        console.print(f"  metric: {result.info.get('preconditioner')}")
    console.print(table)
    if args.markdown:
        console.print("\n".join(md), soft_wrap=True)


if __name__ == "__main__":
    main()
