"""Mutual TLS between coordinators and sites: certificates, credentials, identities.

Trust model
-----------
One deployment has one certificate authority (CA). Every site and every coordinator
gets its own key pair and a certificate signed by that CA:

* a **site** certificate (``OU=site``) has the extended key usage serverAuth and a
  subjectAltName listing the DNS names and IP addresses coordinators dial it by, plus
  its **identity name** ``<name>.site.geodml.invalid`` (:func:`site_identity_name`);
* a **coordinator** certificate (``OU=coordinator``) has the extended key usage
  clientAuth; its subject common name (CN) is the coordinator's identity.

A site server demands a client certificate (``require_client_auth=True``) and accepts
only certificates signed by the deployment CA; a coordinator accepts only a site
certificate signed by the same CA that carries the identity name of the site it meant
to reach (gRPC's ``grpc.ssl_target_name_override`` set to :func:`site_identity_name`),
whatever address it dialed, and then checks that the site's ``Describe`` answers with
that same name (:mod:`geodml.federation.transport`). Every site certificate is signed
by the same CA, so the CA alone does not say *which* site answered: the identity name
does. Only ``geodml certs issue --role site`` writes identity names, and it refuses
``--host`` values in the reserved ``geodml.invalid`` domain, so no certificate can
claim another site's identity, and a coordinator certificate (clientAuth, no identity
name) can never pose as a site.
Being signed by the CA is necessary but not sufficient: the site then compares the
client's CN (:func:`peer_identity`) with the allowed client identities of its policy
(``allowed_clients``) and refuses other callers with ``PERMISSION_DENIED`` naming the
rule (:class:`geodml.site.policy.Policy`). Site certificates
carry no clientAuth usage, so a site's key cannot be used to call another site.

Plaintext is allowed only when the operator asks for it (``--insecure``) and only on a
loopback address (:func:`check_insecure_address`); such connections carry no identity.

File layout
-----------
``geodml certs init DIR`` writes the CA::

    DIR/ca.pem      the CA certificate: copy it to every site and coordinator
    DIR/ca.key      the CA private key (mode 0600): keep it on the machine that issues

``geodml certs issue DIR NAME --role site|coordinator`` writes, in ``--out`` (default
``DIR``)::

    <name>.pem      the certificate of NAME, signed by DIR/ca.pem
    <name>.key      its private key (mode 0600): copy it only to NAME's machine

A process is configured with three paths, :class:`TlsFiles` ``(ca, cert, key)``.
Keys are ECDSA P-256, stored unencrypted in PKCS#8 PEM and protected by file mode.

Target names
------------
A coordinator's channel to site ``a`` checks the name ``a.site.geodml.invalid`` in the
server certificate (``grpc.ssl_target_name_override``), not the dialed host: a site can
be reached through a tunnel or a load balancer, and an address that reaches the wrong
site is refused. :func:`secure_channel` without ``site`` checks the dialed host instead
(gRPC's default). When a handshake is refused, :func:`peer_certificate` connects once
more, outside gRPC, only to say who answered in the error message.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from geodml.errors import ConfigError

Role = Literal["site", "coordinator"]
ROLES: tuple[Role, ...] = ("site", "coordinator")
DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DNS_RE = re.compile(
    r"(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
# DSA keys are not accepted as a CA key: naming cryptography's DSA class prints a
# CryptographyDeprecationWarning on every command, and `certs init` never writes one
_ISSUER_KEYS = (
    ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey,
    ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey,
)
#: the reserved DNS domain of identity names: only `certs issue --role site` writes them
IDENTITY_DOMAIN = "geodml.invalid"
SITE_IDENTITY_SUFFIX = f".site.{IDENTITY_DOMAIN}"


def site_identity_name(site: str) -> str:
    """The DNS subjectAltName that makes a certificate site ``site``'s:
    ``<site>.site.geodml.invalid``. A coordinator dialing ``site`` checks this name in
    the server's certificate (``.invalid`` is a reserved top-level domain: the name is
    never resolved, only compared)."""
    return f"{site}{SITE_IDENTITY_SUFFIX}"


@dataclass(frozen=True)
class CertIdentity:
    """Who a certificate says it is: its CN, its role (``OU``), the site names its
    identity subjectAltNames carry, and whether the deployment CA signed it."""

    common_name: str
    role: str
    sites: tuple[str, ...]
    subject: str

    def describe(self) -> str:
        """``a site certificate for 'b' (CN=b,OU=site,O=geodml)`` and the like."""
        if self.sites:
            names = ", ".join(repr(n) for n in self.sites)
            return f"a site certificate for {names} ({self.subject})"
        if self.role == "site":
            return (f"a site certificate without an identity name ({self.subject}; "
                    "issued by an older geodml: reissue it with `geodml certs issue`)")
        if self.role == "coordinator":
            return f"a coordinator certificate ({self.subject})"
        return f"a certificate of no geodml role ({self.subject})"


def certificate_identity(cert: x509.Certificate) -> CertIdentity:
    """Read a certificate's geodml identity (see :class:`CertIdentity`)."""
    def first(oid) -> str:
        attrs = cert.subject.get_attributes_for_oid(oid)
        return str(attrs[0].value) if attrs else ""

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    n = len(SITE_IDENTITY_SUFFIX)
    sites = tuple(d[:-n] for d in dns if d.lower().endswith(SITE_IDENTITY_SUFFIX) and len(d) > n)
    return CertIdentity(first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATIONAL_UNIT_NAME),
                        sites, _describe(cert))
