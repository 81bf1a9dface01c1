"""Arrow columns to CSR rows in a schema's feature space (:class:`TableConverter`),
shared by the CSV and Parquet sources, and the checks both make of a file's columns."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from geodml.data.hashing import hash_buckets, string_tokens
from geodml.data.readers.table_schema import TableSchema, parse_transform
from geodml.data.source import Chunk, KeySpec
from geodml.errors import ConfigError, DataFormatError


class CellError(Exception):
    """A bad value at row ``row`` (0-based within the converted table) of ``column``."""

    def __init__(self, row: int, column: str, problem: str, value: str | None):
        super().__init__(f"row {row}, column {column!r}: {problem}: {value!r}")
        self.row, self.column, self.problem, self.value = row, column, problem, value


def check_schema_columns(path: str, names: list[str], schema: TableSchema,
                         line: int | None = None) -> None:
    """DataFormatError unless every column the schema names is among ``names``."""
    wanted = [schema.label, *schema.numeric, *schema.categorical, *schema.drop]
    absent = [c for c in wanted if c not in names]
    if absent:
        raise DataFormatError(path, line,
                              f"columns named in the schema are not in the file: {absent}",
                              ",".join(names))


def columns_to_read(path: str, names: list[str], converter: TableConverter,
                    key: KeySpec | None) -> list[str]:
    """The columns a chunk needs (schema and key); ConfigError for an absent key column."""
    columns = converter.columns(key)
    absent = [c for c in columns if c not in names]
    if absent:
        raise ConfigError(f"{path}: key columns not in the file: {absent}")
    return columns


def signed_log1p(x: np.ndarray) -> np.ndarray:
    """``sign(x) * log(1 + |x|)``, elementwise."""
    return np.sign(x) * np.log1p(np.abs(x))


class TableConverter:
    """Turns Arrow tables holding a schema's columns into :class:`Chunk` rows."""

    def __init__(self, schema: TableSchema, dtype: type | np.dtype = np.float64):
        self.schema = schema
        self.space = schema.feature_space()
        self.dtype = np.dtype(dtype)
        self._missing = pa.array(schema.missing, pa.string())
        self._positive = pa.array(schema.positive_values, pa.string())
        negative = schema.negative_values
        self._allowed = None if negative is None else pa.array(
            schema.positive_values + negative, pa.string())

    def columns(self, key: KeySpec | None) -> list[str]:
        """The columns to read: label, features, and those the key needs."""
        s = self.schema
        cols = [s.label, *s.numeric, *s.categorical]
        if key is not None:
            if key.feature_prefix is not None:
                raise ConfigError("a table source takes KeySpec(column=...) or "
                                  "KeySpec(onehot=...), not feature_prefix")
            cols += [key.column] if key.column is not None else list(key.onehot)
        return list(dict.fromkeys(cols))

    def convert(self, table: pa.Table, key: KeySpec | None = None) -> Chunk:
        """CSR rows, labels and keys of ``table``; raises :class:`CellError` on a bad value."""
        s = self.schema
        n = table.num_rows
        y = self._labels(table.column(s.label))
        n_num, n_cat = len(s.numeric), len(s.categorical)
        cols = np.empty((n, n_num + n_cat), dtype=np.int64)
        vals = np.ones((n, n_num + n_cat), dtype=np.float64)
        for j, name in enumerate(s.numeric):
            v = self._floats(table.column(name), name)
            log, center, scale = parse_transform(s.transforms.get(name, "identity"))
            if log:
                v = signed_log1p(v)
            if center or scale != 1.0:
                v = (v - center) / scale
            cols[:, j] = j
            vals[:, j] = v
        keep = np.empty(cols.shape, dtype=bool)
        keep[:, :n_num] = ~np.isnan(vals[:, :n_num]) & (vals[:, :n_num] != 0)
        for k, name in enumerate(s.categorical):
            b = self._buckets(table.column(name), n_num + k)
            cols[:, n_num + k] = n_num + b
            keep[:, n_num + k] = b >= 0
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(keep.sum(axis=1), out=indptr[1:])
        X = sp.csr_matrix(
            (vals[keep].astype(self.dtype), cols[keep].astype(np.int32), indptr),
            shape=(n, self.space.n_features),
        )
        X.sum_duplicates()
        return Chunk(X, y, None if key is None else self._keys(table, key))

    # -- columns -------------------------------------------------------------------------

    def _text(self, column: pa.ChunkedArray | pa.Array) -> pa.Array:
        """The column as strings: stripped (if the schema says so), missing tokens null."""
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        if not pa.types.is_string(arr.type):
            arr = pc.cast(arr, pa.string())
        if self.schema.strip:
            arr = pc.utf8_trim_whitespace(arr)
        if len(self._missing):
            arr = pc.if_else(pc.is_in(arr, value_set=self._missing), pa.scalar(None, arr.type),
                             arr)
        return arr

    def _floats(self, column: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
        """The column as float64, NaN where missing; text must parse as a number."""
        arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        t = arr.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t) or \
                pa.types.is_decimal(t):
            f = pc.cast(arr, pa.float64())
        else:
            text = self._text(arr)
            try:
                f = pc.cast(text, pa.float64())
            except pa.ArrowInvalid:
                i = _first_unparsable(text, pa.float64())
                raise CellError(i, name, "not a number", text[i].as_py()) from None
        v = f.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        bad = np.isinf(v)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CellError(i, name, "infinite value", str(arr[i].as_py()))
        return v

    def _labels(self, column: pa.ChunkedArray) -> np.ndarray:
        """Labels as float64: 1.0/0.0 by the positive set, or the number (real)."""
        s = self.schema
        if s.label_kind == "real":
            v = self._floats(column, s.label)
            if np.isnan(v).any():
                raise CellError(int(np.flatnonzero(np.isnan(v))[0]), s.label, "missing label",
                                None)
            return v
        text = self._text(column)
        if text.null_count:
            i = int(np.flatnonzero(text.is_null().to_numpy(zero_copy_only=False))[0])
            raw = column[i].as_py()
            raise CellError(i, s.label, "missing label", None if raw is None else str(raw))
        if self._allowed is not None:
            ok = pc.is_in(text, value_set=self._allowed).to_numpy(zero_copy_only=False)
            if not ok.all():
                i = int(np.flatnonzero(~ok)[0])
                allowed = ", ".join(self._allowed.to_pylist())
                raise CellError(i, s.label, f"label not in the allowed set {{{allowed}}}",
                                text[i].as_py())
        return pc.is_in(text, value_set=self._positive).to_numpy(
            zero_copy_only=False).astype(np.float64)

    def _buckets(self, column: pa.ChunkedArray, field_index: int) -> np.ndarray:
        """Hash bucket of each value (-1 where missing); each distinct value hashed once."""
        enc = pc.dictionary_encode(self._text(column))
        uniq = enc.dictionary.to_pylist()
        b = hash_buckets(string_tokens(uniq), field_index, self.schema.hash_seed,
                         self.schema.hash_bits) if uniq else np.zeros(0, np.int64)
        idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
        return np.append(b, -1)[idx]

    def _keys(self, table: pa.Table, key: KeySpec) -> np.ndarray:
        if key.column is not None:
            text = pc.fill_null(self._text(table.column(key.column)), "")
            return np.asarray(text.to_pylist(), dtype=str)
        names = list(key.onehot)
        hot = np.stack([np.nan_to_num(self._floats(table.column(c), c)) != 0 for c in names],
                       axis=1)
        count = hot.sum(axis=1)
        if np.any(count > 1):
            i = int(np.flatnonzero(count > 1)[0])
            on = [c for c, h in zip(names, hot[i], strict=True) if h]
            raise CellError(i, "/".join(names), "more than one one-hot key column is nonzero",
                            ", ".join(on))
        out = np.array([*names, ""], dtype=str)
        choice = np.where(count == 1, hot.argmax(axis=1), len(names))
        return out[choice]


def _first_unparsable(text: pa.Array, to: pa.DataType) -> int:
    """Index of the first value of ``text`` that does not cast to ``to`` (bisection)."""
    lo, hi = 0, len(text)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(text.slice(lo, mid - lo), to)
        except pa.ArrowInvalid:
            hi = mid
        else:
            lo = mid
    return lo


def rebatch(batches: Iterator[pa.RecordBatch], chunk_rows: int) -> Iterator[pa.Table]:
    """Regroup record batches into tables of exactly ``chunk_rows`` rows (the last fewer)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.append(batch)
        count += batch.num_rows
        while count >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows).combine_chunks()
            rest = table.slice(chunk_rows)
            pending = rest.to_batches()
            count = rest.num_rows
    if count:
        yield pa.Table.from_batches(pending).combine_chunks()


# -- CSV --------------------------------------------------------------------------------
