"""Mutual TLS against real gRPC servers on loopback: who gets in, who is refused, and
the errors a misconfigured certificate file produces."""

from __future__ import annotations

import datetime as dt
import re
import stat
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from geodml.cli import main
from geodml.errors import ConfigError
from geodml.site.policy import Policy, PolicyError
from geodml.wire.protocol import pb, pb_grpc
from geodml.wire.tls import (
    IssuedPaths,
    TlsFiles,
    channel_credentials,
    check_insecure_address,
    init_ca,
    issue,
    peer_identity,
    secure_channel,
    server_credentials,
)

TIMEOUT = 5


@dataclass(frozen=True)
class Pki:
    """Two CAs: the deployment's ("ca") and a stranger's ("other")."""

    root: Path
    site: IssuedPaths  # SAN localhost, 127.0.0.1, ::1
    far_site: IssuedPaths  # SAN only site-far.example
    coordinator: IssuedPaths
    stranger: IssuedPaths  # a coordinator certificate from the other CA
    stranger_site: IssuedPaths  # a site certificate from the other CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    init_ca(root / "ca")
    init_ca(root / "other", name="other CA")
    return Pki(
        root=root,
        site=issue(root / "ca", root / "site", "site-a", "site"),
        far_site=issue(root / "ca", root / "far", "site-far", "site", hosts=["site-far.example"]),
        coordinator=issue(root / "ca", root / "coord", "coord-1", "coordinator"),
        stranger=issue(root / "other", root / "stranger", "coord-1", "coordinator"),
        stranger_site=issue(root / "other", root / "stranger", "site-x", "site"),
    )


class _Servicer(pb_grpc.SiteServicer):
    """Describe answers with the caller's certificate CN, or 'anonymous'."""

    def __init__(self, allowed: set[str] | None = None) -> None:
        self.calls = 0
        self.allowed = allowed

    def Describe(  # noqa: N802 (the generated servicer's method name)
        self, request: pb.DescribeRequest, context: grpc.ServicerContext
    ) -> pb.DescribeReply:
        self.calls += 1
        if self.allowed is not None:  # the sites' own policy check, as SiteService runs it
            try:
                Policy(allowed_clients=sorted(self.allowed)).check_client(
                    "site-a", peer_identity(context))
            except PolicyError as e:
                context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        return pb.DescribeReply(site=peer_identity(context) or "anonymous")


@contextmanager
def _server(
    credentials: grpc.ServerCredentials | None, allowed: set[str] | None = None
) -> Iterator[tuple[int, _Servicer]]:
    """A real Site server on 127.0.0.1 (TLS, or plaintext when credentials is None)."""
    servicer = _Servicer(allowed)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_SiteServicer_to_server(servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    assert port > 0
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None)


def _describe(channel: grpc.Channel) -> pb.DescribeReply:
    with channel:
        return pb_grpc.SiteStub(channel).Describe(pb.DescribeRequest(), timeout=TIMEOUT)


def _raw_credentials(
    ca: IssuedPaths | Path, client: IssuedPaths | None
) -> grpc.ChannelCredentials:
    """Channel credentials built directly, bypassing TlsFiles' checks, so that the
    server (not our loader) is what refuses a bad client."""
    ca_path = ca.ca if isinstance(ca, IssuedPaths) else ca
    if client is None:
        return grpc.ssl_channel_credentials(root_certificates=ca_path.read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=ca_path.read_bytes(),
        private_key=client.key.read_bytes(),
        certificate_chain=client.cert.read_bytes(),
    )


def _assert_refused(
    port: int, servicer: _Servicer, creds: grpc.ChannelCredentials, pki: Pki | None = None
) -> None:
    """The call fails in the TLS handshake and never reaches the servicer. With ``pki``,
    the legitimate coordinator then succeeds on the same server: the refusal was due to
    the client's credentials, not to a broken server."""
    with pytest.raises(grpc.RpcError) as info:
        _describe(grpc.secure_channel(f"127.0.0.1:{port}", creds))
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)
    assert servicer.calls == 0, "the server must never have served the refused call"
    if pki is not None:
        files = pki.coordinator.tls_files()
        assert _describe(secure_channel(f"127.0.0.1:{port}", files)).site == "coord-1"
        assert servicer.calls == 1


# --- who gets in -------------------------------------------------------------------


def test_coordinator_from_same_ca_connects_and_is_identified(pki: Pki) -> None:
    with _server(server_credentials(pki.site.tls_files())) as (port, servicer):
        reply = _describe(secure_channel(f"127.0.0.1:{port}", pki.coordinator.tls_files()))
        assert reply.site == "coord-1"
        reply = _describe(secure_channel(f"localhost:{port}", pki.coordinator.tls_files()))
        assert reply.site == "coord-1"
    assert servicer.calls == 2