_BACKDATE = dt.timedelta(minutes=5)  # tolerate clocks slightly behind the issuer's


@dataclass(frozen=True)
class CaPaths:
    """Where :func:`init_ca` wrote the CA certificate and its private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class IssuedPaths:
    """Where :func:`issue` wrote a certificate and its key, and the CA that signed it."""

    cert: Path
    key: Path
    ca: Path

    def tls_files(self) -> TlsFiles:
        """The three paths as a :class:`TlsFiles`, ready for credentials."""
        return TlsFiles(ca=self.ca, cert=self.cert, key=self.key)


@dataclass(frozen=True)
class TlsFiles:
    """The CA certificate, own certificate and own private key of one process.

    ``field`` prefixes error messages (``tls.cert: ...``) so that they name the
    configuration entry the path came from.
    """

    ca: Path | str
    cert: Path | str
    key: Path | str
    field: str = "tls"

    def load(self, role: Role | None = None, site: str | None = None
             ) -> tuple[bytes, bytes, bytes]:
        """Read and check the three files; return ``(ca_pem, cert_pem, key_pem)``.

        Checks that each file exists and holds what it should, that the key belongs to
        the certificate, that the certificate (with any intermediates after it in the
        same file) chains to a certificate of the CA file, and that no certificate is
        expired or not yet valid. With ``role``, also that the certificate may act as
        that role (serverAuth for a site, clientAuth for a coordinator). With ``site``,
        also that it is site ``site``'s certificate (its identity name,
        :func:`site_identity_name`). Every failure is a :class:`ConfigError` naming the
        field and the file.
        """
        now = dt.datetime.now(dt.UTC)
        ca_label, cert_label, key_label = (f"{self.field}.{k}" for k in ("ca", "cert", "key"))
        ca_bytes = _read(ca_label, self.ca)
        cert_bytes = _read(cert_label, self.cert)
        key_bytes = _read(key_label, self.key)
        cas = _parse_certs(ca_label, self.ca, ca_bytes)
        chain = _parse_certs(cert_label, self.cert, cert_bytes)
        key = _parse_key(key_label, self.key, key_bytes)

        for ca in cas:
            _check_is_ca(ca_label, self.ca, ca)
            _check_dates(ca_label, self.ca, ca, now)
        for cert in chain:
            _check_dates(cert_label, self.cert, cert, now)
        if _spki(key.public_key()) != _spki(chain[0].public_key()):
            raise ConfigError(
                f"{key_label}: {self.key} does not belong to the certificate "
                f"{self.cert} ({cert_label}): their public keys differ"
            )
        _check_chain(cert_label, self.cert, chain, ca_label, self.ca, cas)
        if role is not None:
            _check_role(cert_label, self.cert, chain[0], role)
        if site is not None:
            ident = certificate_identity(chain[0])
            if site not in ident.sites:
                raise ConfigError(
                    f"{cert_label}: {self.cert} is {ident.describe()}, not site {site!r}'s "
                    f"(it lacks the identity name {site_identity_name(site)}); issue one with "
                    f"`geodml certs issue CA_DIR {site} --role site`"
                )
        return ca_bytes, cert_bytes, key_bytes


def init_ca(
    out_dir: Path | str,
    name: str = "geodml CA",
    days: int = 3650,
    *,
    overwrite: bool = False,
) -> CaPaths:
    """Create a deployment CA: ``out_dir/ca.pem`` and ``out_dir/ca.key`` (mode 0600).

    The key is ECDSA P-256; the certificate is self-signed with basicConstraints
    CA:true (path length 0: it signs only end-entity certificates) and keyUsage
    keyCertSign, cRLSign. Existing files are refused unless ``overwrite``.
    """
    if not name.strip():
        raise ConfigError("CA name: must not be empty")
    _check_days(days)
    out = Path(out_dir)
    paths = CaPaths(cert=out / CA_CERT_FILE, key=out / CA_KEY_FILE)
    _refuse_existing((paths.cert, paths.key), overwrite)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "geodml"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    now = dt.datetime.now(dt.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            _key_usage(key_cert_sign=True, crl_sign=True, digital_signature=False),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    _make_dir(out)
    _write(paths.key, _key_pem(key), 0o600, overwrite)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644, overwrite)
    return paths


def issue(
    ca_dir: Path | str,
    out_dir: Path | str,
    name: str,
    role: Role,
    hosts: Sequence[str] = DEFAULT_HOSTS,
    days: int = 825,
    *,
    overwrite: bool = False,
) -> IssuedPaths:
    """Issue a certificate for the site or coordinator ``name``, signed by the CA.

    Reads ``ca_dir/ca.pem`` and ``ca_dir/ca.key``; writes ``out_dir/<name>.pem`` and
    ``out_dir/<name>.key`` (mode 0600). The subject is ``CN=name, OU=role,
    O=geodml``; the subjectAltName lists each of ``hosts`` as an IP address when it
    parses as one, else as a DNS name, and for a site also its identity name
    :func:`site_identity_name` ``(name)``; hosts in the reserved ``geodml.invalid``
    domain are refused, so that only this function names a site. The extended key
    usage is serverAuth for a site and clientAuth for a coordinator. The validity
    ends after ``days`` days or when the CA expires, whichever comes first. Existing
    files are refused unless ``overwrite``.
    """
    if role not in ROLES:
        raise ConfigError(f"role: {role!r} is not one of {', '.join(ROLES)}")
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"name: {name!r} is not a valid certificate name (letters, digits, '.', '_' "
            "and '-', starting with a letter or digit, at most 64 characters)"
        )
    _check_days(days)
    sans = _subject_alt_names(hosts)
    if role == "site" and sans:
        sans.append(x509.DNSName(site_identity_name(name)))
    if role == "site" and not sans:
        raise ConfigError(
            f"hosts: a site certificate needs at least one host name or address "
            f"(coordinators verify it against the address they dial), none given for {name}"
        )
    ca_dir, out = Path(ca_dir), Path(out_dir)
    if out.resolve() == ca_dir.resolve() and name in ("ca", CA_CERT_FILE, CA_KEY_FILE):
        raise ConfigError(
            f"name: {name!r} would collide with the CA files in {ca_dir}; "
            "issue it into another directory (--out)"
        )
    paths = IssuedPaths(cert=out / f"{name}.pem", key=out / f"{name}.key",
                        ca=ca_dir / CA_CERT_FILE)
    _refuse_existing((paths.cert, paths.key), overwrite)

    ca_cert, ca_key = _load_ca(ca_dir)
    now = dt.datetime.now(dt.UTC)
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "site" else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "geodml"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
            ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, _hash_for(ca_key))
    _make_dir(out)
    _write(paths.key, _key_pem(key), 0o600, overwrite)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644, overwrite)
    return paths


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


def secure_channel(
    address: str,
    files: TlsFiles,
    *,
    site: str | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A mutual-TLS channel to the site at ``address`` (``host:port``).

    With ``site``, the handshake succeeds only if the server presents site ``site``'s
    certificate (:func:`identity_options`), whatever the address; without, gRPC checks
    the dialed host against the certificate's subjectAltName.
    """
    opts = list(options)
    if site is not None:
        opts += identity_options(site)
    return grpc.secure_channel(address, channel_credentials(files), options=opts)


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


