"""Wire benchmarks: round-trip latency of a small Evaluate, and framing overhead.

Usage: python bench/bench_wire.py [--calls 500]

1. Median and 90th-percentile latency of one Evaluate round (w of d = 123 sent,
   gradient returned) to one site process on loopback, plaintext and mutual TLS,
   beside a bare Describe call on the same channel as the reference.
2. Bytes on the socket (a counting TCP relay) against metered bytes for Evaluate
   rounds moving dense float64 vectors of 64 KB to 16 MB each way.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table

from geodml.data import Dataset, FeatureSpace, save_dataset
from geodml.federation import Federation
from geodml.site.config import DataConfig, SiteConfig, TlsConfig
from geodml.site.launcher import LocalCluster
from geodml.wire.codec import WireFormat
from geodml.wire.protocol import pb
from geodml.wire.tls import init_ca, issue
from geodml.wire.transport import GrpcTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.tools.relay import CountingRelay


def dataset(rows: int, d: int, seed: int = 0) -> Dataset:
    X = sp.random(rows, d, density=min(1.0, 12 / d), format="csr", random_state=seed)
    y = (np.random.default_rng(seed).random(rows) < 0.3).astype(float)
    return Dataset(X, y, FeatureSpace(d))


def latencies(fed: Federation, transport: GrpcTransport, calls: int) -> tuple[list, list]:
    w = np.zeros(fed.n_features)
    fed.prepare("logistic", 1e-3, restrict_to_support=False)
    evals, describes = [], []
    for _ in range(calls):
        t = time.perf_counter()
        fed.evaluate(w)
        evals.append(time.perf_counter() - t)
        t = time.perf_counter()
        list(transport.call("Describe", pb.DescribeRequest()))
        describes.append(time.perf_counter() - t)
    return evals, describes


def ms(xs: list[float], q: float) -> str:
    return f"{np.quantile(xs, q) * 1e3:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=500)
    args = ap.parse_args()
    console = Console(width=120)
    tmp = Path(tempfile.mkdtemp(prefix="geodml-bench-wire-"))
    save_dataset(tmp / "small", dataset(1000, 123))
    certs = tmp / "certs"
    init_ca(certs)
    issue(certs, certs, "site", "site")
    coordinator = issue(certs, certs, "coordinator", "coordinator").tls_files()
    tls = TlsConfig(ca=certs / "ca.pem", cert=certs / "site.pem", key=certs / "site.key")

    lat = Table(title=f"one Evaluate round on loopback, d = 123 ({args.calls} calls)")
    for col in ("transport", "Evaluate median ms", "p90 ms", "bare Describe median ms"):
        lat.add_column(col, justify="right")
    for name, cfg, kw in (
        ("plaintext", SiteConfig(name="site", insecure=True, data=DataConfig(path=tmp / "small")),
         {"insecure": True}),
        ("mutual TLS", SiteConfig(name="site", data=DataConfig(path=tmp / "small"), tls=tls),
         {"client_tls": coordinator}),
    ):
        with LocalCluster([cfg], tmp / name.replace(" ", "-"), **kw) as cluster:
            transport = cluster.transport("site")
            with Federation([cluster.transport("site")], home="home") as fed:
                evals, describes = latencies(fed, transport, args.calls)
            transport.close()
        lat.add_row(name, ms(evals, 0.5), ms(evals, 0.9), ms(describes, 0.5))
    console.print(lat)

    frame = Table(title="framing overhead: bytes on the socket vs metered (plaintext gRPC)")
    for col in ("vector bytes each way", "metered", "on socket", "overhead %"):
        frame.add_column(col, justify="right")
    for d in (8192, 131072, 2 ** 21):
        save_dataset(tmp / f"d{d}", dataset(200, d))
        cfg = SiteConfig(name="site", insecure=True, data=DataConfig(path=tmp / f"d{d}"))
        with LocalCluster([cfg], tmp / f"frame{d}", insecure=True) as cluster:
            relay = CountingRelay("127.0.0.1", cluster.sites["site"].port)
            fed = Federation([GrpcTransport("site", relay.address)], "home",
                             wire=WireFormat(allow_sparse=False))
            fed.prepare("logistic", 1e-3, restrict_to_support=False)
            w = np.random.default_rng(1).standard_normal(d)
            fed.evaluate(w)
            before, _ = fed.meter.total_bytes(), relay.reset()
            for _ in range(5):
                fed.evaluate(w)
            metered = fed.meter.total_bytes() - before
            socket_bytes = relay.bytes_down + relay.bytes_up
            fed.close()
            relay.close()
        frame.add_row(f"{8 * d:,}", f"{metered:,}", f"{socket_bytes:,}",
                      f"{100 * (socket_bytes / metered - 1):.3f}")
    console.print(frame)


if __name__ == "__main__":
    main()
