"""The WAN model (time and egress) and the deployment file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from geodml.data import load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import ConfigError
from geodml.federation import AuditLog, Federation
from geodml.federation.meter import audit_rounds, read_audit
from geodml.planning.deployment import Deployment, load_deployment, parse_deployment
from geodml.planning.regions import REGIONS, LinkModel, default_link, find_region
from geodml.planning.wan import (
    egress_usd,
    model_centralized,
    model_run,
    parse_link_name,
    round_seconds,
    transfer_seconds,
)
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

DCS = ("us-east", "eu-west", "ap-south", "sa-east")
RTT = {"eu-west": 80.0, "ap-south": 200.0, "sa-east": 120.0}
PRICE_UP = {"eu-west": 0.02, "ap-south": 0.086, "sa-east": 0.138}

EXAMPLE = """
home = "us-east"
home_ingress_mbps = 2000

[[sites]]
name = "us-east"
region = "aws:us-east-1"
data = "data/us-east"

[[sites]]
name = "eu-west"
region = "eu-west-1"
address = "eu-west.example.com:7001"

[[sites]]
name = "ap-south"
region = "ap-south"

[[sites]]
name = "sa-east"
region = "my-dc"

[regions.my-dc]
area = "br"
egress_usd_per_gb = 0.05

[[links]]
src = "us-east"
dst = "ap-south"
bandwidth_mbps = 300
rtt_ms = 190
egress_usd_per_gb = 0.03
"""


def explicit(bandwidth: float = 100.0, ingress: float | None = None) -> Deployment:
    """us-east home; every link explicit: ``bandwidth`` Mbit/s, RTT[s], $0.02 down."""
    links = []
    for s in RTT:
        links.append({"src": "us-east", "dst": s, "bandwidth_mbps": bandwidth,
                      "rtt_ms": RTT[s], "egress_usd_per_gb": 0.02})
        links.append({"src": s, "dst": "us-east", "bandwidth_mbps": bandwidth,
                      "rtt_ms": RTT[s], "egress_usd_per_gb": PRICE_UP[s]})
    return parse_deployment({"home": "us-east", "home_ingress_mbps": ingress,
                             "sites": [{"name": n} for n in DCS], "links": links})


# -- formulas ------------------------------------------------------------------------


def test_transfer_seconds_is_half_rtt_plus_serialization():
    link = LinkModel(bandwidth_mbps=100.0, rtt_ms=80.0, egress_usd_per_gb=0.02)
    # 0.04 s latency + 12.5e6 bytes * 8 / 1e8 bit/s = 1 s
    assert transfer_seconds(12_500_000, link) == pytest.approx(1.04)
    assert transfer_seconds(0, link) == 0.0  # nothing sent: no latency either


def test_a_round_is_the_slowest_site_path_plus_compute():
    dep = explicit(bandwidth=100.0)
    per_link = {
        "us-east->eu-west": 1_250_000, "eu-west->us-east": 1_250_000,  # 0.04+0.1, twice
        "us-east->ap-south": 125_000, "ap-south->us-east": 125_000,  # 0.1+0.01, twice
        "us-east->sa-east": 0, "sa-east->us-east": 2_500_000,  # 0 + 0.06+0.2
        "us-east->us-east (local down)": 10**9, "us-east->us-east (local up)": 10**9,
    }
    # paths: eu-west 0.28, ap-south 0.22, sa-east 0.26; local links are free
    assert round_seconds(per_link, dep) == pytest.approx(0.28)
    assert round_seconds(per_link, dep, compute_seconds=0.5) == pytest.approx(0.78)
    assert round_seconds({}, dep, compute_seconds=0.5) == 0.5
    # links of different sites are in parallel: the max, not the sum
    only_ap = {k: v for k, v in per_link.items() if "ap-south" in k}
    only_eu = {k: v for k, v in per_link.items() if "eu-west" in k}
    both = {**only_ap, **only_eu}
    assert round_seconds(both, dep) == pytest.approx(
        max(round_seconds(only_ap, dep), round_seconds(only_eu, dep)))


def test_egress_is_billed_to_the_source_dc():
    dep = explicit()
    per_link = {"us-east->eu-west": 2 * 10**9, "eu-west->us-east": 10**9,
                "sa-east->us-east": 5 * 10**8, "us-east->us-east (local up)": 10**12}
    expected = 2 * 0.02 + 1 * 0.02 + 0.5 * 0.138
    assert egress_usd(per_link, dep) == pytest.approx(expected)


def test_model_run_sums_rounds_and_reports_per_link():
    dep = explicit(bandwidth=100.0)
    r1 = {"us-east->eu-west": 1_250_000, "eu-west->us-east": 1_250_000}
    r2 = {"us-east->ap-south": 125_000, "ap-south->us-east": 125_000,
          "us-east->eu-west": 1_250_000, "eu-west->us-east": 0}
    run = model_run([r1, r2], dep, compute_seconds_per_round=[0.1, 0.2])
    # r1: 0.14 + 0.14 + 0.1; r2: max(0.11 + 0.11, 0.14 + 0) + 0.2
    assert run.round_seconds == pytest.approx([0.38, 0.42])
    assert run.seconds == pytest.approx(0.80)
    assert run.rounds == 2
    assert run.wan_bytes == 3 * 1_250_000 + 250_000
    assert run.per_link["us-east->eu-west"]["bytes"] == 2_500_000
    assert run.per_link["us-east->eu-west"]["seconds"] == pytest.approx(0.28)
    assert run.usd == pytest.approx((3_750_000 * 0.02 + 125_000 * 0.02 + 125_000 * 0.086) / 1e9)
    with pytest.raises(ValueError, match="3 compute times for 2 rounds"):
        model_run([r1, r2], dep, compute_seconds_per_round=[0.1, 0.2, 0.3])


def test_centralized_exports_in_parallel_limited_by_home_ingress():
    exports = {"us-east": 10**10, "eu-west": 10**9, "ap-south": 5 * 10**8,
               "sa-east": 2 * 10**8}
    # per link: rtt/2 + 8 b / 1e9 (1,000 Mbit/s): 8.04, 4.1, 1.66 s
    fast = model_centralized(exports, explicit(bandwidth=1000.0), train_seconds=3.0)
    assert fast.seconds == pytest.approx(8.04 + 3.0)
    assert fast.wan_bytes == 17 * 10**8  # the home site's own data does not cross the WAN
    assert fast.usd == pytest.approx(1 * 0.02 + 0.5 * 0.086 + 0.2 * 0.138)
    # a 1,000 Mbit/s home ingress: 8 * 1.7e9 / 1e9 = 13.6 s beats the slowest link
    limited = model_centralized(exports, explicit(bandwidth=1000.0, ingress=1000.0), 3.0)
    assert limited.seconds == pytest.approx(13.6 + 3.0)
    assert limited.usd == pytest.approx(fast.usd)
    # a generous ingress leaves the slowest link as the limit
    wide = model_centralized(exports, explicit(bandwidth=1000.0, ingress=10**5), 3.0)
    assert wide.seconds == pytest.approx(fast.seconds)


def test_link_names_parse_like_the_meter_writes_them():
    assert parse_link_name("us-east->eu-west") == ("us-east", "eu-west", False)
    assert parse_link_name("us-east->us-east (local down)") == ("us-east", "us-east", True)
    with pytest.raises(ValueError, match="not a link name"):
        parse_link_name("us-east")


# -- region table --------------------------------------------------------------------


def test_region_lookup_accepts_bare_names_clouds_and_demo_aliases():
    assert find_region("us-east") is REGIONS["aws:us-east-1"]
    assert find_region("AWS:eu-west-1") is REGIONS["aws:eu-west-1"]
    assert find_region("westeurope") is REGIONS["azure:westeurope"]
    assert find_region("ap-south").name == "ap-south-1"
    assert find_region("sa-east").name == "sa-east-1"
    assert find_region("mars-north-1") is None


def test_default_links_follow_the_table():
    aws_use, aws_euw = REGIONS["aws:us-east-1"], REGIONS["aws:eu-west-1"]
    aws_aps, aws_sae = REGIONS["aws:ap-south-1"], REGIONS["aws:sa-east-1"]
    assert default_link(aws_use, aws_euw) == LinkModel(500.0, 80.0, 0.02)
    assert default_link(aws_aps, aws_use) == LinkModel(250.0, 190.0, 0.086)
    assert default_link(aws_sae, aws_use).egress_usd_per_gb == 0.138
    assert default_link(aws_use, aws_use) == LinkModel(5000.0, 1.0, 0.0)
    # same area: 1,000 Mbit/s, 20 ms; GCP prices by continent; cross-cloud is internet
    gcp_use, gcp_euw = REGIONS["gcp:us-east1"], REGIONS["gcp:europe-west1"]
    assert default_link(aws_use, REGIONS["azure:eastus"]) == LinkModel(1000.0, 20.0, 0.09)
    assert default_link(gcp_use, gcp_euw).egress_usd_per_gb == 0.05
    assert default_link(gcp_euw, REGIONS["gcp:europe-west3"]).egress_usd_per_gb == 0.02
    for a in REGIONS.values():  # every pair has an RTT, symmetric
        for b in REGIONS.values():
            assert default_link(a, b).rtt_ms == default_link(b, a).rtt_ms


# -- deployment files ----------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    return path


def test_example_deployment_loads_with_explicit_table_and_custom_links(tmp_path):
    dep = load_deployment(write(tmp_path, EXAMPLE))
    assert dep.home == "us-east" and dep.home_ingress_mbps == 2000
    assert dep.site("us-east").data == (tmp_path / "data/us-east").resolve()
    ap = dep.link("us-east", "ap-south")  # explicit
    assert (ap.bandwidth_mbps, ap.rtt_ms, ap.egress_usd_per_gb) == (300, 190, 0.03)
    back = dep.link("ap-south", "us-east")  # from the table
    assert (back.bandwidth_mbps, back.rtt_ms, back.egress_usd_per_gb) == (250, 190, 0.086)
    sa = dep.link("sa-east", "us-east")  # a custom region: its own price, its area's RTT
    assert (sa.rtt_ms, sa.egress_usd_per_gb) == (120, 0.05)
    assert dep.link("us-east", "eu-west").rtt_ms == 80


def test_defaults_replace_table_values_but_not_explicit_links(tmp_path):
    dep = load_deployment(write(tmp_path, EXAMPLE + "\n[defaults]\nbandwidth_mbps = 400\n"))
    assert dep.link("us-east", "eu-west").bandwidth_mbps == 400
    assert dep.link("us-east", "eu-west").rtt_ms == 80
    assert dep.link("us-east", "ap-south").bandwidth_mbps == 300


@pytest.mark.parametrize(("change", "field", "message"), [
    (('dst = "ap-south"', 'dst = "ap-nowhere"'), "links.0.dst", "unknown site 'ap-nowhere'"),
    (("bandwidth_mbps = 300", "bandwidth_mbps = -5"), "links.0.bandwidth_mbps",
     "greater than 0"),
    (('home = "us-east"\n', ""), "home", "Field required"),
    (('home = "us-east"', 'home = "moon"'), "home", "unknown site 'moon'"),
    (('name = "sa-east"', 'name = "eu-west"'), "sites.3.name",
     "duplicate site name 'eu-west' (also sites.1.name)"),
    (('region = "ap-south"', 'region = "mars-north-1"'), "sites.2.region",
     "unknown region 'mars-north-1' and there is no explicit link ap-south->us-east"),
    (('dst = "ap-south"', 'dst = "us-east"'), "links.0.dst",
     "a link from site 'us-east' to itself"),
    (('area = "br"', 'area = "moon"'), "regions.my-dc.area", "unknown area 'moon'"),
    (("rtt_ms = 190", "rtt_ms = 190\nlatency = 3"), "links.0.latency",
     "Extra inputs are not permitted"),
])
def test_deployment_errors_name_the_file_and_the_field(tmp_path, change, field, message):
    old, new = change
    assert old in EXAMPLE
    path = write(tmp_path, EXAMPLE.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_deployment(path)
    text = str(err.value)
    assert text.startswith(f"{path}: invalid deployment")
    assert f"  {field}: " in text and message in text, text


def test_an_unknown_region_is_fine_when_the_links_are_explicit(tmp_path):
    links = "".join(
        f'\n[[links]]\nsrc = "{a}"\ndst = "{b}"\nbandwidth_mbps = 50\nrtt_ms = 300\n'
        f"egress_usd_per_gb = 0.1\n" for a, b in (("us-east", "sa-east"), ("sa-east", "us-east")))
    dep = load_deployment(write(tmp_path, EXAMPLE.replace('region = "my-dc"', "") + links))
    assert dep.link("sa-east", "us-east").bandwidth_mbps == 50
    with pytest.raises(ConfigError, match="site 'sa-east' has no region and there is no "
                                          "explicit link sa-east->eu-west"):
        dep.link("sa-east", "eu-west")
    with pytest.raises(ConfigError, match="unknown site 'xx'"):
        dep.link("xx", "us-east")


def test_missing_and_malformed_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_deployment(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_deployment(write(tmp_path, "home = "))


# -- a real federation's audit log ---------------------------------------------------


@pytest.fixture(scope="module")
def regional(tmp_path_factory):
    out = tmp_path_factory.mktemp("wan_regional")
    write_regional(RegionalCTRConfig(regions=DCS, rows_per_region=300, test_rows_per_region=50,
                                     hash_bits=10, seed=5), out)
    return site_dirs(out)


def test_modeling_the_metered_rounds_matches_the_meter_and_the_hand_formula(regional, tmp_path):
    """The federation's meter numbers the rounds; an audit log of the same run (read
    back, as for a run in another process) gives the same rounds."""
    audit = AuditLog(tmp_path / "audit.jsonl")
    services = [SiteService(n, n, load_dataset(p)) for n, p in regional.items()]
    fed = Federation([InProcessTransport(s) for s in services], home="us-east", audit=audit)
    with fed:
        fed.prepare("logistic", 1e-3)
        w = np.random.default_rng(0).standard_normal(fed.n_features) * 0.01
        for k in range(3):
            fed.evaluate(w * (k + 1))
    snapshot = fed.meter.snapshot()
    records = read_audit(tmp_path / "audit.jsonl")
    metered = fed.meter.rounds
    assert [(r.round, r.call, r.links) for r in metered] == [
        (r.round, r.call, r.links) for r in audit_rounds(records)]
    dep = explicit(bandwidth=100.0)
    run = model_run(metered, dep, compute_seconds_per_round=0.01)

    assert run.wan_bytes == snapshot["wan_bytes"] > 0
    for name, v in snapshot["links"].items():
        if v["wan"]:
            assert run.per_link[name]["bytes"] == v["bytes"]
        else:
            assert name not in run.per_link

    # by hand: Describe, Prepare, 3 Evaluates, Close; per site down + up, max over sites
    calls = ["Describe", "Prepare", "Evaluate", "Evaluate", "Evaluate", "Close"]
    assert [r.call for r in metered] == calls and len(calls) == run.rounds
    assert [r.round for r in metered] == [None, None, 1, 2, 3, None]
    expected = 0.0
    for i, call in enumerate(calls):
        ours = [r for r in records if r["call"] == call]
        if call == "Evaluate":
            ours = [r for r in ours if r["round"] == sorted({r["round"] for r in ours})[i - 2]]
        assert len(ours) == 2 * len(DCS)  # every site, both directions
        paths = []
        for site in RTT:
            nbytes = [r["bytes"] for r in ours if r["site"] == site]
            paths.append(sum(RTT[site] / 2000 + 8 * b / 100e6 for b in nbytes if b > 0))
        expected += max(paths) + 0.01
    assert run.seconds == pytest.approx(expected, rel=1e-12)
    usd = sum(r["bytes"] / 1e9 * (PRICE_UP[r["site"]] if r["direction"] == "up" else 0.02)
              for r in records if r["wan"])
    assert run.usd == pytest.approx(usd, rel=1e-12)
    assert math.isfinite(run.seconds) and run.seconds > 6 * 0.01 + 0.2
