"""Load and leaks: 16 site processes on this machine, hundreds of rounds, flat resources.

One module-wide cluster of 16 site servers (subprocesses, mutual TLS on loopback)
serves every test here; the last test stops it and checks that nothing is left.
The full-size run (16 sites x 2,000 rounds) is ``bench/bench_load.py``.
"""

from __future__ import annotations

import gc
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.data import Dataset, FeatureSpace
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import GeodmlError
from geodml.federation import Federation, SiteCallError
from geodml.federation.reliability import Reliability
from geodml.site.config import DataConfig, SiteConfig, TlsConfig
from geodml.site.inprocess import InProcessTransport
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.site.server import RPC_WORKERS
from geodml.site.service import MAX_SESSIONS, SiteService
from geodml.wire.protocol import pb
from geodml.wire.tls import init_ca, issue
from geodml.wire.transport import GrpcTransport

from .tools.procstat import (
    Counts,
    Sampler,
    alive,
    bounded,
    children,
    drive,
    fd_targets,
    growth,
    open_fds,
    processes_mentioning,
    rss_kb,
    thread_counts,
    wait_until,
    zombie_children,
)
from .tools.timing import scaled

SITES = 16
ROUNDS = 300
WARMUP = 30  # rounds before the reference sample (10%)
EVERY = 10  # rounds between samples
GROWTH_LIMIT = 0.10
SLACK = 4  # gRPC's event engine helper threads (it sizes its pool itself), descriptors
SETTLE = 30.0  # seconds (a deadline, polled) for pool threads and sockets to go after a close
IDLE = 30.0  # seconds for transient descriptors and threads to go once idle
NAMES = [f"dc{i:02d}" for i in range(SITES)]


@dataclass
class Load:
    cluster: LocalCluster
    workdir: Path
    baseline: Counts  # this process before the cluster started
    baseline_fds: list[str]
    pids: dict[str, int]


@pytest.fixture(scope="module")
def load(tmp_path_factory):
    root = tmp_path_factory.mktemp("load")
    write_regional(RegionalCTRConfig(regions=tuple(NAMES), rows_per_region=2000,
                                     test_rows_per_region=0, hash_bits=12, seed=7),
                   root / "data")
    dirs = site_dirs(root / "data")
    certs = root / "certs"
    init_ca(certs)
    for n in NAMES:
        issue(certs, certs, n, "site")
    client = issue(certs, certs, "coordinator", "coordinator").tls_files()
    configs = [SiteConfig(name=n, region=n, data=DataConfig(path=dirs[n]),
                          tls=TlsConfig(ca=certs / "ca.pem", cert=certs / f"{n}.pem",
                                        key=certs / f"{n}.key"))
               for n in NAMES]
    workdir = root / "sites"
    baseline, baseline_fds = Counts.now(), fd_targets()
    cluster = LocalCluster(configs, workdir, client_tls=client)
    with cluster:
        yield Load(cluster, workdir, baseline, baseline_fds,
                   {n: s.process.pid for n, s in cluster.sites.items()})


def own_threads(pid: int | str = "self") -> int:
    """Threads other than gRPC's core threads."""
    total, grpc = thread_counts(pid)
    return total - grpc


def settled(before: Counts) -> bool:
    """This process's threads and descriptors back to ``before`` (polled)."""
    return wait_until(lambda: Counts.now().at_most(before), scaled(SETTLE))


@pytest.mark.slow
def test_sixteen_sites_hundreds_of_rounds_keep_resources_flat(load):
    before = Counts.now()
    sampler = Sampler(load.pids)
    fed = Federation(load.cluster.transports(), home=NAMES[0])
    journal = fed.journal.directory if fed.journal is not None else None
    try:
        lam = 1.0 / fed.n_rows
        fed.prepare("logistic", lam)

        def on_round(r: int) -> None:
            if r % EVERY == 0:
                sampler.sample(r)

        objective = drive(fed, ROUNDS, lam, on_round)
        assert fed.rounds == ROUNDS
        assert np.isfinite(objective) and objective < np.log(2)  # it trained
        assert set(load.pids.values()) <= set(children())
        post = sampler.after(WARMUP)
        assert len(post) == (ROUNDS - WARMUP) // EVERY + 1
        ref = post[0]
        # once idle, descriptors and threads of our own beyond the warm-up count go (a
        # leaked one stays); gRPC's event engine keeps or reclaims its helpers itself
        assert wait_until(lambda: own_threads() <= ref.own_threads and open_fds() <= ref.fds,
                          scaled(IDLE)), (ref, thread_counts(), open_fds())
        # a site's call pool adds a thread whenever a call finds none idle (more often
        # on a busy machine) and keeps it until the server stops: bounded by
        # RPC_WORKERS, not a leak; a leak grows with the rounds past that bound
        def site_excess() -> dict[str, tuple[int, int]]:
            return {n: (own_threads(p) - ref.site_own_threads(n), open_fds(p) - ref.sites_fds[n])
                    for n, p in load.pids.items()
                    if own_threads(p) > ref.site_own_threads(n) + RPC_WORKERS
                    or open_fds(p) > ref.sites_fds[n]}
        assert wait_until(lambda: not site_excess(), scaled(IDLE)), \
            f"(threads, descriptors) beyond the warm-up sample: {site_excess()}"
    finally:
        fed.close()

    coordinator = [s.rss_kb for s in post]
    assert growth(coordinator) < GROWTH_LIMIT, str(coordinator)
    for name in NAMES:
        rss = [s.sites_rss_kb[name] for s in post]
        assert growth(rss) < GROWTH_LIMIT, f"{name}: {rss}"
        own = [s.site_own_threads(name) for s in post]
        assert bounded(own, RPC_WORKERS), f"{name}: {own}"  # its call pool may grow (above)
        grpc = [s.sites_grpc_threads[name] for s in post]
        assert bounded(grpc, SLACK), f"{name}: {grpc}"
        fds = [s.sites_fds[name] for s in post]
        assert bounded(fds, SLACK), f"{name}: {fds}"
    py_threads = [s.py_threads for s in post]
    assert bounded(py_threads), str(py_threads)  # Python threads: not one more
    assert py_threads[0] <= before.py_threads + SITES  # the federation's pool, nothing more
    own = [s.own_threads for s in post]
    assert bounded(own), str(own)  # nor any other thread but gRPC's
    grpc = [s.grpc_threads for s in post]
    assert bounded(grpc, SLACK), str(grpc)
    assert bounded([s.fds for s in post], SLACK), str([s.fds for s in post])
    # closing the federation gives back its pool threads, its 16 channels' sockets and
    # its journal files, and removes its scratch journal
    assert settled(before), (before, Counts.now())
    assert journal is None or not journal.exists()


