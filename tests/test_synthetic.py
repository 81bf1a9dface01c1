"""The synthetic regional CTR generator: reproducible, shifted per region, learnable."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from geodml.cli.generate_cmd import generate
from geodml.data.partition import read_manifest, site_dirs
from geodml.data.store import load_dataset
from geodml.data.synthetic import RegionalCTRConfig, generate_region_chunks, write_regional
from geodml.errors import ConfigError

SMALL = dict(
    rows_per_region=12_000,
    test_rows_per_region=4_000,
    hash_bits=12,
    max_vocab=3_000,
    block_rows=4_096,
)


def _collect(config: RegionalCTRConfig, region, split="train", chunk_rows=None):
    chunks = list(generate_region_chunks(config, region, split, chunk_rows=chunk_rows))
    X = sp.vstack([c.X for c in chunks], format="csr")
    return X, np.concatenate([c.y for c in chunks])


def _same(a: tuple[sp.csr_matrix, np.ndarray], b: tuple[sp.csr_matrix, np.ndarray]) -> bool:
    (Xa, ya), (Xb, yb) = a, b
    return (
        Xa.shape == Xb.shape
        and np.array_equal(Xa.indptr, Xb.indptr)
        and np.array_equal(Xa.indices, Xb.indices)
        and np.array_equal(Xa.data, Xb.data)
        and np.array_equal(ya, yb)
    )


def test_reproducible_for_a_seed_and_different_for_another():
    cfg = RegionalCTRConfig(**SMALL, seed=3)
    assert _same(_collect(cfg, "eu-west"), _collect(RegionalCTRConfig(**SMALL, seed=3), 1))
    other = _collect(RegionalCTRConfig(**SMALL, seed=4), "eu-west")
    assert not _same(_collect(cfg, "eu-west"), other)


def test_rows_do_not_depend_on_chunk_size():
    cfg = RegionalCTRConfig(**SMALL)
    reference = _collect(cfg, 2)
    for chunk_rows in (1_000, 4_096, 7_777, 50_000):
        got = _collect(cfg, 2, chunk_rows=chunk_rows)
        assert _same(got, reference), chunk_rows
    sizes = [c.X.shape[0] for c in generate_region_chunks(cfg, 2, chunk_rows=5_000)]
    assert sizes == [5_000, 5_000, 2_000]


def test_rows_have_criteo_shape():
    cfg = RegionalCTRConfig(**SMALL)
    X, y = _collect(cfg, 0)
    M, F = cfg.n_numeric, cfg.n_categorical
    assert X.shape == (12_000, M + 2**12)
    assert set(np.unique(y)) <= {0.0, 1.0}
    # numeric fields are dense in columns 0..M-1; categoricals are binary and sum to F
    assert np.all(X[:, :M].getnnz(axis=1) == M)
    cat = X[:, M:]
    assert np.allclose(np.asarray(cat.sum(axis=1)).ravel(), F)
    assert X.has_sorted_indices
    # Zipf-like: the most common column of the smallest-vocabulary field is frequent
    counts = np.bincount(X.indices, minlength=X.shape[1])[M:]
    assert counts.max() > 0.1 * X.shape[0]


def test_regions_differ_in_positive_rate_and_features_but_share_the_space():
    cfg = RegionalCTRConfig(**SMALL, seed=0)
    rates, freqs = [], []
    for r in range(len(cfg.regions)):
        X, y = _collect(cfg, r)
        rates.append(y.mean())
        f = np.bincount(X.indices, minlength=X.shape[1])[cfg.n_numeric:].astype(float)
        freqs.append(f / f.sum())
    assert all(0.05 < p < 0.4 for p in rates)
    assert max(rates) - min(rates) > 0.05
    tv = [0.5 * np.abs(freqs[0] - freqs[j]).sum() for j in range(1, len(freqs))]
    assert min(tv) > 0.1

    unshifted = RegionalCTRConfig(**SMALL, seed=0, feature_shift=0.0)
    f0, f1 = (
        np.bincount(_collect(unshifted, r)[0].indices, minlength=cfg.space.n_features)
        [cfg.n_numeric:] / (12_000 * cfg.n_categorical)
        for r in (0, 1)
    )
    assert 0.5 * np.abs(f0 - f1).sum() < min(tv) / 2


def test_labels_depend_on_features():
    cfg = RegionalCTRConfig(**{**SMALL, "rows_per_region": 20_000}, seed=1)
    X, y = _collect(cfg, 0)
    Xt, yt = _collect(cfg, 0, "test")
    model = LogisticRegression(C=0.1, max_iter=300).fit(X, y)
    fitted = log_loss(yt, model.predict_proba(Xt)[:, 1])
    base = log_loss(yt, np.full(len(yt), y.mean()))
    assert fitted < 0.85 * base


def test_write_regional_manifest_and_process_independence(tmp_path):
    cfg = RegionalCTRConfig(**SMALL, regions=("a", "b", "c"), seed=5)
    manifest = write_regional(cfg, tmp_path / "all", workers=2)
    assert manifest == read_manifest(tmp_path / "all")
    assert [s["name"] for s in manifest["sites"]] == ["a", "b", "c"]
    fingerprints = set()
    for s in manifest["sites"]:
        for entry in (s, s["test"]):
            d = load_dataset(tmp_path / "all" / entry["path"])
            assert entry["rows"] == d.n_rows
            assert entry["positives"] == d.positives
            assert entry["nnz"] == d.nnz
            on_disk = sum(f.stat().st_size for f in (tmp_path / "all" / entry["path"]).iterdir())
            assert entry["bytes"] == on_disk
            fingerprints.add(d.space.fingerprint())
        assert s["rows"] == 12_000 and s["test"]["rows"] == 4_000
    assert fingerprints == {manifest["feature_space_fingerprint"]}
    assert manifest["rows"] == 36_000

    # one region written alone (another process, one thread) is the same data
    write_regional(cfg, tmp_path / "b_only", regions=["b"], workers=1)
    for split in ("train", "test"):
        a = load_dataset(site_dirs(tmp_path / "all", split)["b"])
        b = load_dataset(site_dirs(tmp_path / "b_only", split)["b"])
        assert _same((a.X, a.y), (b.X, b.y))
        X, y = _collect(cfg, "b", split)
        assert _same((a.X, a.y), (X.astype(np.float32), y))


def test_write_regional_refuses_to_overwrite_without_force(tmp_path):
    cfg = RegionalCTRConfig(**{**SMALL, "rows_per_region": 100, "test_rows_per_region": 0})
    write_regional(cfg, tmp_path)
    with pytest.raises(ConfigError, match="already holds"):
        write_regional(cfg, tmp_path)
    manifest = write_regional(cfg, tmp_path, overwrite=True)
    assert manifest["sites"][0]["test"]["rows"] == 0


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"regions": ("x", "x")}, "regions"),
        ({"feature_shift": 1.0}, "feature_shift"),
        ({"base_ctr": 0.0}, "base_ctr"),
        ({"hash_bits": 0}, "hash_bits"),
        ({"regions": ("a/b",)}, "regions"),
    ],
)
def test_invalid_config_names_the_field(bad, field):
    with pytest.raises(ConfigError, match=field):
        RegionalCTRConfig(**bad)


def test_generate_cli(tmp_path):
    out = tmp_path / "syn"
    result = CliRunner().invoke(
        generate,
        [str(out), "--regions", "north,south", "--rows", "3000", "--test-rows", "500",
         "--hash-bits", "10", "--seed", "2"],
    )
    assert result.exit_code == 0, result.output
    assert "rows/s" in result.output and "north" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["sites"]] == [3000, 3000]
    assert manifest["parameters"]["seed"] == 2
    bad = CliRunner().invoke(generate, [str(out), "--rows", "10"])
    assert bad.exit_code == 1 and "already holds" in bad.output
