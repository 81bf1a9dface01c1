"""``geodml compare`` and ``geodml plan`` end to end: site processes, gRPC, a deployment file.

Four DCs (3,000 rows each, 2^10 hashed features) on loopback without TLS; eu-west's
policy forbids raw export, and a second eu-west server is granted an exception.
"""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from geodml.cli import main
from geodml.data import load_dataset
from geodml.data.dataset import Dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.federation.meter import read_audit
from geodml.planning.compare import Comparison, run_compare
from geodml.planning.connect import federation_factory
from geodml.planning.deployment import load_deployment
from geodml.planning.planner import CalibrationStore, GeoVariant, Workload, make_plan
from geodml.site.config import DataConfig, SiteConfig
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy

HOME = "us-east"
REGIONS = ("us-east", "eu-west", "ap-south", "sa-east")
FORBIDS = "eu-west"
GEO = GeoVariant("fadl-subspace")
WORKLOAD = Workload(gtol=1e-3)
EXCEPTION = f"centralize (exception for {FORBIDS})"
TABLE_HEADER = ("| plan | status | objective | log loss | AUC | WAN bytes | "
                "modeled | egress $ | wall | err bytes | err time | "
                "err $ |")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare-data")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=3000,
                                     test_rows_per_region=1000, hash_bits=10, seed=1), out)
    test = Dataset.concat([load_dataset(p) for p in site_dirs(out, "test").values()])
    return site_dirs(out), test


def _config(name: str, path, allow_export: bool) -> SiteConfig:
    return SiteConfig(name=name, region=name, insecure=True, data=DataConfig(path=path),
                      policy=Policy(allow_raw_export=allow_export))


@pytest.fixture(scope="module")
def clusters(data, tmp_path_factory):
    """The four sites, and a second eu-west server with an export exception."""
    train = data[0]
    sites = [_config(n, train[n], n != FORBIDS) for n in REGIONS]
    with LocalCluster(sites, tmp_path_factory.mktemp("sites"), insecure=True) as cluster, \
            LocalCluster([_config(FORBIDS, train[FORBIDS], True)],
                         tmp_path_factory.mktemp("sites-exception"), insecure=True) as exception:
        yield cluster, exception


@pytest.fixture(scope="module")
def deployment_file(clusters, tmp_path_factory):
    cluster, _ = clusters
    lines = [f"home = {json.dumps(HOME)}", "insecure = true  # plaintext, loopback only"]
    for n in REGIONS:
        lines += ["", "[[sites]]", f"name = {json.dumps(n)}", f"region = {json.dumps(n)}",
                  f"address = {json.dumps(cluster.sites[n].address)}"]
    path = tmp_path_factory.mktemp("deployment") / "deployment.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def comparison(data, clusters, deployment_file, tmp_path_factory) -> Comparison:
    _, exception = clusters
    dep = load_deployment(deployment_file)
    return run_compare(
        federation_factory(dep), dep, [GEO], tmp_path_factory.mktemp("report"), WORKLOAD,
        test=data[1],
        exception_federation=federation_factory(
            dep, {FORBIDS: exception.sites[FORBIDS].address}),
        exception_sites=[FORBIDS])


