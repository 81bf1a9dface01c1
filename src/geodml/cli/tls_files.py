"""The coordinator's TLS files from ``--tls-dir`` and ``--tls-ca/--tls-cert/--tls-key``.

``--tls-dir D`` works with what `geodml certs` wrote into ``D``:

* the CA certificate is ``D/ca.pem``;
* the coordinator's certificate and key are ``D/coordinator.pem`` and
  ``D/coordinator.key`` when they exist, else the one coordinator certificate
  ``D/NAME.pem`` with its ``D/NAME.key`` (``geodml certs issue ca coordinator-1
  --role coordinator --out coord`` writes ``coord/coordinator-1.pem``). Several
  coordinator certificates in ``D`` are an error that lists them.

An explicit ``--tls-ca``, ``--tls-cert`` or ``--tls-key`` overrides what the folder
gives (``--tls-dir coord --tls-ca ca/ca.pem``). The files themselves are checked
when the credentials are built (:meth:`geodml.wire.tls.TlsFiles.load`).
"""

from __future__ import annotations

from pathlib import Path

import click

from geodml.cli.config import TlsOptions

COORDINATOR = "coordinator"


def _is_coordinator(pem: Path) -> bool:
    """The file holds a certificate `geodml certs issue --role coordinator` wrote
    (organizational unit ``coordinator``)."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        cert = x509.load_pem_x509_certificate(pem.read_bytes())
    except (ValueError, OSError):
        return False
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    return any(u.value == COORDINATOR for u in units)


def _coordinator_pair(folder: Path) -> tuple[Path, Path]:
    """``coordinator.pem/.key`` in ``folder``, else its one coordinator certificate."""
    cert, key = folder / f"{COORDINATOR}.pem", folder / f"{COORDINATOR}.key"
    if cert.is_file() and key.is_file():
        return cert, key
    found = sorted(p for p in folder.glob("*.pem")
                   if p.name != "ca.pem" and p.with_suffix(".key").is_file()
                   and _is_coordinator(p))
    if len(found) == 1:
        return found[0], found[0].with_suffix(".key")
    if not found:
        raise click.BadParameter(
            f"{folder} holds no coordinator certificate with its key (NAME.pem and NAME.key "
            "from `geodml certs issue CA NAME --role coordinator`); give --tls-cert and "
            "--tls-key", param_hint="--tls-dir")
    raise click.BadParameter(
        f"{folder} holds {len(found)} coordinator certificates "
        f"({', '.join(p.name for p in found)}); pick one with --tls-cert and --tls-key",
        param_hint="--tls-dir")


def coordinator_files(options: TlsOptions):
    """The :class:`~geodml.wire.tls.TlsFiles` the options name (see the module
    docstring), or None when they name none."""
    if not options.given:
        return None
    ca, cert, key = options.ca, options.cert, options.key
    if options.tls_dir is not None:
        folder = Path(options.tls_dir)
        if ca is None:
            ca = folder / "ca.pem"
            if not ca.is_file():
                raise click.BadParameter(
                    f"{folder} has no ca.pem; copy the CA's ca.pem there or give --tls-ca",
                    param_hint="--tls-dir")
        if cert is None or key is None:
            found_cert, found_key = _coordinator_pair(folder)
            cert, key = cert or found_cert, key or found_key
    missing = [f"--tls-{n}" for n, v in (("ca", ca), ("cert", cert), ("key", key)) if v is None]
    if missing:
        raise click.UsageError(f"the coordinator's TLS files need {', '.join(missing)} "
                               "(or --tls-dir with them)")
    from geodml.wire.tls import TlsFiles

    return TlsFiles(ca, cert, key)