def test_client_without_certificate_is_rejected(pki: Pki) -> None:
    with _server(server_credentials(pki.site.tls_files())) as (port, servicer):
        _assert_refused(port, servicer, _raw_credentials(pki.site, None), pki)


def test_client_certificate_from_another_ca_is_rejected(pki: Pki) -> None:
    # Same CN as the legitimate coordinator: only the signature tells them apart.
    with _server(server_credentials(pki.site.tls_files())) as (port, servicer):
        _assert_refused(port, servicer, _raw_credentials(pki.site, pki.stranger), pki)


def test_site_certificate_cannot_act_as_a_client(pki: Pki) -> None:
    # A site's certificate has serverAuth only; the server refuses it as a client cert.
    with _server(server_credentials(pki.site.tls_files())) as (port, servicer):
        _assert_refused(port, servicer, _raw_credentials(pki.site, pki.site), pki)
    with pytest.raises(ConfigError, match=r"tls\.cert: .*site-a\.pem.*cannot act as a coordinator"):
        channel_credentials(pki.site.tls_files())


def test_client_that_does_not_trust_the_servers_ca_fails(pki: Pki) -> None:
    with _server(server_credentials(pki.site.tls_files())) as (port, servicer):
        creds = _raw_credentials(pki.root / "other" / "ca.pem", pki.coordinator)
        _assert_refused(port, servicer, creds, pki)


def test_server_certificate_from_another_ca_fails(pki: Pki) -> None:
    stranger_files = TlsFiles(ca=pki.root / "other" / "ca.pem", cert=pki.stranger_site.cert,
                              key=pki.stranger_site.key)
    with _server(server_credentials(stranger_files)) as (port, servicer):
        _assert_refused(port, servicer, _raw_credentials(pki.coordinator, pki.coordinator))


def test_coordinator_certificate_cannot_act_as_a_site(pki: Pki) -> None:
    # Built directly (server_credentials would refuse it): the client's TLS stack checks
    # the server certificate's purpose, so a stolen coordinator key cannot pose as a site.
    coord = pki.coordinator
    creds = grpc.ssl_server_credentials(
        [(coord.key.read_bytes(), coord.cert.read_bytes())],
        root_certificates=coord.ca.read_bytes(), require_client_auth=True,
    )
    with _server(creds) as (port, servicer):
        with pytest.raises(grpc.RpcError) as info:
            _describe(secure_channel(f"127.0.0.1:{port}", coord.tls_files()))
        assert "certificate purpose" in info.value.details()
        assert servicer.calls == 0


def test_server_name_must_match_subject_alt_name(pki: Pki) -> None:
    with _server(server_credentials(pki.far_site.tls_files())) as (port, servicer):
        files = pki.coordinator.tls_files()
        with pytest.raises(grpc.RpcError) as info:
            _describe(secure_channel(f"127.0.0.1:{port}", files))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # gRPC's wording differs between versions.
        assert re.search("Hostname Verification|Peer name", info.value.details())
        assert servicer.calls == 0
        # The site's identity name, checked instead of the dialed address.
        reply = _describe(secure_channel(f"127.0.0.1:{port}", files, site="site-far"))
        assert reply.site == "coord-1"
        assert servicer.calls == 1


def test_site_certificates_carry_their_identity_name_and_no_one_else_can(pki: Pki) -> None:
    from cryptography import x509

    from geodml.wire.tls import certificate_identity, site_identity_name

    ident = certificate_identity(x509.load_pem_x509_certificate(pki.site.cert.read_bytes()))
    assert (ident.common_name, ident.role, ident.sites) == ("site-a", "site", ("site-a",))
    coord = certificate_identity(
        x509.load_pem_x509_certificate(pki.coordinator.cert.read_bytes()))
    assert (coord.role, coord.sites) == ("coordinator", ())
    assert site_identity_name("site-a") == "site-a.site.geodml.invalid"
    # nobody can put an identity name (or a wildcard covering them) in a certificate
    for host in ("site-b.site.geodml.invalid", "*.site.geodml.invalid", "GEODML.invalid."):
        for role in ("site", "coordinator"):
            with pytest.raises(ConfigError, match=r"reserved domain geodml\.invalid"):
                issue(pki.root / "ca", pki.root / "forged", "site-x", role, hosts=[host])


