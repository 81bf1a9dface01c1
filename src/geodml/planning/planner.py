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
value and gradient over all rows, each a pass over all nonzeros at the rate measured
on one site's full rows (the home DC's, else the largest; timed before anything else,
:func:`~geodml.planning.calibration.full_pass`). ``n_eval`` comes from a recorded run
of the baseline, else from the centralized solver itself run on samples of that
site's rows, which never leave it (:mod:`geodml.planning.central_time` has the
details and the fallbacks where no pass may be timed: masked or private sites).
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
   :math:`\lambda_f = \lambda / f` (:data:`LAMBDA_EXPONENT`), so that
   :math:`\lambda` times the rows is the full problem's. Support restriction
   keeps the full data's support, so every vector has its full-run size and the
   metered bytes of the calibration are the prediction (scaled by the rounds'
   extrapolation below; :data:`LAMBDA_EXPONENT` says why not :math:`f^{3/4}`,
   the single-sample rule before). A calibration moves about as many WAN bytes as
   the run it predicts; it is reported as the plan's calibration cost;
3. else, when the plan's *lower bound* (:data:`MIN_VECTOR_ROUNDS` rounds moving one
   model-sized vector each way) already costs more than a permitted centralized plan
   in the workload's dollars or bytes (whichever ``optimize`` names; never for
   seconds, whose centralized side is itself an estimate), no calibration is run and
   the bound is reported (``calibrate="auto"``).

With a sample under :data:`~geodml.planning.central_time.SINGLE_SHARE` of the rows,
a second calibration on :data:`~geodml.planning.central_time.SMALL_SHARE` of the
first's rows shows how the rounds grow with the rows: where the two disagree, the
rounds at full size are extrapolated as a power of the rows, else they are flat and
the first calibration stands (:mod:`geodml.planning.extrapolate`, with the range every
prediction carries).
Modeled time per round adds the slowest site's call time measured in the calibration,
its compute grown by the measured ratio of a full pass to a sample pass at the timed
site: ``o + (c - o) rho`` with ``o`` the quickest call (a call's fixed overhead); an
Evaluate round's by the seconds the timed site's step along a direction added from the
sample to all rows, ``c + S_full - S_sample`` (both timed,
:func:`~geodml.planning.calibration.time_steps`); a local
solve's by ``sqrt(rho / f)``, since its inner iterations grow with the rows too. For the
workload, a geo plan repeats its run ``J D`` times: ``B_geo = J D B_run`` (cold starts;
warm starts from yesterday's model usually need fewer rounds, so this is conservative).

Ranges
------
Every estimate carries (low, high) of its bytes, seconds and dollars
(:attr:`Estimate.ranges`): a geo plan's from its rounds' range, its modeled time's
also growing local solves' compute by the pass at the low end and by the share at
the high end (they can outgrow a pass: :mod:`geodml.planning.extrapolate`);
centralizing's bytes within :data:`~geodml.planning.estimates.EXPORT_SPREAD` and its
training time over the range of its iterations, at least
:data:`~geodml.planning.central_time.POOLED_SPREAD` around the point (the pooled run's
iterations fell that far from the home DC's sample's); a lower bound has no high end.

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

from geodml.federation.meter import wan_links
from geodml.planning.calibration import (
    DEFAULT_CALIBRATION_ROWS,
    CalibrationStore,
    calibrate,
    calibration_fraction,
    full_pass,
    full_steps,
    home_throughput,
    timing_repeats,
    timing_site,
)
from geodml.planning.central_time import CalibrationPlan, Timing, central_training
from geodml.planning.deployment import Deployment
from geodml.planning.estimates import (
    MIN_VECTOR_ROUNDS,
    ZSTD_FLOOR,
    bound_links,
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
        describe = wan_links(fed.meter.snapshot())
        n_rows = sum(s.rows for s in sites)
        lam = 1.0 / n_rows if workload.lam is None else float(workload.lam)
        timer = timing_site(sites, deployment.home)
        say(f"timing one pass over site {timer}'s rows")
        full_seconds = full_pass(fed, workload.loss, lam, timer,
                                 timing_repeats(timer, deployment.home))
        timing_bytes = fed.meter.snapshot()["wan_bytes"] - sum(describe.values())
    calibration = CalibrationPlan(calibrate_mode, calibration_fraction(sites, calibration_rows),
                                  calibration_points)
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
        fractions = calibration.fractions()
        shares = f"{fractions[0]:.0%}" + "".join(f" and {f:.1%}" for f in fractions[1:])
        say(f"calibrating {variant.name} on {shares} of every site's rows")
        runs = [calibrate(open_federation, variant, workload, lam, f, deployment,
                          timer if i == 0 else None)  # only the first's timings are read
                for i, f in enumerate(fractions)]
        step_seconds, step_bytes = (None, 0) if fractions[0] >= 1.0 else full_steps(
            open_federation, variant, workload, lam, timer)
        dense, dense_raw = ({k: v / MIN_VECTOR_ROUNDS for k, v in bound_links(
            sites, deployment.home, variant, share).items()} for share in (ZSTD_FLOOR, 1.0))
        rec = predict_geo(runs[0], runs[1] if len(runs) > 1 else None, full_seconds, dense,
                          deployment, step_seconds, dense_raw)
        records[variant.name] = (
            rec, f"calibrated on {shares} of rows ({rec['rounds_how']}; {rec['compute_how']})",
            sum(r["calibration_wan_bytes"] for r in runs) + step_bytes)
    estimates: list[Estimate] = []
    nnz = sum(s.nnz for s in sites)
    throughput = home_throughput(nnz / max(1, n_rows), sites[0].features)
    train, basis, spent = central_training(
        open_federation, sites, workload, lam, store, records, Timing(timer, full_seconds),
        throughput, calibration, say)
    central = central_estimate(sites, deployment, workload, train,
                               "sampled export size; " + basis, describe)
    central.calibration_wan_bytes = timing_bytes + spent
    estimates.append(central)
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
