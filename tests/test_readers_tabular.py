"""CSV (schema), Criteo and Parquet readers: mapping rules, keys, chunking, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geodml.data.hashing import hash_buckets, string_tokens
from geodml.data.readers import (
    CsvSource,
    ParquetSource,
    TableSchema,
    criteo_schema,
    load_schema,
    open_source,
    read_dataset,
    resolve_schema,
)
from geodml.data.source import KeySpec, read_all
from geodml.errors import ConfigError, DataFormatError

SCHEMA = TableSchema(
    label="y", positive=["yes"], negative=["no"], numeric=["a", "b"],
    transforms={"b": "log1p"}, categorical=["c", "d"], missing=["", "?"], hash_bits=10,
    hash_seed=7,
)


def write(tmp_path: Path, text: str, name: str = "t.csv", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def bucket(value: str, field: int, seed: int = 7, bits: int = 10) -> int:
    return int(hash_buckets(string_tokens([value]), field, seed, bits)[0])


def test_csv_mapping_rule(tmp_path):
    p = write(tmp_path, "y,a,b,c,d,unused\nyes,1.5,3,red,x,9\nno,?,0,,x,9\nno,0,-3,red,?,9\n")
    src = CsvSource(p, SCHEMA)
    d, _ = read_all(src)
    assert d.space.kind == "hashed" and d.space.n_numeric == 2
    assert d.n_features == 2 + 1024
    assert [f.name for f in d.space.fields] == ["a", "b", "c", "d"]
    lg = np.log1p(3.0)
    expected = [
        {0: 1.5, 1: lg, 2 + bucket("red", 2): 1.0, 2 + bucket("x", 3): 1.0},
        {2 + bucket("x", 3): 1.0},  # missing a, zero b, missing c: no entries
        {1: -lg, 2 + bucket("red", 2): 1.0},
    ]
    for i, row in enumerate(expected):
        r = d.X.getrow(i)
        got: dict[int, float] = {}
        for j, v in zip(r.indices, r.data, strict=True):
            got[int(j)] = got.get(int(j), 0.0) + float(v)
        assert got == pytest.approx(row)
    assert d.y.tolist() == [1.0, 0.0, 0.0]


def test_same_value_in_two_fields_hashes_apart(tmp_path):
    p = write(tmp_path, "y,a,b,c,d\nyes,1,1,v,v\n")
    d = read_dataset(p, "csv", schema=SCHEMA.model_copy(update={"hash_bits": 20}))
    assert d.nnz == 4  # c=v and d=v land in different buckets


def test_adult_style_separator_missing_and_no_header(tmp_path):
    schema = TableSchema(label="y", positive=[">50K", ">50K."], negative=["<=50K", "<=50K."],
                         numeric=["age"], categorical=["work"], missing=["?"], header=False,
                         column_names=["age", "work", "y"], skip_rows=1)
    p = write(tmp_path, "|1x3 Cross validator\n39, State-gov, <=50K.\n50, ?, >50K.\n\n")
    d = read_dataset(p, "csv", schema=schema)
    assert d.y.tolist() == [0.0, 1.0]
    assert d.X[1].nnz == 1 and d.X[0].nnz == 2
    assert d.X[0, 0] == 39.0


def test_default_names_without_header(tmp_path):
    p = write(tmp_path, "1\t0.5\tu\n0\t2\tv\n")
    schema = TableSchema(label="c0", numeric=["c1"], categorical=["c2"], delimiter="\t",
                         header=False)
    d = read_dataset(p, "csv", schema=schema)
    assert d.y.tolist() == [1.0, 0.0] and d.X[:, 0].toarray().ravel().tolist() == [0.5, 2.0]


def test_header_auto_recognises_both_layouts(tmp_path):
    schema = TableSchema(label="y", categorical=["c"], header="auto", column_names=["y", "c"])
    with_header = write(tmp_path, "y,c\n1,a\n", "h.csv")
    without = write(tmp_path, "1,a\n0,b\n", "n.csv")
    assert read_dataset(with_header, "csv", schema=schema).n_rows == 1
    assert read_dataset(without, "csv", schema=schema).n_rows == 2


def test_header_must_match_column_names(tmp_path):
    schema = TableSchema(label="y", categorical=["c"], column_names=["y", "c"])
    p = write(tmp_path, "\n\nlabel,c\n1,a\n")
    with pytest.raises(DataFormatError) as e:
        CsvSource(p, schema)
    assert e.value.line == 3 and "does not match" in str(e.value)


def test_latin1_encoding(tmp_path):
    p = write(tmp_path, "y,c\n1,N\xe4me\n", encoding="latin-1")
    schema = TableSchema(label="y", categorical=["c"], encoding="latin-1")
    _, keys = read_all(CsvSource(p, schema), KeySpec(column="c"))
    assert keys.tolist() == ["N\xe4me"]
    with pytest.raises(DataFormatError) as e:
        read_dataset(p, "csv", schema=schema.model_copy(update={"encoding": "utf-8"}))
    assert e.value.line == 2 and "latin-1" in str(e.value)


def test_column_and_onehot_keys(tmp_path):
    p = write(tmp_path, "y,a,w1,w2,site\n1,1,1,0,s1\n0,2,0,1,\n1,3,0,0,s2\n")
    schema = TableSchema(label="y", numeric=["a"])
    _, keys = read_all(CsvSource(p, schema), KeySpec(column="site"))
    assert keys.tolist() == ["s1", "", "s2"]
    _, keys = read_all(CsvSource(p, schema), KeySpec(onehot=("w1", "w2")))
    assert keys.tolist() == ["w1", "w2", ""]
    bad = write(tmp_path, "y,a,w1,w2\n1,1,1,0\n0,2,1,1\n", "bad.csv")
    with pytest.raises(DataFormatError) as e:
        read_all(CsvSource(bad, schema), KeySpec(onehot=("w1", "w2")))
    assert e.value.line == 3 and "more than one" in str(e.value)
    with pytest.raises(ConfigError, match="not in the file"):
        next(CsvSource(p, schema).chunks(key=KeySpec(column="nope")))


def test_real_label(tmp_path):
    p = write(tmp_path, "y,a\n2.5,1\n-1,2\n")
    d = read_dataset(p, "csv", schema=TableSchema(label="y", label_kind="real", numeric=["a"]))
    assert d.y.tolist() == [2.5, -1.0]


def test_positive_only_makes_every_other_value_negative(tmp_path):
    p = write(tmp_path, "y,a\n2,1\n7,1\n1,1\n")
    d = read_dataset(p, "csv", schema=TableSchema(label="y", positive=["2"], numeric=["a"]))
    assert d.y.tolist() == [1.0, 0.0, 0.0]


def test_chunks_are_bounded(tmp_path):
    n = 200_000
    body = "\n".join(np.char.add(np.char.add((np.arange(n) % 2).astype(str), ","),
                                 (np.arange(n) % 13).astype(str)))
    p = write(tmp_path, "y,a\n" + body + "\n", "big.csv")
    src = CsvSource(p, TableSchema(label="y", numeric=["a"]), block_size=1 << 16)
    sizes = [c.X.shape[0] for c in src.chunks(chunk_rows=1000)]
    assert max(sizes) <= 1000 and sum(sizes) == n and len(sizes) == 200


# -- malformed CSV ------------------------------------------------------------------------

HEAD = "y,a,b,c,d\n"
ROWS = "".join(f"{'yes' if i % 2 else 'no'},{i},{i},k{i},z\n" for i in range(30))


@pytest.mark.parametrize(
    ("bad_row", "text", "problem"),
    [
        ("yes,1,2,k", "yes,1,2,k", "expected 5 fields, found 4"),
        ("yes,1,2,k,z,extra", "yes,1,2,k,z,extra", "expected 5 fields, found 6"),
        ("yes,abc,2,k,z", "abc", "column 'a': not a number"),
        ("yes,1,inf,k,z", "inf", "column 'b': infinite value"),
        ("maybe,1,2,k,z", "maybe", "column 'y': label not in the allowed set"),
        ("?,1,2,k,z", "?", "column 'y': missing label"),
    ],
)
def test_malformed_csv_names_file_line_and_text(tmp_path, bad_row, text, problem):
    body = "skip me\n" + HEAD + ROWS + "\n\n  \n" + bad_row + "\n" + ROWS
    p = write(tmp_path, body)
    src = CsvSource(p, SCHEMA.model_copy(update={"skip_rows": 1}), block_size=128)
    with pytest.raises(DataFormatError) as e:
        list(src.chunks(chunk_rows=7))
    err = e.value
    expected_line = 1 + 1 + 30 + 3 + 1
    assert (err.path, err.line, err.text) == (str(p), expected_line, text)
    assert problem in str(err) and f"{p}:{expected_line}:" in str(err)


def test_schema_column_absent_from_file(tmp_path):
    p = write(tmp_path, "y,a\n1,2\n")
    with pytest.raises(DataFormatError, match=r"not in the file: \['b', 'c', 'd'\]"):
        CsvSource(p, SCHEMA)


# -- schema validation ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("update", "field"),
    [
        ({"hash_bits": 40}, "hash_bits"),
        ({"delimiter": ", "}, "delimiter"),
        ({"encoding": "klingon"}, "encoding"),
        ({"numerc": ["a"]}, "numerc"),
        ({"transforms": {"c": "log1p"}}, "transforms name columns that are not numeric"),
        ({"transforms": {"a": "affine:1:0"}}, r"transforms\.a: 'affine:1:0' is not"),
        ({"transforms": {"a": "log1p:x:2"}}, r"transforms\.a: 'log1p:x:2' is not"),
        ({"transforms": {"a": "scale:1:2"}}, r"transforms\.a: 'scale:1:2' is not"),
        ({"categorical": ["a"]}, "more than once"),
    ],
)
def test_schema_errors_name_the_field(update, field):
    data = {**SCHEMA.model_dump(exclude_unset=True), **update}
    with pytest.raises(ConfigError, match=field):
        resolve_schema(data)


def test_affine_and_centred_log_transforms(tmp_path):
    """``affine:C:S`` is (x - C)/S, ``log1p:C:S`` is (sign(x) log(1+|x|) - C)/S; a
    missing value stays absent (the centre), a raw 0 becomes -C/S."""
    p = write(tmp_path, "y,a,b,c,d\nyes,41.9,3,red,x\nno,,0,red,x\n")
    schema = SCHEMA.model_copy(update={"transforms": {"a": "affine:41.88:0.1",
                                                      "b": "log1p:1:2"}})
    d, _ = read_all(CsvSource(p, schema))
    dense = d.X.toarray()
    assert dense[0, 0] == pytest.approx((41.9 - 41.88) / 0.1)
    assert dense[0, 1] == pytest.approx((np.log1p(3.0) - 1) / 2)
    assert dense[1, 0] == 0.0 and dense[1, 1] == pytest.approx(-0.5)


def test_schema_from_toml(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text('preset = "adult"\nhash_bits = 12\nskip_rows = 1\n')
    s = load_schema(toml)
    assert s.hash_bits == 12 and s.skip_rows == 1 and s.label == "income"
    toml.write_text('label = "y"\nnumeric = "a"\n')
    with pytest.raises(ConfigError, match=r"s\.toml: field numeric"):
        load_schema(toml)
    toml.write_text("label = \n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_schema(toml)


def test_unknown_preset_and_options(tmp_path):
    p = write(tmp_path, "y,a\n1,2\n")
    with pytest.raises(ConfigError, match="unknown preset"):
        open_source(p, "csv", preset="iris")
    with pytest.raises(ConfigError, match="unknown option"):
        open_source(p, "csv", schema={"label": "y", "numeric": ["a"]}, chunk=3)


# -- Criteo -------------------------------------------------------------------------------

def criteo_line(label: str, ints: list[str], cats: list[str]) -> str:
    return "\t".join([label, *ints, *cats]) + "\n"


def test_criteo_rows(tmp_path):
    ints = ["1", "", "-2"] + ["0"] * 10
    cats = ["68fd1e64", ""] + ["aa"] * 24
    p = write(tmp_path, criteo_line("1", ints, cats) + criteo_line("0", [""] * 13, [""] * 26),
              "c.tsv")
    d = read_dataset(p, "criteo", hash_bits=16, hash_seed=3)
    assert d.n_features == 13 + 2**16 and d.y.tolist() == [1.0, 0.0]
    assert d.X[1].nnz == 0
    row = d.X[0].toarray().ravel()
    assert row[0] == pytest.approx(np.log(2)) and row[2] == pytest.approx(-np.log(3))
    assert row[13 + bucket("68fd1e64", 13, seed=3, bits=16)] >= 1.0
    fields = d.space.fields
    assert [f.kind for f in fields].count("numeric") == 13 and len(fields) == 39


@pytest.mark.parametrize(
    ("line", "text", "problem"),
    [
        (criteo_line("1", ["1"] * 13, ["a"] * 25), None, "expected 40 fields, found 39"),
        (criteo_line("2", ["1"] * 13, ["a"] * 26), "2", "label not in the allowed set"),
        (criteo_line("1", ["x1"] + ["1"] * 12, ["a"] * 26), "x1", "column 'I1': not a number"),
    ],
)
def test_criteo_malformed(tmp_path, line, text, problem):
    good = criteo_line("0", ["1"] * 13, ["a"] * 26)
    p = write(tmp_path, good * 5 + line + good, "c.tsv")
    with pytest.raises(DataFormatError) as e:
        read_dataset(p, "criteo")
    assert e.value.line == 6 and problem in str(e.value)
    assert e.value.text == (line.rstrip("\n") if text is None else text)


def test_criteo_schema_is_a_preset_of_the_table_schema():
    s = criteo_schema(hash_bits=20, hash_seed=5)
    assert s.delimiter == "\t" and s.feature_space().n_features == 13 + 2**20


# -- Parquet ------------------------------------------------------------------------------

def test_parquet_matches_csv(tmp_path):
    csv_text = HEAD + ROWS + "no,,?,,z\n"
    csv_path = write(tmp_path, csv_text)
    table = pa.table({
        "y": ["yes" if i % 2 else "no" for i in range(30)] + ["no"],
        "a": pa.array([*range(30), None], pa.int64()),
        "b": [str(i) for i in range(30)] + ["?"],
        "c": pa.array([f"k{i}" for i in range(30)] + [None]).dictionary_encode(),
        "d": ["z"] * 31,
        "extra": [0.0] * 31,
    })
    pq_path = tmp_path / "t.parquet"
    pq.write_table(table, pq_path, row_group_size=8)
    a, ka = read_all(CsvSource(csv_path, SCHEMA), KeySpec(column="c"))
    src = ParquetSource(pq_path, SCHEMA)
    b, kb = read_all(src, KeySpec(column="c"))
    assert a.space == b.space
    assert (a.X != b.X).nnz == 0 and np.array_equal(a.y, b.y)
    assert ka.tolist() == kb.tolist()
    assert max(c.X.shape[0] for c in src.chunks(chunk_rows=5)) <= 5


def test_parquet_integer_categorical_hashes_like_csv_text(tmp_path):
    schema = TableSchema(label="y", categorical=["c"])
    pq_path = tmp_path / "i.parquet"
    pq.write_table(pa.table({"y": [1, 0], "c": [1005, 7]}), pq_path)
    csv_path = write(tmp_path, "y,c\n1,1005\n0,7\n")
    a = read_dataset(pq_path, "parquet", schema=schema)
    b = read_dataset(csv_path, "csv", schema=schema)
    assert (a.X != b.X).nnz == 0 and a.y.tolist() == b.y.tolist() == [1.0, 0.0]


def test_parquet_malformed(tmp_path):
    pq_path = tmp_path / "m.parquet"
    cols = {"y": ["yes", "no", "no"], "a": ["1", "2", "3"], "b": ["1", "x", "1"],
            "c": ["u"] * 3, "d": ["v"] * 3}
    pq.write_table(pa.table(cols), pq_path)
    with pytest.raises(DataFormatError, match=r"m\.parquet: row 2, column 'b': not a number"):
        read_dataset(pq_path, "parquet", schema=SCHEMA)
    pq.write_table(pa.table({**cols, "y": ["yes", "no", "perhaps"]}), pq_path)
    schema = SCHEMA.model_copy(update={"numeric": ["a"], "transforms": {}})
    with pytest.raises(DataFormatError, match="row 3, column 'y': label not in the allowed"):
        read_dataset(pq_path, "parquet", schema=schema)
    with pytest.raises(DataFormatError, match="not in the file"):
        read_dataset(pq_path, "parquet", schema=schema.model_copy(update={"label": "z"}))
    junk = write(tmp_path, "not parquet", "junk.parquet")
    with pytest.raises(DataFormatError, match="not a readable Parquet file"):
        ParquetSource(junk, SCHEMA)
