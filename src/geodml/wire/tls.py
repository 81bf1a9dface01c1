"""Mutual TLS between coordinators and sites: certificates, credentials, identities.

Trust model
-----------
One deployment has one certificate authority (CA). Every site and every coordinator
gets its own key pair and a certificate signed by that CA:

* a **site** certificate (``OU=site``) has the extended key usage serverAuth and a
  subjectAltName listing the DNS names and IP addresses coordinators dial it by;
* a **coordinator** certificate (``OU=coordinator``) has the extended key usage
  clientAuth; its subject common name (CN) is the coordinator's identity.

A site server demands a client certificate (``require_client_auth=True``) and accepts
only certificates signed by the deployment CA; a coordinator accepts only a site
certificate signed by the same CA whose subjectAltName matches the address it dialed.
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
gRPC checks the site certificate's subjectAltName against the host part of the address
the coordinator dials. When a site is reached by a name its certificate does not list
(through a tunnel or a load balancer, say), pass ``server_name`` to
:func:`secure_channel`: it sets gRPC's ``grpc.ssl_target_name_override`` channel option,
and the name checked becomes ``server_name`` instead of the dialed host.
"""

from __future__ import annotations

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
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
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
_ISSUER_KEYS = (
    ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, dsa.DSAPrivateKey,
    ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey,
)
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

    def load(self, role: Role | None = None) -> tuple[bytes, bytes, bytes]:
        """Read and check the three files; return ``(ca_pem, cert_pem, key_pem)``.

        Checks that each file exists and holds what it should, that the key belongs to
        the certificate, that the certificate (with any intermediates after it in the
        same file) chains to a certificate of the CA file, and that no certificate is
        expired or not yet valid. With ``role``, also that the certificate may act as
        that role (serverAuth for a site, clientAuth for a coordinator). Every failure
        is a :class:`ConfigError` naming the field and the file.
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
    parses as one, else as a DNS name; the extended key usage is serverAuth for a
    site and clientAuth for a coordinator. The validity ends after ``days`` days or
    when the CA expires, whichever comes first. Existing files are refused unless
    ``overwrite``.
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


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Credentials of a site server: its own certificate, and a client certificate
    signed by the CA required from every caller."""
    ca, cert, key = files.load(role="site")
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(files: TlsFiles) -> grpc.ChannelCredentials:
    """Credentials of a coordinator's channel: trust only the CA, present own cert."""
    ca, cert, key = files.load(role="coordinator")
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def secure_channel(
    address: str,
    files: TlsFiles,
    *,
    server_name: str | None = None,
    options: Sequence[tuple[str, object]] = (),
) -> grpc.Channel:
    """A mutual-TLS channel to the site at ``address`` (``host:port``).

    ``server_name`` replaces the dialed host as the name checked against the site
    certificate's subjectAltName (gRPC's ``grpc.ssl_target_name_override``).
    """
    opts = list(options)
    if server_name is not None:
        opts.append(("grpc.ssl_target_name_override", server_name))
    return grpc.secure_channel(address, channel_credentials(files), options=opts)


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
