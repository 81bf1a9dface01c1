"""`geodml train`'s federation: in-process sites of a sites directory, remote sites
named by ``--site``, or the sites a deployment file lists (with its ``[tls]``)."""

from __future__ import annotations

from pathlib import Path

import click

from geodml.cli.config import SiteSource, TrainConfig
from geodml.cli.tls_files import coordinator_files


def load_test(path: str | None):
    """A test dataset: a dataset directory, or a sites directory's pooled test splits."""
    if path is None:
        return None
    from geodml.data.dataset import Dataset
    from geodml.data.partition import MANIFEST_NAME, site_dirs
    from geodml.data.store import load_dataset

    if (Path(path) / MANIFEST_NAME).is_file():
        return Dataset.concat([load_dataset(p) for p in site_dirs(path, "test").values()])
    return load_dataset(path)


def load_deployment(sites: SiteSource):
    """The deployment file's topology (None without ``--deployment``); its home must
    agree with ``--home``."""
    if sites.deployment is None:
        return None
    from geodml.planning.deployment import load_deployment as load

    topology = load(sites.deployment)
    if sites.home and sites.home != topology.home:
        raise click.BadParameter(f"{sites.deployment} says home is {topology.home}",
                                 param_hint="--home")
    return topology


def _remote_transports(sites: SiteSource, topology) -> list:
    """gRPC transports to ``--site`` addresses or the deployment's sites, with the
    TLS files of the options, else the deployment's ``[tls]``."""
    from geodml.wire.tls import channel_credentials, check_insecure_address
    from geodml.wire.transport import GrpcTransport

    insecure = sites.tls.insecure or (topology is not None and topology.insecure)
    files = coordinator_files(sites.tls)
    if sites.from_deployment:
        from geodml.planning.connect import site_transports

        return site_transports(topology, tls=files, insecure=insecure)
    creds = None
    if not insecure:
        if files is None and topology is not None and topology.tls is not None:
            from geodml.wire.tls import TlsFiles

            files = TlsFiles(topology.tls.ca, topology.tls.cert, topology.tls.key)
        if files is None:
            raise click.UsageError("remote sites need --tls-dir (or --tls-ca, --tls-cert, "
                                   "--tls-key; or --insecure on loopback)")
        creds = channel_credentials(files)
    transports = []
    for name, address in sites.remote:
        if insecure:
            check_insecure_address(address)
        transports.append(GrpcTransport(name, address, creds))
    return transports


def _local_transports(sites: SiteSource) -> list:
    """In-process sites of a sites directory, with ``--allow-export`` and
    ``--dp-epsilon/--dp-delta`` as their policies."""
    from geodml.data.partition import site_dirs
    from geodml.data.store import load_dataset
    from geodml.site.inprocess import InProcessTransport
    from geodml.site.policy import Policy
    from geodml.site.service import SiteService

    dirs = site_dirs(sites.data_dir)
    unknown = set(sites.allow_export) - set(dirs) - {"all"}
    if unknown:
        raise click.BadParameter(f"no site {sorted(unknown)} in {sites.data_dir}",
                                 param_hint="--allow-export")
    eps, delta = sites.dp_budget or (None, None)
    return [InProcessTransport(SiteService(
        name, name, load_dataset(path),
        Policy(allow_raw_export="all" in sites.allow_export or name in sites.allow_export,
               dp_epsilon=eps, dp_delta=delta)))
        for name, path in dirs.items()]


def open_federation(config: TrainConfig, topology, audit: str | None, journal=None):
    """The run's :class:`~geodml.federation.Federation` (``topology``: the deployment,
    whose home is the coordinator's DC; ``audit``: the audit log's path)."""
    from geodml.federation import AuditLog, Federation, SecureAggregation
    from geodml.federation.reliability import Reliability

    sites = config.sites
    if sites.data_dir is not None:
        transports = _local_transports(sites)
    else:
        transports = _remote_transports(sites, topology)
    home = topology.home if topology is not None else sites.home or transports[0].site
    return Federation(
        transports, home, audit=AuditLog(audit) if audit else None,
        compression=config.compression.config(),
        reliability=Reliability(site_deadline=config.site_deadline,
                                drop_lost_sites=config.drop_lost_sites),
        journal=journal,
        secure=SecureAggregation(config.secure_fraction_bits)
        if config.secure_aggregation else None,
        nonce_seed=bytes.fromhex(config.nonce_seed) if config.nonce_seed else None,
        validation=config.stop.validation_job)
