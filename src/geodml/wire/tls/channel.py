"""gRPC credentials and channels: the one channel builder every coordinator uses
(:func:`site_channel`), the site's server credentials, and the peer's identity.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Sequence

import grpc
from cryptography import x509

from geodml.errors import ConfigError
from geodml.wire.protocol import KEEPALIVE_MS, KEEPALIVE_TIMEOUT_MS, MAX_MESSAGE_BYTES
from geodml.wire.tls.files import TlsFiles, _issued_by
from geodml.wire.tls.identity import CertIdentity, certificate_identity, site_identity_name


def server_credentials(files: TlsFiles, site: str | None = None) -> grpc.ServerCredentials:
    """Credentials of a site server: its own certificate, and a client certificate
    signed by the CA required from every caller. With ``site``, the certificate must
    be that site's (a site refuses to start under another site's name)."""
    ca, cert, key = files.load(role="site", site=site)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )



class CoordinatorCredentials(grpc.ChannelCredentials):
    """gRPC channel credentials that remember the files they came from, so that a
    refused handshake can be explained (:func:`peer_certificate`)."""

    def __init__(self, files: TlsFiles, ca: bytes, cert: bytes, key: bytes):
        base = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert)
        super().__init__(base._credentials)
        self.files, self.ca_pem = files, ca



def channel_credentials(files: TlsFiles) -> CoordinatorCredentials:
    """Credentials of a coordinator's channel: trust only the CA, present own cert."""
    ca, cert, key = files.load(role="coordinator")
    return CoordinatorCredentials(files, ca, cert, key)



def identity_options(site: str) -> list[tuple[str, str]]:
    """The channel options that make gRPC accept only site ``site``'s certificate."""
    return [("grpc.ssl_target_name_override", site_identity_name(site))]



def channel_options(site: str | None = None, tls: bool = True) -> list[tuple[str, object]]:
    """The options of every coordinator's channel to a site: message limits and
    keepalive from the protocol (:mod:`geodml.wire.protocol`), fast reconnects, and
    (with TLS and ``site``) the identity check of :func:`identity_options`."""
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # reconnect soon after a site restarts (gRPC's default waits up to 120 s)
        ("grpc.initial_reconnect_backoff_ms", 200),
        # not grpc.min_reconnect_backoff_ms: gRPC core also takes it as the minimum
        # connect timeout, and a TCP + TLS + HTTP/2 handshake takes ~4 RTT
        ("grpc.max_reconnect_backoff_ms", 5_000),
    ]
    if tls and site is not None:
        options += identity_options(site)
    return options


def site_channel(address: str, credentials: grpc.ChannelCredentials | None,
                 site: str | None = None,
                 options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
    """The one builder of a coordinator's channel to the site at ``address``:
    plaintext when ``credentials`` is None (loopback only, checked by the caller),
    else mutual TLS that, with ``site``, accepts only site ``site``'s certificate
    whatever the address (:func:`identity_options`). ``options`` are added to
    :func:`channel_options`."""
    opts = [*channel_options(site, tls=credentials is not None), *options]
    if credentials is None:
        return grpc.insecure_channel(address, options=opts)
    return grpc.secure_channel(address, credentials, options=opts)


def secure_channel(
    address: str,
    files: TlsFiles,
    *,
    site: str | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A mutual-TLS channel to the site at ``address`` (``host:port``), from ``files``
    (:func:`site_channel` with :func:`channel_credentials`).

    With ``site``, the handshake succeeds only if the server presents site ``site``'s
    certificate (:func:`identity_options`), whatever the address; without, gRPC checks
    the dialed host against the certificate's subjectAltName.
    """
    return site_channel(address, channel_credentials(files), site, options)


def peer_certificate(address: str, ca_pem: bytes, files: TlsFiles | None = None,
                     timeout: float = 5.0) -> tuple[CertIdentity, bool] | None:
    """Who answers at ``address``: the identity of the certificate it presents and
    whether the deployment CA (``ca_pem``) signed it; None if no TLS server answers.

    A diagnosis only, for the message of a refused handshake: it opens its own TLS
    connection (presenting ``files``' certificate when given, so that the site does
    not log a refused handshake) and trusts nothing it learns.
    """
    import socket
    import ssl

    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not port.isdigit():
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    if files is not None:
        with contextlib.suppress(OSError, ssl.SSLError):
            ctx.load_cert_chain(str(files.cert), str(files.key))
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host or None) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError, ValueError):
        return None
    if not der:
        return None
    cert = x509.load_der_x509_certificate(der)
    try:
        cas = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        cas = []
    return certificate_identity(cert), any(_issued_by(cert, ca) for ca in cas)



def peer_identity(context: grpc.ServicerContext) -> str | None:
    """The CN of the caller's verified client certificate; None on a plaintext call."""
    names = context.auth_context().get("x509_common_name")
    if not names:
        return None
    name = names[0]
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)



def check_insecure_address(address: str) -> None:
    """Refuse plaintext on anything but loopback.

    ``address`` is ``host:port``, ``[v6]:port`` or a bare host. The host must be
    ``localhost``, in 127.0.0.0/8, or ``::1``; otherwise :class:`ConfigError`.
    """
    host = _host_of(address)
    if host.lower().rstrip(".") == "localhost":
        return
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip is not None and ip.is_loopback:
        return
    raise ConfigError(
        f"--insecure: {address} is not a loopback address; plaintext is allowed only on "
        "127.0.0.0/8, ::1 or localhost. For other addresses use mutual TLS "
        "(create certificates with `geodml certs init` and `geodml certs issue`)"
    )



def _host_of(address: str) -> str:
    text = address.strip()
    if not text:
        raise ConfigError("--insecure: the address is empty")
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:] if end >= 0 else ""
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            raise ConfigError(f"--insecure: {address!r} is not host:port or [v6]:port")
        return text[1:end]
    if text.count(":") == 1:
        host, port = text.split(":")
        if not port.isdigit():
            raise ConfigError(f"--insecure: {address!r} has no numeric port")
        return host
    return text  # a bare host or an unbracketed IPv6 address