def test_channel_to_a_site_accepts_only_that_sites_certificate(pki: Pki) -> None:
    files = pki.coordinator.tls_files()
    with _server(server_credentials(pki.site.tls_files())) as (port, servicer):
        assert _describe(secure_channel(f"127.0.0.1:{port}", files, site="site-a")).site
        with pytest.raises(grpc.RpcError) as info:  # site-a's certificate, dialed as site-b
            _describe(secure_channel(f"127.0.0.1:{port}", files, site="site-b"))
        assert "Hostname Verification" in info.value.details()
        assert servicer.calls == 1


def test_a_site_refuses_to_serve_under_another_sites_certificate(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"tls\.cert: .*site-a\.pem is a site certificate "
                       r"for 'site-a' \(CN=site-a,OU=site,O=geodml\), not site 'site-b''s"):
        server_credentials(pki.site.tls_files(), site="site-b")
    with pytest.raises(ConfigError, match="cannot act as a site"):
        server_credentials(pki.coordinator.tls_files(), site="coord-1")
    server_credentials(pki.site.tls_files(), site="site-a")


def test_unlisted_coordinator_gets_permission_denied_naming_the_rule(pki: Pki) -> None:
    creds = pki.site.tls_files()
    with _server(server_credentials(creds), allowed={"coord-2"}) as (port, _):
        with pytest.raises(grpc.RpcError) as info:
            _describe(secure_channel(f"127.0.0.1:{port}", pki.coordinator.tls_files()))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "allowed_clients" in info.value.details()
        assert "'coord-1'" in info.value.details()
    with _server(server_credentials(creds), allowed={"coord-1"}) as (port, _):
        reply = _describe(secure_channel(f"127.0.0.1:{port}", pki.coordinator.tls_files()))
        assert reply.site == "coord-1"


def test_plaintext_on_loopback_has_no_identity() -> None:
    check_insecure_address("127.0.0.1:0")
    with _server(None) as (port, servicer):
        assert _describe(grpc.insecure_channel(f"127.0.0.1:{port}")).site == "anonymous"
    with _server(None, allowed={"coord-1"}) as (port, _):
        with pytest.raises(grpc.RpcError) as info:
            _describe(grpc.insecure_channel(f"127.0.0.1:{port}"))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "allowed_clients" in info.value.details()
    assert servicer.calls == 1


# --- TlsFiles.load errors ------------------------------------------------------------


def test_load_missing_file_names_field_and_path(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    files = TlsFiles(ca=pki.site.ca, cert=missing, key=pki.site.key)
    with pytest.raises(ConfigError, match=rf"^tls\.cert: {missing} does not exist$"):
        files.load()
    files = TlsFiles(ca=missing, cert=pki.site.cert, key=pki.site.key, field="site.tls")
    with pytest.raises(ConfigError, match=rf"^site\.tls\.ca: {missing} does not exist$"):
        files.load()


def test_load_non_pem_files(pki: Pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello, not a certificate\n")
    with pytest.raises(ConfigError, match=rf"^tls\.cert: {junk} is not a PEM certificate"):
        TlsFiles(ca=pki.site.ca, cert=junk, key=pki.site.key).load()
    with pytest.raises(ConfigError, match=rf"^tls\.key: {junk} is not a PEM private key"):
        TlsFiles(ca=pki.site.ca, cert=pki.site.cert, key=junk).load()
    # A key where the certificate should be.
    with pytest.raises(ConfigError, match=r"^tls\.cert: .*site-a\.key is not a PEM certificate"):
        TlsFiles(ca=pki.site.ca, cert=pki.site.key, key=pki.site.key).load()
    broken = tmp_path / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=rf"^tls\.ca: {broken} is not a valid PEM certificate"):
        TlsFiles(ca=broken, cert=pki.site.cert, key=pki.site.key).load()


def test_load_encrypted_key(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.coordinator.key.read_bytes(), None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    files = TlsFiles(ca=pki.coordinator.ca, cert=pki.coordinator.cert, key=encrypted)
    with pytest.raises(ConfigError, match=rf"^tls\.key: {encrypted} is encrypted"):
        files.load()


def test_load_key_that_does_not_match_the_certificate(pki: Pki) -> None:
    files = TlsFiles(ca=pki.site.ca, cert=pki.site.cert, key=pki.coordinator.key)
    with pytest.raises(ConfigError, match=r"^tls\.key: .*coord-1\.key does not belong to the "
                                          r"certificate .*site-a\.pem"):
        files.load()


def test_load_certificate_not_signed_by_the_ca(pki: Pki) -> None:
    files = TlsFiles(ca=pki.site.ca, cert=pki.stranger.cert, key=pki.stranger.key)
    with pytest.raises(ConfigError, match=r"^tls\.cert: .*stranger/coord-1\.pem was not signed "
                                          r"by the CA in tls\.ca .*issued by CN=other CA"):
        files.load()


def test_load_ca_file_that_is_not_a_ca(pki: Pki) -> None:
    files = TlsFiles(ca=pki.site.cert, cert=pki.site.cert, key=pki.site.key)
    with pytest.raises(ConfigError, match=r"^tls\.ca: .*site-a\.pem: .* is not a CA certificate"):
        files.load()


def test_load_expired_certificate(pki: Pki, tmp_path: Path) -> None:
    ca_dir = pki.root / "ca"
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=10))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    cert_path, key_path = tmp_path / "old.pem", tmp_path / "old.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    with pytest.raises(ConfigError, match=rf"^tls\.cert: {cert_path}: certificate CN=old expired"):
        TlsFiles(ca=ca_dir / "ca.pem", cert=cert_path, key=key_path).load()


