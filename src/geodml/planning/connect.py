"""Connect a coordinator to the sites a deployment file lists.

Every site needs an ``address``. Channels use mutual TLS with the deployment's
``[tls]`` credentials; plaintext only when the deployment says ``insecure = true``,
and then only to loopback addresses (:func:`geodml.wire.tls.check_insecure_address`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from geodml.errors import ConfigError
from geodml.federation import AuditLog, CompressionConfig, Federation, SecureAggregation
from geodml.planning.deployment import Deployment
from geodml.wire.transport import GrpcTransport

if TYPE_CHECKING:
    from geodml.wire.tls import TlsFiles

#: opens a federation over the deployment's sites with these keyword arguments
FederationFactory = Callable[..., Federation]


def site_transports(deployment: Deployment, addresses: Mapping[str, str] | None = None,
                    timeout: float = 600.0, tls: TlsFiles | None = None,
                    insecure: bool | None = None) -> list[GrpcTransport]:
    """One gRPC transport per site; ``addresses`` overrides a site's address (a second
    server of the same data, e.g. one granted an export exception); ``tls`` and
    ``insecure`` override the deployment's ``[tls]`` and ``insecure``."""
    addresses = dict(addresses or {})
    unknown = set(addresses) - {s.name for s in deployment.sites}
    if unknown:
        raise ConfigError(f"no site {sorted(unknown)} in the deployment; sites are "
                          f"{', '.join(s.name for s in deployment.sites)}")
    insecure = deployment.insecure if insecure is None else insecure
    creds = None
    if not insecure:
        if tls is None and deployment.tls is None:
            raise ConfigError("deployment: [tls] (ca, cert, key of the coordinator) is needed "
                              "unless insecure = true")
        from geodml.wire.tls import TlsFiles, channel_credentials

        if tls is None:
            tls = TlsFiles(deployment.tls.ca, deployment.tls.cert, deployment.tls.key,
                           field="tls")
        creds = channel_credentials(tls)
    transports = []
    for i, site in enumerate(deployment.sites):
        address = addresses.get(site.name, site.address)
        if not address:
            raise ConfigError(f"deployment: sites.{i}.address: site {site.name!r} has no "
                              "address to dial")
        if insecure:
            from geodml.wire.tls import check_insecure_address

            check_insecure_address(address)
        # the channel checks the site's identity name, not the dialed host, so
        # `tls_server_name` is no longer needed (see docs/security.md)
        transports.append(GrpcTransport(site.name, address, creds, timeout=timeout))
    return transports


def federation_factory(deployment: Deployment, addresses: Mapping[str, str] | None = None,
                       serial: bool = False) -> FederationFactory:
    """``open(compression=None, sample_fraction=1.0, audit=None, secure=None) ->
    Federation``: a fresh federation (own channels, own meter) over the deployment's
    sites (``secure``: secure aggregation on); ``serial``: it calls one site at a time
    (sites sharing one machine; see :class:`~geodml.federation.Federation`)."""

    def open_federation(compression: CompressionConfig | None = None,
                        sample_fraction: float = 1.0, audit: str | None = None,
                        secure: SecureAggregation | None = None) -> Federation:
        return Federation(site_transports(deployment, addresses), deployment.home,
                          audit=AuditLog(audit) if audit else None, compression=compression,
                          sample_fraction=sample_fraction, secure=secure, serial=serial)

    return open_federation
