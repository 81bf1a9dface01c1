"""``geodml demo``: four data centers on this machine, trained both ways.

1. Generates regional CTR data for four DCs (us-east is home; eu-west, ap-south,
   sa-east), each with a held-out test split.
2. Creates a CA and certificates, and starts one site server per DC as its own
   process on loopback, with mutual TLS. The EU site's policy forbids raw export.
3. Trains geo-distributed (SQM L-BFGS by default; --method picks another): only
   aggregates cross the WAN.
4. Runs the centralized baseline for real: it is refused, naming eu-west; then it
   runs again with an export exception for eu-west, to show what copying costs.
5. Prints the comparison and writes ``report.json`` and the audit log.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from geodml import metrics
from geodml.algorithms.centralize import Refused, train_centralized_baseline
from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.registry import TrainSpec, train
from geodml.data.dataset import Dataset
from geodml.data.partition import read_manifest, site_dirs
from geodml.data.store import load_dataset
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import GeodmlError
from geodml.federation import AuditLog, Federation
from geodml.site.config import DataConfig, SiteConfig, TlsConfig
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.wire.tls import TlsFiles, init_ca, issue

HOME = "us-east"
REGIONS = ("us-east", "eu-west", "ap-south", "sa-east")
FORBIDS_EXPORT = "eu-west"


@dataclass
class DemoOutcome:
    geo: RunResult
    refused: Refused
    centralized: RunResult
    test_metrics: dict[str, dict[str, float]]
    out_dir: Path
    seconds: float


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


def _certs(out: Path) -> tuple[Path, TlsFiles]:
    certs = out / "certs"
    init_ca(certs, overwrite=True)
    for region in REGIONS:
        issue(certs, certs, region, "site", overwrite=True)
    coordinator = issue(certs, certs, "coordinator", "coordinator", overwrite=True)
    return certs, coordinator.tls_files()


def _site_config(region: str, data: Path, certs: Path, allow_export: bool) -> SiteConfig:
    return SiteConfig(
        name=region, region=region, listen="127.0.0.1:0",
        data=DataConfig(path=data),
        policy=Policy(allow_raw_export=allow_export, allowed_clients=["coordinator"]),
        tls=TlsConfig(ca=certs / "ca.pem", cert=certs / f"{region}.pem",
                      key=certs / f"{region}.key"),
    )


def _evaluator(test: Dataset):
    def evaluate(w: np.ndarray) -> dict[str, float]:
        z = np.asarray(test.X @ w)
        return {"log_loss": metrics.log_loss(test.y, z), "auc": metrics.roc_auc(test.y, z)}
    return evaluate


def run_demo(out: Path, rows: int = 20_000, test_rows: int = 4_000, hash_bits: int = 14,
             seed: int = 0, method: str = "sqm-lbfgs", progress=print) -> DemoOutcome:
    start = time.perf_counter()
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    progress(f"generating regional CTR data for {len(REGIONS)} DCs ({rows:,} rows each)")
    data_dir = _data(out, rows, test_rows, hash_bits, seed)
    train_dirs, test_dirs = site_dirs(data_dir), site_dirs(data_dir, "test")
    # The demo holds out test rows in every DC; the coordinator scores the pooled
    # test split only to report quality (a deployment evaluates at the sites).
    test = Dataset.concat([load_dataset(test_dirs[r]) for r in REGIONS])
    evaluate = _evaluator(test)
    progress("creating a CA and certificates; starting 4 site servers with mutual TLS")
    certs, coordinator_tls = _certs(out)
    configs = [_site_config(r, train_dirs[r], certs, r != FORBIDS_EXPORT) for r in REGIONS]
    (out / "audit.jsonl").unlink(missing_ok=True)
    with LocalCluster(configs, out / "sites", client_tls=coordinator_tls) as cluster:
        with Federation(cluster.transports(), HOME, audit=AuditLog(out / "audit.jsonl")) as fed:
            progress(f"training geo-distributed ({method}: only aggregates cross the WAN)")
            geo = train(fed, method, TrainSpec(gtol=1e-6),
                        RunRecorder(fed, path=out / "geo.jsonl"))
        with Federation(cluster.transports(), HOME) as fed:
            progress("centralized baseline: exporting every DC's rows to us-east")
            refused = train_centralized_baseline(fed)
        assert isinstance(refused, Refused), "eu-west's policy must refuse export"
        progress(f"  {refused}; running it again with an export exception for {FORBIDS_EXPORT}")
        exception = [_site_config(FORBIDS_EXPORT, train_dirs[FORBIDS_EXPORT], certs, True)]
        with LocalCluster(exception, out / "sites-exception",
                          client_tls=coordinator_tls) as eu_exception:
            transports = [eu_exception.transport(FORBIDS_EXPORT) if r == FORBIDS_EXPORT
                          else cluster.transport(r) for r in REGIONS]
            with Federation(transports, HOME) as fed:
                central = train_centralized_baseline(
                    fed, gtol=1e-6, recorder=RunRecorder(fed, path=out / "centralized.jsonl"))
    test_metrics = {"geo-distributed": evaluate(geo.w), "centralized": evaluate(central.w)}
    outcome = DemoOutcome(geo, refused, central, test_metrics, out,
                          time.perf_counter() - start)
    (out / "report.json").write_text(json.dumps(_report(outcome), indent=2))
    return outcome


def _report(o: DemoOutcome) -> dict:
    return {
        "home": HOME,
        "sites": list(REGIONS),
        "geo_distributed": {**o.geo.summary(), "test": o.test_metrics["geo-distributed"],
                            "links": o.geo.meter["links"]},
        "centralized_under_policy": {"permitted": False, "refused_by": o.refused.sites,
                                     "messages": o.refused.messages},
        "centralized_with_exception": {**o.centralized.summary(),
                                       "test": o.test_metrics["centralized"],
                                       "links": o.centralized.meter["links"]},
        "seconds": o.seconds,
    }