def test_role_is_checked_when_loading(pki: Pki) -> None:
    with pytest.raises(ConfigError, match=r"coord-1\.pem: .* cannot act as a site .*serverAuth"):
        server_credentials(pki.coordinator.tls_files())


# --- plaintext addresses -------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "127.0.0.1:5000", "[::1]:5000", "localhost:5000", "127.3.4.5:5000", "LOCALHOST:1",
    "[::ffff:127.0.0.1]:5000",
])
def test_insecure_allowed_on_loopback(address: str) -> None:
    check_insecure_address(address)


@pytest.mark.parametrize("address", [
    "0.0.0.0:5000", "10.1.2.3:5000", "example.com:5000", "[::]:5000", "[2001:db8::1]:5000",
    "localhost.example.com:5000", "127.0.0.1.nip.io:5000",
])
def test_insecure_refused_elsewhere(address: str) -> None:
    with pytest.raises(ConfigError, match=rf"^--insecure: {re.escape(address)} is not a loopback"):
        check_insecure_address(address)


# --- issuing -------------------------------------------------------------------------


def test_issue_refuses_to_overwrite(pki: Pki) -> None:
    ca_dir, out = pki.root / "ca", pki.root / "again"
    first = issue(ca_dir, out, "site-b", "site")
    before = first.key.read_bytes()
    with pytest.raises(ConfigError, match=r"site-b\.pem: already exists; refusing to overwrite"):
        issue(ca_dir, out, "site-b", "site")
    assert first.key.read_bytes() == before
    again = issue(ca_dir, out, "site-b", "site", overwrite=True)
    assert again.key.read_bytes() != before
    assert stat.S_IMODE(again.key.stat().st_mode) == 0o600
    again.tls_files().load(role="site")
    with pytest.raises(ConfigError, match=r"ca\.pem: already exists"):
        init_ca(ca_dir)


def test_issued_certificate_contents(pki: Pki) -> None:
    cert = x509.load_pem_x509_certificate(pki.far_site.cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-far"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value \
        == "site"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["site-far.example",
                                                     "site-far.site.geodml.invalid"]
    ca = x509.load_pem_x509_certificate(pki.far_site.ca.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for paths in (pki.site, pki.coordinator, pki.far_site):
        assert stat.S_IMODE(paths.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((pki.root / "ca" / "ca.key").stat().st_mode) == 0o600


def test_cli_init_and_issue_produce_working_certificates(tmp_path: Path) -> None:
    runner = CliRunner()
    ca = tmp_path / "ca"
    result = runner.invoke(main, ["certs", "init", str(ca), "--name", "test CA"])
    assert result.exit_code == 0, result.output
    assert "ca.key" in result.output
    result = runner.invoke(main, ["certs", "issue", str(ca), "eu-west", "--role", "site",
                                  "--host", "127.0.0.1", "--host", "eu-west.example"])
    assert result.exit_code == 0, result.output
    assert "eu-west.pem" in result.output
    result = runner.invoke(main, ["certs", "issue", str(ca), "coordinator", "--role",
                                  "coordinator", "--out", str(tmp_path / "coord")])
    assert result.exit_code == 0, result.output
    for key in (ca / "ca.key", ca / "eu-west.key", tmp_path / "coord" / "coordinator.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

    result = runner.invoke(main, ["certs", "issue", str(ca), "eu-west", "--role", "site"])
    assert result.exit_code == 1
    assert "already exists" in result.output

    site = TlsFiles(ca=ca / "ca.pem", cert=ca / "eu-west.pem", key=ca / "eu-west.key")
    coord = TlsFiles(ca=ca / "ca.pem", cert=tmp_path / "coord" / "coordinator.pem",
                     key=tmp_path / "coord" / "coordinator.key")
    with _server(server_credentials(site)) as (port, _):
        assert _describe(secure_channel(f"127.0.0.1:{port}", coord)).site == "coordinator"
