"""The compact on-disk format: exact round trips, memory-mapped loads, incomplete dirs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.data.dataset import Dataset, FeatureSpace, FieldSpec
from geodml.data.readers import open_source
from geodml.data.source import read_all
from geodml.data.store import DatasetWriter, load_dataset, read_meta, save_dataset
from geodml.errors import DataFormatError

from .conftest import shared_path


def random_dataset(n: int, d: int, dtype=np.float64, ones: bool = False,
                   space: FeatureSpace | None = None) -> Dataset:
    """Random CSR rows (normal values, or all ones) with 0/1 labels."""
    rng = np.random.default_rng(0)
    X = sp.random(n, d, density=0.05, format="csr", random_state=rng, dtype=np.float64)
    X.data = np.ones_like(X.data) if ones else rng.normal(size=X.nnz)
    space = FeatureSpace(n_features=d) if space is None else space
    return Dataset(X.astype(dtype).tocsr(), rng.integers(0, 2, n).astype(np.float64), space)


def assert_same(a: Dataset, b: Dataset, check_dtype: bool = True) -> None:
    assert a.X.shape == b.X.shape and a.space == b.space
    assert np.array_equal(a.X.indptr, b.X.indptr)
    assert np.array_equal(a.X.indices, b.X.indices)
    assert np.array_equal(a.X.data, b.X.data)
    assert a.X.data.dtype == b.X.data.dtype or not check_dtype
    assert np.array_equal(a.y, b.y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype):
    space = FeatureSpace.hashed((FieldSpec("a", "numeric"), FieldSpec("b", "categorical")),
                                hash_bits=10, hash_seed=3)
    data = random_dataset(500, 1 + 2**10, dtype=dtype, space=space)
    save_dataset(tmp_path / "d", data, dtype=dtype)
    back = load_dataset(tmp_path / "d")
    assert_same(data, back)
    assert back.space.fingerprint() == data.space.fingerprint()


def test_all_ones_values_are_not_stored(tmp_path):
    data = random_dataset(300, 40, dtype=np.float32, ones=True)
    meta = save_dataset(tmp_path / "d", data)
    assert meta["values_dtype"] is None and not (tmp_path / "d" / "values.bin").exists()
    assert_same(data, load_dataset(tmp_path / "d"))
    assert load_dataset(tmp_path / "d").X.data.dtype == np.float32


def test_mmap_load_equals_read_load(tmp_path):
    data = random_dataset(400, 30)
    save_dataset(tmp_path / "d", data)
    mapped = load_dataset(tmp_path / "d", mmap=True)
    assert not mapped.y.flags.writeable  # a read-only view of the mapped file
    assert (mapped.X != data.X).nnz == 0 and np.array_equal(mapped.y, data.y)


def test_streamed_chunks_equal_one_piece(tmp_path):
    data = random_dataset(1000, 50)
    chunks = [(data.X[i:i + 64], data.y[i:i + 64]) for i in range(0, 1000, 64)]
    meta = save_dataset(tmp_path / "d", chunks, space=data.space, dtype=np.float64)
    assert (meta["n_rows"], meta["nnz"], meta["positives"]) == (1000, data.nnz, data.positives)
    assert_same(data, load_dataset(tmp_path / "d"))


def test_empty_dataset(tmp_path):
    space = FeatureSpace(n_features=5)
    save_dataset(tmp_path / "d", [], space=space)
    back = load_dataset(tmp_path / "d")
    assert back.X.shape == (0, 5) and back.y.shape == (0,)


def test_incomplete_directory_is_refused(tmp_path):
    data = random_dataset(50, 10)
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path / "d", data.space) as w:
        w.append(data.X, data.y)
        raise RuntimeError("reader failed half way")
    with pytest.raises(DataFormatError, match="not a complete geodml dataset"):
        load_dataset(tmp_path / "d")


def test_truncated_array_is_refused(tmp_path):
    save_dataset(tmp_path / "d", random_dataset(50, 10))
    f = tmp_path / "d" / "indices.bin"
    f.write_bytes(f.read_bytes()[:-4])
    with pytest.raises(DataFormatError, match=r"indices\.bin.*expected"):
        load_dataset(tmp_path / "d")


def test_corrupt_meta_is_refused(tmp_path):
    save_dataset(tmp_path / "d", random_dataset(5, 4))
    (tmp_path / "d" / "meta.json").write_text('{"format": "other", "version": 1}')
    with pytest.raises(DataFormatError, match="unsupported format"):
        read_meta(tmp_path / "d")


@pytest.mark.parametrize(
    ("rel", "fmt", "opts"),
    [
        ("libsvm/a9a", "libsvm", {"n_features": 123}),
        ("criteo_dac/criteo_kaggle_train_head10k.tsv", "criteo", {}),
        ("adult_uci/adult.data", "csv", {"preset": "adult"}),
    ],
)
def test_real_data_round_trip(tmp_path, rel, fmt, opts):
    src = open_source(shared_path(rel), fmt, **opts)
    data, _ = read_all(src)
    with DatasetWriter(tmp_path / "d", src.space, np.float64) as w:
        for chunk in src.chunks(chunk_rows=4096):
            w.append(chunk.X, chunk.y)
    back = load_dataset(tmp_path / "d")
    # all-ones values (a9a) are not stored and load as float32 ones: equal, not same dtype
    assert_same(data, back, check_dtype=read_meta(tmp_path / "d")["values_dtype"] is not None)
