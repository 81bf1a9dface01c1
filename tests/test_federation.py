"""Sites, wire and federation: real site processes, real gRPC, real files."""

from __future__ import annotations

import json

import grpc
import numpy as np
import pytest

from geodml.data import load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import ConfigError
from geodml.federation import AuditLog, Federation, SiteCallError
from geodml.federation.meter import read_audit
from geodml.federation.objective import FederatedObjective
from geodml.optim import LbfgsOptions, lbfgs
from geodml.site.config import DataConfig, SiteConfig, load_site_config
from geodml.site.inprocess import InProcessTransport
from geodml.site.launcher import LaunchError, LocalCluster
from geodml.site.policy import Policy
from geodml.site.service import SiteService
from geodml.wire.codec import WireFormat, encode_vector
from geodml.wire.protocol import pb, pb_grpc
from geodml.wire.transport import GrpcTransport

from .tools.relay import CountingRelay
from .tools.timing import scaled

REGIONS = ("us-east", "eu-west", "ap-south", "sa-east")


@pytest.fixture(scope="module")
def regional(tmp_path_factory):
    """Four regions of synthetic CTR data, 3,000 rows each, 2^14 hashed features."""
    out = tmp_path_factory.mktemp("regional")
    config = RegionalCTRConfig(regions=REGIONS, rows_per_region=3000, test_rows_per_region=500,
                               hash_bits=14, seed=3)
    write_regional(config, out)
    return site_dirs(out)


@pytest.fixture(scope="module")
def cluster(regional, tmp_path_factory):
    configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=p))
               for n, p in regional.items()]
    with LocalCluster(configs, tmp_path_factory.mktemp("sites"), insecure=True) as c:
        yield c


def in_process(regional, policies: dict[str, Policy] | None = None, **kw) -> Federation:
    services = [SiteService(n, n, load_dataset(p), (policies or {}).get(n))
                for n, p in regional.items()]
    return Federation([InProcessTransport(s) for s in services], home="us-east", **kw)


def run_lbfgs(fed: Federation, iterations: int = 15):
    lam = 1.0 / fed.n_rows
    fed.prepare("logistic", lam)
    return lbfgs(FederatedObjective(fed, lam), options=LbfgsOptions(max_iter=iterations))


def test_grpc_and_in_process_runs_have_identical_trajectories_and_bytes(regional, cluster):
    with Federation(cluster.transports(), home="us-east") as remote:
        r_grpc = run_lbfgs(remote)
        bytes_grpc = remote.meter.snapshot()
    with in_process(regional) as local:
        r_local = run_lbfgs(local)
        bytes_local = local.meter.snapshot()
    assert [h.f for h in r_grpc.history] == [h.f for h in r_local.history]
    np.testing.assert_array_equal(r_grpc.w, r_local.w)
    assert bytes_grpc == bytes_local
    assert bytes_grpc["wan_bytes"] > 0
    assert set(bytes_grpc["links"]) >= {"us-east->eu-west", "eu-west->us-east"}


def test_metered_bytes_are_the_socket_bytes_up_to_framing_overhead(cluster):
    """Large messages (a 2^14 + 4 float64 vector each way) cost < 1% beyond the meter."""
    site = cluster.sites["eu-west"]
    relay = CountingRelay("127.0.0.1", site.port)
    try:
        fed = Federation([GrpcTransport("eu-west", relay.address)], home="us-east",
                         wire=WireFormat(allow_sparse=False))
        fed.prepare("logistic", 1e-4, restrict_to_support=False)
        w = np.random.default_rng(0).standard_normal(fed.n_features)
        fed.evaluate(w)  # warm up the connection (HTTP/2 settings, HPACK tables)
        before = fed.meter.total_bytes()
        relay.reset()
        for _ in range(10):
            fed.evaluate(w)
        metered = fed.meter.total_bytes() - before
        on_socket = relay.bytes_down + relay.bytes_up
        fed.close()
    finally:
        relay.close()
    assert metered >= 10 * 2 * 8 * fed.n_features
    assert metered <= on_socket < 1.01 * metered


