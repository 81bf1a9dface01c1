"""The CTR regime: rounds against rows at 2^20 hashed features, with and without the
per-feature (Hessian-diagonal) preconditioner.

Usage: python bench/bench_ctr.py [--rows 10000,100000,1000000] [--dcs 2] [--bits 20]
       [--methods sqm-lbfgs,fadl-subspace] [--compress none,bfloat16,float8,int8]
       [--starts cold,warm] [--gtol 1e-3] [--held-out 0.1]
       [--param KEY=VALUE ...] [--work DIR] [--stream] [--by-call]

For every size it generates (or reuses, under ``--work``) the regional CTR data of
``bench/_regional.py`` (K DCs, ``rows`` training rows each, 26 categorical + 4 numeric
fields hashed into 2^bits features, lambda = 1/N, logistic), then runs over in-process
sites (the same messages and metered bytes as gRPC):

- **centralize**: every non-home DC's rows exported to the home DC through the
  federation (real Export calls, metered WAN bytes), then centralized L-BFGS on the
  pooled rows, in the diagonal metric and in the identity (iterations, objective);
- every geo method with every preconditioner (``--metrics``: ``diag``, ``none``,
  ``auto``) and compression:
  outer iterations, vector rounds, WAN bytes, objective, test AUC.

It prints a table and, with ``--markdown``, the same rows as Markdown for BENCHMARKS.md;
``--by-call`` also logs every geo run's WAN bytes by call and direction (which vectors
cost what).
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

from rich.console import Console

from _regional import (
    dc_names,
    federation_factory,
    in_process_sites,
    markdown_table,
    regional_data,
    rich_table,
)
from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.algorithms.stop import ValidationStop
from geodml.centralized import train_centralized
from geodml.cli.options import parse_params
from geodml.data.dataset import Dataset
from geodml.federation import CompressionConfig
from geodml.job.compression import AdaptivePrecision
from geodml.job.validation import ValidationJob
from geodml.metrics import roc_auc
from geodml.optim import LbfgsOptions
from geodml.optim.preconditioner import NONE, Preconditioner

COLS = ["rows/DC", "plan", "metric", "iters", "vector rounds", "rounds", "WAN MB", "F",
        "test AUC", "seconds", "stop", "exact from"]


def compression(kind: str) -> CompressionConfig | None:
    """``none``, a cast both ways (float32, float16, bfloat16, or float8: scaled E5M2,
    1 byte per entry), ``int8`` (with error feedback up), or ``UP/DOWN``: one cast up
    (gradient sums, local directions) and another down (e.g. ``bfloat16/float8``)."""
    if kind == "none":
        return None
    if "/" in kind:
        up, down = (f'{{"kind": "cast", "dtype": "{d}"}}' for d in kind.split("/"))
        return CompressionConfig(up=up, down=down, precision=AdaptivePrecision())
    if kind == "int8":
        return CompressionConfig(up='{"kind": "quantize_int8", "error_feedback": true}',
                                 down='{"kind": "quantize_int8"}',
                                 precision=AdaptivePrecision())
    spec = f'{{"kind": "cast", "dtype": "{kind}"}}'
    return CompressionConfig(up=spec, down=spec, precision=AdaptivePrecision())


def metric_label(pre: Preconditioner, described: str) -> str:
    """The metric column: the kind, and for ``auto`` the kind it chose."""
    return pre.kind if pre.kind != "auto" else f"auto: {described.split()[0]}"


def centralize_rows(n: int, home: Dataset, open_fed, test: Dataset, gtol: float,
                    pres: dict[str, Preconditioner]) -> list[list[str]]:
    """Export every non-home DC's rows (metered), then train on the pooled rows."""
    t0 = time.perf_counter()
    with open_fed() as fed:
        fed.prepare("logistic", 0.0, restrict_to_support=False, job="export")
        parts = [fed.export(site) for site in fed.names[1:]]
        wan = fed.meter.snapshot()["wan_bytes"]
    export_seconds = time.perf_counter() - t0
    pooled = Dataset.concat([home, *parts])
    out = []
    for pre in pres.values():
        t0 = time.perf_counter()
        model, res = train_centralized(pooled, options=LbfgsOptions(gtol=gtol, max_iter=3000),
                                       preconditioner=pre)
        auc = roc_auc(test.y, test.X @ model.w)
        out.append([f"{n:,}", "centralize", metric_label(pre, model.info["preconditioner"]),
                    str(res.iterations), "-", "-",
                    f"{wan / 1e6:.1f}", f"{res.f:.7f}", f"{auc:.5f}",
                    f"{export_seconds + time.perf_counter() - t0:.0f}", res.reason, "-"])
    return out


