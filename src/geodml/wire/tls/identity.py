"""Who a certificate says it is: roles, identity names, :class:`CertIdentity`.

See :mod:`geodml.wire.tls` for the trust model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

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


def _describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"