# --- helpers -----------------------------------------------------------------------


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


def _check_days(days: int) -> None:
    if days < 1:
        raise ConfigError(f"days: must be at least 1, got {days}")


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )


def _subject_alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in hosts:
        host = raw.strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host.lower() in seen:
            continue
        seen.add(host.lower())
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        reserved = host.lower().rstrip(".")
        if reserved == IDENTITY_DOMAIN or reserved.endswith("." + IDENTITY_DOMAIN):
            raise ConfigError(
                f"hosts: {raw!r} is in the reserved domain {IDENTITY_DOMAIN}, which names "
                "sites' identities; geodml adds a site's identity name itself"
            )
        if not _DNS_RE.fullmatch(host) or len(host) > 253:
            raise ConfigError(
                f"hosts: {raw!r} is neither an IP address nor a DNS name "
                "(internationalized names must be given in their xn-- form)"
            )
        names.append(x509.DNSName(host))
    return names


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    if overwrite:
        return
    for p in paths:
        if p.exists():
            raise ConfigError(f"{p}: already exists; refusing to overwrite it (use --overwrite)")


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{path}: cannot create the directory: {e.strerror}") from None


def _write(path: Path, data: bytes, mode: int, overwrite: bool) -> None:
    """Write a new file with ``mode`` from the start (a key is never world-readable)."""
    target = path.with_name(f".{path.name}.tmp{os.getpid()}") if overwrite else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(
            f"{target}: already exists; refusing to overwrite it (use --overwrite)"
        ) from None
    except OSError as e:
        raise ConfigError(f"{target}: cannot create: {e.strerror}") from None
    try:
        os.fchmod(fd, mode)  # the umask may have removed bits we want; never adds any
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if overwrite:
            os.replace(target, path)
    except OSError as e:
        target.unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {e.strerror}") from None


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    cert_path, key_path = ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE
    certs = _parse_certs("CA certificate", cert_path, _read("CA certificate", cert_path))
    ca_cert = certs[0]
    ca_key = _parse_key("CA key", key_path, _read("CA key", key_path))
    _check_is_ca("CA certificate", cert_path, ca_cert)
    if not isinstance(ca_key, _ISSUER_KEYS):
        raise ConfigError(f"CA key: {key_path} is a {type(ca_key).__name__}, which cannot sign")
    _check_dates("CA certificate", cert_path, ca_cert, dt.datetime.now(dt.UTC))
    if _spki(ca_key.public_key()) != _spki(ca_cert.public_key()):
        raise ConfigError(
            f"CA key: {key_path} does not belong to the CA certificate {cert_path}: "
            "their public keys differ"
        )
    return ca_cert, ca_key