def wan_by_call(fed) -> dict[str, int]:
    """WAN bytes of a run by ``"call direction"`` (down: from the home DC), largest first."""
    out: dict[str, int] = {}
    for traffic in fed.meter.rounds:
        for link, nbytes in traffic.links.items():
            src, _, dst = link.partition(" ")[0].partition("->")
            if src != dst:
                key = f"{traffic.call} {'down' if src == fed.meter.home else 'up'}"
                out[key] = out.get(key, 0) + nbytes
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def geo_row(n: int, open_fed, method: str, pre, comp: str, test: Dataset, gtol: float,
            max_rounds: int, warm: bool, held_out: float | None = None,
            log=None, params: dict | None = None) -> list[str]:
    """One geo run; ``held_out``: stop by the held-out loss of that share of the rows
    (``--stop validation`` at its default patience) instead of gtol; ``params``: the method's
    parameters (``--param``)."""
    t0 = time.perf_counter()
    validation = None if held_out is None else ValidationJob(held_out)
    stop = None if held_out is None else ValidationStop()
    config = compression(comp)
    with open_fed(compression=config, validation=validation) as fed:
        r = train(fed, method, TrainSpec(gtol=gtol if stop is None else 1e-8,
                                         max_rounds=max_rounds, preconditioner=pre,
                                         warm_start=warm, validation=stop,
                                         params=dict(params or {})), RunRecorder(fed))
        rounds, vector_rounds = fed.rounds, fed.vector_rounds
        wan = fed.meter.snapshot()["wan_bytes"]
        if log is not None:
            log(f"{method} {comp}: " + ", ".join(f"{k} {b / 1e6:.2f} MB"
                                                for k, b in wan_by_call(fed).items()))
    auc = roc_auc(test.y, test.X @ r.w)
    plan = (method if comp == "none" else f"{method} {comp}") + (" warm" if warm else "") + (
        "" if held_out is None else f" stop validation ({held_out:g} held out)") + "".join(
        f" {k}={v}" for k, v in (params or {}).items())
    return [f"{n:,}", plan, metric_label(pre, r.info["preconditioner"]), str(len(r.rows) - 1),
            f"{vector_rounds:g}", str(rounds),
            f"{wan / 1e6:.1f}", f"{r.objective:.7f}", f"{auc:.5f}",
            f"{time.perf_counter() - t0:.0f}", r.reason, exact_from(config)]


def exact_from(config: CompressionConfig | None) -> str:
    """When the precision policy switched to full precision: the received gradient after
    which both directions went exact, and which rule fired ("-": compressed to the end)."""
    policy = config.precision if config is not None else None
    if policy is None or policy.switched_at is None:
        return "-"
    rule = "norm" if policy.reason.startswith("gradient norm") else "slope"
    return f"gradient {policy.switched_at} ({rule})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="10000,100000,1000000")
    ap.add_argument("--dcs", type=int, default=2)
    ap.add_argument("--bits", type=int, default=20)
    ap.add_argument("--test-rows", type=int, default=20000)
    ap.add_argument("--methods", default="sqm-lbfgs,fadl-subspace")
    ap.add_argument("--metrics", default="diag,none", help="preconditioners to run")
    ap.add_argument("--stop", default="euclidean", choices=("euclidean", "metric"),
                    help="the norm gtol is measured in (geodml.optim.preconditioner)")
    ap.add_argument("--compress", default="none",
                    help="none, float32, float16, bfloat16, float8, int8 or UP/DOWN casts "
                         "(comma-separated)")
    ap.add_argument("--starts", default="cold", help="cold, warm (--local-warm-start) or both")
    ap.add_argument("--gtol", type=float, default=1e-3)
    ap.add_argument("--max-rounds", type=int, default=1000)
    ap.add_argument("--no-centralize", action="store_true")
    ap.add_argument("--held-out", default="",
                    help="comma-separated shares: also run each geo plan with --stop "
                         "validation, that share of every site's rows held out")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="a method parameter for every geo run (repeat; geodml methods)")
    ap.add_argument("--stream", action="store_true", help="sites read rows from disk")
    ap.add_argument("--work", type=Path, default=Path("bench-work"))
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--by-call", action="store_true",
                    help="log each geo run's WAN bytes by call and direction")
    args = ap.parse_args()
    params = dict(parse_params(tuple(args.param)))
    console = Console()
    names = dc_names(args.dcs)
    known = {"diag": Preconditioner(stop=args.stop), "none": NONE,
             "auto": Preconditioner("auto", stop=args.stop)}
    kinds = args.metrics.split(",")
    unknown = set(kinds) - set(known)
    if unknown:
        ap.error(f"--metrics: unknown {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    pres = {kind: known[kind] for kind in kinds}
    rows = []
    for n in (int(x) for x in args.rows.split(",")):
        sites, test, _ = regional_data(args.work / "data", names, n, args.bits, args.test_rows,
                                       stream=args.stream, progress=console.log)
        services = in_process_sites(sites, stream=args.stream)
        open_fed = federation_factory(services, names[0])
        if not args.no_centralize:
            for row in centralize_rows(n, sites[names[0]], open_fed, test, args.gtol,
                                       pres):
                rows.append(row)
                console.log(" | ".join(row))
        for method in args.methods.split(","):
            for metric in pres:
                for comp, start in itertools.product(args.compress.split(","),
                                                     args.starts.split(",")):
                    for share in [None, *(float(x) for x in args.held_out.split(",") if x)]:
                        row = geo_row(n, open_fed, method, pres[metric], comp, test,
                                      args.gtol, args.max_rounds, start == "warm", share,
                                      console.log if args.by_call else None, params)
                        rows.append(row)
                        console.log(" | ".join(row))
        for s in services:
            s.shutdown()
        del sites, services
    console.print(rich_table(f"2^{args.bits} features, K = {args.dcs}, gtol {args.gtol:g}",
                             COLS, rows, left=("plan", "metric", "stop")))
    if args.markdown:
        print(markdown_table(COLS, rows))


if __name__ == "__main__":
    main()
