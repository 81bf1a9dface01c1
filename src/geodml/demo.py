"""``geodml demo``: four data centers on this machine, trained both ways.

1. Generates regional CTR data for four DCs (us-east is home; eu-west, ap-south,
   sa-east; a million training rows each by default), each with a held-out test split.
2. Creates a CA and certificates, and starts one site server per DC as its own
   process on loopback, with mutual TLS. The EU site's policy forbids raw export.
3. Writes ``deployment.toml``: the four sites at their loopback addresses, placed in
   the AWS regions the names stand for, so the WAN model prices every link from the
   region table (:mod:`geodml.planning.regions`).
4. Runs ``geodml compare`` on it (:mod:`geodml.planning.compare`): the planner's predictions;
   the centralized baseline, refused by eu-west's policy, then run again through a
   second eu-west server granted an export exception, to show what copying costs;
   and geo-distributed training (SQM L-BFGS with float16 vectors both ways: one WAN
   round per iteration, so over these links it is the faster geo plan; FADL-subspace,
   ``--method fadl-subspace``, moves fewer bytes but its local solves cost compute).
5. The report directory holds ``report.md``, ``report.json``, plots and audit logs.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from geodml.algorithms.defaults import DEFAULT_GTOL
from geodml.compression import spec_text
from geodml.data.dataset import Dataset
from geodml.data.partition import read_manifest, site_dirs
from geodml.data.store import load_dataset
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import GeodmlError
from geodml.planning.compare import Comparison, run_compare
from geodml.planning.connect import federation_factory
from geodml.planning.deployment import load_deployment
from geodml.planning.planner import GeoVariant, Workload
from geodml.site.config import DataConfig, SiteConfig, TlsConfig
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.wire.tls import TlsFiles, init_ca, issue

HOME = "us-east"
REGIONS = ("us-east", "eu-west", "ap-south", "sa-east")
FORBIDS_EXPORT = "eu-west"
GTOL = DEFAULT_GTOL  # both plans stop at ||grad|| <= 1e-3 ||grad_0||: test AUC has settled


def demo_variant(method: str = "sqm-lbfgs", compress: str | None = "float16") -> GeoVariant:
    """The demo's geo plan: ``method`` with ``compress`` vectors both ways."""
    return GeoVariant(method, spec_text(compress), spec_text(compress), label=compress or "")


def _data(out: Path, rows: int, test_rows: int, hash_bits: int, seed: int) -> Path:
    """Generate the regional data, or reuse it when it was made with these settings."""
    config = RegionalCTRConfig(regions=REGIONS, rows_per_region=rows,
                               test_rows_per_region=test_rows, hash_bits=hash_bits, seed=seed)
    data_dir = out / "data"
    with contextlib.suppress(GeodmlError, OSError):  # no usable manifest: generate afresh
        wanted = json.loads(json.dumps(config.to_dict()))
        if read_manifest(data_dir).get("parameters") == wanted:
            return data_dir
    write_regional(config, data_dir, overwrite=True)
    return data_dir


def _certs(out: Path) -> Path:
    certs = out / "certs"
    init_ca(certs, overwrite=True)
    for region in REGIONS:
        issue(certs, certs, region, "site", overwrite=True)
    issue(certs, certs, "coordinator", "coordinator", overwrite=True)
    return certs


def _site_config(region: str, data: Path, certs: Path, allow_export: bool) -> SiteConfig:
    return SiteConfig(
        name=region, region=region, listen="127.0.0.1:0",
        data=DataConfig(path=data),
        policy=Policy(allow_raw_export=allow_export, allowed_clients=["coordinator"]),
        tls=TlsConfig(ca=certs / "ca.pem", cert=certs / f"{region}.pem",
                      key=certs / f"{region}.key"),
    )


def write_deployment(path: Path, addresses: dict[str, str], certs: Path) -> Path:
    """The demo's deployment file: every site at its loopback address, in its region."""
    lines = [f"home = {json.dumps(HOME)}", "",
             "[tls]", f"ca = {json.dumps(str(certs / 'ca.pem'))}",
             f"cert = {json.dumps(str(certs / 'coordinator.pem'))}",
             f"key = {json.dumps(str(certs / 'coordinator.key'))}"]
    for region in REGIONS:
        lines += ["", "[[sites]]", f"name = {json.dumps(region)}",
                  f"region = {json.dumps(region)}  # an AWS region's alias "
                  "(geodml.planning.regions)",
                  f"address = {json.dumps(addresses[region])}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_demo(out: Path, rows: int = 1_000_000, test_rows: int = 100_000, hash_bits: int = 12,
             seed: int = 0, method: str = "sqm-lbfgs", compress: str | None = "float16",
             progress=print, on_row_factory=None) -> Comparison:
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    progress(f"generating regional CTR data for {len(REGIONS)} DCs ({rows:,} rows each, "
             f"2^{hash_bits} hashed features)")
    data_dir = _data(out, rows, test_rows, hash_bits, seed)
    train_dirs, test_dirs = site_dirs(data_dir), site_dirs(data_dir, "test")
    # The demo holds out test rows in every DC; the coordinator scores the pooled
    # test split only to report quality (a deployment evaluates at the sites).
    test = Dataset.concat([load_dataset(test_dirs[r]) for r in REGIONS])
    progress("creating a CA and certificates; starting 4 site servers with mutual TLS "
             f"({FORBIDS_EXPORT}'s policy forbids raw export)")
    certs = _certs(out)
    configs = [_site_config(r, train_dirs[r], certs, r != FORBIDS_EXPORT) for r in REGIONS]
    exception = [_site_config(FORBIDS_EXPORT, train_dirs[FORBIDS_EXPORT], certs, True)]
    client = TlsFiles(certs / "ca.pem", certs / "coordinator.pem", certs / "coordinator.key")
    with LocalCluster(configs, out / "sites", client_tls=client) as cluster, \
            LocalCluster(exception, out / "sites-exception", client_tls=client) as eu_exception:
        path = write_deployment(out / "deployment.toml",
                                {r: cluster.sites[r].address for r in REGIONS}, certs)
        deployment = load_deployment(path)
        progress(f"wrote {path}; running geodml compare on it")
        report = out / "report"
        with contextlib.suppress(FileNotFoundError):
            (report / "calibration.json").unlink()  # plan afresh: the demo shows calibration
        # the four sites share this machine: one call at a time, so that each call's
        # time is its site's compute alone, as in DCs with machines of their own
        return run_compare(
            federation_factory(deployment, serial=True), deployment,
            [demo_variant(method, compress)], report, Workload(gtol=GTOL), test=test,
            exception_federation=federation_factory(
                deployment, {FORBIDS_EXPORT: eu_exception.sites[FORBIDS_EXPORT].address},
                serial=True),
            exception_sites=[FORBIDS_EXPORT], progress=progress,
            on_row_factory=on_row_factory)
