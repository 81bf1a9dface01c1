"""Geo methods on the demo's data over the demo's links: rounds, bytes, modeled time.

Usage: python bench/bench_demo_links.py [--rows 200000] [--bits 12] [--compress float16]
       [--plan 'sqm-lbfgs' --plan 'sqm-lbfgs trial_step=false' ...] [--work DIR] [--markdown]

Sets up what ``geodml demo`` does (:mod:`geodml.demo`: the four regions' data under
``--work``, a CA, one ``geodml site serve`` process per DC on loopback with mutual TLS,
the deployment file placing them in their AWS regions) and trains every ``--plan``
(a method, then its ``KEY=VALUE`` parameters) over gRPC, one site called at a time as
the demo does (each call's time is then its site's compute alone). For each: outer
iterations, rounds, vector rounds, WAN bytes, and :func:`geodml.planning.wan.model_run`
over the deployment's links: the modeled seconds, their network part (without the
sites' compute) and the rounds by call. Centralizing the same data is the demo's
``centralize (exception for eu-west)`` row (4.1-4.4 s modeled in the README's runs).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from _regional import markdown_table, rich_table
from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.cli.options import parse_params
from geodml.data.partition import site_dirs
from geodml.demo import (
    FORBIDS_EXPORT,
    GTOL,
    REGIONS,
    _certs,
    _data,
    _site_config,
    demo_variant,
    write_deployment,
)
from geodml.planning.connect import federation_factory
from geodml.planning.deployment import load_deployment
from geodml.planning.wan import model_run
from geodml.site.launcher import LocalCluster
from geodml.wire.tls import TlsFiles

COLS = ["plan", "iters", "rounds", "vector rounds", "WAN MB", "modeled s", "network s",
        "rounds by call", "wall s"]


def run_plan(open_federation, deployment, plan: str, compress: str) -> list[str]:
    """One training run of ``plan`` ("method KEY=VALUE ...") and its modeled time."""
    method, *items = plan.split()
    variant = demo_variant(method, compress)
    t0 = time.perf_counter()
    with open_federation(compression=variant.compression()) as fed:
        result = train(fed, method, TrainSpec(gtol=GTOL, params=dict(parse_params(
            tuple(items)))), RunRecorder(fed))
        fed.close_sessions()
        rounds, snapshot = fed.meter.rounds, fed.meter.snapshot()
    modeled, network = model_run(rounds, deployment), model_run(rounds, deployment, 0.0)
    calls: dict[str, int] = {}
    for r in rounds:
        calls[r.call] = calls.get(r.call, 0) + 1
    last = result.rows[-1]
    return [f"{plan} {compress}", str(last.iteration),
            str(modeled.rounds), f"{last.vector_rounds:g}", f"{snapshot['wan_bytes'] / 1e6:.3f}",
            f"{modeled.seconds:.2f}", f"{network.seconds:.2f}",
            ", ".join(f"{k} {v}" for k, v in calls.items()),
            f"{time.perf_counter() - t0:.0f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--bits", type=int, default=12)
    ap.add_argument("--compress", default="float16")
    ap.add_argument("--plan", action="append",
                    help="a method and its KEY=VALUE parameters (repeat; default: "
                         "fadl-subspace, sqm-lbfgs, sqm-lbfgs trial_step=false)")
    ap.add_argument("--work", type=Path, default=Path("bench-work/demo-links"))
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    plans = args.plan or ["fadl-subspace", "sqm-lbfgs", "sqm-lbfgs trial_step=false"]
    console = Console()
    out = args.work.resolve()
    out.mkdir(parents=True, exist_ok=True)
    train_dirs = site_dirs(_data(out, args.rows, 20_000, args.bits, 0))
    certs = _certs(out)
    configs = [_site_config(r, train_dirs[r], certs, r != FORBIDS_EXPORT) for r in REGIONS]
    client = TlsFiles(certs / "ca.pem", certs / "coordinator.pem", certs / "coordinator.key")
    rows = []
    with LocalCluster(configs, out / "sites", client_tls=client) as cluster:
        path = write_deployment(out / "deployment.toml",
                                {r: cluster.sites[r].address for r in REGIONS}, certs)
        deployment = load_deployment(path)
        open_federation = federation_factory(deployment, serial=True)
        for plan in plans:
            rows.append(run_plan(open_federation, deployment, plan, args.compress))
            console.log(" | ".join(rows[-1]))
    console.print(rich_table(f"the demo's data ({args.rows:,} rows per DC, 2^{args.bits}) over "
                             "its links", COLS, rows, left=("plan", "rounds by call")))
    if args.markdown:
        print(markdown_table(COLS, rows))


if __name__ == "__main__":
    main()
