"""Load and leaks: many site processes on one machine, a long run, flat resources.

Usage: python bench/bench_load.py [--sites 16] [--rounds 2000] [--rows 2000]
       [--hash-bits 12] [--every 20] [--warmup 0.1] [--plaintext]

Generates synthetic regional CTR data for ``--sites`` regions, starts one site
server process per region on loopback (LocalCluster; mutual TLS with a fresh CA
unless ``--plaintext``) and runs one Federation over gRPC for exactly ``--rounds``
rounds (``fed.rounds``), cycling through Evaluate, LineSearch (new and cached
direction), Evaluate at a cached step, Hessian-vector products, LocalSolve and
Subspace evaluations and commits (``tests/tools/procstat.py: drive``). Every
``--every`` rounds it samples the coordinator's resident memory (VmRSS), threads
(Python's and the kernel's), open descriptors and child processes, and every
site's resident memory, threads and descriptors from /proc/<pid>.

Growth is measured after the warm-up (the first ``--warmup`` share of the rounds):
the largest value of any later sample against the sample at the end of the
warm-up (limit 10%), and the least-squares slope in KiB per 1,000 rounds. Python
threads, and all threads other than gRPC's core threads (told by name), must stay
constant; gRPC's threads and the descriptors may exceed the warm-up count by at
most 4 (gRPC's event engine sizes its own pool: it adds helper threads when busy
and reclaims them after a while idle), and once the run is idle, descriptors and
our own threads must be back at the warm-up count (polled; a leaked one stays).
After the federation and the cluster are closed, it checks that no site process
is left (by pid, zombie and command line) and that the coordinator's threads and
descriptors are back to their count before the cluster started (polled with a
deadline). It also reports the size of the federation's call journal on disk as
the run goes, and checks that it is removed. Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.federation import Federation
from geodml.site.config import DataConfig, SiteConfig, TlsConfig
from geodml.site.launcher import LocalCluster
from geodml.wire.tls import init_ca, issue

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.tools.procstat import (
    SELF,
    Counts,
    Sampler,
    alive,
    bounded,
    children,
    dir_bytes,
    drive,
    fd_targets,
    growth,
    open_fds,
    processes_mentioning,
    thread_counts,
    wait_until,
    zombie_children,
)

GROWTH_LIMIT = 0.10
SLACK = 4  # gRPC's event engine helper threads (it sizes its pool itself), descriptors
IDLE = 30.0  # seconds for transient descriptors and threads to go once the run is idle


def mib(kb: int) -> str:
    return f"{kb / 1024:.1f}"


def pct(x: float) -> str:
    return f"{100 * x:+.2f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sites", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=2000, help="training rows per site")
    ap.add_argument("--hash-bits", type=int, default=12)
    ap.add_argument("--every", type=int, default=20, help="sample every N rounds")
    ap.add_argument("--warmup", type=float, default=0.1, help="share of rounds before measuring")
    ap.add_argument("--plaintext", action="store_true", help="insecure loopback, no TLS")
    args = ap.parse_args()
    console = Console(width=140)
    command = shlex.join([
        "python", "bench/bench_load.py", "--sites", str(args.sites), "--rounds", str(args.rounds),
        "--rows", str(args.rows), "--hash-bits", str(args.hash_bits), "--every", str(args.every),
        "--warmup", str(args.warmup), *(["--plaintext"] if args.plaintext else [])])
    console.print(f"command: {command}")

    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="geodml-bench-load-"))
    names = [f"dc{i:02d}" for i in range(args.sites)]
    write_regional(RegionalCTRConfig(regions=tuple(names), rows_per_region=args.rows,
                                     test_rows_per_region=0, hash_bits=args.hash_bits, seed=7),
                   tmp / "data")
    dirs = site_dirs(tmp / "data")
    if args.plaintext:
        configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=dirs[n]))
                   for n in names]
        kw: dict = {"insecure": True}
    else:
        certs = tmp / "certs"
        init_ca(certs)
        for n in names:  # each site serves only under its own certificate
            issue(certs, certs, n, "site")
        kw = {"client_tls": issue(certs, certs, "coordinator", "coordinator").tls_files()}
        configs = [SiteConfig(name=n, region=n, data=DataConfig(path=dirs[n]),
                              tls=TlsConfig(ca=certs / "ca.pem", cert=certs / f"{n}.pem",
                                            key=certs / f"{n}.key"))
                   for n in names]
    workdir = tmp / "sites"
    baseline = Counts.now()
    baseline_fds = fd_targets()

    t0 = time.perf_counter()
    cluster = LocalCluster(configs, workdir, **kw).start()
    start_seconds = time.perf_counter() - t0
    pids = {n: s.process.pid for n, s in cluster.sites.items()}
    warmup = max(1, round(args.warmup * args.rounds))
    sampler = Sampler(pids)
    journal: dict[int, int] = {}  # round -> bytes of the federation's call journal
    try:
        fed = Federation(cluster.transports(), home=names[0])
        journal_dir = fed.journal.directory if fed.journal is not None else None
        lam = 1.0 / fed.n_rows
        fed.prepare("logistic", lam)
        first = sampler.sample(0)
        t0 = time.perf_counter()

        def on_round(r: int) -> None:
            if r % args.every == 0 or r == warmup or r == args.rounds:
                sampler.sample(r)
                if journal_dir is not None:
                    journal[r] = dir_bytes(journal_dir)

        objective = drive(fed, args.rounds, lam, on_round)
        run_seconds = time.perf_counter() - t0
        rounds = fed.rounds
        during_children = len(children())
        post = sampler.after(warmup)
        ref = post[0]
        # idle now: descriptors and threads of our own beyond the warm-up count must go
        # (a leaked one stays); gRPC's pool keeps or reclaims its helpers on its own
        t0 = time.perf_counter()

        def own(pid: int | str) -> int:
            total, grpc = thread_counts(pid)
            return total - grpc

        idle_coordinator = wait_until(
            lambda: own(SELF) <= ref.own_threads and open_fds() <= ref.fds, IDLE)
        idle_sites = wait_until(lambda: all(
            own(p) <= ref.site_own_threads(n) and open_fds(p) <= ref.sites_fds[n]
            for n, p in pids.items()), IDLE)
        idle_seconds = time.perf_counter() - t0
        idle_threads, idle_grpc = thread_counts()
        idle_fds = open_fds()
        fed.close()
        journal_left = journal_dir is not None and journal_dir.exists()
    finally:
        t0 = time.perf_counter()
        cluster.stop()
        stop_seconds = time.perf_counter() - t0

    settled = wait_until(lambda: Counts.now().at_most(baseline), timeout=10.0)
    after = Counts.now()
    left = processes_mentioning(str(workdir))
    alive_pids = [p for p in pids.values() if alive(p)]
    zombies = [p for p in zombie_children() if p in pids.values()]
    last = sampler.samples[-1]

    security = "plaintext" if args.plaintext else "mutual TLS"
    table = Table(title=f"{args.sites} site processes ({security} on loopback), "
                  f"{rounds:,} rounds, {args.rows:,} rows per site, "
                  f"2^{args.hash_bits} features; growth after round {warmup} (warm-up)")
    for col in ("process", "pid", "RSS start MiB", "after warm-up", "end", "max growth",
                "slope KiB/1k rounds", "threads (gRPC's) warm-up/max/end",
                "fds warm-up/max/end"):
        table.add_column(col, justify="right")
    xs = np.array([s.round for s in post], dtype=float)

    def row(name: str, pid: int | str, start_kb: int, rss: list[int], thr: list[int],
            grpc: list[int], fds: list[int]) -> float:
        g = growth(rss)
        slope = np.polyfit(xs, np.array(rss, dtype=float), 1)[0] * 1000
        table.add_row(name, str(pid), mib(start_kb), mib(rss[0]), mib(rss[-1]), pct(g),
                      f"{slope:+.0f}",
                      f"{thr[0]}({grpc[0]})/{max(thr)}({max(grpc)})/{thr[-1]}({grpc[-1]})",
                      f"{fds[0]}/{max(fds)}/{fds[-1]}")
        return g

    coord_growth = row("coordinator", "self", first.rss_kb, [s.rss_kb for s in post],
                       [s.os_threads for s in post], [s.grpc_threads for s in post],
                       [s.fds for s in post])
    site_growth = {n: row(n, pids[n], first.sites_rss_kb[n], [s.sites_rss_kb[n] for s in post],
                          [s.sites_threads[n] for s in post],
                          [s.sites_grpc_threads[n] for s in post],
                          [s.sites_fds[n] for s in post])
                   for n in names}
    console.print(table)

    py = [s.py_threads for s in post]
    own_thr = [s.own_threads for s in post]
    grpc_thr = [s.grpc_threads for s in post]
    fds = [s.fds for s in post]

    def span(values: dict[str, list[int]], pick) -> str:
        return f"{min(pick(v) for v in values.values())}-{max(pick(v) for v in values.values())}"

    def trio(values: dict[str, list[int]]) -> str:
        return (f"warm-up {span(values, lambda v: v[0])}, max {span(values, max)}, "
                f"end {span(values, lambda v: v[-1])}")

    site_own = {n: [s.site_own_threads(n) for s in post] for n in names}
    site_grpc = {n: [s.sites_grpc_threads[n] for s in post] for n in names}
    site_fds = {n: [s.sites_fds[n] for s in post] for n in names}
    worst = max(site_growth, key=site_growth.get)
    checks = [
        (f"rounds run = {args.rounds}", rounds == args.rounds,
         f"{rounds} (objective {objective:.6f})"),
        ("coordinator RSS growth after warm-up < 10%", coord_growth < GROWTH_LIMIT,
         pct(coord_growth)),
        ("every site's RSS growth after warm-up < 10%", site_growth[worst] < GROWTH_LIMIT,
         f"max {pct(site_growth[worst])} ({worst}), "
         f"mean {pct(sum(site_growth.values()) / len(site_growth))}"),
        ("coordinator Python threads constant after warm-up", bounded(py),
         f"{py[0]} -> max {max(py)}, end {py[-1]}"),
        ("coordinator threads other than gRPC's constant after warm-up", bounded(own_thr),
         f"{own_thr[0]} -> max {max(own_thr)}, end {own_thr[-1]}"),
        (f"coordinator gRPC threads after warm-up within +{SLACK}", bounded(grpc_thr, SLACK),
         f"{grpc_thr[0]} -> max {max(grpc_thr)}, end {grpc_thr[-1]}; idle {idle_grpc}"),
        (f"coordinator fds after warm-up within +{SLACK}", bounded(fds, SLACK),
         f"{fds[0]} -> max {max(fds)}, end {fds[-1]}"),
        ("every site's threads other than gRPC's constant after warm-up",
         all(bounded(v) for v in site_own.values()), trio(site_own)),
        (f"every site's gRPC threads after warm-up within +{SLACK}",
         all(bounded(v, SLACK) for v in site_grpc.values()), trio(site_grpc)),
        (f"every site's fds after warm-up within +{SLACK}",
         all(bounded(v, SLACK) for v in site_fds.values()), trio(site_fds)),
        ("idle after the run: coordinator fds and own threads <= warm-up", idle_coordinator,
         f"{idle_fds} fds, {idle_threads - idle_grpc} own threads (warm-up {ref.fds}, "
         f"{ref.own_threads}); polled {idle_seconds:.1f} s"),
        ("idle after the run: every site's fds and own threads <= warm-up", idle_sites,
         "yes" if idle_sites else "no"),
        (f"child processes during the run = {args.sites}", during_children == args.sites,
         str(during_children)),
        ("no site process left after stop (by pid and by command line)",
         not left and not alive_pids and not zombies,
         f"{len(left)} mentioning the work dir, {len(alive_pids)} pids alive, "
         f"{len(zombies)} zombies"),
        ("coordinator threads and fds back to baseline after close + stop", settled,
         f"baseline py/os threads/fds {baseline.py_threads}/{baseline.os_threads}/"
         f"{baseline.fds}, after {after.py_threads}/{after.os_threads}/{after.fds}"),
        ("the federation's scratch call journal removed at close", not journal_left,
         "removed" if not journal_left else f"{journal_dir} still exists"),
    ]
    summary = Table(title="checks")
    for col in ("check", "ok", "value"):
        summary.add_column(col)
    for name, ok, value in checks:
        summary.add_row(name, "yes" if ok else "[red]NO[/red]", value)
    console.print(summary)
    if not settled:
        extra = sorted(set(fd_targets()) - set(baseline_fds))
        console.print(f"descriptors beyond the baseline: {extra}")
    if journal:
        per_round = (journal[rounds] - journal[warmup]) / (rounds - warmup)
        console.print(
            f"call journal on disk (temporary, one file per site, fsync per call): "
            f"{journal[warmup] / 2**20:.1f} MiB at round {warmup}, "
            f"{journal[rounds] / 2**20:.1f} MiB at round {rounds} "
            f"({per_round / 1024:.1f} KiB per round, all sites); memory stays flat, disk "
            "grows with the rounds since the last Prepare")
    total_sites_rss = sum(last.sites_rss_kb.values())
    console.print(
        f"timings: cluster start {start_seconds:.1f} s, {rounds:,} rounds {run_seconds:.1f} s "
        f"({1e3 * run_seconds / rounds:.1f} ms/round), stop {stop_seconds:.1f} s, "
        f"total {time.perf_counter() - t_all:.1f} s; sites' RSS together "
        f"{total_sites_rss / 1024:.0f} MiB at the end; {len(sampler.samples)} samples")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