def test_compare_runs_every_plan_reports_and_records(comparison, deployment_file):
    c, out = comparison, comparison.out_dir
    assert [r.plan for r in c.runs] == ["centralize", EXCEPTION, GEO.name]

    # copying home is refused by eu-west, and nothing left eu-west
    refused = c.run("centralize")
    assert refused.refused_by == [FORBIDS] and not refused.permitted
    assert refused.objective is None and refused.wan_bytes == 0
    assert "PERMISSION_DENIED" in refused.messages[0]
    assert "allow_raw_export" in refused.messages[0]
    exports = [r for r in read_audit(out / refused.audit)
               if r["call"] == "Export" and r["site"] == FORBIDS and r["direction"] == "up"]
    assert exports and sum(r["bytes"] for r in exports) == 0

    # the exception run and the geo run reach the same model quality
    exc, geo = c.run(EXCEPTION), c.run(GEO.name)
    assert not exc.permitted and exc.refused_by == []  # it ran only through the exception
    assert geo.permitted and geo.converged, geo.reason
    assert exc.objective == pytest.approx(geo.objective, rel=1e-4)
    assert c.f_star == min(exc.objective, geo.objective)
    assert abs(exc.test["auc"] - geo.test["auc"]) <= 0.002
    assert geo.test["auc"] > 0.7  # a model, not a constant
    assert exc.per_link[f"{FORBIDS}->{HOME}"] > 0 and geo.per_link[f"{FORBIDS}->{HOME}"] > 0

    # the curves grow with the run: modeled time counts only the rounds done so far
    times = [p["modeled_seconds"] for p in geo.curve]
    assert times == sorted(times) and times[0] < times[-1] <= geo.modeled_seconds

    # every run that moved bytes was predicted, with a finite error
    with_bytes = [r for r in c.runs if r.wan_bytes]
    assert [r.plan for r in with_bytes] == [EXCEPTION, GEO.name]
    for r in with_bytes:
        assert isinstance(r.prediction_error, float) and math.isfinite(r.prediction_error)
        estimate = c.plan.estimate("centralize" if r.kind == "centralized" else r.plan)
        assert r.predicted_bytes == estimate.wan_bytes
        assert r.prediction_error == pytest.approx(
            (estimate.wan_bytes - r.wan_bytes) / r.wan_bytes)
        # modeled time and dollars are named errors of their own
        assert r.time_error == pytest.approx(
            (estimate.seconds - r.modeled_seconds) / r.modeled_seconds)
        if r.usd:
            assert r.usd_error == pytest.approx((estimate.usd - r.usd) / r.usd)
    assert abs(exc.prediction_error) < 0.10  # the sites' export-size estimates

    # the planner excluded centralizing and said why
    central = c.plan.estimate("centralize")
    assert not central.permitted and FORBIDS in central.why_not
    assert c.plan.recommended == GEO.name

    # the report
    for name in ("report.json", "report.md", "suboptimality_vs_bytes.png",
                 "suboptimality_vs_time.png", "bytes_per_link.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("suboptimality_vs_bytes.png", "suboptimality_vs_time.png",
                 "bytes_per_link.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in c.runs:
        assert (out / r.audit).is_file() and read_audit(out / r.audit), r.plan
    report = json.loads((out / "report.json").read_text())
    assert [r["plan"] for r in report["runs"]] == [r.plan for r in c.runs]
    assert report["plan"]["recommended"] == GEO.name
    md = (out / "report.md").read_text()
    assert TABLE_HEADER in md
    assert "## Refused" in md and refused.messages[0] in md
    assert f"| {EXCEPTION} | exception |" in md and "| centralize | refused |" in md

    # the geo run and the home DC's training (through the exception) are recorded: the
    # next plan of the same job uses them, without calibrating
    store = CalibrationStore(out / "calibration.json")
    assert len(json.loads(store.path.read_text())) == 2
    dep = load_deployment(deployment_file)
    opened = []
    factory = federation_factory(dep)

    def counting(**kw):
        opened.append(kw.get("sample_fraction", 1.0))
        return factory(**kw)

    again = make_plan(counting, dep, [GEO], WORKLOAD, calibrate_mode="always", store=store)
    estimate = again.estimate(GEO.name)
    assert estimate.basis.startswith("recorded run")
    assert opened == [1.0]  # describing the sites only
    assert estimate.wan_bytes == geo.wan_bytes and estimate.rounds == geo.rounds
    assert "recorded run" in again.estimate("centralize").basis


def test_plan_cli_writes_the_plan_as_json(deployment_file, tmp_path):
    out = tmp_path / "plan.json"
    store = tmp_path / "store.json"
    result = CliRunner().invoke(main, ["plan", str(deployment_file), "--json", str(out),
                                       "--store", str(store)])
    assert result.exit_code == 0, result.output
    plan = json.loads(out.read_text())
    assert plan["recommended"] == GEO.name
    estimates = {e["plan"]: e for e in plan["estimates"]}
    assert set(estimates) == {"centralize", GEO.name}
    assert not estimates["centralize"]["permitted"]
    assert FORBIDS in estimates["centralize"]["why_not"]
    assert estimates["centralize"]["wan_bytes"] > 0
    assert estimates[GEO.name]["permitted"] and estimates[GEO.name]["wan_bytes"] > 0
    assert estimates[GEO.name]["basis"].startswith("calibrated on")
    assert [s["site"] for s in plan["sites"]] == list(REGIONS)
    assert "recommended: fadl-subspace" in result.output


@pytest.mark.parametrize("points, basis", [
    ("2", "calibrated on 25% and 6.2% of rows ("),  # 750 of 3,000, then a quarter of it
    ("1", "calibrated on 25% of rows (one sample; measured passes; steps timed; local solves by")])
def test_plan_cli_calibrates_on_the_rows_asked_for(deployment_file, tmp_path, points, basis):
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(main, ["plan", str(deployment_file), "--json", str(out),
                                       "--store", str(tmp_path / "store.json"),
                                       "--calibrate", "always", "--calibration-rows", "750",
                                       "--calibration-points", points])
    assert result.exit_code == 0, result.output
    estimates = {e["plan"]: e for e in json.loads(out.read_text())["estimates"]}
    assert estimates[GEO.name]["basis"].startswith(basis)
    for e in estimates.values():  # every prediction has its range around it
        for quantity in ("wan_bytes", "seconds", "usd"):
            low, high = e["ranges"][quantity]
            assert low <= e[quantity] <= (math.inf if high is None else high), (e, quantity)


def _record_serial(monkeypatch) -> list[bool]:
    """The ``serial`` flag of every federation opened from now on."""
    from geodml.federation import Federation

    serial: list[bool] = []
    init = Federation.__init__

    def recording(self, *args, **kwargs):
        serial.append(kwargs.get("serial", False))
        init(self, *args, **kwargs)

    monkeypatch.setattr(Federation, "__init__", recording)
    return serial


def test_plan_cli_calibrates_one_site_at_a_time_when_asked(deployment_file, tmp_path,
                                                          monkeypatch):
    serial = _record_serial(monkeypatch)
    result = CliRunner().invoke(main, ["plan", str(deployment_file), "--serial-sites",
                                       "--calibrate", "always", "--calibration-rows", "750",
                                       "--store", str(tmp_path / "store.json")])
    assert result.exit_code == 0, result.output
    assert len(serial) > 2 and all(serial)  # describing, timing, calibrating


def test_compare_cli_calls_sites_one_at_a_time_when_asked(deployment_file, tmp_path,
                                                          monkeypatch):
    serial = _record_serial(monkeypatch)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, ["compare", str(deployment_file), "--serial-sites",
                                       "--calibrate", "never", "--out", str(out),
                                       "--store", str(tmp_path / "store.json")])
    assert result.exit_code == 0, result.output
    assert serial and all(serial)  # every federation the run opened
    report = json.loads((out / "report.json").read_text())
    geo = next(r for r in report["runs"] if r["kind"] == "geo")
    assert geo["converged"] and geo["wan_bytes"] > 0