def _read(label: str, path: Path | str) -> bytes:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{label}: {p} does not exist")
    if p.is_dir():
        raise ConfigError(f"{label}: {p} is a directory, not a PEM file")
    try:
        return p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{label}: {p} cannot be read: {e.strerror}") from None


def _parse_certs(label: str, path: Path | str, data: bytes) -> list[x509.Certificate]:
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigError(f"{label}: {path} is not a PEM certificate (no BEGIN CERTIFICATE)")
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as e:
        raise ConfigError(f"{label}: {path} is not a valid PEM certificate ({e})") from None


def _parse_key(label: str, path: Path | str, data: bytes) -> PrivateKeyTypes:
    if b"PRIVATE KEY-----" not in data:
        raise ConfigError(f"{label}: {path} is not a PEM private key (no BEGIN PRIVATE KEY)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(
            f"{label}: {path} is encrypted; geodml needs an unencrypted key "
            "protected by file mode 0600"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise ConfigError(f"{label}: {path} is not a valid PEM private key ({e})") from None


def _spki(public_key: PublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _check_dates(label: str, path: Path | str, cert: x509.Certificate, now: dt.datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise ConfigError(
            f"{label}: {path}: certificate {_describe(cert)} expired on "
            f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if now < cert.not_valid_before_utc:
        raise ConfigError(
            f"{label}: {path}: certificate {_describe(cert)} is not valid before "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock)"
        )


def _check_is_ca(label: str, path: Path | str, cert: x509.Certificate) -> None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        bc = None
    if bc is None or not bc.ca:
        raise ConfigError(
            f"{label}: {path}: {_describe(cert)} is not a CA certificate "
            "(basicConstraints CA:true is missing); give the ca.pem of `geodml certs init`"
        )


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_chain(
    cert_label: str,
    cert_path: Path | str,
    chain: list[x509.Certificate],
    ca_label: str,
    ca_path: Path | str,
    cas: list[x509.Certificate],
) -> None:
    for child, parent in itertools.pairwise(chain):
        if not _issued_by(child, parent):
            raise ConfigError(
                f"{cert_label}: {cert_path}: {_describe(child)} is not signed by the next "
                f"certificate in the file, {_describe(parent)}"
            )
    top = chain[-1]
    if not any(_issued_by(top, ca) for ca in cas):
        raise ConfigError(
            f"{cert_label}: {cert_path} was not signed by the CA in {ca_label} ({ca_path}): "
            f"it was issued by {top.issuer.rfc4514_string()}, the CA is "
            f"{', '.join(_describe(c) for c in cas)}"
        )


def _check_role(label: str, path: Path | str, cert: x509.Certificate, role: Role) -> None:
    want = ExtendedKeyUsageOID.SERVER_AUTH if role == "site" else ExtendedKeyUsageOID.CLIENT_AUTH
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return  # no restriction: usable for any purpose
    if want not in usages:
        purpose = "serverAuth" if role == "site" else "clientAuth"
        raise ConfigError(
            f"{label}: {path}: {_describe(cert)} cannot act as a {role} (its extended key "
            f"usage lacks {purpose}); issue one with `geodml certs issue --role {role}`"
        )
