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
from geodml.federation.meter import RoundTraffic, wan_links
from geodml.planning.deployment import Deployment
from geodml.planning.plans import GeoVariant, Workload
from geodml.planning.wan import model_run

DEFAULT_CALIBRATION_ROWS = 50_000
# a calibration on a share f of the rows uses lambda / f**LAMBDA_EXPONENT: with 1, lambda
# times the rows is the full problem's, so a sample is the same problem at a smaller
# size and the two-point fit (extrapolate.py) carries the growth with the rows. (0.75,
# the single-sample rule before, regularized small samples less, which in the identity
# metric made up for rounds that grew with the rows; with the diagonal metric it made a
# 0.5% sample converge in fewer rounds than a 2% one and the fit extrapolate a growth
# that is not there: 101 vector rounds predicted, 20 run at 1M rows per DC, 2^20.)
LAMBDA_EXPONENT = 1.0
CENTRAL_MAX_ITER = 2000  # the centralized baseline's own cap
# steps timed at the timer site, the median kept: one such call moved by 20% on this VM
STEP_REPEATS = 3


class CalibrationStore:
    """Recorded rounds and bytes of real runs, keyed by data and job (a JSON file)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None

    @staticmethod
    def key(sites: Sequence[SiteInfo], workload: Workload, lam: float,
            variant: GeoVariant | None) -> str:
        """The key of a run of ``variant`` (None: the centralized baseline)."""
        job = variant.key() if variant is not None else {"method": "centralized"}
        blob = json.dumps({"data": sorted((s.name, s.data_fingerprint) for s in sites),
                           "loss": workload.loss, "lam": lam, "gtol": workload.gtol,
                           **job}, sort_keys=True, default=str)
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
              fraction: float, deployment: Deployment, timer: str | None) -> dict:
    """Run ``variant`` on a ``fraction`` sample of every site's rows; return its metered
    rounds and bytes per link, each round's call time (``calls``) and call
    (``call_names``), the rounds' network
    seconds over the deployment's links, one value+gradient pass on the sample at site
    ``timer`` timed alone (``sample_pass``, :func:`time_pass`) and its steps along a
    direction (``sample_step``, :func:`time_steps`; neither under masking, whose sums
    need every site, nor without a ``timer``: a second, smaller calibration, of which
    only the rounds are read), and what the calibration cost: its WAN bytes and modeled
    seconds, timing included. :mod:`geodml.planning.extrapolate` turns this into the
    full run's prediction."""
    from geodml.algorithms.record import RunRecorder
    from geodml.algorithms.registry import TrainSpec, train

    with open_federation(compression=variant.compression(), sample_fraction=fraction,
                         secure=variant.secure_aggregation()) as fed:
        spec = TrainSpec(loss=workload.loss, lam=lam / fraction**LAMBDA_EXPONENT,
                         gtol=workload.gtol, params=dict(variant.params))
        result = train(fed, variant.method, spec, RunRecorder(fed))
        ran = wan_links(fed.meter.snapshot())
        timed_from = len(fed.meter.rounds)
        timed = timer is not None and not variant.secure
        sample_pass = (time_pass(fed, timer, timing_repeats(timer, deployment.home))
                       if timed else None)
        fed.close_sessions()
        sample_step = time_steps(fed, timer, workload.loss, spec.lam) if timed else None
        timing = _difference(wan_links(fed.meter.snapshot()), ran)
        timed_to = len(fed.meter.rounds)
        links = _difference(wan_links(fed.meter.snapshot()), timing)
        every_round = fed.meter.rounds
    rounds = every_round[:timed_from] + every_round[timed_to:]
    last = result.rows[-1]
    return {"rounds": last.rounds, "vector_rounds": last.vector_rounds,
            "iterations": last.iteration, "evaluations": count_rounds(rounds, "Evaluate"),
            "links": links, "wan_bytes": sum(links.values()), "converged": result.converged,
            "fraction": fraction, "calls": [r.seconds for r in rounds],
            "call_names": [r.call for r in rounds],
            "network_seconds": model_run(rounds, deployment, 0.0).seconds,
            "sample_pass": sample_pass, "sample_step": sample_step,
            "calibration_wan_bytes": sum(links.values()) + sum(timing.values()),
            "calibration_seconds": model_run(every_round, deployment).seconds}


def timing_site(sites: Sequence[SiteInfo], home: str) -> str:
    """The site whose passes are timed: the home DC's (its traffic stays local, so
    timing is free), else the one with the most nonzeros."""
    names = [s.name for s in sites]
    return home if home in names else max(sites, key=lambda s: s.nnz).name


def time_pass(fed, site: str, repeats: int = 1) -> float:
    """Seconds of one value+gradient pass at ``site`` over its rows (in ``fed``'s sample),
    alone, so that no other site shares this machine's cores: the quickest of
    ``repeats`` Evaluates at ``w = 0`` (each one model-sized vector each way, metered;
    local traffic when ``site`` is in the home DC)."""
    import numpy as np

    w = np.zeros(fed.n_features)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fed.evaluate(w, sites=[site])
        best = min(best, time.perf_counter() - t0)
    return best