def _probe_capacity(load: Load) -> dict[str, int]:
    """Open sessions at every site until it refuses; returns how many each accepted
    (all closed again). A site with no session left open accepts MAX_SESSIONS."""

    def one(name: str) -> int:
        transport = load.cluster.transport(name)
        try:
            info = next(transport.call("Describe", pb.DescribeRequest(),
                                       timeout=scaled(30)))
            request = pb.PrepareRequest(loss="logistic", lam=1e-3, features=info.features,
                                        feature_space_fingerprint=info.feature_space_fingerprint,
                                        job="probe")
            opened: list[str] = []
            try:
                for _ in range(MAX_SESSIONS + 1):
                    try:
                        opened.append(next(transport.call("Prepare", request, 30)).session)
                    except SiteCallError as e:
                        assert e.code == "RESOURCE_EXHAUSTED", e
                        break
            finally:
                for session in opened:
                    list(transport.call("Close", pb.CloseRequest(session=session), 30))
            return len(opened)
        finally:
            transport.close()

    with ThreadPoolExecutor(4) as pool:
        return dict(zip(NAMES, pool.map(one, NAMES), strict=True))


@pytest.mark.slow
def test_opening_and_closing_a_federation_fifty_times_leaks_nothing(load, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where scratch journals go

    def cycle() -> None:
        with Federation(load.cluster.transports(), home=NAMES[0]) as fed:
            fed.prepare("logistic", 1e-3)
            fed.evaluate(np.zeros(fed.n_features))

    before = Counts.now()
    cycle()
    sites_rss = {n: rss_kb(p) for n, p in load.pids.items()}  # after one session's warm-up
    for _ in range(50):
        cycle()
    assert settled(before), (before, Counts.now(),
                             sorted(set(fd_targets()) - set(load.baseline_fds)))
    assert not list(tmp_path.iterdir())  # every scratch call journal removed
    for name, pid in load.pids.items():
        assert rss_kb(pid) < (1 + GROWTH_LIMIT) * sites_rss[name], name
    # every Close arrived: each site still has room for all MAX_SESSIONS sessions
    assert _probe_capacity(load) == dict.fromkeys(NAMES, MAX_SESSIONS)


@pytest.mark.slow
def test_stopping_the_cluster_leaves_no_process_thread_or_descriptor(load):
    """Runs last in this module: stops the shared cluster itself."""
    pids = set(load.pids.values())
    assert pids <= set(children())
    load.cluster.stop()
    assert not processes_mentioning(str(load.workdir))
    assert not [p for p in pids if alive(p)]
    assert not pids & set(zombie_children())  # reaped, too
    assert settled(load.baseline), (load.baseline, Counts.now(),
                                    sorted(set(fd_targets()) - set(load.baseline_fds)))


def _dataset(rows: int, seed: int) -> Dataset:
    X = sp.random(rows, 40, density=0.25, format="csr", random_state=seed)
    return Dataset(X, (np.arange(rows) % 2).astype(float), FeatureSpace(40))


def test_a_refused_prepare_leaves_no_session_open_at_the_other_sites():
    open_site = SiteService("a", "a", _dataset(200, 0))
    strict = SiteService("b", "b", _dataset(50, 1), Policy(min_rows_per_aggregate=100))
    fed = Federation([InProcessTransport(open_site), InProcessTransport(strict)], home="a")
    for _ in range(3):
        with pytest.raises(SiteCallError, match="min_rows_per_aggregate"):
            fed.prepare("logistic", 1e-3)
    leaked = len(open_site.sessions)  # before close: InProcessTransport.close drops them all
    fed.close()
    assert leaked == 0



def test_a_federation_that_cannot_start_releases_its_threads_and_journal(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the scratch journal goes
    before = Counts.now()
    dead = GrpcTransport("gone", "127.0.0.1:1")  # nothing listens on port 1
    gc.disable()  # what is released must not depend on when the collector runs
    try:
        with pytest.raises(GeodmlError, match="site gone"):
            Federation([dead], home="gone", reliability=Reliability(site_deadline=0.5))
        dead.close()
        released = wait_until(lambda: Counts.now().py_threads <= before.py_threads,
                              scaled(2.0))
        journals = list(tmp_path.iterdir())
    finally:
        gc.enable()
    assert released and not journals, (Counts.now(), journals)