def test_malformed_requests_get_clear_statuses_and_the_site_keeps_serving(cluster):
    channel = grpc.insecure_channel(cluster.sites["ap-south"].address)
    stub = pb_grpc.SiteStub(channel)
    d = stub.Describe(pb.DescribeRequest(), timeout=scaled(10)).features
    prep = next(iter(stub.Prepare(pb.PrepareRequest(
        loss="logistic", lam=0.01, features=d, job="t",
        feature_space_fingerprint=stub.Describe(pb.DescribeRequest(), timeout=scaled(10))
        .feature_space_fingerprint), timeout=scaled(10))))

    def evaluate(chunk: pb.VectorChunk, session: str = prep.session):
        req = pb.EvaluateRequest(session=session, round=0, want_gradient=True, has_w=True,
                                 chunk=chunk)
        return list(stub.Evaluate(iter([req]), timeout=scaled(10)))

    good = next(encode_vector(np.zeros(d), 0, WireFormat()))
    cases = {
        "wrong dimension": next(encode_vector(np.zeros(d + 5), 0, WireFormat())),
        "garbage bytes": pb.VectorChunk(slot=0, start=0, count=d, dtype=pb.FLOAT64,
                                        layout=pb.DENSE, compression=pb.ZSTD, data=b"\x00junk"),
        "NaN": pb.VectorChunk(slot=0, start=0, count=d, dtype=pb.FLOAT64, layout=pb.DENSE,
                              compression=pb.NONE,
                              data=np.full(d, np.nan).tobytes()),
    }
    for name, chunk in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            evaluate(chunk)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "ap-south" in err.value.details(), name
    with pytest.raises(grpc.RpcError) as err:
        evaluate(good, session="no-such-session")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "unknown session" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        next(iter(stub.Prepare(pb.PrepareRequest(loss="logistic", features=d + 1),
                               timeout=scaled(10))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{d + 1} features" in err.value.details()
    replies = evaluate(good)  # the same site still serves, the session is intact
    assert replies[0].rows == 3000
    channel.close()


def test_export_is_refused_unless_policy_allows_and_is_metered(regional):
    policies = {"eu-west": Policy(allow_raw_export=False), "ap-south": Policy(
        allow_raw_export=True)}
    with in_process(regional, policies) as fed:
        fed.prepare("logistic", 1e-4)
        with pytest.raises(SiteCallError) as err:
            fed.export("eu-west")
        assert err.value.code == "PERMISSION_DENIED"
        assert "site eu-west: refused by policy allow_raw_export" in str(err.value)
        before = fed.meter.site_bytes("ap-south", "up")
        exported = fed.export("ap-south")
        original = load_dataset(regional["ap-south"])
        assert (exported.X != original.X).nnz == 0
        np.testing.assert_array_equal(exported.y, original.y)
        up = fed.meter.site_bytes("ap-south", "up") - before
        assert 0 < up < original.X.data.nbytes + original.X.indices.nbytes + original.y.nbytes


def test_min_rows_per_aggregate_and_allowed_clients_are_enforced(regional):
    policies = {"sa-east": Policy(min_rows_per_aggregate=5000)}
    with in_process(regional, policies) as fed, pytest.raises(
            SiteCallError, match=r"min_rows_per_aggregate.*3000 rows"):
        fed.prepare("logistic", 1e-4)
    services = [SiteService("eu-west", "eu", load_dataset(regional["eu-west"]),
                            Policy(allowed_clients=["trusted-coordinator"]))]
    with pytest.raises(SiteCallError, match="client 'coordinator' is not in"):
        Federation([InProcessTransport(s, identity="coordinator") for s in services], "eu-west")
    fed = Federation([InProcessTransport(services[0], identity="trusted-coordinator")],
                     "eu-west")
    assert fed.sites["eu-west"].rows == 3000
    fed.close()


def test_audit_log_lists_every_boundary_crossing(regional, tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    with in_process(regional, audit=audit) as fed:
        run_lbfgs(fed, iterations=3)
    wan = fed.meter.wan_bytes()  # after close: the Close calls are audited too
    calls = sum(fed.meter.calls.values())
    records = read_audit(tmp_path / "audit.jsonl")
    assert len(records) == 2 * calls  # every call, both directions
    assert sum(r["bytes"] for r in records if r["wan"]) == wan
    assert {r["link"] for r in records if r["wan"]} >= {"us-east->sa-east", "sa-east->us-east"}
    assert all(r["rows"] in (None, 3000) or r["direction"] == "down" for r in records)


def test_support_restricted_exchange_cuts_ipinyou_bytes_fivefold(tmp_path, shared):
    from geodml.data.partition import PartitionSpec, partition_source
    from geodml.data.readers import open_source
    from geodml.data.source import KeySpec

    src = open_source(shared("ipinyou_deepctr/train.fm.txt"), "libsvm", n_features=133465,
                      featindex=shared("ipinyou_deepctr/featindex.fm.txt"))
    partition_source(src, tmp_path, PartitionSpec("by-column", k=4,
                                                  key=KeySpec(feature_prefix="region:")))
    sites = site_dirs(tmp_path)
    per_round = {}
    for restrict in (False, True):
        services = [SiteService(n, n, load_dataset(p)) for n, p in sites.items()]
        with Federation([InProcessTransport(s) for s in services], home=next(iter(sites)),
                        wire=WireFormat(allow_sparse=False)) as fed:
            fed.prepare("logistic", 1e-4, restrict_to_support=restrict)
            w = np.random.default_rng(1).standard_normal(fed.n_features)
            before = fed.meter.total_bytes()
            fed.evaluate(w)
            per_round[restrict] = fed.meter.total_bytes() - before
    assert per_round[False] / per_round[True] >= 5, per_round


def test_site_config_errors_name_the_field(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_text('name = "eu"\n[data]\npath = "x"\n[executor]\nshards = 0\n[policy]\n'
                   'min_rows_per_aggregate = -1\nsurprise = 1\n')
    with pytest.raises(ConfigError) as err:
        load_site_config(bad)
    text = str(err.value)
    assert "executor.shards" in text and "policy.min_rows_per_aggregate" in text
    assert "policy.surprise" in text and str(bad) in text
    bad.write_text('name = "eu"\n[data]\npath = "x"\n')
    with pytest.raises(ConfigError, match="tls: missing"):
        load_site_config(bad)


def test_a_site_that_cannot_start_is_reported_with_its_log(tmp_path):
    config = SiteConfig(name="broken", insecure=True, data=DataConfig(path=tmp_path / "nope"))
    with pytest.raises(LaunchError, match="site broken exited") as err:
        LocalCluster([config], tmp_path / "run", insecure=True, ready_timeout=scaled(60)).start()
    assert "not a complete geodml dataset directory" in str(err.value)


def test_describe_reports_counts_and_identity(cluster):
    with Federation(cluster.transports(), home="us-east") as fed:
        info = fed.sites["sa-east"]
        assert (info.rows, info.region, info.protocol_version) == (3000, "sa-east", 1)
        assert 0 < info.support_size <= info.features
        assert json.loads(json.dumps(info.capabilities))


def test_launcher_resolves_relative_data_paths_from_its_working_directory(
        regional, tmp_path, monkeypatch):
    monkeypatch.chdir(regional["eu-west"].parent)
    config = SiteConfig(name="eu-west", insecure=True, data=DataConfig(path="train"))
    with LocalCluster([config], tmp_path / "run", insecure=True) as cluster, Federation(
            cluster.transports(), home="us-east") as fed:
        assert fed.sites["eu-west"].rows == 3000


def test_mutual_tls_cluster_serves_the_coordinator_and_rejects_a_stranger(regional, tmp_path):
    from geodml.site.config import TlsConfig
    from geodml.wire.tls import channel_credentials, init_ca, issue

    certs = tmp_path / "certs"
    init_ca(certs)
    issue(certs, certs, "eu-west", "site")
    coordinator = issue(certs, certs, "coordinator", "coordinator").tls_files()
    init_ca(tmp_path / "other")
    stranger = issue(tmp_path / "other", tmp_path / "other", "coordinator", "coordinator")
    config = SiteConfig(
        name="eu-west", data=DataConfig(path=regional["eu-west"]),
        policy=Policy(allowed_clients=["coordinator"]),
        tls=TlsConfig(ca=certs / "ca.pem", cert=certs / "eu-west.pem", key=certs / "eu-west.key"))
    with LocalCluster([config], tmp_path / "run", client_tls=coordinator) as cluster:
        with Federation(cluster.transports(), home="us-east") as fed:
            fed.prepare("logistic", 1e-3)
            assert fed.evaluate(np.zeros(fed.n_features))[0].rows == 3000
        address = cluster.sites["eu-west"].address
        untrusted = GrpcTransport("eu-west", address, channel_credentials(stranger.tls_files()),
                                  timeout=scaled(10))
        with pytest.raises(SiteCallError) as err:
            list(untrusted.call("Describe", pb.DescribeRequest()))
        # the stranger does not trust the site's CA: refused for good, saying so
        assert err.value.code == "UNAUTHENTICATED"
        assert "NOT signed by the deployment CA" in str(err.value)
        untrusted.close()
        plaintext = GrpcTransport("eu-west", address, None, timeout=scaled(10))
        with pytest.raises(SiteCallError):
            list(plaintext.call("Describe", pb.DescribeRequest()))
        plaintext.close()


def test_sites_stop_gracefully_on_sigterm(regional, tmp_path):
    config = SiteConfig(name="eu-west", insecure=True, data=DataConfig(path=regional["eu-west"]))
    cluster = LocalCluster([config], tmp_path / "run", insecure=True).start()
    process = cluster.sites["eu-west"].process
    cluster.stop(timeout=scaled(30))  # a loaded machine exits slowly; killed would be -9
    assert process.returncode == 0
    assert "serving 3000 rows" in (tmp_path / "run" / "eu-west.log").read_text()


def test_plaintext_needs_the_flag_and_a_loopback_address(regional, tmp_path):
    from click.testing import CliRunner

    from geodml.cli import main
    from geodml.site.config import dump_site_config

    path = tmp_path / "site.toml"
    config = SiteConfig(name="eu-west", insecure=True, listen="127.0.0.1:0",
                        data=DataConfig(path=regional["eu-west"]))
    path.write_text(dump_site_config(config))
    result = CliRunner().invoke(main, ["site", "serve", "--config", str(path)])
    assert result.exit_code != 0
    assert "plaintext needs insecure = true in the config and the --insecure flag" in (
        result.output)
    path.write_text(dump_site_config(config.model_copy(update={"listen": "0.0.0.0:0"})))
    result = CliRunner().invoke(main, ["site", "serve", "--insecure", "--config", str(path)])
    assert result.exit_code != 0
    assert "0.0.0.0" in result.output and "loopback" in result.output


class _Overlap(InProcessTransport):
    """An in-process site that records how many sites' calls were running at once."""

    def __init__(self, service: SiteService, live: list[int], peak: list[int], lock):
        super().__init__(service)
        self.live, self.peak, self.lock = live, peak, lock

    def call(self, method: str, request, timeout: float | None = None):
        with self.lock:
            self.live[0] += 1
            self.peak[0] = max(self.peak[0], self.live[0])
        try:
            yield from list(super().call(method, request, timeout))
        finally:
            with self.lock:
                self.live[0] -= 1


def test_serial_federation_calls_one_site_at_a_time_with_the_same_sums(regional):
    import threading

    live, peak, lock = [0], [0], threading.Lock()
    services = [SiteService(n, n, load_dataset(p)) for n, p in regional.items()]
    transports = [_Overlap(s, live, peak, lock) for s in services]
    with Federation(transports, home="us-east", serial=True) as fed:
        result = run_lbfgs(fed, iterations=3)
    with in_process(regional) as reference:
        expected = run_lbfgs(reference, iterations=3)
    np.testing.assert_array_equal(result.w, expected.w)
    assert peak[0] == 1
