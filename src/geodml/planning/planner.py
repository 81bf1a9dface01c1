r"""The planner: should these DCs centralize or train geo-distributed, and at what cost?

For every plan the planner predicts the WAN bytes, the modeled time and the egress
dollars of one training run over the deployment's links (:mod:`geodml.planning.wan`), and of a
*workload* of retraining: ``J`` runs per data snapshot, one snapshot a day for ``D``
days, the data growing by a share ``g`` of the first day's rows every day.

Centralizing
------------
Each site's ``Describe`` reply carries ``export_bytes_estimate``: the size of its
Export (Arrow IPC, zstd), measured by encoding a sample of its rows. The first
snapshot copies everything home; each later day copies only the new rows::

    B_central = sum_{s != home} E_s * (1 + g (D - 1))

Training then runs at home ``J D`` times; one run takes about ``n_eval`` evaluations of
value and gradient over all rows (``n_eval`` from the SQM L-BFGS calibration, which
runs the same L-BFGS over exact sums, else :data:`DEFAULT_CENTRAL_EVALUATIONS`), each
costing ``nnz / r`` seconds, where ``r`` is this machine's measured value+gradient
throughput (nonzeros per second, :func:`home_throughput`): the coordinator runs in
the home DC, on the kind of machine that would train there.
A site whose policy forbids raw export makes the plan *not permitted*; it is still
priced, as "what it would cost with an exception".

Training geo-distributed
------------------------
A run's bytes are ``sum over rounds of the bytes of the round``: per round they follow
from the model dimension (or each site's support), the wire format and the method;
the number of rounds to the tolerance is what must be learned. The planner takes it

1. from the calibration store: the recorded rounds of the same method on the same
   data (the same sites' data fingerprints, loss, lambda, tolerance, compression):
   ``geodml compare`` records every real run there, so retraining plans are exact;
2. else from a *calibration run*: the method itself, over the same sites and wire,
   on an evenly spaced sample of a share ``f`` of each site's rows, with
   :math:`\lambda_f = \lambda / f^{3/4}` (:data:`LAMBDA_EXPONENT`). Support restriction
   keeps the full data's support, so every vector has its full-run size and the
   metered bytes of the calibration are the prediction. (With the same
   :math:`\lambda` a small sample is less regularized relative to its rows and needs
   more rounds; :math:`f^{-3/4}` matched the full run's rounds on the regional CTR
   data where :math:`f^{-1/2}` overshot by a third and :math:`f^{-1}` undershot:
   BENCHMARKS.md.) A
   calibration moves about as many WAN bytes as the run it predicts; it is reported
   as the plan's calibration cost;
3. else, when the plan's *lower bound* (:data:`MIN_VECTOR_ROUNDS` rounds moving one
   model-sized vector each way) already costs more than a permitted centralized plan
   in the workload's dollars or bytes (whichever ``optimize`` names; never for
   seconds, whose centralized side is itself an estimate), no calibration is run and
   the bound is reported (``calibrate="auto"``).

Modeled time per round adds the slowest site's call time measured in the
calibration, its compute scaled by ``1/f``: ``o + (c - o) / f`` with ``o`` the quickest
call of the calibration (the fixed overhead of a call). For the workload, a geo plan repeats its run
``J D`` times: ``B_geo = J D B_run`` (cold starts; warm starts from yesterday's model
usually need fewer rounds, so this is conservative).

Policies
--------
A geo plan that some site's policy refuses is *not permitted*, named with the site and
the rule, and is priced by its lower bound without a calibration run (the site would
refuse it): an unmasked plan where a site requires secure aggregation, a non-private
plan where a site has a differential-privacy budget, a private plan where one has none.
Secure-aggregation plans are calibrated under masking, so their bytes include the
dense 8-byte masked sums; their accuracy is the unmasked one (fixed point to 2^-44).

Private plans (``dp-gd``) are never calibrated on the sites, since every release
spends budget. Their rounds are fixed (``rounds``), so their bytes come from a *twin*:
the same method over in-process sites with the real names, feature spaces and budgets
but a handful of random rows each, run for :data:`TWIN_ROUNDS` rounds through the same
wire, its last gradient round repeated for the rest (every round moves the same dense
vectors). Compute per round is a value+gradient pass over the site's nonzeros at this
machine's throughput. Each site's noise multiplier is calibrated now against its
remaining budget, exactly as the run will, and the objective its noise costs is
estimated by :mod:`geodml.privacy.noise_cost`. A budget that cannot pay for the rounds, or a
workload of more than one run (``dp-gd`` spends what a site has left in one run),
makes the plan not permitted.

The recommendation is the permitted plan with the lowest workload dollars (or
bytes, or modeled time: ``optimize``); ties go to fewer bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from geodml.planning.calibration import (
    DEFAULT_CALIBRATION_ROWS,
    CalibrationStore,
    calibrate,
    calibration_fraction,
    home_throughput,
)
from geodml.planning.deployment import Deployment
from geodml.planning.estimates import (
    central_estimate,
    geo_estimate,
    lower_bound_estimate,
    policy_refusals,
    site_rows,
)
from geodml.planning.plans import (
    PRIVATE_METHODS,
    Calibrate,
    Estimate,
    GeoVariant,
    Optimize,
    Plan,
    Workload,
)
from geodml.planning.private import private_estimate

DEFAULT_CENTRAL_EVALUATIONS = 110  # L-BFGS to gtol 1e-3 on the benchmarks: 60-110


def make_plan(open_federation, deployment: Deployment, variants: Sequence[GeoVariant],
              workload: Workload | None = None, optimize: Optimize = "usd",
              calibrate_mode: Calibrate = "auto", store: CalibrationStore | None = None,
              calibration_rows: int = DEFAULT_CALIBRATION_ROWS, progress=None) -> Plan:
    """Predict every plan, calibrating geo plans as needed, and recommend one
    (``workload``: default :class:`Workload`)."""
    workload = workload or Workload()
    store = store or CalibrationStore(None)
    say = progress or (lambda _msg: None)
    with open_federation() as fed:
        sites = list(fed.sites.values())
        describe = {k: int(v["bytes"]) for k, v in fed.meter.snapshot()["links"].items()
                    if v["wan"]}
    n_rows = sum(s.rows for s in sites)
    lam = 1.0 / n_rows if workload.lam is None else float(workload.lam)
    fraction = calibration_fraction(sites, calibration_rows)
    # bytes and dollars of centralizing do not depend on its training time
    central_probe = central_estimate(sites, deployment, workload, 0.0, "", describe)
    central_permitted = central_probe.permitted
    records: dict[str, tuple[dict, str, int]] = {}
    lower: list[Estimate] = []
    private: list[GeoVariant] = []
    refused: dict[str, list[str]] = {}
    for variant in variants:
        refused[variant.name] = policy_refusals(variant, sites, workload)
        if variant.method in PRIVATE_METHODS:
            private.append(variant)  # priced below, from a twin: no budget is spent
            continue
        if refused[variant.name]:
            lower.append(lower_bound_estimate(variant, sites, deployment, workload,
                                               refused[variant.name]))
            continue
        key = CalibrationStore.key(sites, workload, lam, variant)
        recorded = store.get(key)
        if recorded is not None:
            records[variant.name] = (recorded, f"recorded run ({recorded.get('recorded')})", 0)
            continue
        bound = lower_bound_estimate(variant, sites, deployment, workload)
        skip = calibrate_mode == "never" or (
            calibrate_mode == "auto" and central_permitted and optimize != "seconds"
            and _metric(bound, optimize) > _metric(central_probe, optimize))
        if skip:
            lower.append(bound)
            continue
        say(f"calibrating {variant.name} on {fraction:.0%} of every site's rows")
        rec = calibrate(open_federation, variant, workload, lam, fraction, deployment)
        records[variant.name] = (rec, f"calibrated on {fraction:.0%} of rows",
                                 rec["wan_bytes"])
    estimates: list[Estimate] = []
    # the home DC trains on all rows: evaluations of L-BFGS times every site's evaluate time
    lbfgs = next((r for v, (r, _, _) in records.items() if v.split()[0] == "sqm-lbfgs"), None)
    evaluations = lbfgs["evaluations"] if lbfgs else DEFAULT_CENTRAL_EVALUATIONS
    nnz = sum(s.nnz for s in sites)
    throughput = home_throughput(nnz / max(1, n_rows), sites[0].features)
    train_seconds = evaluations * nnz / throughput
    basis = "sampled export size"
    if not lbfgs:
        basis += f"; {DEFAULT_CENTRAL_EVALUATIONS} evaluations assumed"
    estimates.append(central_estimate(sites, deployment, workload, train_seconds, basis,
                                       describe))
    for variant in variants:
        if variant.name in records:
            rec, why, cal = records[variant.name]
            estimates.append(geo_estimate(variant, rec, why, deployment, workload, cal))
    for variant in private:
        say(f"pricing {variant.name} from a twin of the sites (no budget is spent)")
        estimates.append(private_estimate(variant, sites, deployment, workload, lam,
                                           throughput, refused[variant.name]))
    estimates += lower
    recommended, reason = _recommend(estimates, optimize)
    return Plan(estimates, recommended, reason, workload, optimize, site_rows(sites))


def _metric(estimate: Estimate, optimize: Optimize) -> float:
    return float(getattr(estimate, _METRICS[optimize]))


_METRICS = {"usd": "workload_usd", "bytes": "workload_bytes", "seconds": "workload_seconds"}


def _recommend(estimates: list[Estimate], optimize: Optimize) -> tuple[str | None, str]:
    metric = _METRICS[optimize]
    permitted = [e for e in estimates if e.permitted]
    if not permitted:
        return None, "no plan is permitted by every site's policy"
    best = min(permitted, key=lambda e: (getattr(e, metric), e.workload_bytes))
    others = [e for e in permitted if e is not best]
    reason = f"lowest workload {optimize}"
    if others:
        runner = min(others, key=lambda e: (getattr(e, metric), e.workload_bytes))
        ratio = getattr(runner, metric) / max(getattr(best, metric), 1e-12)
        reason += f" ({ratio:.1f}x less than {runner.plan})"
    central = next((e for e in estimates if e.kind == "centralized"), None)
    if central is not None and not central.permitted:
        reason += f"; centralizing is excluded: {central.why_not}"
    return best.plan, reason
