"""The compact on-disk format of a DC's data: raw little-endian arrays plus JSON.

A dataset directory holds::

    meta.json     format, version, shape, nnz, dtypes, feature space
    indptr.bin    int64[n_rows + 1]     row pointers
    indices.bin   int32[nnz]            column indices
    values.bin    float32|float64[nnz]  values (absent when every value is 1.0)
    labels.bin    float64[n_rows]

Raw arrays load with one ``read`` each, or memory-mapped (``mmap=True``) for data
that does not fit in memory; :func:`map_dataset` maps them without copying any
array of ``nnz`` entries, for a site that streams its rows block by block.
:class:`DatasetWriter` appends chunks as a reader yields them, so converting a file
needs memory for one chunk only; ``meta.json`` is written last (write-then-rename),
so a directory without it is incomplete.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from geodml.data.dataset import Dataset, FeatureSpace
from geodml.errors import DataFormatError

FORMAT = "geodml-csr"
VERSION = 1
_META = "meta.json"


class DatasetWriter:
    """Append CSR chunks and labels to a dataset directory.

    Use as a context manager; on an exception the directory is left without
    ``meta.json`` and so is never mistaken for a complete dataset.
    """

    def __init__(self, path: str | os.PathLike, space: FeatureSpace, dtype=np.float32):
        self.path = Path(path)
        self.space = space
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"values dtype must be float32 or float64, got {self.dtype}")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / _META).unlink(missing_ok=True)
        self._files = contextlib.ExitStack()
        self._indices, self._values, self._labels, self._indptr = (
            self._files.enter_context(open(self.path / name, "wb"))  # noqa: SIM115
            for name in ("indices.bin", "values.bin", "labels.bin", "indptr.bin")
        )
        self._indptr.write(np.zeros(1, np.int64).tobytes())
        self.n_rows = 0
        self.nnz = 0
        self.positives = 0
        self._all_ones = True

    def append(self, X: sp.csr_matrix, y: np.ndarray) -> None:
        if X.shape[1] != self.space.n_features:
            raise ValueError(
                f"chunk has {X.shape[1]} columns, feature space has {self.space.n_features}"
            )
        if X.shape[0] != len(y):
            raise ValueError(f"chunk has {X.shape[0]} rows but {len(y)} labels")
        X = X.tocsr()
        X.sort_indices()
        values = X.data.astype(self.dtype, copy=False)
        self._all_ones = self._all_ones and bool(np.all(values == 1))
        self._indptr.write((X.indptr[1:].astype(np.int64) + self.nnz).tobytes())
        self._indices.write(X.indices.astype(np.int32, copy=False).tobytes())
        self._values.write(values.tobytes())
        self._labels.write(np.asarray(y, np.float64).tobytes())
        self.n_rows += X.shape[0]
        self.nnz += X.nnz
        self.positives += int(np.count_nonzero(np.asarray(y) > 0.5))

    def close(self) -> dict:
        """Finish the files and write ``meta.json``; returns the metadata."""
        self._files.close()
        if self._all_ones:
            (self.path / "values.bin").unlink()
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "n_rows": self.n_rows,
            "n_features": self.space.n_features,
            "nnz": self.nnz,
            "positives": self.positives,
            "values_dtype": None if self._all_ones else self.dtype.name,
            "feature_space": self.space.to_dict(),
        }
        tmp = self.path / (_META + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, self.path / _META)
        return meta

    def abort(self) -> None:
        self._files.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def save_dataset(
    path: str | os.PathLike,
    data: Dataset | Iterable[tuple[sp.csr_matrix, np.ndarray]],
    space: FeatureSpace | None = None,
    dtype=np.float32,
) -> dict:
    """Write a dataset (or a stream of ``(X, y)`` chunks in ``space``) to ``path``."""
    if isinstance(data, Dataset):
        space, chunks = data.space, [(data.X, data.y)]
        if data.X.dtype == np.float64:
            dtype = np.float64
    else:
        if space is None:
            raise ValueError("save_dataset needs the feature space of a chunk stream")
        chunks = data
    with DatasetWriter(path, space, dtype) as w:
        for X, y in chunks:
            w.append(X, y)
    return read_meta(path)


def read_versioned_json(path: Path, fmt: str, version: int, kind: str, missing: str,
                        missing_at: str | os.PathLike | None = None) -> dict:
    """A JSON file whose ``format`` and ``version`` must be ``fmt`` and ``version``.

    Every problem is a DataFormatError: ``missing`` (reported at ``missing_at``, by
    default the file) when the file is absent, the line of invalid JSON, or the
    unsupported ``kind`` of format and version found.
    """
    if not path.is_file():
        raise DataFormatError(str(missing_at or path), None, missing)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataFormatError(str(path), e.lineno, f"invalid JSON: {e.msg}") from None
    if data.get("format") != fmt or data.get("version") != version:
        raise DataFormatError(
            str(path), None,
            f"unsupported {kind} {data.get('format')!r} version {data.get('version')!r}",
        )
    return data


def read_meta(path: str | os.PathLike) -> dict:
    """The metadata of a dataset directory, with a clear error if it is not one."""
    return read_versioned_json(
        Path(path) / _META, FORMAT, VERSION, "format",
        f"not a complete geodml dataset directory (no {_META})", missing_at=path)


def _arrays(path: Path, meta: dict, mmap: bool
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """``indptr, indices, values (None when absent: every value is 1), labels`` of a
    dataset directory, read or memory-mapped; a file of the wrong size is an error
    naming it."""
    n, nnz = meta["n_rows"], meta["nnz"]

    def arr(name: str, dtype, count: int) -> np.ndarray:
        f = path / name
        expected = count * np.dtype(dtype).itemsize
        if not f.is_file() or f.stat().st_size != expected:
            size = f.stat().st_size if f.is_file() else "missing"
            raise DataFormatError(
                str(f), None, f"expected {expected} bytes for {count} {np.dtype(dtype).name}",
                f"size {size}",
            )
        if mmap and count:
            return np.memmap(f, dtype=dtype, mode="r", shape=(count,))
        return np.fromfile(f, dtype=dtype, count=count)

    indptr = arr("indptr.bin", np.int64, n + 1)
    indices = arr("indices.bin", np.int32, nnz)
    vdtype = meta["values_dtype"]
    values = None if vdtype is None else arr("values.bin", vdtype, nnz)
    labels = arr("labels.bin", np.float64, n)
    return indptr, indices, values, labels


def load_dataset(path: str | os.PathLike, mmap: bool = False) -> Dataset:
    """Load a dataset directory written by :class:`DatasetWriter`.

    With ``mmap=True`` the arrays are memory-mapped read-only instead of read (absent
    values are still an array of ones in memory; see :func:`map_dataset`).
    """
    path = Path(path)
    meta = read_meta(path)
    n, d, nnz = meta["n_rows"], meta["n_features"], meta["nnz"]
    indptr, indices, values, labels = _arrays(path, meta, mmap)
    if values is None:
        values = np.ones(nnz, np.float32)
    if nnz < 2**31 - 1 and not mmap:
        indptr = indptr.astype(np.int32)
    X = sp.csr_matrix((values, indices, indptr), shape=(n, d))
    return Dataset(X, np.asarray(labels), FeatureSpace.from_dict(meta["feature_space"]))


def map_dataset(path: str | os.PathLike) -> Dataset:
    """Memory-map a dataset directory without copying any array of ``nnz`` entries:
    the form a streaming site reads block by block (:mod:`geodml.data.streamed`).

    As ``load_dataset(path, mmap=True)``, except that absent values (every value 1)
    are a read-only zero-stride stand-in (``np.broadcast_to``, no memory) instead of
    ``4 * nnz`` bytes of ones. What is in memory: the int32 copy of the row pointers
    that scipy makes (4 bytes per row; the mapped int64 file's pages are released
    after). A matrix of ``2**31`` or more nonzeros is refused: scipy would need
    64-bit column indices and copy the int32 ``indices.bin`` to them (``8 * nnz``
    bytes).
    """
    from geodml.data.streamed import release_pages

    path = Path(path)
    meta = read_meta(path)
    n, d, nnz = meta["n_rows"], meta["n_features"], meta["nnz"]
    if nnz >= 2**31 - 1:
        raise DataFormatError(
            str(path / "indices.bin"), None,
            f"{nnz} nonzeros: streaming needs fewer than 2**31 - 1 per dataset directory "
            "(scipy would copy the int32 indices to int64 in memory); split the site's "
            "data into several directories (geodml partition)")
    indptr, indices, values, labels = _arrays(path, meta, mmap=True)
    if values is None:
        values = np.broadcast_to(np.ones(1, np.float32), (nnz,))
    X = sp.csr_matrix((values, indices, indptr), shape=(n, d))
    if not np.may_share_memory(X.indptr, indptr):
        release_pages(indptr)  # scipy made its own int32 copy: the mapped pages are unused
    return Dataset(X, np.asarray(labels), FeatureSpace.from_dict(meta["feature_space"]))
