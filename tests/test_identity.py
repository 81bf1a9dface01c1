"""Identity on every connection: the coordinator reaches the site it names, or refuses.

Real site servers in their own processes (and raw gRPC servers where a misbehaving
server must be built by hand): a site on a port already in use exits; a coordinator
whose address for site a reaches site b refuses, naming both; another site's
certificate and a coordinator's certificate are refused as a server; on plaintext
loopback the Describe name is checked.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from geodml.data import load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import ConfigError
from geodml.federation import Federation
from geodml.site.config import DataConfig, SiteConfig, TlsConfig, dump_site_config
from geodml.site.launcher import LocalCluster
from geodml.site.server import SiteServicer
from geodml.site.service import SiteService
from geodml.wire.errors import SiteIdentityError
from geodml.wire.protocol import pb
from geodml.wire.tls import IssuedPaths, channel_credentials, init_ca, issue
from geodml.wire.transport import GrpcTransport

from .tools.timing import scaled

NAMES = ("a", "b")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Two sites' data and a CA with certificates for a, b and the coordinator."""
    root = tmp_path_factory.mktemp("identity")
    write_regional(RegionalCTRConfig(regions=NAMES, rows_per_region=600,
                                     test_rows_per_region=0, hash_bits=10, seed=5),
                   root / "data")
    certs = root / "certs"
    init_ca(certs)
    issued = {n: issue(certs, certs, n, "site") for n in NAMES}
    issued["coordinator"] = issue(certs, certs, "coordinator", "coordinator")
    return root, site_dirs(root / "data"), certs, issued


def tls_config(certs: Path, name: str, cert_name: str | None = None) -> TlsConfig:
    cert_name = cert_name or name
    return TlsConfig(ca=certs / "ca.pem", cert=certs / f"{cert_name}.pem",
                     key=certs / f"{cert_name}.key")


@pytest.fixture(scope="module")
def tls_cluster(world, tmp_path_factory):
    _, dirs, certs, issued = world
    configs = [SiteConfig(name=n, region=n, data=DataConfig(path=dirs[n]),
                          tls=tls_config(certs, n)) for n in NAMES]
    with LocalCluster(configs, tmp_path_factory.mktemp("tls-sites"),
                      client_tls=issued["coordinator"].tls_files()) as cluster:
        yield cluster


def serve_cmd(config_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "geodml", "site", "serve", "--config", str(config_path),
            *extra]


def test_a_second_site_on_a_used_port_exits_non_zero_naming_the_port(world, tls_cluster,
                                                                      tmp_path):
    _, dirs, certs, _ = world
    port = tls_cluster.sites["a"].port
    config = SiteConfig(name="b", region="b", listen=f"127.0.0.1:{port}",
                        data=DataConfig(path=dirs["b"]), tls=tls_config(certs, "b"))
    path = tmp_path / "b.toml"
    path.write_text(dump_site_config(config))
    proc = subprocess.run(serve_cmd(path), capture_output=True, text=True,
                          timeout=scaled(60), stdin=subprocess.DEVNULL)
    assert proc.returncode != 0
    assert (f"site b: listen: cannot listen on 127.0.0.1:{port}: the port is already in use"
            in proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    # a still answers there, as itself
    t = tls_cluster.transport("a", timeout=scaled(10))
    try:
        assert next(t.call("Describe", pb.DescribeRequest())).site == "a"
    finally:
        t.close()


def test_coordinator_refuses_the_address_of_another_site_naming_both(tls_cluster, world):
    issued = world[3]
    b_address = tls_cluster.sites["b"].address
    creds = channel_credentials(issued["coordinator"].tls_files())
    wrong = GrpcTransport("a", b_address, creds, timeout=scaled(10))
    with pytest.raises(SiteIdentityError) as err:
        Federation([wrong], home="a")
    message = str(err.value)
    assert message.startswith(f"site a: refused the server at {b_address}: expected site "
                              "'a', but it presented a site certificate for 'b' "
                              "(CN=b,OU=site,O=geodml), signed by the deployment CA"), message
    assert err.value.code == "UNAUTHENTICATED"  # not retried as a transient failure


def test_train_cli_with_swapped_addresses_refuses_naming_both(tls_cluster, world):
    certs = world[2]
    a, b = (tls_cluster.sites[n].address for n in NAMES)
    proc = subprocess.run(
        [sys.executable, "-m", "geodml", "train", "--method", "sqm-lbfgs", "--max-iter", "2",
         "--site", f"a={b}", "--site", f"b={a}", "--tls-dir", str(certs), "--out",
         str(certs.parent / "never.npz")],
        capture_output=True, text=True, timeout=scaled(120), stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr
    assert "expected site 'a', but it presented a site certificate for 'b'" in proc.stderr \
        or "expected site 'b', but it presented a site certificate for 'a'" in proc.stderr, \
        proc.stderr
    assert not (certs.parent / "never.npz").exists()


class RawServer:
    """A Site server built by hand with any certificate: what a misconfigured or
    hostile server could present (geodml's own server refuses to start with these)."""

    def __init__(self, service: SiteService, key: Path, cert: Path, ca: Path):
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        self.server.add_generic_rpc_handlers((SiteServicer(service, True).handlers(),))
        creds = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())],
                                            root_certificates=ca.read_bytes(),
                                            require_client_auth=True)
        self.port = self.server.add_secure_port("127.0.0.1:0", creds)
        self.server.start()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(None)


