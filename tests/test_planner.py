"""The planner: export-size estimates, sampled Prepare, calibration and recommendations.

In-process sites over small regional CTR data (4 DCs x 6,000 rows, 2^11 hashed
features); the calibration store fixes the geo plan's rounds and bytes where a test
needs a deterministic geo estimate.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import geodml.site.rows as site_rows
from geodml.algorithms.centralize import train_centralized_baseline
from geodml.algorithms.registry import TrainSpec, train
from geodml.cli.report_output import planning_cost
from geodml.data import load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import ConfigError
from geodml.federation import AuditLog, Federation, SiteCallError
from geodml.federation.meter import read_audit
from geodml.planning.calibration import CalibrationStore
from geodml.planning.compare import fmt_bytes
from geodml.planning.deployment import Deployment, parse_deployment
from geodml.planning.estimates import MIN_VECTOR_ROUNDS, lower_bound_bytes
from geodml.planning.planner import make_plan
from geodml.planning.plans import GeoVariant, Workload
from geodml.site.inprocess import InProcessTransport
from geodml.site.policy import Policy
from geodml.site.service import SiteError, SiteService
from geodml.wire.protocol import pb

from .tools.opened import UNNAMED, OpenedFederations

HOME = "us-east"
REGIONS = ("us-east", "eu-west", "ap-south", "sa-east")
ROWS = 6000  # per site
GEO = GeoVariant("fadl-subspace")
GTOL = 1e-3


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    out = tmp_path_factory.mktemp("planner-data")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=ROWS,
                                     test_rows_per_region=0, hash_bits=11, seed=5), out)
    return {name: load_dataset(path) for name, path in site_dirs(out).items()}


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    """The four DCs in the AWS regions their names stand for (links from the table)."""
    return parse_deployment({"home": HOME,
                             "sites": [{"name": n, "region": n} for n in REGIONS]})


class Sites(OpenedFederations):
    """``open_federation(compression=None, sample_fraction=1.0, audit=None)`` over shared
    in-process sites; remembers the sample fraction of every federation it opened
    (:class:`~tests.tools.opened.OpenedFederations`)."""

    def __init__(self, datasets, forbid_export=(), **policy):
        self.services = {
            n: SiteService(n, n, d, Policy(allow_raw_export=n not in forbid_export, **policy))
            for n, d in datasets.items()}
        super().__init__()

    def __call__(self, compression=UNNAMED, sample_fraction=UNNAMED, audit=None,
                 secure=None) -> Federation:
        compression, sample_fraction = self.record(compression, sample_fraction)
        return Federation([InProcessTransport(s) for s in self.services.values()], HOME,
                          audit=AuditLog(audit) if audit else None, compression=compression,
                          sample_fraction=sample_fraction, secure=secure)

    @property
    def calibrations(self) -> int:
        return sum(f < 1 for f in self.fractions)

    def infos(self):
        with self() as fed:
            return list(fed.sites.values())


def record_geo(sites: Sites, store: CalibrationStore, workload: Workload,
               share_of_export: float) -> dict:
    """Store a run of :data:`GEO` moving ``share_of_export`` of each site's export size
    per run, half down and half up; returns the record."""
    infos = sites.infos()
    links = {}
    for s in infos:
        if s.name != HOME:
            half = round(share_of_export * s.export_bytes_estimate / 2)
            links[f"{HOME}->{s.name}"] = links[f"{s.name}->{HOME}"] = half
    record = {"links": links, "seconds": 2.0, "rounds": 12, "vector_rounds": 12.0,
              "wan_bytes": sum(links.values())}
    lam = 1.0 / sum(s.rows for s in infos)
    store.put(CalibrationStore.key(infos, workload, lam, GEO), record)
    return record


def plan(sites: Sites, deployment: Deployment, workload: Workload, **kw):
    return make_plan(sites, deployment, [GEO], workload, **kw)


# -- what the sites tell the planner ---------------------------------------------------


def test_describe_estimates_export_size_within_ten_percent(datasets, monkeypatch, tmp_path):
    monkeypatch.setattr(site_rows, "EXPORT_SAMPLE_ROWS", 1024)  # sample: ROWS > 1024
    sites = Sites(datasets)
    audit = tmp_path / "audit.jsonl"
    with sites(audit=str(audit)) as fed:
        estimates = {n: s.export_bytes_estimate for n, s in fed.sites.items()}
        result = train_centralized_baseline(fed, gtol=GTOL)
        links = fed.meter.snapshot()["links"]
    assert result.info["rows"] == len(REGIONS) * ROWS  # every row was exported
    exported: dict[str, int] = {}
    for r in read_audit(audit):
        if r["call"] == "Export":
            exported[r["link"]] = exported.get(r["link"], 0) + r["bytes"]
    for name in REGIONS:
        if name == HOME:
            continue
        link = f"{name}->{HOME}"
        assert exported[link] > 0.95 * links[link]["bytes"]  # the link carried the export
        assert estimates[name] == pytest.approx(exported[link], rel=0.10), name
    assert result.info["export_wan_bytes"] == pytest.approx(
        sum(v for n, v in estimates.items() if n != HOME), rel=0.10)


def test_sampled_prepare_binds_a_share_of_rows_and_keeps_the_full_support(datasets):
    sites = Sites(datasets)
    with sites() as fed:
        fed.prepare("logistic", 1e-3)
        full_rows = fed.n_rows
        supports = {n: fed.support(n) for n in fed.names}
    with sites(sample_fraction=0.25) as fed:
        assert fed.n_rows == full_rows  # before a job: the sites' rows
        fed.prepare("logistic", 1e-3)
        assert fed.n_rows == pytest.approx(0.25 * full_rows, rel=0.01)
        for name in fed.names:
            np.testing.assert_array_equal(fed.support(name), supports[name])
        evals = fed.evaluate(np.zeros(fed.n_features))
        assert sum(e.rows for e in evals) == fed.n_rows
        for e in evals:  # gradients come back in full dimension, zero off the support
            assert e.grad.shape == (fed.n_features,)
    assert full_rows == len(REGIONS) * ROWS
    assert all(len(s) > 1000 for s in supports.values())


@pytest.mark.parametrize("fraction", [1.5, -0.25, math.nan, math.inf])
def test_prepare_refuses_a_sample_fraction_outside_zero_one(datasets, fraction):
    data = datasets["eu-west"]
    service = SiteService("eu-west", "eu-west", data)
    request = pb.PrepareRequest(loss="logistic", lam=1e-3, features=data.n_features,
                                feature_space_fingerprint=data.space.fingerprint(),
                                job="t", sample_fraction=fraction)
    with pytest.raises(SiteError, match="sample_fraction") as e:
        service.prepare(request, "coordinator")
    assert e.value.code == "INVALID_ARGUMENT"
    assert not service.sessions


def test_a_sample_below_the_policy_minimum_is_refused(datasets):
    sites = Sites(datasets, min_rows_per_aggregate=2000)
    with sites(sample_fraction=0.5) as fed:  # 3,000 rows per site: allowed
        fed.prepare("logistic", 1e-3)
        assert fed.n_rows == len(REGIONS) * ROWS // 2
    with sites(sample_fraction=0.25) as fed, pytest.raises(SiteCallError) as e:
        fed.prepare("logistic", 1e-3)  # 1,500 rows per site
    assert e.value.code == "PERMISSION_DENIED"
    assert "min_rows_per_aggregate" in str(e.value)


def test_local_solve_of_a_sampled_session_reports_the_sample_rows(datasets):
    with Sites(datasets)(sample_fraction=0.25) as fed:
        fed.prepare("logistic", 1e-3)
        results = fed.local_solve("local_minimize", {"max_iter": 1}, [np.zeros(fed.n_features)])
        assert sum(rows for _, _, rows in results) == fed.n_rows


# -- the plans -----------------------------------------------------------------------


def test_centralizing_is_excluded_when_a_site_forbids_export(datasets, deployment, tmp_path):
    """With 50 runs a day centralizing is the cheapest plan: recommended when every site
    allows export, never when eu-west forbids it."""
    workload = Workload(gtol=GTOL, runs_per_snapshot=50)
    store = CalibrationStore(tmp_path / "calibration.json")
    allowed, forbidding = Sites(datasets), Sites(datasets, forbid_export=("eu-west",))
    record_geo(allowed, store, workload, share_of_export=0.1)  # same data: same key

    ok = plan(allowed, deployment, workload, store=store)
    central = ok.estimate("centralize")
    assert central.permitted and central.why_not == ""
    assert ok.recommended == "centralize"

    refused = plan(forbidding, deployment, workload, store=store)
    central = refused.estimate("centralize")
    assert not central.permitted
    assert "eu-west" in central.why_not and "allow_raw_export" in central.why_not
    assert central.wan_bytes > 0  # still priced, as with an exception
    assert central.workload_usd < refused.estimate(GEO.name).workload_usd
    assert refused.recommended == GEO.name
    assert "centralizing is excluded" in refused.reason
    assert [s["raw_export_allowed"] for s in refused.sites] == [n != "eu-west" for n in REGIONS]


@pytest.mark.parametrize("runs,days,growth", [(50, 1, 0.0), (1, 50, 0.0), (10, 5, 0.1)])
def test_the_workload_flips_the_recommendation_to_centralizing(
        datasets, deployment, tmp_path, runs, days, growth):
    """A geo run moving 10% of the export is cheaper once; J D runs of it are not, while
    the copy happens once (plus each day's growth)."""
    sites = Sites(datasets)
    store = CalibrationStore(tmp_path / "calibration.json")
    once = Workload(gtol=GTOL)
    many = Workload(gtol=GTOL, runs_per_snapshot=runs, days=days, growth_per_day=growth)
    record = record_geo(sites, store, once, share_of_export=0.1)  # the key ignores J, D, g

    single = plan(sites, deployment, once, store=store)
    assert single.recommended == GEO.name
    repeated = plan(sites, deployment, many, store=store)
    assert repeated.recommended == "centralize"

    geo, central = repeated.estimate(GEO.name), repeated.estimate("centralize")
    assert geo.basis.startswith("recorded run")
    assert geo.wan_bytes == record["wan_bytes"]
    assert geo.workload_bytes == runs * days * geo.wan_bytes
    assert geo.workload_usd == pytest.approx(runs * days * geo.usd)
    assert many.copy_factor == pytest.approx(1 + growth * (days - 1))
    assert central.workload_bytes == int(central.wan_bytes * many.copy_factor)
    assert central.workload_usd == pytest.approx(central.usd * many.copy_factor)
    assert central.wan_bytes == single.estimate("centralize").wan_bytes


def test_auto_skips_calibration_when_the_lower_bound_loses(datasets, deployment, tmp_path):
    sites = Sites(datasets)
    workload = Workload(gtol=GTOL, runs_per_snapshot=50)
    result = plan(sites, deployment, workload, calibrate_mode="auto",
                  store=CalibrationStore(tmp_path / "none.json"), calibration_rows=3000)
    geo = result.estimate(GEO.name)
    assert "lower bound" in geo.basis
    assert sites.calibrations == 0
    bound = lower_bound_bytes(sites.infos(), HOME, GEO)
    assert geo.wan_bytes == bound
    assert geo.rounds == MIN_VECTOR_ROUNDS
    assert bound * workload.runs > result.estimate("centralize").workload_bytes
    assert result.recommended == "centralize"


def test_auto_calibrates_when_centralizing_is_not_permitted(datasets, deployment, tmp_path):
    """The same workload, but eu-west forbids export: there is no plan to lose to."""
    sites = Sites(datasets, forbid_export=("eu-west",))
    result = plan(sites, deployment, Workload(gtol=GTOL, runs_per_snapshot=50),
                  calibrate_mode="auto", store=CalibrationStore(tmp_path / "none.json"),
                  calibration_rows=3000)
    assert sites.calibrations == 1
    assert result.estimate(GEO.name).basis.startswith("calibrated on 50% of rows")
    assert result.recommended == GEO.name


@pytest.fixture(scope="module")
def calibrated(datasets, deployment, tmp_path_factory):
    """A plan calibrated on half of every site's rows (calibrate="always", where "auto"
    would skip: 50 runs)."""
    sites = Sites(datasets)
    store = CalibrationStore(tmp_path_factory.mktemp("store") / "calibration.json")
    result = plan(sites, deployment, Workload(gtol=GTOL, runs_per_snapshot=50),
                  calibrate_mode="always", store=store, calibration_rows=ROWS // 2)
    return result, sites


def test_always_calibrates(calibrated):
    result, sites = calibrated
    assert [f for f in sites.fractions if f < 1] == [0.5]
    geo = result.estimate(GEO.name)
    assert geo.basis.startswith("calibrated on 50% of rows (one sample; measured passes")
    assert geo.calibration_wan_bytes > 0
    # what planning cost is shown beside the prediction: the calibration's bytes and time
    assert geo.calibration_seconds > 0
    assert planning_cost(geo).startswith(fmt_bytes(geo.calibration_wan_bytes))
    assert geo.rounds > MIN_VECTOR_ROUNDS
    assert geo.wan_bytes >= lower_bound_bytes(sites.infos(), HOME, GEO)
    assert geo.seconds > 0 and geo.usd > 0
    assert set(geo.per_link) == {f"{a}->{b}" for n in REGIONS if n != HOME
                                 for a, b in ((HOME, n), (n, HOME))}


def test_calibrated_bytes_predict_a_full_run_within_30_percent(calibrated, datasets):
    result, _ = calibrated
    with Sites(datasets)() as fed:
        run = train(fed, GEO.method, TrainSpec(gtol=GTOL))
        metered = fed.meter.snapshot()["wan_bytes"]
    assert run.converged, run.reason
    assert result.estimate(GEO.name).wan_bytes == pytest.approx(metered, rel=0.30)


def test_a_recorded_run_is_used_without_calibrating(datasets, deployment, tmp_path):
    sites = Sites(datasets)
    store = CalibrationStore(tmp_path / "calibration.json")
    workload = Workload(gtol=GTOL)
    record = record_geo(sites, store, workload, share_of_export=0.5)
    sites.fractions.clear()
    result = plan(sites, deployment, workload, calibrate_mode="always", store=store,
                  calibration_rows=ROWS // 2)
    geo = result.estimate(GEO.name)
    assert geo.basis.startswith("recorded run (")
    assert sites.calibrations == 0
    assert sites.fractions == [1.0]  # only the federation that described the sites
    assert geo.per_link == record["links"]
    assert geo.rounds == record["rounds"] and geo.calibration_wan_bytes == 0
    assert geo.calibration_seconds == 0 and planning_cost(geo) == "-"  # free: no calibration
    # another job on the same data (another tolerance) is not the recorded run
    other = plan(sites, deployment, Workload(gtol=1e-2), calibrate_mode="never", store=store)
    assert "lower bound" in other.estimate(GEO.name).basis


def test_a_corrupt_store_is_a_config_error_naming_the_file(datasets, deployment, tmp_path):
    path = tmp_path / "calibration.json"
    path.write_text('{"abc": {"rounds": 3')
    with pytest.raises(ConfigError, match=str(path)):
        plan(Sites(datasets), deployment, Workload(gtol=GTOL), store=CalibrationStore(path))
    store = CalibrationStore(path)
    with pytest.raises(ConfigError, match="unreadable calibration store"):
        store.put("key", {"rounds": 1})
    assert path.read_text() == '{"abc": {"rounds": 3'  # not overwritten


def test_auto_never_recommends_a_plan_it_did_not_calibrate(datasets):
    """Down links at $0.01/GB, up links at $0.09/GB: with ``C < J B < 1.8 C`` the bound
    has more bytes than the copy (skip) but costs less (recommended)."""
    links = [{"src": a, "dst": b, "bandwidth_mbps": 500, "rtt_ms": 100,
              "egress_usd_per_gb": 0.01 if a == HOME else 0.09}
             for n in REGIONS if n != HOME for a, b in ((HOME, n), (n, HOME))]
    deployment = parse_deployment({"home": HOME, "sites": [{"name": n} for n in REGIONS],
                                   "links": links})
    sites = Sites(datasets)
    infos = sites.infos()
    bound = lower_bound_bytes(infos, HOME, GEO)
    copy = sum(s.export_bytes_estimate for s in infos if s.name != HOME)
    runs = copy // bound + 1
    assert copy < runs * bound < 1.8 * copy  # the case described above
    result = plan(sites, deployment, Workload(gtol=GTOL, runs_per_snapshot=runs),
                  calibrate_mode="auto")
    uncalibrated = {e.plan for e in result.estimates if e.basis.startswith("lower bound")}
    assert result.recommended is not None
    assert result.recommended not in uncalibrated, result.reason


@pytest.mark.parametrize("field,kwargs", [
    ("runs_per_snapshot", {"runs_per_snapshot": 0}),
    ("days", {"days": 0}),
    ("growth_per_day", {"growth_per_day": -0.1}),
    ("growth_per_day", {"growth_per_day": math.nan}),
    ("gtol", {"gtol": 0.0}),
    ("gtol", {"gtol": 1.0}),
    ("gtol", {"gtol": math.nan}),
])
def test_workload_validation_names_the_field(field, kwargs):
    with pytest.raises(ConfigError, match=f"workload: {field} must be"):
        Workload(**kwargs)


def test_plan_to_dict_is_json(calibrated):
    result, _ = calibrated
    data = json.loads(json.dumps(result.to_dict()))
    assert data["recommended"] == result.recommended
    assert {e["plan"] for e in data["estimates"]} == {"centralize", GEO.name}
    assert data["workload"]["runs_per_snapshot"] == 50


def test_workload_refuses_a_negative_or_nan_lambda():
    for lam in (-1.0, float("nan")):
        with pytest.raises(ConfigError, match="lam"):
            Workload(lam=lam)


def test_a_secure_aggregation_plan_prices_its_masked_dense_sums(datasets, deployment):
    """Masked sums are dense 8-byte ring elements: the plan calibrates under secure
    aggregation and predicts the full secure run's bytes."""
    from geodml.federation import SecureAggregation

    secure = GeoVariant(GEO.method, restrict_to_support=False, secure=True)
    assert secure.name == f"{GEO.method} secure"
    sites = Sites(datasets)
    result = make_plan(sites, deployment, [GEO, secure], Workload(gtol=GTOL),
                       calibrate_mode="always", calibration_rows=ROWS // 2)
    masked, plain = result.estimate(secure.name), result.estimate(GEO.name)
    assert masked.wan_bytes >= lower_bound_bytes(sites.infos(), HOME, secure)
    with Federation([InProcessTransport(s) for s in sites.services.values()], HOME,
                    secure=SecureAggregation()) as fed:
        train(fed, GEO.method, TrainSpec(gtol=GTOL))
        metered = fed.meter.snapshot()["wan_bytes"]
    assert masked.wan_bytes == pytest.approx(metered, rel=0.30)
    assert plain.wan_bytes > 0 and masked.basis.startswith("calibrated")


# -- the centralized solver's time, learned where the rows are ------------------------


def test_the_centralized_solver_is_calibrated_at_home_without_moving_rows(datasets):
    from geodml.planning.calibration import central_iterations, full_pass

    sites = Sites(datasets)
    workload = Workload(gtol=GTOL)
    lam = 1.0 / (len(REGIONS) * ROWS)
    solver = central_iterations(sites, workload, lam, 0.5, HOME)
    assert 3 <= solver["iterations"] < 200 and solver["iteration_seconds"] > 0
    assert solver["share"] == pytest.approx(0.5 / len(REGIONS))  # half of one site of four
    # Prepare and Close only: the solve and its vectors stay in the home DC
    assert 0 < solver["wan_bytes"] < 2048
    with sites() as fed:
        seconds = full_pass(fed, "logistic", lam, HOME)
        assert seconds is not None and seconds > 0


def test_steps_are_timed_at_home_on_the_sample_and_on_all_rows(calibrated, datasets):
    """The timer site's steps along a direction, timed in a session of their own: on the
    sample they are part of the calibration, on all rows they cost the sessions only
    (the steps' vectors stay in the home DC)."""
    from geodml.planning.calibration import STEP_REPEATS, full_steps, time_steps

    result, _ = calibrated
    assert "steps timed" in result.estimate(GEO.name).basis
    sites = Sites(datasets)
    lam = 1.0 / (len(REGIONS) * ROWS)
    with sites() as fed:
        seconds = time_steps(fed, HOME, "logistic", lam)
        steps = [r for r in fed.meter.rounds if r.call == "Evaluate"]
    assert seconds > 0 and len(steps) == 1 + STEP_REPEATS + 1  # a point, one untimed step
    assert all(set(r.links) == {f"{HOME}->{HOME} (local down)", f"{HOME}->{HOME} (local up)"}
               for r in steps)
    full, wan = full_steps(sites, GEO, Workload(gtol=GTOL), lam, HOME)
    assert full is not None and full > 0
    assert 0 < wan < 4096  # Prepare and Close to the other sites, no vector
    masked = full_steps(sites, GeoVariant("sqm-lbfgs", secure=True), Workload(), lam, HOME)
    assert masked == (None, 0)  # masked sums need every site: not timed, the pass's growth


def test_a_short_timing_of_the_solver_names_what_its_curvature_pairs_cost(
        datasets, monkeypatch):
    """Twelve iterations hold 1-11 of the solver's pairs; a run to gtol holds up to m
    (at 2^20 features their two-loop recursion is half an iteration): the timing
    reports the two-loop's seconds per pair, the memory and the pairs it held."""
    import geodml.site.procedures as procedures
    from geodml.optim.lbfgs import default_memory
    from geodml.planning.calibration import central_iterations
    from geodml.planning.central_time import pairs_held

    timed_pairs: list[int] = []
    monkeypatch.setattr(procedures, "two_loop_seconds",  # 1 s however many pairs
                        lambda d, pairs: timed_pairs.append(pairs) or 1.0)
    sites = Sites(datasets)
    lam = 1.0 / (len(REGIONS) * ROWS)
    short = central_iterations(sites, Workload(gtol=GTOL), lam, 0.5, HOME, max_iter=6)
    memory = default_memory(datasets[HOME].n_features)
    assert short["memory"] == memory and 1 <= timed_pairs[-1] <= memory
    assert short["pair_seconds"] == pytest.approx(1.0 / timed_pairs[-1])
    assert short["held_pairs"] == np.median(
        [min(k - 1, memory) for k in range(2, short["iterations"] + 1)])
    full = central_iterations(sites, Workload(gtol=GTOL), lam, 0.5, HOME)
    assert full["pair_seconds"] == 0.0  # a run to gtol is timed as it ran
    # a run reads sum_k min(k - 1, m) pairs: 0 + 1 + 2 up to I = 3, then m per iteration
    assert pairs_held(3, 16) == 3 and pairs_held(17, 16) == 136
    assert pairs_held(20, 16) == 136 + 3 * 16 and pairs_held(1, 16) == 0


def test_the_centralized_solvers_iterations_span_the_pooled_spread(datasets):
    """The home DC's sample predicts the pooled run's iterations to within 0.74-1.64x
    (both grids): the range is at least that wide, and the training grows with the
    nonzeros and the iterations."""
    from geodml.planning.central_time import (
        POOLED_SPREAD,
        CalibrationPlan,
        _solver_iterations,
    )

    sites = Sites(datasets)
    nnz = datasets[HOME].X.nnz
    (low, point, high), training, basis, spent = _solver_iterations(
        sites, Workload(gtol=GTOL), 1.0 / (len(REGIONS) * ROWS),
        CalibrationPlan("always", 0.5, 1), HOME, nnz)
    assert low <= point * math.exp(-POOLED_SPREAD[0]) * (1 + 1e-9)
    assert high >= point * math.exp(POOLED_SPREAD[1]) * (1 - 1e-9)
    assert 0 < training(point, nnz) <= training(point, len(REGIONS) * nnz)
    assert training(point, nnz) < training(high, nnz)
    assert f"{point:.0f} L-BFGS iterations (the solver on {HOME}'s sample" in basis
    assert 0 < spent < 2048 * 8  # sessions only: the rows and vectors stay home


def test_local_minimize_in_the_diagonal_metric_reaches_the_same_minimizer(datasets):
    """The procedure behind the solver's calibration: its metric changes the path, not
    the answer."""
    import numpy as np

    sites = Sites(datasets)
    results = {}
    with sites() as fed:
        fed.prepare("logistic", 1.0 / ROWS, restrict_to_support=False)
        for kind in ("none", "diag"):
            (w, info, _), = fed.local_solve(
                "local_minimize", {"max_iter": 3000, "gtol": 1e-8, "precondition": kind},
                [np.zeros(fed.n_features)], sites=[HOME])
            results[kind] = (w, info)
    (w_none, none), (w_diag, diag) = results["none"], results["diag"]
    assert none["converged"] and diag["converged"]
    assert diag["objective"] == pytest.approx(none["objective"], rel=1e-7)
    assert np.linalg.norm(w_diag - w_none) <= 0.01 * np.linalg.norm(w_none)
    assert diag["iterations"] < none["iterations"]
