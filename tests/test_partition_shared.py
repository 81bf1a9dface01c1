"""`geodml partition` on the real shared datasets reproduces PROVENANCE.md's counts."""

from __future__ import annotations

from click.testing import CliRunner

from geodml.cli.partition_cmd import partition
from geodml.data.partition import read_manifest
from geodml.data.store import load_dataset

from .conftest import shared_path


def _run(args: list[str]) -> None:
    result = CliRunner().invoke(partition, args)
    assert result.exit_code == 0, result.output


def test_covtype_by_wilderness_area(tmp_path):
    src = shared_path("covtype_20k/covtype.20k.data")
    out = tmp_path / "covtype"
    _run([str(src), str(out), "--preset", "covtype", "--scheme", "by-column",
          "--onehot", "c10,c11,c12,c13",
          "--map", "c10=WA1", "--map", "c11=WA2", "--map", "c12=WA3", "--map", "c13=WA4"])
    m = read_manifest(out)
    rows = {s["name"]: s["rows"] for s in m["sites"]}
    assert rows == {"WA1": 8477, "WA2": 499, "WA3": 6349, "WA4": 4675}
    # class 2 (Lodgepole pine) rate per area: 0.589 / 0.132 / 0.148 / 0.004
    rate = {s["name"]: s["positives"] / s["rows"] for s in m["sites"]}
    assert [round(rate[a], 3) for a in ("WA1", "WA2", "WA3", "WA4")] == [
        0.589, 0.132, 0.148, 0.004]
    assert m["positives"] == 6022
    wa2 = load_dataset(out / "WA2")
    assert wa2.n_rows == 499 and wa2.space.fingerprint() == m["feature_space_fingerprint"]
    # every row of WA2 has the one-hot column c11 (column 11) set
    assert (wa2.X[:, 11].toarray().ravel() == 1).all()


def test_airline_by_origin(tmp_path):
    src = shared_path("airline_allyears2k/allyears2k_headers.csv")
    out = tmp_path / "airline"
    _run([str(src), str(out), "--preset", "airline", "--scheme", "by-column",
          "--column", "Origin"])
    m = read_manifest(out)
    assert len(m["sites"]) == 132 and m["rows"] == 43_978
    top = [(s["name"], s["rows"]) for s in m["sites"][:8]]
    assert top == [("DEN", 3558), ("PIT", 3241), ("ORD", 2246), ("BUR", 2021),
                   ("CLT", 1781), ("PHL", 1632), ("SFO", 1544), ("LAX", 1268)]
    rate = {s["name"]: s["positives"] / s["rows"] for s in m["sites"][:4]}
    assert [round(rate[a], 3) for a in ("DEN", "PIT", "ORD", "BUR")] == [
        0.469, 0.625, 0.55, 0.366]


def test_ipinyou_by_region(tmp_path):
    root = "ipinyou_deepctr/"
    src, featindex = shared_path(root + "train.fm.txt"), shared_path(root + "featindex.fm.txt")
    out = tmp_path / "ipinyou"
    _run([str(src), str(out), "--format", "libsvm", "--n-features", "133465",
          "--featindex", str(featindex), "--scheme", "by-column", "--feature-prefix", "region:"])
    m = read_manifest(out)
    assert len(m["sites"]) == 34 and m["rows"] == 26_773 and m["positives"] == 255
    top = [(s["name"], s["rows"], s["positives"]) for s in m["sites"][:5]]
    assert top == [("region:216", 5774, 61), ("region:94", 2651, 36),
                   ("region:201", 1980, 23), ("region:124", 1401, 14),
                   ("region:80", 1384, 11)]
    assert m["sites"][0]["keys"] == ["region:216"]


def test_taxi_by_community_area_balanced_over_k_sites(tmp_path):
    src = shared_path("chicago_taxi/chicago_taxi_big_tipper.csv")
    out = tmp_path / "taxi"
    _run([str(src), str(out), "--preset", "taxi", "--scheme", "by-column",
          "--column", "pickup_community_area", "-k", "5"])
    m = read_manifest(out)
    counts = m["parameters"]["key_counts"]
    # 63 distinct values counting the missing one ("" in 2 rows): 62 areas + missing
    assert len(counts) == 63 and counts[""] == 2
    assert counts["8"] == 4908 and counts["32"] == 3303
    assert [s["rows"] for s in m["sites"]][:2] == [4908, 3303]
    assert m["sites"][0]["keys"] == ["8"] and m["rows"] == 15_002