def refused_by_coordinator(world, served_as: str, paths: IssuedPaths) -> SiteIdentityError:
    _, dirs, _, issued = world
    service = SiteService(served_as, served_as, load_dataset(dirs[served_as]))
    with RawServer(service, paths.key, paths.cert, paths.ca) as raw:
        transport = GrpcTransport(served_as, f"127.0.0.1:{raw.port}",
                                  channel_credentials(issued["coordinator"].tls_files()),
                                  timeout=scaled(10))
        try:
            with pytest.raises(SiteIdentityError) as err:
                list(transport.call("Describe", pb.DescribeRequest()))
        finally:
            transport.close()
    return err.value


def test_a_site_certificate_of_another_site_name_is_refused(world):
    # a server answering Describe as "a" but holding b's certificate
    err = refused_by_coordinator(world, "a", world[3]["b"])
    assert "expected site 'a', but it presented a site certificate for 'b'" in str(err)


def test_a_coordinator_certificate_used_as_a_server_is_refused(world):
    err = refused_by_coordinator(world, "a", world[3]["coordinator"])
    assert ("expected site 'a', but it presented a coordinator certificate "
            "(CN=coordinator,OU=coordinator,O=geodml)") in str(err), str(err)


def test_a_site_refuses_to_start_with_another_sites_certificate(world, tmp_path):
    _, dirs, certs, _ = world
    config = SiteConfig(name="a", listen="127.0.0.1:0", data=DataConfig(path=dirs["a"]),
                        tls=tls_config(certs, "a", cert_name="b"))
    path = tmp_path / "a.toml"
    path.write_text(dump_site_config(config))
    proc = subprocess.run(serve_cmd(path), capture_output=True, text=True,
                          timeout=scaled(60), stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert f"tls.cert: {certs / 'b.pem'} is a site certificate for 'b'" in proc.stderr
    assert "not site 'a''s" in proc.stderr


def test_plaintext_loopback_checks_the_describe_name(world, tmp_path):
    _, dirs, _, _ = world
    configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=dirs[n]))
               for n in NAMES]
    with LocalCluster(configs, tmp_path / "sites", insecure=True) as cluster:
        b_address = cluster.sites["b"].address
        with pytest.raises(SiteIdentityError) as err:
            Federation([GrpcTransport("a", b_address, None, timeout=scaled(10))], home="a")
        assert str(err.value) == (f"site a: refused the server at {b_address}: expected "
                                  "site 'a', but the site there answers Describe as 'b'")
        # any first call is preceded by the Describe check, not only the Federation's
        direct = GrpcTransport("a", b_address, None, timeout=scaled(10))
        try:
            with pytest.raises(SiteIdentityError):
                list(direct.call("Close", pb.CloseRequest(session="x")))
        finally:
            direct.close()


# --- the site's own TLS files: errors name the entry --------------------------------


def test_a_missing_tls_key_names_the_entry_not_a_traceback(world, tmp_path):
    _, dirs, certs, _ = world
    missing = tmp_path / "a.key"
    config = SiteConfig(name="a", listen="127.0.0.1:0", data=DataConfig(path=dirs["a"]),
                        tls=TlsConfig(ca=certs / "ca.pem", cert=certs / "a.pem", key=missing))
    path = tmp_path / "a.toml"
    path.write_text(dump_site_config(config))
    proc = subprocess.run(serve_cmd(path), capture_output=True, text=True,
                          timeout=scaled(60), stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: tls.key: {missing} does not exist", proc.stderr


def test_a_missing_tls_cert_with_an_audit_log_is_a_tls_error(world, tmp_path):
    from geodml.site.config import AuditConfig
    from geodml.site.server import build_service

    _, dirs, certs, _ = world
    missing = tmp_path / "a.pem"
    config = SiteConfig(name="a", listen="127.0.0.1:0", data=DataConfig(path=dirs["a"]),
                        tls=TlsConfig(ca=certs / "ca.pem", cert=missing, key=certs / "a.key"),
                        audit=AuditConfig(path=tmp_path / "audit.jsonl"))
    with pytest.raises(ConfigError, match=rf"^tls\.cert: {missing} does not exist$"):
        build_service(config)
    assert not (tmp_path / "audit.jsonl").exists()


# --- what the site's log says ---------------------------------------------------------


def test_the_site_logs_each_job_and_each_refused_request(tls_cluster):
    from geodml.federation import SiteCallError

    from .tools.timing import poll

    log_path = tls_cluster.sites["a"].log_path
    with Federation(tls_cluster.transports(timeout=scaled(30)), home="a") as fed:
        fed.prepare("logistic", 1e-3, job="identity-test")
        session = fed._jobs["a"].session
        with pytest.raises(SiteCallError, match="PERMISSION_DENIED"):
            fed.export("a")
    job_line = poll(lambda: next((line for line in log_path.read_text().splitlines()
                                  if "job 'identity-test'" in line), None),
                    30, "the site's job line")
    assert ("site a: job 'identity-test' for coordinator 'coordinator' (ipv4:127.0.0.1:"
            in job_line)
    assert job_line.endswith(f"loss logistic, 600 rows, session {session}")
    refused = poll(lambda: next((line for line in log_path.read_text().splitlines()
                                 if "refused Export" in line), None),
                   30, "the site's refusal line")
    assert "site a: refused Export from 'coordinator' (ipv4:127.0.0.1:" in refused
    assert "PERMISSION_DENIED: site a: refused by policy allow_raw_export" in refused
