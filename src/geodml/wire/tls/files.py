"""One process's three TLS files (:class:`TlsFiles`), read and checked with errors
that name the configuration field and the file.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import (
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from geodml.errors import ConfigError
from geodml.wire.tls.identity import Role, _describe, certificate_identity, site_identity_name


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
