"""Every file in ../shared/datasets parses with the numbers PROVENANCE.md states.

Rows, positives and feature counts come from PROVENANCE.md (nnz from its STATS.json
for the LIBSVM files); each test skips when the shared datasets are absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from geodml.data.readers import COVTYPE_WILDERNESS, open_source, read_dataset
from geodml.data.source import KeySpec, read_all

from .conftest import shared_path

IPINYOU_D = 133_465

# file, reader options, rows, positives, n_features, nnz (None: not stated)
LIBSVM = [
    ("libsvm/a9a", {"n_features": 123}, 32_561, 7_841, 123, 451_592),
    ("libsvm/a9a.t", {"n_features": 123}, 16_281, 3_846, 123, 225_731),
    ("libsvm/w8a", {"n_features": 300}, 49_749, 1_479, 300, 579_586),
    ("libsvm/a8a", {"n_features": 123}, 22_696, 5_506, 123, 314_815),
    ("ipinyou_deepctr/train.fm.txt", {"n_features": IPINYOU_D, "zero_based": True},
     26_773, 255, IPINYOU_D, 16 * 26_773),
    ("ipinyou_deepctr/test.fm.txt", {"n_features": IPINYOU_D, "zero_based": True},
     21_150, 50, IPINYOU_D, 16 * 21_150),
]


@pytest.mark.parametrize(("rel", "opts", "rows", "pos", "d", "nnz"), LIBSVM,
                         ids=[c[0] for c in LIBSVM])
def test_libsvm_files(rel, opts, rows, pos, d, nnz):
    data = read_dataset(shared_path(rel), "libsvm", **opts)
    assert (data.n_rows, data.positives, data.n_features, data.nnz) == (rows, pos, d, nnz)
    assert set(np.unique(data.y)) == {0.0, 1.0}


def test_a9a_inferred_space_is_123_features():
    src = open_source(shared_path("libsvm/a9a"), "libsvm")
    assert src.n_features == 123 and not src.zero_based


def test_ipinyou_region_keys():
    d = shared_path("ipinyou_deepctr")
    src = open_source(d / "train.fm.txt", "libsvm", n_features=IPINYOU_D, zero_based=True,
                      featindex=d / "featindex.fm.txt")
    data, keys = read_all(src, KeySpec(feature_prefix="region:"))
    assert "" not in set(keys)  # every row has exactly one region feature
    assert len(set(keys)) == 34
    top = keys == "region:216"
    assert (int(top.sum()), int(data.y[top].sum())) == (5_774, 61)


# file, reader options, rows, positives, numeric fields, categorical fields
TABLES = [
    ("adult_uci/adult.data", {"preset": "adult"}, 32_561, 7_841, 6, 8),
    ("adult_uci/adult.test", {"preset": "adult", "skip_rows": 1}, 16_281, 3_846, 6, 8),
    ("airline_allyears2k/allyears2k_headers.csv", {"preset": "airline"}, 43_978, 23_091, 8, 5),
    ("chicago_taxi/chicago_taxi_big_tipper.csv", {"preset": "taxi"}, 15_002, 3_374, 7, 9),
    ("avazu/avazu_train_head9k.csv", {"preset": "avazu"}, 8_999, 1_563, 0, 22),
    ("avazu/avazu_train_next1k_noheader.csv", {"preset": "avazu"}, 1_000, 143, 0, 22),
    ("covtype_20k/covtype.20k.data", {"preset": "covtype"}, 20_000, 6_022, 54, 0),
    ("higgs_lightgbm/binary.train", {"preset": "higgs"}, 7_000, 3_716, 28, 0),
    ("higgs_lightgbm/binary.test", {"preset": "higgs"}, 500, 272, 28, 0),
]


@pytest.mark.parametrize(("rel", "opts", "rows", "pos", "n_num", "n_cat"), TABLES,
                         ids=[c[0] for c in TABLES])
def test_table_files(rel, opts, rows, pos, n_num, n_cat):
    data = read_dataset(shared_path(rel), "csv", **opts)
    assert (data.n_rows, data.positives) == (rows, pos)
    kinds = [f.kind for f in data.space.fields]
    assert (kinds.count("numeric"), kinds.count("categorical")) == (n_num, n_cat)
    assert data.nnz <= rows * (n_num + n_cat)
    assert np.all(np.isfinite(data.X.data))


def test_criteo_file():
    data = read_dataset(shared_path("criteo_dac/criteo_kaggle_train_head10k.tsv"), "criteo")
    assert (data.n_rows, data.positives) == (10_000, 2_182)
    assert data.n_features == 13 + 2**18 and len(data.space.fields) == 39
    # at most one entry per non-empty field; 26 hashed fields collide in a row only rarely
    per_row = np.diff(data.X.indptr)
    assert per_row.max() <= 39 and per_row.mean() > 30


def test_airline_needs_latin1_and_drops_leaks():
    path = shared_path("airline_allyears2k/allyears2k_headers.csv")
    src = open_source(path, "csv", preset="airline")
    names = {f.name for f in src.space.fields}
    assert not names & {"DepDelay", "ArrDelay", "IsArrDelayed", "DepTime", "TaxiOut"}
    _, keys = read_all(src, KeySpec(column="Origin"))
    assert len(set(keys)) == 132 and int((keys == "DEN").sum()) == 3_558


def test_taxi_drops_tips_and_keys_by_area():
    src = open_source(shared_path("chicago_taxi/chicago_taxi_big_tipper.csv"), "csv",
                      preset="taxi")
    assert "tips" not in {f.name for f in src.space.fields}
    _, keys = read_all(src, KeySpec(column="pickup_community_area"))
    # PROVENANCE's "63 areas" counts the missing value as one: 62 areas plus 2 empty keys
    assert int((keys == "").sum()) == 2 and len(set(keys)) == 63
    assert int((keys == "8").sum()) == 4_908


def test_covtype_wilderness_keys():
    src = open_source(shared_path("covtype_20k/covtype.20k.data"), "csv", preset="covtype")
    data, keys = read_all(src, KeySpec(onehot=COVTYPE_WILDERNESS))
    counts = {k: int((keys == k).sum()) for k in COVTYPE_WILDERNESS}
    assert counts == {"c10": 8_477, "c11": 499, "c12": 6_349, "c13": 4_675}
    assert round(float(data.y[keys == "c10"].mean()), 3) == 0.589


def test_avazu_site_keys():
    src = open_source(shared_path("avazu/avazu_train_head9k.csv"), "csv", preset="avazu")
    _, keys = read_all(src, KeySpec(column="site_id"))
    assert len(set(keys)) == 361 and int((keys == "1fbe01fe").sum()) == 3_222