def timing_repeats(site: str, home: str) -> int:
    """Passes timed at ``site``: three where they are free (the home DC), else one."""
    return 3 if site == home else 1


def answers_unmasked(fed) -> bool:
    """Whether every site of ``fed`` may answer an unmasked exact gradient."""
    return all(s.answers_unmasked for s in fed.sites.values())


def full_pass(fed, loss: str, lam: float, site: str, repeats: int = 1) -> float | None:
    """:func:`time_pass` over ``site``'s full rows in a session of its own; None where a
    site may not answer an unmasked exact gradient (it requires secure aggregation or
    has a privacy budget, and would refuse the session)."""
    if not answers_unmasked(fed):
        return None
    fed.prepare(loss, lam)
    seconds = time_pass(fed, site, repeats)
    fed.close_sessions()
    return seconds


def time_steps(fed, site: str, loss: str, lam: float, repeats: int = STEP_REPEATS) -> float:
    """Median seconds of ``repeats`` Evaluates along a fresh direction at ``site`` alone
    (a line search's step: the direction's margins ``X p``, then loss and gradient at
    ``w + a p``; most of an L-BFGS run's rounds), in a session of its own with the
    federation's compression, as the meter records a round. One evaluate at a point and
    one step go first, untimed (the session's first touches). Vectors are model-sized
    and random, one each way per call: local traffic when ``site`` is the home DC's."""
    import numpy as np

    rng = np.random.default_rng(0)

    def vector() -> np.ndarray:
        return rng.normal(scale=1e-2, size=fed.n_features)

    fed.prepare(loss, lam)
    fed.evaluate(vector(), sites=[site])
    seconds = []
    for _ in range(repeats + 1):
        fed.evaluate(step=0.5, direction=vector(), sites=[site])
        seconds.append(fed.meter.rounds[-1].seconds)
    fed.close_sessions()
    return float(np.median(seconds[1:]))


def full_steps(open_federation, variant: GeoVariant, workload: Workload, lam: float,
               site: str) -> tuple[float | None, int]:
    """:func:`time_steps` over ``site``'s full rows with ``variant``'s compression, and
    the WAN bytes it took (the sessions; the steps too where ``site`` is not the home
    DC's); (None, 0) for a masked variant or where a site would refuse an unmasked
    gradient (:func:`full_pass`)."""
    if variant.secure:
        return None, 0
    with open_federation(compression=variant.compression()) as fed:
        if not answers_unmasked(fed):
            return None, 0
        before = fed.meter.snapshot()["wan_bytes"]
        seconds = time_steps(fed, site, workload.loss, lam)
        return seconds, fed.meter.snapshot()["wan_bytes"] - before


def central_iterations(open_federation, workload: Workload, lam: float, fraction: float,
                       site: str, max_iter: int = CENTRAL_MAX_ITER) -> dict:
    """The centralized solver (L-BFGS in its diagonal metric, to ``gtol`` or ``max_iter``
    iterations) on a ``fraction`` sample of ``site``'s rows, over the full feature space,
    with lambda scaled as for a calibration on that sample's ``share`` of all rows: its
    ``iterations``, the ``iteration_seconds`` of one iteration as the site timed it
    (from the second on; else the call's wall time over the iterations), when
    ``max_iter`` cuts the run short what its curvature pairs cost
    (``pair_seconds`` per pair and iteration, the solver's ``memory``, the median
    ``held_pairs`` of the timed iterations; else 0), and the ``wan_bytes`` it took
    (none beyond the sessions when ``site`` is the home DC's: its rows and its vectors
    stay inside the DC)."""
    import numpy as np

    with open_federation(sample_fraction=fraction) as fed:
        before = fed.meter.snapshot()["wan_bytes"]
        share = fed.sites[site].rows * fraction / max(1, fed.site_rows)
        fed.prepare(workload.loss, lam / share**LAMBDA_EXPONENT, restrict_to_support=False)
        params = {"max_iter": max_iter, "gtol": workload.gtol, "precondition": "diag",
                  "time_pairs": max_iter < CENTRAL_MAX_ITER}
        start = time.perf_counter()
        (_, info, _), = fed.local_solve("local_minimize", params, [np.zeros(fed.n_features)],
                                        sites=[site])
        seconds = time.perf_counter() - start
        fed.close_sessions()
        spent = fed.meter.snapshot()["wan_bytes"] - before
    iterations = int(info["iterations"])
    steady = info.get("iteration_seconds")
    return {"iterations": iterations, "share": share,
            "iteration_seconds": seconds / max(1, iterations) if steady is None else steady,
            **{key: float(info.get(key, 0.0))
               for key in ("pair_seconds", "memory", "held_pairs")},
            "wan_bytes": spent}


def _difference(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


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
