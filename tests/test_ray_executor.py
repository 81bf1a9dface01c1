"""The Ray executor: a site's shards as Ray actors on a local Ray cluster (2 CPUs),
giving the same numbers as the thread executor."""

from __future__ import annotations

import os

import numpy as np
import pytest

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.data import load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import ConfigError
from geodml.federation import Federation
from geodml.site.config import load_site_config
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import RayPlacement, SiteService
from geodml.wire.protocol import pb

from .tools import processes
from .tools.timing import scaled

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'geodml[ray]')")

REGIONS = ("us-east", "eu-west")


@pytest.fixture(scope="module")
def local_ray():
    """A local 2-CPU Ray. Its start is tried up to three times: Ray waits a fixed 30 s for
    its raylet to register, and on a loaded 2-core machine a fresh clone's first start
    once missed that (the retry passed); any other error is raised at once. Its wait for
    the GCS server's port (30 s by default; beside two CPU hogs the GCS once took
    longer) is scaled to the machine."""
    patch = pytest.MonkeyPatch()
    if "RAY_gcs_server_port_wait_time_s" not in os.environ:
        patch.setenv("RAY_gcs_server_port_wait_time_s", str(round(scaled(60))))
    try:
        for attempt in range(3):
            try:
                ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
                break
            except Exception as e:
                slow = ("timed out during startup", "Timed out waiting for file")
                if not any(m in str(e) for m in slow) or attempt == 2:
                    raise
                ray.shutdown()
                stop_ray_daemons()  # a start that timed out leaves its daemons behind
        yield
    finally:
        ray.shutdown()
        stop_ray_daemons()
        patch.undo()


def stop_ray_daemons() -> None:
    """Kill the Ray daemons (GCS, raylet, dashboard, monitor) this test session started
    that ``ray.shutdown()`` left running: a start that timed out is never shut down."""
    ours = [pid for pid in processes.with_token(os.environ[processes.ENV])
            if "/ray/" in processes.command_line(pid)]
    processes.kill_all(ours)


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray-data")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=3000,
                                     test_rows_per_region=10, hash_bits=10, seed=4), out)
    return site_dirs(out)


def federation(sites, use_ray: bool) -> Federation:
    services = [SiteService(n, n, load_dataset(p), shards=4, threads=2,
                            ray=RayPlacement(str(p)) if use_ray else None)
                for n, p in sites.items()]
    return Federation([InProcessTransport(s) for s in services], home="us-east")


@pytest.mark.slow
@pytest.mark.parametrize(("method", "rounds"), [("sqm-lbfgs", 40), ("fadl-subspace", 3)])
def test_ray_and_thread_executors_give_the_same_trajectory(local_ray, sites, method, rounds):
    runs = {}
    for use_ray in (False, True):
        with federation(sites, use_ray) as fed:
            runs[use_ray] = train(fed, method, TrainSpec(gtol=1e-6, max_rounds=rounds),
                                  RunRecorder(fed))
    threads, actors = runs[False], runs[True]
    assert len(threads.rows) == len(actors.rows) > 2
    for a, b in zip(threads.rows, actors.rows, strict=True):
        assert abs(a.objective - b.objective) <= 1e-9 * abs(a.objective)
        assert a.wan_bytes == b.wan_bytes
    assert np.linalg.norm(threads.w - actors.w) <= 1e-9 * np.linalg.norm(threads.w)


def test_sampled_support_restricted_sessions_read_the_same_rows(local_ray, sites):
    """Each actor reads its rows from storage; with a row sample and the support
    restriction it must build exactly the session's matrix."""
    path = sites["eu-west"]
    sums = {}
    for use_ray in (False, True):
        service = SiteService("eu-west", "eu-west", load_dataset(path), shards=3, threads=2,
                              ray=RayPlacement(str(path)) if use_ray else None)
        d = service.data.n_features
        session = next(service.handle("Prepare", pb.PrepareRequest(
            loss="logistic", lam=1e-3, features=d, restrict_to_support=True,
            sample_fraction=0.37, feature_space_fingerprint=service.data.space.fingerprint()),
            None)).session
        s = service.sessions[session]
        w = np.random.default_rng(0).normal(size=s.dim)
        out = s.executor.evaluate(w)
        s.executor.set_direction(w[::-1].copy())
        values, slopes = s.executor.line_sums(np.array([0.1, 1.0]))
        sums[use_ray] = (out.loss, out.grad, out.rows, values, slopes)
        service.shutdown()
    (l0, g0, r0, v0, s0), (l1, g1, r1, v1, s1) = sums[False], sums[True]
    assert r0 == r1 == round(0.37 * 3000)
    assert l1 == pytest.approx(l0, rel=1e-12)
    np.testing.assert_allclose(g1, g0, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(v1, v0, rtol=1e-12)
    np.testing.assert_allclose(s1, s0, rtol=1e-12)


def test_a_ray_site_needs_a_geodml_dataset_directory(tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('name = "a"\ninsecure = true\n[data]\npath = "x.svm"\nformat = "libsvm"\n'
                      '[executor]\nkind = "ray"\n')
    with pytest.raises(ConfigError, match=r"executor\.kind: ray reads each shard"):
        load_site_config(config)
    config.write_text('name = "a"\ninsecure = true\n[data]\npath = "x"\n'
                      '[executor]\nkind = "spark"\n')
    with pytest.raises(ConfigError, match=r"executor\.kind"):
        load_site_config(config)
