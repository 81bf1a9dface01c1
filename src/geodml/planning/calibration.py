"""Calibration: a plan's rounds learned from a run on a sample of every site's rows
(:func:`calibrate`), recorded runs (:class:`CalibrationStore`), and this machine's
value+gradient throughput (:func:`home_throughput`); see :mod:`geodml.planning.planner`."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

from geodml.errors import ConfigError
from geodml.federation import SiteInfo
from geodml.federation.meter import RoundTraffic
from geodml.planning.deployment import Deployment
from geodml.planning.plans import GeoVariant, Workload
from geodml.planning.wan import model_run

DEFAULT_CALIBRATION_ROWS = 50_000
LAMBDA_EXPONENT = 0.75  # calibration on a share f of the rows uses lambda / f**0.75


class CalibrationStore:
    """Recorded rounds and bytes of real runs, keyed by data and job (a JSON file)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    @staticmethod
    def key(sites: Sequence[SiteInfo], workload: Workload, lam: float,
            variant: GeoVariant) -> str:
        blob = json.dumps({"data": sorted((s.name, s.data_fingerprint) for s in sites),
                           "loss": workload.loss, "lam": lam, "gtol": workload.gtol,
                           **variant.key()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def _load(self) -> dict:
        if self.path is None or not self.path.is_file():
            return {}
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{self.path}: unreadable calibration store ({e}); delete it "
                              "to start afresh") from None

    def get(self, key: str) -> dict | None:
        return self._load().get(key)

    def put(self, key: str, record: dict) -> None:
        if self.path is None:
            return
        data = self._load()
        data[key] = {**record, "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.path)


def calibration_fraction(sites: Sequence[SiteInfo], rows: int) -> float:
    """The share of rows a calibration samples: ``rows`` from the median site, at most all."""
    counts = sorted(s.rows for s in sites)
    median = counts[len(counts) // 2]
    return min(1.0, rows / max(1, median))


def calibrate(open_federation, variant: GeoVariant, workload: Workload, lam: float,
              fraction: float, deployment: Deployment) -> dict:
    """Run ``variant`` on a ``fraction`` sample of every site's rows; return its metered
    rounds, bytes per link and modeled seconds (compute scaled by ``1 / fraction``), and
    the calibration's own modeled seconds (``calibration_seconds``: what planning cost)."""
    from geodml.algorithms.record import RunRecorder
    from geodml.algorithms.registry import TrainSpec, train

    with open_federation(compression=variant.compression(), sample_fraction=fraction,
                         secure=variant.secure_aggregation()) as fed:
        spec = TrainSpec(loss=workload.loss, lam=lam / fraction**LAMBDA_EXPONENT,
                         gtol=workload.gtol, params=dict(variant.params))
        result = train(fed, variant.method, spec, RunRecorder(fed))
        fed.close_sessions()
        links = {name: v["bytes"] for name, v in fed.meter.snapshot()["links"].items()
                 if v["wan"]}
        rounds = fed.meter.rounds
    # a call's time is a fixed overhead o (the quickest call seen) plus compute over the
    # sample's rows, which the full run does on 1/f times as many
    calls = [r.seconds for r in rounds]
    overhead = min((c for c in calls if c > 0), default=0.0)
    compute = [overhead + max(0.0, c - overhead) / fraction for c in calls]
    modeled = model_run(rounds, deployment, compute)
    own = model_run(rounds, deployment)  # the calibration itself: the cost of planning
    last = result.rows[-1]
    return {"rounds": last.rounds, "vector_rounds": last.vector_rounds,
            "iterations": last.iteration, "evaluations": count_rounds(rounds, "Evaluate"),
            "links": links, "wan_bytes": sum(links.values()), "seconds": modeled.seconds,
            "converged": result.converged,
            "fraction": fraction, "calibration_seconds": own.seconds}


def home_throughput(nnz_per_row: float, features: int, rows: int = 100_000,
                    seed: int = 0) -> float:
    """Nonzeros per second of one value+gradient evaluation on this machine, timed on a
    random CSR matrix shaped like the data (best of three)."""
    import numpy as np
    import scipy.sparse as sp

    from geodml.models import get_loss
    from geodml.models.site_sums import SiteSums

    rng = np.random.default_rng(seed)
    per_row = max(1, round(nnz_per_row))
    indices = rng.integers(0, max(1, features), size=rows * per_row).astype(np.int32)
    X = sp.csr_matrix((np.ones(len(indices), np.float32), indices,
                       np.arange(0, len(indices) + 1, per_row)), shape=(rows, max(1, features)))
    sums = SiteSums(X, (rng.random(rows) < 0.2).astype(np.float64), get_loss("logistic"))
    w = rng.normal(0, 0.01, max(1, features))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        sums.evaluate(w)
        best = min(best, time.perf_counter() - t0)
    return X.nnz / max(best, 1e-9)


def count_rounds(rounds: Sequence[RoundTraffic], call: str) -> int:
    """Numbered rounds of ``call`` (Evaluate: one value+gradient over every site)."""
    return sum(1 for r in rounds if r.call == call and r.round is not None)
