"""Partitioning one dataset into site directories: iid, dirichlet, by-column."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from geodml.cli.partition_cmd import partition
from geodml.data.dataset import Dataset, FeatureSpace
from geodml.data.partition import (
    PartitionSpec,
    assign_greedy,
    partition_source,
    read_manifest,
    site_dirs,
)
from geodml.data.source import DatasetSource, KeySpec
from geodml.data.store import load_dataset, save_dataset
from geodml.errors import ConfigError


def _toy(n: int = 3000, d: int = 20, pos: float = 0.3, seed: int = 0) -> DatasetSource:
    """Random sparse rows with exactly representable values, labels and keys a..e."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.3, format="csr", random_state=rng,
                  data_rvs=lambda k: rng.integers(1, 9, k) / 4)
    y = (rng.random(n) < pos).astype(np.float64)
    keys = rng.choice(np.array(list("abcde")), size=n, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    return DatasetSource(Dataset(X.astype(np.float32), y, FeatureSpace(d)), keys, path="toy")


def _rows(X: sp.csr_matrix, y: np.ndarray) -> np.ndarray:
    """Rows as a lexicographically sorted dense array [y | X] (order-free comparison)."""
    a = np.hstack([y[:, None], X.toarray()])
    return a[np.lexsort(a.T[::-1])]


def _sites(out) -> dict[str, Dataset]:
    return {name: load_dataset(path) for name, path in site_dirs(out).items()}


def _same_data(a: Dataset, b: Dataset) -> bool:
    return a.X.shape == b.X.shape and (a.X != b.X).nnz == 0 and np.array_equal(a.y, b.y)


def test_iid_reproducible_by_seed_and_independent_of_chunk_size(tmp_path):
    src = _toy()
    spec = PartitionSpec("iid", k=3, seed=7)
    m1 = partition_source(src, tmp_path / "a", spec, chunk_rows=1000)
    m2 = partition_source(src, tmp_path / "b", spec, chunk_rows=77)
    partition_source(src, tmp_path / "c", PartitionSpec("iid", k=3, seed=8))
    assert [s["rows"] for s in m1["sites"]] == [s["rows"] for s in m2["sites"]]
    a, b, c = _sites(tmp_path / "a"), _sites(tmp_path / "b"), _sites(tmp_path / "c")
    assert list(a) == ["site0", "site1", "site2"]
    assert all(_same_data(a[n], b[n]) for n in a)
    assert not all(_same_data(a[n], c[n]) for n in a)
    # roughly balanced
    assert all(abs(s["rows"] - 1000) < 120 for s in m1["sites"])


@pytest.mark.parametrize(
    "spec",
    [
        PartitionSpec("iid", k=4, seed=1),
        PartitionSpec("dirichlet", k=5, alpha=0.3, seed=2),
        PartitionSpec("by-column", key=KeySpec(column="key")),
        PartitionSpec("by-column", k=2, key=KeySpec(column="key")),
    ],
    ids=["iid", "dirichlet", "by-column", "by-column-greedy"],
)
def test_union_of_sites_is_the_source_exactly(tmp_path, spec):
    src = _toy()
    manifest = partition_source(src, tmp_path, spec, chunk_rows=500)
    parts = list(_sites(tmp_path).values())
    X = sp.vstack([p.X for p in parts], format="csr")
    y = np.concatenate([p.y for p in parts])
    assert np.array_equal(_rows(X, y), _rows(src.data.X, src.data.y))
    assert manifest["rows"] == 3000 and manifest["positives"] == src.data.positives


def test_sites_keep_source_row_order(tmp_path):
    src = _toy(n=500)
    partition_source(src, tmp_path, PartitionSpec("by-column", key=KeySpec(column="key")),
                     chunk_rows=64)
    for name, d in _sites(tmp_path).items():
        expected = src.data.take(np.flatnonzero(src.keys == name))
        assert _same_data(d, expected)


def test_dirichlet_label_skew_grows_as_alpha_shrinks(tmp_path):
    src = _toy(n=20_000, pos=0.3)

    def rates(alpha: float, out: str) -> np.ndarray:
        m = partition_source(src, tmp_path / out, PartitionSpec("dirichlet", k=4, alpha=alpha,
                                                                seed=3))
        return np.array([s["positives"] / max(s["rows"], 1) for s in m["sites"]
                         if s["rows"] > 200])

    skewed, even = rates(0.1, "small"), rates(1000.0, "large")
    assert skewed.max() - skewed.min() > 0.3
    assert even.max() - even.min() < 0.05
    m = read_manifest(tmp_path / "small")
    p = m["parameters"]["class_proportions"]
    assert set(p) == {"0", "1"} and all(abs(sum(v) - 1) < 1e-5 for v in p.values())


def test_dirichlet_needs_integer_labels(tmp_path):
    src = _toy(n=100)
    src.data.y[17] = 0.25
    with pytest.raises(ConfigError, match=r"row 18 has label 0.25"):
        partition_source(src, tmp_path, PartitionSpec("dirichlet", k=2))
    assert not (tmp_path / "manifest.json").exists()


def test_by_column_with_mapping(tmp_path):
    src = _toy()
    spec = PartitionSpec("by-column", key=KeySpec(column="key"),
                         mapping={"a": "west", "b": "west", "c": "east", "d": "east",
                                  "e": "north"})
    m = partition_source(src, tmp_path, spec)
    counts = {v: int(np.sum(src.keys == v)) for v in "abcde"}
    by_name = {s["name"]: s for s in m["sites"]}
    assert list(by_name) == ["west", "east", "north"]
    assert by_name["west"]["rows"] == counts["a"] + counts["b"]
    assert by_name["east"]["rows"] == counts["c"] + counts["d"]
    assert by_name["west"]["keys"] == ["a", "b"] and by_name["north"]["keys"] == ["e"]
    assert m["parameters"]["mapping"]["c"] == "east"


def test_by_column_index_mapping_and_other_site(tmp_path):
    src = _toy()
    spec = PartitionSpec("by-column", k=3, key=KeySpec(column="key"),
                         mapping={"a": 0, "b": 1}, other=2)
    m = partition_source(src, tmp_path, spec)
    assert [s["name"] for s in m["sites"]] == ["site0", "site1", "site2"]
    assert m["sites"][2]["keys"] == ["c", "d", "e"]
    assert m["sites"][0]["rows"] == int(np.sum(src.keys == "a"))


def test_unknown_key_is_an_error_naming_the_value(tmp_path):
    src = _toy()
    spec = PartitionSpec("by-column", key=KeySpec(column="key"),
                         mapping={"a": "x", "b": "x", "c": "y", "d": "y"})
    first_e = int(np.flatnonzero(src.keys == "e")[0]) + 1
    with pytest.raises(ConfigError, match=rf"row {first_e} has partition key 'e'.*--other"):
        partition_source(src, tmp_path, spec, chunk_rows=100)
    assert not (tmp_path / "manifest.json").exists()


def test_by_column_without_mapping_balances_greedily(tmp_path):
    assert assign_greedy({"a": 10, "b": 7, "c": 5, "d": 4, "e": 1}, 2) == [
        ["a", "d"], ["b", "c", "e"]]
    assert assign_greedy({"x": 3, "y": 3, "z": 3}, 3) == [["x"], ["y"], ["z"]]
    with pytest.raises(ConfigError, match="only 2 distinct"):
        assign_greedy({"x": 1, "y": 1}, 3)
    src = _toy()
    m = partition_source(src, tmp_path, PartitionSpec("by-column", k=2, key=KeySpec(column="k")))
    counts = {v: int(np.sum(src.keys == v)) for v in "abcde"}
    expected = assign_greedy(counts, 2)
    assert [s["keys"] for s in m["sites"]] == [sorted(g) for g in expected]
    assert m["parameters"]["key_counts"] == counts


def test_by_column_one_site_per_value(tmp_path):
    src = _toy()
    m = partition_source(src, tmp_path, PartitionSpec("by-column", key=KeySpec(column="k")))
    assert [s["name"] for s in m["sites"]] == list("abcde")
    assert [s["rows"] for s in m["sites"]] == [int(np.sum(src.keys == v)) for v in "abcde"]


def test_manifest_numbers_equal_reloaded_data(tmp_path):
    src = _toy()
    m = partition_source(src, tmp_path, PartitionSpec("iid", k=3, seed=0))
    assert m == read_manifest(tmp_path)
    assert m["feature_space_fingerprint"] == src.space.fingerprint()
    assert m["source"] == "toy" and m["scheme"] == "iid"
    assert m["parameters"] == {"k": 3, "seed": 0}
    for s in m["sites"]:
        d = load_dataset(tmp_path / s["path"])
        assert (s["rows"], s["positives"], s["nnz"]) == (d.n_rows, d.positives, d.nnz)
        assert s["bytes"] == sum(f.stat().st_size for f in (tmp_path / s["path"]).iterdir())
        assert d.space == src.space


def test_refuses_to_overwrite_an_earlier_partition(tmp_path):
    src = _toy(n=200)
    partition_source(src, tmp_path, PartitionSpec("by-column", key=KeySpec(column="k")))
    with pytest.raises(ConfigError, match="already holds a partition"):
        partition_source(src, tmp_path, PartitionSpec("iid", k=2))
    m = partition_source(src, tmp_path, PartitionSpec("iid", k=2), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "site0", "site1"]
    assert m["rows"] == 200


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scheme": "iid"}, "needs the number of sites"),
        ({"scheme": "dirichlet", "k": 2, "alpha": 0.0}, "alpha"),
        ({"scheme": "by-column"}, "needs a partition key"),
        ({"scheme": "iid", "k": 2, "key": KeySpec(column="c")}, "takes no partition key"),
        ({"scheme": "shuffle", "k": 2}, "scheme"),
    ],
)
def test_invalid_specs(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PartitionSpec(**kwargs)


def test_cli_on_a_geodml_dataset_directory(tmp_path):
    src = _toy(n=1000)
    save_dataset(tmp_path / "ds", src.data)
    result = CliRunner().invoke(
        partition, [str(tmp_path / "ds"), str(tmp_path / "out"), "--scheme", "iid", "-k", "2",
                    "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "site0" in result.output and "total" in result.output
    m = read_manifest(tmp_path / "out")
    assert m["rows"] == 1000 and len(m["sites"]) == 2

    result = CliRunner().invoke(
        partition, [str(tmp_path / "ds"), str(tmp_path / "out2"), "--scheme", "by-column",
                    "--column", "x"])
    assert result.exit_code == 1
    assert "stores no per-row partition keys" in result.output
    assert "Traceback" not in result.output

    result = CliRunner().invoke(
        partition, [str(tmp_path / "ds"), str(tmp_path / "out3"), "--scheme", "by-column",
                    "--column", "x", "--onehot", "a,b"])
    assert result.exit_code == 1 and "exactly one key" in result.output
