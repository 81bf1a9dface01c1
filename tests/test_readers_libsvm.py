"""The LIBSVM/SVMlight reader: parsing rules, keys, chunking and malformed input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from geodml.data.readers import LibsvmSource, open_source, read_dataset
from geodml.data.source import KeySpec, read_all
from geodml.errors import ConfigError, DataFormatError


def write(tmp_path: Path, text: str, name: str = "d.svm") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode())
    return p


def test_parses_labels_indices_values(tmp_path):
    p = write(tmp_path, "+1 1:0.5 3:2 \n-1 2:1\n1 4:-1.5e1\n")
    d = read_dataset(p, "libsvm", n_features=4)
    assert d.X.toarray().tolist() == [[0.5, 0, 2, 0], [0, 1, 0, 0], [0, 0, 0, -15.0]]
    assert d.y.tolist() == [1.0, 0.0, 1.0]
    assert d.space.kind == "indexed" and d.n_features == 4


def test_zero_one_labels_and_zero_based(tmp_path):
    p = write(tmp_path, "0 0:1 2:1\n1 1:1\n")
    d = read_dataset(p, "libsvm", n_features=3, zero_based=True)
    assert d.X.toarray().tolist() == [[1, 0, 1], [0, 1, 0]]
    assert d.y.tolist() == [0.0, 1.0]


def test_blank_lines_comments_crlf_qid_trailing_spaces(tmp_path):
    text = "# header comment\n\n+1 qid:3 1:1 2:1   # tail\r\n   \n-1 2:1 \r\n\n"
    d = read_dataset(write(tmp_path, text), "libsvm", n_features=2)
    assert d.X.toarray().tolist() == [[1, 1], [0, 1]]
    assert d.y.tolist() == [1.0, 0.0]


def test_fast_and_reference_parser_agree(tmp_path):
    # A '#' anywhere sends a chunk to the line-by-line parser; results must be identical.
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(500):
        idx = np.sort(rng.choice(50, size=rng.integers(0, 8), replace=False)) + 1
        vals = rng.normal(size=len(idx)).round(4)
        lines.append(f"{rng.choice(['+1', '-1'])} " +
                     " ".join(f"{i}:{v}" for i, v in zip(idx, vals, strict=True)))
    plain = write(tmp_path, "\n".join(lines) + "\n", "plain.svm")
    commented = write(tmp_path, "#c\n" + "\n".join(lines) + "\n", "comm.svm")
    a = read_dataset(plain, "libsvm", n_features=50)
    b = read_dataset(commented, "libsvm", n_features=50)
    assert (a.X != b.X).nnz == 0 and np.array_equal(a.y, b.y)


def test_bare_index_has_value_one(tmp_path):
    d = read_dataset(write(tmp_path, "1 1 3:2.5 4\n-1 2\n"), "libsvm", n_features=4)
    assert d.X.toarray().tolist() == [[1, 0, 2.5, 1], [0, 1, 0, 0]]


def test_duplicate_indices_are_summed_and_zeros_dropped(tmp_path):
    d = read_dataset(write(tmp_path, "1 2:1 1:3 2:1 3:0\n"), "libsvm", n_features=3)
    assert d.X.toarray().tolist() == [[3, 2, 0]]
    assert d.nnz == 2


def test_inferred_n_features_and_auto_base(tmp_path):
    one = write(tmp_path, "1 1:1 7:1\n-1 3:1\n", "one.svm")
    s = LibsvmSource(one)
    assert (s.n_features, s.zero_based) == (7, False)
    zero = write(tmp_path, "1 0:1 7:1\n-1 3:1\n", "zero.svm")
    s = LibsvmSource(zero, zero_based="auto")
    assert (s.n_features, s.zero_based) == (8, True)
    assert LibsvmSource(one, zero_based="auto").zero_based is False


def test_real_labels(tmp_path):
    d = read_dataset(write(tmp_path, "2.5 1:1\n-0.25 2:1\n"), "libsvm", n_features=2,
                     labels="real")
    assert d.y.tolist() == [2.5, -0.25]


def test_chunks_are_bounded(tmp_path):
    n = 200_000
    idx = np.arange(n) % 97 + 1
    text = "\n".join(np.char.add(np.where(np.arange(n) % 3 == 0, "+1 ", "-1 "),
                                 np.char.add(idx.astype(str), ":1"))) + "\n"
    p = write(tmp_path, text, "big.svm")
    sizes = [c.X.shape[0] for c in LibsvmSource(p, n_features=97).chunks(chunk_rows=1000)]
    assert max(sizes) <= 1000 and sum(sizes) == n and len(sizes) == 200


def test_feature_prefix_keys(tmp_path):
    fi = write(tmp_path, "truncate\t0\nregion:1\t1\nregion:2\t2\ncity:9\t3\n", "featindex.txt")
    p = write(tmp_path, "1 1:1 3:1\n0 2:1\n0 3:1\n", "d.svm")
    src = LibsvmSource(p, n_features=4, zero_based=True, featindex=fi)
    data, keys = read_all(src, KeySpec(feature_prefix="region:"))
    assert keys.tolist() == ["region:1", "region:2", ""]
    assert data.n_rows == 3


def test_two_key_features_in_a_row_is_an_error(tmp_path):
    fi = write(tmp_path, "region:1\t1\nregion:2\t2\n", "featindex.txt")
    p = write(tmp_path, "1 1:1\n0 1:1 2:1\n", "d.svm")
    src = LibsvmSource(p, n_features=3, zero_based=True, featindex=fi)
    with pytest.raises(DataFormatError) as e:
        read_all(src, KeySpec(feature_prefix="region:"))
    assert e.value.line == 2 and "region:1" in e.value.text


def test_keys_need_featindex_and_prefix(tmp_path):
    p = write(tmp_path, "1 1:1\n")
    with pytest.raises(ConfigError, match="featindex"):
        next(LibsvmSource(p, n_features=1).chunks(key=KeySpec(feature_prefix="r:")))
    with pytest.raises(ConfigError, match="feature_prefix"):
        next(LibsvmSource(p, n_features=1).chunks(key=KeySpec(column="x")))


def test_bad_featindex_line(tmp_path):
    fi = write(tmp_path, "region:1\t1\nregion:2 two\n", "featindex.txt")
    p = write(tmp_path, "1 1:1\n")
    src = LibsvmSource(p, n_features=3, zero_based=True, featindex=fi)
    with pytest.raises(DataFormatError) as e:
        next(src.chunks(key=KeySpec(feature_prefix="region:")))
    assert e.value.path == str(fi) and e.value.line == 2


GOOD = "+1 1:1 2:1\n-1 3:1\n"


@pytest.mark.parametrize(
    ("bad_line", "text", "problem"),
    [
        ("+1 3;1", "3;1", "bad feature token"),
        ("+1 3:", "3:", "bad feature value"),
        ("+1 3:x", "3:x", "bad feature value"),
        ("+1 3.5:1", "3.5:1", "bad feature token"),
        ("+1 -3:1", "-3:1", "bad feature token"),
        ("+1 3:1:2", "3:1:2", "bad feature value"),
        ("+1 3 :1", ":1", "bad feature token"),
        ("+1 3::1", "3::1", "bad feature value"),
        ("+1 3:nan", "3:nan", "bad feature value"),
        ("2 3:1", "2", "label not in the allowed set"),
        ("yes 3:1", "yes", "bad label"),
        ("3:1 4:1", "3:1", "bad label"),
        ("+1 99:1", "99:1", "beyond n_features=4"),
        ("+1 0:1", "0:1", "index 0 in a 1-based file"),
    ],
)
def test_malformed_input_names_file_line_and_text(tmp_path, bad_line, text, problem):
    # the bad line sits after blank and comment lines, in the third chunk
    body = GOOD * 3 + "\n# note\n" + bad_line + "\n" + GOOD
    p = write(tmp_path, body)
    with pytest.raises(DataFormatError) as e:
        list(LibsvmSource(p, n_features=4).chunks(chunk_rows=3))
    err = e.value
    assert err.path == str(p)
    assert err.line == 9
    assert err.text == text
    assert problem in str(err)
    assert f"{p}:9:" in str(err)


def test_bad_index_in_first_pass_is_located(tmp_path):
    p = write(tmp_path, GOOD + "1 a:1\n")
    with pytest.raises(DataFormatError) as e:
        LibsvmSource(p)  # n_features inferred: the first pass meets the bad token
    assert e.value.line == 3


def test_bad_options(tmp_path):
    p = write(tmp_path, GOOD)
    with pytest.raises(ConfigError):
        LibsvmSource(p, labels="multiclass")
    with pytest.raises(ConfigError):
        LibsvmSource(p, zero_based="maybe")
    with pytest.raises(ConfigError, match="unknown option"):
        open_source(p, "libsvm", n_feature=3)
    with pytest.raises(DataFormatError, match="no such file"):
        LibsvmSource(tmp_path / "absent.svm", n_features=3)


def test_error_deep_in_a_large_chunk_has_its_exact_line(tmp_path):
    # default chunk_rows spans several internal parsing pieces; the line must stay exact
    lines = ["+1 1:1 2:1"] * 30_000
    lines[20_000] = ""
    lines[25_000] = "+1 2:1 5:1"
    p = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as e:
        read_dataset(p, "libsvm", n_features=4)
    assert (e.value.line, e.value.text) == (25_001, "5:1")
    d = read_dataset(p, "libsvm", n_features=5)
    assert d.n_rows == 29_999 and d.nnz == 2 * 29_999


def _outcome(path: Path):
    """("ok", X, y) or ("err", line, text) of reading ``path``."""
    try:
        d = read_dataset(path, "libsvm", n_features=50)
    except DataFormatError as e:
        return ("err", e.line, e.text)
    return ("ok", d.X, d.y)


def test_fast_parser_agrees_with_reference_on_random_input(tmp_path):
    # A leading comment line sends the whole file to the reference parser; every random
    # (often malformed) file must give the same matrix, or the same error one line later.
    rng = np.random.default_rng(7)
    noise = [*"0123456789", ":", ":", " ", "\t", "+", "-", ".", "e", "\n"]
    plain, commented = tmp_path / "a.svm", tmp_path / "b.svm"
    for _ in range(150):
        lines = []
        for _ in range(rng.integers(1, 5)):
            toks = [str(rng.choice(["+1", "-1", "0", "1"]))] + [
                f"{rng.integers(1, 20)}:{rng.choice(['1', '0.5', '-2', '3e1'])}"
                for _ in range(rng.integers(0, 4))]
            line = " ".join(toks)
            i = int(rng.integers(0, len(line) + 1))
            lines.append(line[:i] + str(rng.choice(noise)) + line[i:])
        text = "\n".join(lines) + "\n"
        plain.write_text(text)
        commented.write_text("#\n" + text)
        a, b = _outcome(plain), _outcome(commented)
        assert a[0] == b[0], text
        if a[0] == "err":
            assert (a[1] + 1, a[2]) == (b[1], b[2]), text
        else:
            assert (a[1] != b[1]).nnz == 0 and np.array_equal(a[2], b[2]), text
