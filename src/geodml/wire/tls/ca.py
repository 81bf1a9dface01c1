"""The deployment's certificate authority: ``geodml certs init`` and ``issue``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from geodml.errors import ConfigError
from geodml.wire.tls.files import (
    TlsFiles,
    _check_dates,
    _check_is_ca,
    _parse_certs,
    _parse_key,
    _read,
    _spki,
)
from geodml.wire.tls.identity import (
    _DNS_RE,
    _ISSUER_KEYS,
    _NAME_RE,
    CA_CERT_FILE,
    CA_KEY_FILE,
    DEFAULT_HOSTS,
    IDENTITY_DOMAIN,
    ROLES,
    Role,
    site_identity_name,
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



def _hash_for(key: CertificateIssuerPrivateKeyTypes) -> hashes.HashAlgorithm | None:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        return None
    return hashes.SHA256()
