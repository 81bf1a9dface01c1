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
value and gradient over all rows (``n_eval`` from the SQM L-BFGS calibrations, which
run the same L-BFGS in the same metric, extrapolated as their rounds are; else
:data:`DEFAULT_CENTRAL_EVALUATIONS`, with its range), each costing
``P_t nnz / nnz_t`` seconds: ``P_t`` is one value+gradient pass over all rows of site
``t`` (the home DC's, else the largest), timed on the site before anything else
(:func:`~geodml.planning.calibration.full_pass`), so the rate is the real data's on the
kind of machine that would train there. Where no pass can be timed (masked or private
sites) it falls back to this machine's rate on a random CSR matrix of the data's shape
(:func:`home_throughput`).
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

With a sample under :data:`SINGLE_SHARE` of the rows, a second calibration on
:data:`SMALL_SHARE` of the first's rows shows how the rounds grow with the rows: where
the two disagree, the rounds at full size are extrapolated as a power of the rows,
else they are flat and the first calibration stands
(:mod:`geodml.planning.extrapolate`, with the range every prediction carries).
Modeled time per round adds the slowest site's call time measured in the calibration,
its compute grown by the measured ratio of a full pass to a sample pass at the timed
site: ``o + (c - o) rho`` with ``o`` the quickest call (a call's fixed overhead). For the
workload, a geo plan repeats its run ``J D`` times: ``B_geo = J D B_run`` (cold starts;
warm starts from yesterday's model usually need fewer rounds, so this is conservative).

Ranges
------
Every estimate carries (low, high) of its bytes, seconds and dollars
(:attr:`Estimate.ranges`): a geo plan's from its rounds' range; centralizing's bytes
within :data:`~geodml.planning.estimates.EXPORT_SPREAD` and its training time over
the range of its evaluations; a lower bound has no high end.

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
bytes, or modeled time: ``optimize``); ties go to fewer bytes. It is *decided*
(:attr:`Plan.decided`) only when its range lies below every other permitted plan's;
otherwise the reason names the plans whose ranges overlap and the cheapest plan at the
low ends and at the high ends, and the CLI says there is no clear winner.
"""

from __future__ import annotations

from collections.abc import Sequence

from geodml.planning.calibration import (
    DEFAULT_CALIBRATION_ROWS,
    CalibrationStore,
    calibrate,
    calibration_fraction,
    full_pass,
    home_throughput,
    timing_site,
)
from geodml.planning.deployment import Deployment
from geodml.planning.estimates import (
    central_estimate,
    geo_estimate,
    lower_bound_estimate,
    policy_refusals,
    site_rows,
)
from geodml.planning.extrapolate import predict_geo
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

# the centralized L-BFGS in the diagonal metric to gtol 1e-3: 18-33 iterations on the
# regional CTR data at 2^12 and 2^20 (BENCHMARKS.md); assumed when no sqm-lbfgs plan is
# calibrated, with this range
DEFAULT_CENTRAL_EVALUATIONS = (18.0, 30.0, 45.0)
SMALL_SHARE = 0.25  # the second calibration samples this share of the first's rows
SINGLE_SHARE = 0.5  # a calibration on at least this share of the rows is not extrapolated


def make_plan(open_federation, deployment: Deployment, variants: Sequence[GeoVariant],
              workload: Workload | None = None, optimize: Optimize = "usd",
              calibrate_mode: Calibrate = "auto", store: CalibrationStore | None = None,
              calibration_rows: int = DEFAULT_CALIBRATION_ROWS, progress=None,
              calibration_points: int = 2) -> Plan:
    """Predict every plan, calibrating geo plans as needed, and recommend one
    (``workload``: default :class:`Workload`; ``calibration_points``: 1, or 2 to
    extrapolate rounds from a second, smaller sample)."""
    workload = workload or Workload()
    store = store or CalibrationStore(None)
    say = progress or (lambda _msg: None)
    with open_federation() as fed:
        sites = list(fed.sites.values())
        describe = {k: int(v["bytes"]) for k, v in fed.meter.snapshot()["links"].items()
                    if v["wan"]}
        n_rows = sum(s.rows for s in sites)
        lam = 1.0 / n_rows if workload.lam is None else float(workload.lam)
        timer = timing_site(sites, deployment.home)
        say(f"timing one pass over site {timer}'s rows")
        full_seconds = full_pass(fed, workload.loss, lam, timer)
        timing_bytes = sum(int(v["bytes"]) for v in fed.meter.snapshot()["links"].values()
                           if v["wan"]) - sum(describe.values())
    fraction = calibration_fraction(sites, calibration_rows)
    # bytes and dollars of centralizing do not depend on its training time
    central_probe = central_estimate(sites, deployment, workload, (0.0, 0.0, 0.0), "",
                                     describe)
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
        large = calibrate(open_federation, variant, workload, lam, fraction, deployment, timer)
        small = None
        if calibration_points > 1 and fraction < SINGLE_SHARE:
            say(f"calibrating {variant.name} on {fraction * SMALL_SHARE:.1%} of every site's "
                "rows (how its rounds grow with the rows)")
            small = calibrate(open_federation, variant, workload, lam,
                              fraction * SMALL_SHARE, deployment, timer)
        rec = predict_geo(large, small, full_seconds)
        shares = f"{fraction:.0%}" + (f" and {fraction * SMALL_SHARE:.1%}" if small else "")
        records[variant.name] = (
            rec, f"calibrated on {shares} of rows ({rec['rounds_how']}; {rec['compute_how']})",
            large["calibration_wan_bytes"] + (small["calibration_wan_bytes"] if small else 0))
    estimates: list[Estimate] = []
    nnz = sum(s.nnz for s in sites)
    throughput = home_throughput(nnz / max(1, n_rows), sites[0].features)
    estimates.append(_central(sites, deployment, workload, records, describe, full_seconds,
                              timer, throughput, timing_bytes))
    for variant in variants:
        if variant.name in records:
            rec, why, cal = records[variant.name]
            estimates.append(geo_estimate(variant, rec, why, deployment, workload, cal))
    for variant in private:
        say(f"pricing {variant.name} from a twin of the sites (no budget is spent)")
        estimates.append(private_estimate(variant, sites, deployment, workload, lam,
                                           throughput, refused[variant.name]))
    estimates += lower
    recommended, reason, decided = _recommend(estimates, optimize)
    return Plan(estimates, recommended, reason, workload, optimize, site_rows(sites), decided)


def _central(sites, deployment: Deployment, workload: Workload, records: dict,
             describe: dict[str, int], full_seconds: float | None, timer: str,
             throughput: float, timing_bytes: int) -> Estimate:
    """Centralizing: the home DC runs the centralized L-BFGS over every row; its
    evaluations from an sqm-lbfgs calibration (the same L-BFGS over exact sums), else
    :data:`DEFAULT_CENTRAL_EVALUATIONS`; each costs a pass over all nonzeros at the
    timed site's measured pass rate (else at this machine's random-CSR throughput)."""
    lbfgs = next((r for v, (r, _, _) in records.items() if v.split()[0] == "sqm-lbfgs"), None)
    if lbfgs is not None:
        low, point, high = lbfgs.get("range", (1.0, 1.0, 1.0))
        evaluations = float(lbfgs["evaluations"])
        counts = (evaluations * low / point, evaluations, evaluations * high / point)
        basis = f"{evaluations:.0f} L-BFGS evaluations (sqm-lbfgs calibration)"
    else:
        counts = DEFAULT_CENTRAL_EVALUATIONS
        basis = f"{counts[1]:.0f} L-BFGS evaluations assumed ({counts[0]:.0f}-{counts[2]:.0f})"
    nnz = sum(s.nnz for s in sites)
    if full_seconds is not None:
        per_pass = full_seconds * nnz / max(1, next(s.nnz for s in sites if s.name == timer))
        basis += f", each a pass at site {timer}'s measured rate"
    else:
        per_pass = nnz / throughput
        basis += ", each at this machine's random-CSR rate"
    estimate = central_estimate(sites, deployment, workload,
                                tuple(c * per_pass for c in counts), "sampled export size; "
                                + basis, describe)
    estimate.calibration_wan_bytes = timing_bytes
    return estimate


def _metric(estimate: Estimate, optimize: Optimize) -> float:
    return float(getattr(estimate, _METRICS[optimize]))


_METRICS = {"usd": "workload_usd", "bytes": "workload_bytes", "seconds": "workload_seconds"}


def _recommend(estimates: list[Estimate], optimize: Optimize
               ) -> tuple[str | None, str, bool]:
    """The permitted plan with the lowest point estimate, why, and whether its range lies
    below every other permitted plan's (decided); ties go to fewer bytes."""
    metric = _METRICS[optimize]
    permitted = [e for e in estimates if e.permitted]
    if not permitted:
        return None, "no plan is permitted by every site's policy", False
    best = min(permitted, key=lambda e: (getattr(e, metric), e.workload_bytes))
    others = [e for e in permitted if e is not best]
    reason = f"lowest workload {optimize}"
    overlapping = [e for e in others if e.range_of(metric)[0] <= best.range_of(metric)[1]]
    if others:
        runner = min(others, key=lambda e: (getattr(e, metric), e.workload_bytes))
        ratio = getattr(runner, metric) / max(getattr(best, metric), 1e-12)
        reason += f" ({ratio:.1f}x less than {runner.plan})"
    if overlapping:
        at_low = min(permitted, key=lambda e: e.range_of(metric)[0])
        at_high = min(permitted, key=lambda e: e.range_of(metric)[1])
        reason += (f"; but the predicted ranges overlap ({', '.join(e.plan for e in overlapping)}"
                   f"): at the low ends {at_low.plan} is cheapest, at the high ends "
                   f"{at_high.plan}")
    central = next((e for e in estimates if e.kind == "centralized"), None)
    if central is not None and not central.permitted:
        reason += f"; centralizing is excluded: {central.why_not}"
    return best.plan, reason, not overlapping
