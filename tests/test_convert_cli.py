"""`geodml convert`: streams into the compact format; bad input gives one clear line."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from geodml.cli import main
from geodml.data.readers import read_dataset
from geodml.data.store import load_dataset

from .conftest import shared_path


def run(*args: str):
    return CliRunner().invoke(main, ["convert", *map(str, args)])


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    for needle in needles:
        assert needle in lines[0]


def test_convert_libsvm(tmp_path):
    src = tmp_path / "d.svm"
    src.write_text("+1 1:0.5 3:1\n-1 2:2\n")
    res = run(src, tmp_path / "out", "--format", "libsvm", "--n-features", "3",
              "--dtype", "float64")
    assert res.exit_code == 0, res.output
    assert "rows=2" in res.output and "nnz=3" in res.output and "positives=1" in res.output
    back = load_dataset(tmp_path / "out")
    assert back.X.toarray().tolist() == [[0.5, 0, 1], [0, 2, 0]]


def test_convert_csv_with_toml_schema(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("y,a,c\n1,2.5,u\n0,,v\n")
    schema = tmp_path / "s.toml"
    schema.write_text('label = "y"\nnumeric = ["a"]\ncategorical = ["c"]\n')
    res = run(src, tmp_path / "out", "--format", "csv", "--schema", schema, "--hash-bits", "8",
              "--dtype", "float64")
    assert res.exit_code == 0, res.output
    back = load_dataset(tmp_path / "out")
    expected = read_dataset(src, "csv", schema={"label": "y", "numeric": ["a"],
                                                "categorical": ["c"], "hash_bits": 8})
    assert back.space == expected.space and (back.X != expected.X).nnz == 0


def test_convert_adult_test_preset(tmp_path):
    src = shared_path("adult_uci/adult.test")
    res = run(src, tmp_path / "out", "--format", "csv", "--preset", "adult", "--skip-rows", "1")
    assert res.exit_code == 0, res.output
    meta_line = res.output.strip().splitlines()[-1]
    assert "rows=16281" in meta_line and "positives=3846" in meta_line
    assert load_dataset(tmp_path / "out").n_rows == 16281


def test_convert_criteo_matches_reader(tmp_path):
    src = shared_path("criteo_dac/criteo_kaggle_train_head10k.tsv")
    res = run(src, tmp_path / "out", "--format", "criteo", "--dtype", "float64",
              "--chunk-rows", "999")
    assert res.exit_code == 0, res.output
    back, direct = load_dataset(tmp_path / "out"), read_dataset(src, "criteo")
    assert (back.X != direct.X).nnz == 0 and np.array_equal(back.y, direct.y)


def test_bad_row_is_one_line_naming_file_and_line(tmp_path):
    src = tmp_path / "d.svm"
    src.write_text("+1 1:1\n-1 2:1\n+1 7:x\n")
    res = run(src, tmp_path / "out", "--format", "libsvm", "--n-features", "9")
    assert_one_line_error(res, f"{src}:3:", "7:x")
    assert not (tmp_path / "out" / "meta.json").exists()


def test_adult_test_without_skip_rows_names_line_one(tmp_path):
    src = shared_path("adult_uci/adult.test")
    res = run(src, tmp_path / "out", "--format", "csv", "--preset", "adult")
    assert_one_line_error(res, f"{src}:1:", "|1x3 Cross validator")


def test_bad_schema_field_is_named(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("y,a\n1,2\n")
    schema = tmp_path / "s.toml"
    schema.write_text('label = "y"\nnumeric = ["a"]\nhash_bits = 99\n')
    res = run(src, tmp_path / "out", "--format", "csv", "--schema", schema)
    assert_one_line_error(res, "s.toml", "field hash_bits")


def test_options_that_do_not_apply_are_refused(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("y,a\n1,2\n")
    assert_one_line_error(run(src, tmp_path / "o", "--format", "csv"), "--preset or --schema")
    assert_one_line_error(
        run(src, tmp_path / "o", "--format", "libsvm", "--preset", "adult"), "--preset")
    assert_one_line_error(
        run(src, tmp_path / "o", "--format", "csv", "--preset", "adult", "--n-features", "3"),
        "--n-features")
