"""Scoring with a trained model: the Python API in scikit-learn's shapes, and
`geodml predict` / `geodml evaluate` run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy.special import expit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from geodml.data import Dataset, FeatureSpace, load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import DataError
from geodml.model import LinearModel
from geodml.scoring import calibration, expected_calibration_error

from .tools.timing import scaled


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two regions of synthetic CTR data and a logistic model fitted by scikit-learn."""
    root = tmp_path_factory.mktemp("scoring")
    write_regional(RegionalCTRConfig(regions=("a", "b"), rows_per_region=1500,
                                     test_rows_per_region=400, hash_bits=10, seed=11),
                   root / "sites")
    train = Dataset.concat([load_dataset(p) for p in site_dirs(root / "sites").values()])
    clf = LogisticRegression(C=1.0, fit_intercept=False, max_iter=500).fit(train.X, train.y)
    model = LinearModel(clf.coef_.ravel().astype(np.float64), "logistic", 1.0 / train.n_rows,
                        train.space)
    return root, model.save(root / "model.npz"), clf


def geodml(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geodml", *args], capture_output=True,
                          text=True, timeout=scaled(120), stdin=subprocess.DEVNULL)


def test_api_has_scikit_learns_shapes_and_numbers(trained):
    root, path, clf = trained
    model = LinearModel.load(path)
    test = load_dataset(site_dirs(root / "sites", "test")["a"])
    proba = model.predict_proba(test)
    assert proba.shape == (test.n_rows, 2)
    # float32 data: margins agree to float32 precision
    np.testing.assert_allclose(proba, clf.predict_proba(test.X), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.decision_function(test), clf.decision_function(test.X),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.predict(test), clf.predict(test.X))
    np.testing.assert_array_equal(model.classes_, clf.classes_)
    # a plain matrix of the model's width works too (no feature space to compare)
    assert model.predict_proba(test.X.toarray()[:3]).shape == (3, 2)


def test_the_feature_space_is_checked_naming_the_difference(trained):
    model = LinearModel.load(trained[1])
    d = model.w.size
    other = FeatureSpace(d, kind="hashed", hash_bits=model.space.hash_bits + 1,
                         hash_seed=model.space.hash_seed, fields=model.space.fields)
    with pytest.raises(DataError, match=r"feature space differs from the model's: "
                       r"hash_bits \d+ \(model: \d+\)"):
        model.predict_proba(Dataset(sp.csr_matrix((2, d)), np.zeros(2), other))
    with pytest.raises(DataError, match=f"data has {d + 1} features but the model has {d}"):
        model.decision_function(sp.csr_matrix((2, d + 1)))
    hinge = LinearModel(model.w, "squared_hinge", 0.1, model.space)
    with pytest.raises(DataError, match="predict_proba needs a logistic model"):
        hinge.predict_proba(sp.csr_matrix((2, d)))


def test_calibration_table_counts_every_row_and_its_error():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.95, 1.0, 0.55, 0.45])
    table = calibration(y, p, bins=2)
    assert [b.rows for b in table] == [3, 3]
    assert table[0].observed == pytest.approx(0.0) and table[1].observed == pytest.approx(1.0)
    assert table[0].predicted == pytest.approx(np.mean([0.05, 0.15, 0.45]))
    ece = expected_calibration_error(table)
    assert ece == pytest.approx(0.5 * table[0].predicted + 0.5 * (1 - table[1].predicted))


def test_predict_writes_scores_with_row_ids(trained, tmp_path):
    root, path, clf = trained
    out = tmp_path / "scores.parquet"
    proc = geodml("predict", str(path), str(root / "sites"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "scored 800 rows" in proc.stdout
    table = pq.read_table(out).to_pydict()
    assert set(table) == {"row", "site", "label", "margin", "probability"}
    assert table["site"] == ["a"] * 400 + ["b"] * 400
    assert table["row"] == list(range(400)) * 2
    test = load_dataset(site_dirs(root / "sites", "test")["b"])
    b_rows = slice(400, 800)
    np.testing.assert_allclose(table["probability"][b_rows], clf.predict_proba(test.X)[:, 1],
                               rtol=1e-6)
    np.testing.assert_allclose(table["probability"], expit(np.array(table["margin"])))
    np.testing.assert_array_equal(table["label"][b_rows], test.y)


def test_predict_keeps_an_id_column_of_a_parquet_file(tmp_path):
    schema = {"label": "y", "numeric": ["u", "v"]}
    pq.write_table(pa.table({"trip": ["t1", "t2", "t3"], "u": [1.0, 0.0, -1.0],
                             "v": [0.0, 2.0, 1.0], "y": ["1", "0", "1"]}),
                   tmp_path / "rows.parquet")
    from geodml.data.readers import read_dataset

    space = read_dataset(tmp_path / "rows.parquet", "parquet", schema=schema).space
    LinearModel(np.array([1.0, -0.5]), "logistic", 0.1, space).save(tmp_path / "m.npz")
    out = tmp_path / "scores.csv"
    proc = geodml("predict", str(tmp_path / "m.npz"), str(tmp_path / "rows.parquet"),
                  "--format", "parquet", "--option", f"schema={json.dumps(schema)}",
                  "--id-column", "trip", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = out.read_text().splitlines()
    assert lines[0] == '"row","trip","label","margin","probability"'
    assert lines[2].startswith('1,"t2",0,-1,')


def test_evaluate_prints_metrics_and_calibration_and_writes_json(trained, tmp_path):
    root, path, clf = trained
    report = tmp_path / "metrics.json"
    proc = geodml("evaluate", str(path), str(root / "sites"), "--bins", "5",
                  "--json", str(report))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    for word in ("log loss", "auc", "accuracy", "calibration", "mean predicted"):
        assert word in proc.stdout
    result = json.loads(report.read_text())
    test = Dataset.concat([load_dataset(p) for p in site_dirs(root / "sites", "test").values()])
    p = clf.predict_proba(test.X)[:, 1]
    assert result["rows"] == 800
    assert result["log_loss"] == pytest.approx(log_loss(test.y, p), rel=1e-6)
    assert result["auc"] == pytest.approx(roc_auc_score(test.y, p), rel=1e-6)
    assert sum(b["rows"] for b in result["calibration"]) == 800
    assert len(result["calibration"]) == 5


def test_evaluate_on_data_of_another_feature_space_is_one_clear_line(trained, tmp_path):
    root = trained[0]
    write_regional(RegionalCTRConfig(regions=("a",), rows_per_region=50,
                                     test_rows_per_region=10, hash_bits=9, seed=1),
                   tmp_path / "other")
    proc = geodml("evaluate", str(trained[1]), str(tmp_path / "other"))
    assert proc.returncode == 1
    assert "feature space differs from the model's: n_features" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert root.exists()
