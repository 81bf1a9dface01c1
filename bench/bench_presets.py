"""The exact methods on the shipped tabular presets, split by their natural column.

Usage:
    OPENBLAS_NUM_THREADS=1 python bench/bench_presets.py
        [--datasets airline,taxi,adult,covtype,avazu,criteo,ipinyou]
        [--methods sqm-lbfgs,fadl,fadl-subspace] [--precondition diag|none]
        [--max-rounds 3000] [--markdown]

The datasets are read from ``$GEODML_SHARED_DATASETS`` (default ``../shared/datasets``).

Each preset is read as shipped (its own encoding) and split into K = 4 sites by its
natural column, key values largest first to the site with the fewest rows
(``geodml partition --scheme by-column -k 4``): airline by Origin, taxi by pickup
community area, adult by race, covtype by wilderness area, Avazu by site_id, iPinYou
by region; Criteo has no such column and is split iid. The reference optimum F* is
TRON's to 1e-10 on the pooled rows; each method runs over an in-process federation
of real site services (the messages and byte counts of gRPC) with lambda = 1/N,
logistic loss, to 1e-6 relative suboptimality or ``--max-rounds`` outer iterations,
and the table gives ``vector rounds / WAN MB`` at the first iteration reaching 1e-4
and 1e-6 ("-": never), the final suboptimality and the stop reason. The home DC is
the first site. Run with single-threaded BLAS: on 2 shared cores BLAS threads made
each 2^18-wide iteration several times slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.data import load_dataset
from geodml.data.partition import PartitionSpec, partition_source, site_dirs
from geodml.data.readers import COVTYPE_WILDERNESS, open_source
from geodml.data.source import KeySpec
from geodml.federation import Federation
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import tron
from geodml.optim.preconditioner import Preconditioner
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

SHARED = Path(os.environ.get("GEODML_SHARED_DATASETS",
                           Path(__file__).resolve().parents[2] / "shared" / "datasets"))
TOLERANCES = (1e-4, 1e-6)
K = 4
# name: (file under SHARED, format, reader options, natural key (None: iid))
PRESETS = {
    "airline": ("airline_allyears2k/allyears2k_headers.csv", "csv", {"preset": "airline"},
                KeySpec(column="Origin")),
    "taxi": ("chicago_taxi/chicago_taxi_big_tipper.csv", "csv", {"preset": "taxi"},
             KeySpec(column="pickup_community_area")),
    "adult": ("adult_uci/adult.data", "csv", {"preset": "adult"}, KeySpec(column="race")),
    "covtype": ("covtype_20k/covtype.20k.data", "csv", {"preset": "covtype"},
                KeySpec(onehot=COVTYPE_WILDERNESS)),
    "avazu": ("avazu/avazu_train_head9k.csv", "csv", {"preset": "avazu"},
              KeySpec(column="site_id")),
    "criteo": ("criteo_dac/criteo_kaggle_train_head10k.tsv", "criteo", {}, None),
    "ipinyou": ("ipinyou_deepctr/train.fm.txt", "libsvm",
                {"n_features": 133465, "zero_based": True,
                 "featindex": SHARED / "ipinyou_deepctr" / "featindex.fm.txt"},
                KeySpec(feature_prefix="region:")),
}


def split(name: str, out: Path) -> dict[str, Path]:
    rel, fmt, options, key = PRESETS[name]
    source = open_source(SHARED / rel, fmt, dtype=np.float64, **options)
    spec = (PartitionSpec("iid", k=K, seed=0) if key is None
            else PartitionSpec("by-column", k=K, key=key))
    partition_source(source, out, spec)
    return site_dirs(out)


def reference_optimum(sites: dict[str, Path], lam: float) -> float:
    parts = [load_dataset(p) for p in sites.values()]
    sums = [SiteSums(p.X.astype(np.float64), p.y, get_loss("logistic")) for p in parts]
    return tron(RegularizedObjective(sums, lam, parts[0].n_features), gtol=1e-10,
                max_iter=1000).f


def cell(result, tol: float) -> str:
    row = result.first_reaching(tol)
    return "-" if row is None else f"{row.vector_rounds:g} / {row.wan_bytes / 1e6:.3g} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(PRESETS))
    ap.add_argument("--methods", default="sqm-lbfgs,fadl,fadl-subspace")
    ap.add_argument("--precondition", default="diag", choices=("diag", "none"))
    ap.add_argument("--max-rounds", type=int, default=3000)
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table too")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} not found: this benchmark needs ../shared/datasets")
    preconditioner = Preconditioner(args.precondition)
    console = Console(width=200)
    table = Table(title=f"vector rounds / WAN MB to relative suboptimality, K = {K} by the "
                  f"natural column (lambda = 1/N, logistic, preconditioner "
                  f"{args.precondition}; '-' = not reached)")
    cols = ["data", "rows", "features", "method", *[f"{t:g}" for t in TOLERANCES], "final",
            "reason", "wall s"]
    for col in cols:
        table.add_column(col, justify="right")
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    work = Path(tempfile.mkdtemp(prefix="geodml-bench-presets-"))
    for name in args.datasets.split(","):
        sites = split(name, work / name)
        parts = [load_dataset(p) for p in sites.values()]
        n = sum(p.n_rows for p in parts)
        f_star = reference_optimum(sites, 1.0 / n)
        for method in args.methods.split(","):
            services = [SiteService(s, s, p) for s, p in zip(sites, parts, strict=True)]
            fed = Federation([InProcessTransport(s) for s in services], home=next(iter(sites)))
            start = time.perf_counter()
            spec = TrainSpec(tol=1e-6, gtol=1e-10, max_rounds=args.max_rounds,
                             preconditioner=preconditioner)
            result = train(fed, method, spec, RunRecorder(fed, f_star=f_star))
            fed.close()
            row = [name, str(n), str(parts[0].n_features), method,
                   *[cell(result, t) for t in TOLERANCES],
                   f"{result.rows[-1].suboptimality:.1e}", result.reason,
                   f"{time.perf_counter() - start:.1f}"]
            table.add_row(*row)
            md.append("| " + " | ".join(row) + " |")
            console.print(" ".join(row))
    console.print(table)
    if args.markdown:
        console.print("\n".join(md), soft_wrap=True)


if __name__ == "__main__":
    main()
