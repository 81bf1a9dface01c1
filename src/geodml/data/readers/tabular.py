"""Tables with a column schema: CSV/TSV streamed with pyarrow, and the shared conversion.

A :class:`TableSchema` says which column is the label (and which of its values are
positive), which columns are numeric (with a transform), which are categorical, and
how to read the text (delimiter, header, encoding, missing tokens). Columns the schema
does not name are dropped. :class:`TableConverter` turns an Arrow table of those
columns into CSR rows in the schema's :class:`FeatureSpace`; the CSV source here and
the Parquet source both use it.

Feature space: fields are the numeric columns (in schema order) followed by the
categorical columns (in schema order). Numeric field ``j`` is column ``j``; a value
``v`` of the categorical field at position ``f`` of that list is column
``n_numeric + hash_buckets(string_tokens([v]), f, hash_seed, hash_bits)``, value 1.
Missing, NaN and zero numeric values and missing categorical values give no entry.
"""

from __future__ import annotations

import codecs
import csv
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from geodml.data.dataset import FeatureSpace, FieldSpec
from geodml.data.hashing import hash_buckets, string_tokens
from geodml.data.source import DEFAULT_CHUNK_ROWS, Chunk, KeySpec
from geodml.errors import ConfigError, DataFormatError

Transform = str  # "identity" | "log1p" | "scale:<positive number>" (see _check_transform)
DEFAULT_BLOCK_SIZE = 1 << 22


class TableSchema(BaseModel):
    """How the columns of a table become labels and features.

    - ``label``: the label column. With ``label_kind="binary"`` a value in ``positive``
      is 1.0; if ``negative`` is given, a value in it is 0.0 and any other value is an
      error; if not, every other value is 0.0. Both omitted means ``positive=["1"]``,
      ``negative=["0"]``. ``label_kind="real"`` parses the label as a number.
    - ``numeric`` / ``categorical``: feature columns; ``transforms`` maps a numeric column
      to ``identity`` (default), ``log1p`` (``sign(x) log(1 + |x|)``) or ``scale:S``
      (``x / S`` for a fixed ``S > 0``: the same in every DC, so no statistics need to
      be exchanged).
    - ``drop``: columns deliberately left out (every column not named is dropped anyway;
      listing one documents the choice and checks that it exists).
    - ``missing``: tokens that mean "no value" (compared after stripping when ``strip``).
    - ``header``: the first non-empty line (after ``skip_rows`` lines) is a header;
      ``"auto"``: it is one iff it equals ``column_names``. ``column_names`` name the
      columns of a header-less file (default ``c0, c1, ...``); with a header they must
      equal it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    label_kind: Literal["binary", "real"] = "binary"
    positive: list[str] | None = None
    negative: list[str] | None = None
    numeric: list[str] = Field(default_factory=list)
    transforms: dict[str, Transform] = Field(default_factory=dict)
    categorical: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=lambda: [""])
    delimiter: str = ","
    header: bool | Literal["auto"] = True
    column_names: list[str] | None = None
    encoding: str = "utf-8"
    skip_rows: int = Field(0, ge=0)
    strip: bool = True
    hash_bits: int = Field(18, ge=1, le=31)
    hash_seed: int = Field(0, ge=0, lt=2**32)

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str) -> str:
        if len(v) != 1 or v in ('"', "\n", "\r"):
            raise ValueError(f"must be one character other than a quote or newline, got {v!r}")
        return v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TableSchema:
        used = [self.label, *self.numeric, *self.categorical, *self.drop]
        dup = sorted({c for c in used if used.count(c) > 1})
        if dup:
            raise ValueError(f"columns named more than once among label/numeric/"
                             f"categorical/drop: {dup}")
        if not self.numeric and not self.categorical:
            raise ValueError("the schema names no numeric or categorical feature column")
        extra = sorted(set(self.transforms) - set(self.numeric))
        if extra:
            raise ValueError(f"transforms name columns that are not numeric: {extra}")
        for column, t in self.transforms.items():
            if scale_of(t) is None and t not in ("identity", "log1p"):
                raise ValueError(f"transforms.{column}: {t!r} is not identity, log1p or "
                                 "scale:<positive number>")
        if self.label_kind == "real" and (self.positive or self.negative):
            raise ValueError("positive/negative apply only to label_kind='binary'")
        if self.negative is not None and self.positive is None:
            raise ValueError("negative is given but positive is not")
        if self.positive is not None and not self.positive:
            raise ValueError("positive must list at least one value")
        if self.header == "auto" and not self.column_names:
            raise ValueError("header='auto' needs column_names to recognise the header")
        if self.column_names is not None:
            names = self.column_names
            if len(set(names)) != len(names):
                raise ValueError("column_names has duplicates")
            unknown = [c for c in used if c not in names]
            if unknown:
                raise ValueError(f"columns not in column_names: {unknown}")
        return self

    @property
    def positive_values(self) -> list[str]:
        return ["1"] if self.positive is None else list(self.positive)

    @property
    def negative_values(self) -> list[str] | None:
        """The allowed negative values, or None when every non-positive value is 0."""
        if self.positive is None and self.negative is None:
            return ["0"]
        return None if self.negative is None else list(self.negative)

    def fields(self) -> tuple[FieldSpec, ...]:
        """Numeric fields (schema order) then categorical fields (schema order)."""
        return tuple(
            [FieldSpec(c, "numeric", self.transforms.get(c, "identity")) for c in self.numeric]
            + [FieldSpec(c, "categorical") for c in self.categorical]
        )

    def feature_space(self) -> FeatureSpace:
        return FeatureSpace.hashed(self.fields(), self.hash_bits, self.hash_seed)


# -- presets for the shared datasets ----------------------------------------------------

ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
)
AIRLINE_LEAKY = (
    "DepTime", "ArrTime", "ActualElapsedTime", "AirTime", "ArrDelay", "DepDelay",
    "TaxiIn", "TaxiOut", "Cancelled", "CancellationCode", "Diverted", "CarrierDelay",
    "WeatherDelay", "NASDelay", "SecurityDelay", "LateAircraftDelay", "IsArrDelayed",
)
AVAZU_COLUMNS = (
    "id", "click", "hour", "C1", "banner_pos", "site_id", "site_domain", "site_category",
    "app_id", "app_domain", "app_category", "device_id", "device_ip", "device_model",
    "device_type", "device_conn_type", "C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21",
)
COVTYPE_COLUMNS = tuple(f"c{i}" for i in range(55))
COVTYPE_WILDERNESS = ("c10", "c11", "c12", "c13")  # Wilderness_Area1..4, one-hot
HIGGS_COLUMNS = tuple(f"c{i}" for i in range(29))


def adult_schema() -> TableSchema:
    """UCI Adult: ", "-separated, no header, ``?`` missing; label ``>50K`` (``>50K.`` in
    adult.test, whose first line must be skipped with ``skip_rows=1``)."""
    return TableSchema(
        label="income", positive=[">50K", ">50K."], negative=["<=50K", "<=50K."],
        numeric=["age", "fnlwgt", "education-num", "capital-gain", "capital-loss",
                 "hours-per-week"],
        transforms={"fnlwgt": "log1p", "capital-gain": "log1p", "capital-loss": "log1p"},
        categorical=["workclass", "education", "marital-status", "occupation",
                     "relationship", "race", "sex", "native-country"],
        missing=["", "?"], header=False, column_names=list(ADULT_COLUMNS), strip=True,
    )


def airline_schema() -> TableSchema:
    """Airline on-time (H2O allyears2k): latin-1, ``NA`` missing, label IsDepDelayed=YES;
    everything known only after departure is dropped (PROVENANCE.md)."""
    return TableSchema(
        label="IsDepDelayed", positive=["YES"], negative=["NO"],
        numeric=["Year", "Month", "DayofMonth", "DayOfWeek", "CRSDepTime", "CRSArrTime",
                 "CRSElapsedTime", "Distance"],
        transforms={"Distance": "log1p", "CRSElapsedTime": "log1p"},
        categorical=["UniqueCarrier", "FlightNum", "TailNum", "Origin", "Dest"],
        drop=list(AIRLINE_LEAKY), missing=["", "NA"], encoding="latin-1",
    )


def taxi_schema() -> TableSchema:
    """Chicago taxi (TFX): label big_tipper; ``tips`` (the label's source) is dropped,
    as is the raw timestamp (its month/day/hour are kept)."""
    return TableSchema(
        label="big_tipper",
        numeric=["fare", "trip_miles", "trip_seconds", "pickup_latitude",
                 "pickup_longitude", "dropoff_latitude", "dropoff_longitude"],
        transforms={"fare": "log1p", "trip_miles": "log1p", "trip_seconds": "log1p"},
        categorical=["pickup_community_area", "dropoff_community_area",
                     "pickup_census_tract", "dropoff_census_tract", "payment_type",
                     "company", "trip_start_month", "trip_start_hour", "trip_start_day"],
        drop=["tips", "trip_start_timestamp"],
    )


def avazu_schema() -> TableSchema:
    """Avazu CTR: label click; ``id`` dropped; every other column categorical. The
    header is recognised when present (``header="auto"``), so the header-less second
    file reads with the same schema."""
    return TableSchema(
        label="click", numeric=[],
        categorical=[c for c in AVAZU_COLUMNS if c not in ("id", "click")],
        drop=["id"], header="auto", column_names=list(AVAZU_COLUMNS),
    )


# Fixed scales of covtype's 10 quantitative columns, from the ranges in UCI's
# covtype.info: elevation (m), aspect (degrees), slope (degrees), horizontal and
# vertical distance to water (m), to roads (m), three hillshade indices (0-255),
# distance to fire points (m). Raw, they span 0..7000 beside 0/1 indicators, which
# leaves logistic regression so ill-conditioned that L-BFGS needs >20,000 iterations.
COVTYPE_SCALES = (4000, 360, 90, 1500, 600, 7500, 255, 255, 255, 7500)


def covtype_schema() -> TableSchema:
    """UCI covtype: no header, columns ``c0..c54``; label class 2 (Lodgepole pine) vs the
    rest; the 54 attributes numeric (``c10..c13`` are the wilderness one-hot), the 10
    quantitative ones divided by fixed scales (:data:`COVTYPE_SCALES`)."""
    return TableSchema(
        label="c54", positive=["2"], negative=["1", "3", "4", "5", "6", "7"],
        numeric=list(COVTYPE_COLUMNS[:54]), header=False, column_names=list(COVTYPE_COLUMNS),
        transforms={c: f"scale:{s}" for c, s in zip(COVTYPE_COLUMNS, COVTYPE_SCALES,
                                                    strict=False)},
    )


def higgs_schema() -> TableSchema:
    """HIGGS (LightGBM example): TSV, no header, label ``c0`` in {0, 1}, 28 dense floats."""
    return TableSchema(
        label="c0", numeric=list(HIGGS_COLUMNS[1:]), delimiter="\t", header=False,
        column_names=list(HIGGS_COLUMNS),
    )


PRESETS: dict[str, Callable[[], TableSchema]] = {
    "adult": adult_schema,
    "airline": airline_schema,
    "taxi": taxi_schema,
    "avazu": avazu_schema,
    "covtype": covtype_schema,
    "higgs": higgs_schema,
}


def resolve_schema(
    schema: TableSchema | dict | None = None, preset: str | None = None, **overrides
) -> TableSchema:
    """A schema from a preset and/or an explicit schema (dict or model), then overrides.

    Later sources win key by key: preset, then ``schema``, then ``overrides``; the
    merged result is validated as a whole (:class:`ConfigError` naming the field).
    """
    merged: dict = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
        merged.update(PRESETS[preset]().model_dump(exclude_unset=True))
    if isinstance(schema, TableSchema):
        merged.update(schema.model_dump(exclude_unset=True))
    elif schema is not None:
        merged.update(schema)
    merged.update({k: v for k, v in overrides.items() if v is not None})
    if not merged:
        raise ConfigError("a table source needs a schema or a preset")
    return _validate(merged, "schema")


def load_schema(path: str | Path, preset: str | None = None, **overrides) -> TableSchema:
    """Read a schema from a TOML file (keys as :class:`TableSchema` fields).

    A ``preset = "name"`` key (or the ``preset`` argument) starts from that preset.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read schema: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    named = data.pop("preset", None)
    if named is not None and preset is not None and named != preset:
        raise ConfigError(f"{path}: preset {named!r} conflicts with the given preset {preset!r}")
    preset = named or preset
    base = {} if preset is None else resolve_schema(preset=preset).model_dump(exclude_unset=True)
    base.update(data)
    base.update({k: v for k, v in overrides.items() if v is not None})
    return _validate(base, str(path))


def _validate(data: dict, where: str) -> TableSchema:
    try:
        return TableSchema.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"field {'.'.join(str(p) for p in err['loc']) or '(schema)'}: {err['msg']}"
            for err in e.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


# -- Arrow columns to CSR ---------------------------------------------------------------


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


def scale_of(transform: str) -> float | None:
    """``S`` of a ``scale:S`` transform with ``S`` finite and positive, else None."""
    if not transform.startswith("scale:"):
        return None
    try:
        scale = float(transform[len("scale:"):])
    except ValueError:
        return None
    return scale if np.isfinite(scale) and scale > 0 else None


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
            transform = s.transforms.get(name, "identity")
            if transform == "log1p":
                v = signed_log1p(v)
            elif (scale := scale_of(transform)) is not None:
                v = v / scale
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


class CsvSource:
    """A delimited text file read with a :class:`TableSchema`, streamed in chunks.

    pyarrow parses ``block_size`` bytes at a time (single-threaded, so row numbers are
    known) and only the columns the schema uses are converted, all as text. Empty lines
    and whitespace-only lines are skipped. Line numbers in errors are 1-based physical
    lines of the file (header and skipped lines included).
    """

    def __init__(
        self,
        path: str | Path,
        schema: TableSchema,
        dtype: type | np.dtype = np.float64,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ):
        self.path = str(path)
        if not Path(self.path).is_file():
            raise DataFormatError(self.path, None, "no such file")
        self.schema = schema
        self.block_size = int(block_size)
        self.converter = TableConverter(schema, dtype)
        self.space = self.converter.space
        self._layout()

    def _layout(self) -> None:
        """Find the header (if any) and the column names; check the schema's columns."""
        s = self.schema
        first, line_no = None, 0
        with open(self.path, encoding=s.encoding, errors="replace") as f:
            for _ in range(s.skip_rows):
                if not f.readline():
                    break
                line_no += 1
            for line in f:
                line_no += 1
                if line.rstrip("\r\n"):
                    first = line.rstrip("\r\n").lstrip("\ufeff")
                    break
        self._empty = first is None
        fields = [] if first is None else next(csv.reader([first], delimiter=s.delimiter))
        if s.strip:
            fields = [x.strip() for x in fields]
        header = s.header
        if header == "auto":
            header = fields == s.column_names
        if header and first is not None:
            if s.column_names is not None and fields != s.column_names:
                raise DataFormatError(
                    self.path, line_no, "header does not match the schema's column_names "
                    f"({len(s.column_names)} names starting {s.column_names[:3]})", first)
            self.names = fields
            self._data_skip = line_no
        else:
            self.names = list(s.column_names) if s.column_names is not None else [
                f"c{i}" for i in range(len(fields))]
            self._data_skip = s.skip_rows
        if first is None:
            return
        check_schema_columns(self.path, self.names, s, line_no if header else None)

    def chunks(
        self, key: KeySpec | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Yield chunks of at most ``chunk_rows`` rows; memory is one block plus one chunk."""
        if chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be positive, got {chunk_rows}")
        if self._empty:
            return
        columns = columns_to_read(self.path, self.names, self.converter, key)
        state = _RowState()
        done = 0
        for table in rebatch(self._batches(columns, state), chunk_rows):
            try:
                yield self.converter.convert(table, key)
            except CellError as e:
                line, _ = self._physical(state.ordinal(self._data_skip, done + e.row))
                raise DataFormatError(self.path, line, f"column {e.column!r}: {e.problem}",
                                      e.value) from None
            done += table.num_rows

    def _batches(self, columns: list[str], state: _RowState) -> Iterator[pa.RecordBatch]:
        s = self.schema

        def on_invalid(row) -> str:
            if not row.text.strip():
                state.skipped.append(row.number)
                return "skip"
            state.bad.append(row)
            return "error"

        read = pacsv.ReadOptions(
            use_threads=False, block_size=self.block_size, skip_rows=self._data_skip,
            column_names=self.names, encoding=s.encoding)
        parse = pacsv.ParseOptions(delimiter=s.delimiter, invalid_row_handler=on_invalid,
                                   ignore_empty_lines=True, newlines_in_values=False)
        convert = pacsv.ConvertOptions(
            include_columns=columns, column_types={c: pa.string() for c in columns},
            strings_can_be_null=False, quoted_strings_can_be_null=False)
        try:
            reader = pacsv.open_csv(self.path, read_options=read, parse_options=parse,
                                    convert_options=convert)
        except (pa.ArrowInvalid, UnicodeDecodeError) as e:
            raise self._arrow_error(e, state) from None
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, UnicodeDecodeError) as e:
                raise self._arrow_error(e, state) from None
            yield batch

    def _arrow_error(self, e: Exception, state: _RowState) -> DataFormatError:
        """Translate a pyarrow failure into a located :class:`DataFormatError`."""
        if state.bad:
            row = state.bad[0]
            line, _ = self._physical(row.number)
            return DataFormatError(
                self.path, line,
                f"expected {row.expected_columns} fields, found {row.actual_columns}", row.text)
        msg = str(e)
        if isinstance(e, UnicodeDecodeError) or "UTF8" in msg or "utf-8" in msg.lower():
            line, text = self._first_undecodable()
            return DataFormatError(
                self.path, line,
                f"text is not valid {self.schema.encoding} (set the schema's encoding, "
                "e.g. 'latin-1')", text)
        if "straddle" in msg:
            return DataFormatError(
                self.path, None,
                f"a row is longer than block_size={self.block_size} bytes; raise block_size")
        return DataFormatError(self.path, None, f"CSV parse error: {msg}")

    def _physical(self, ordinal: int) -> tuple[int | None, str | None]:
        """Physical line (and text) of pyarrow's row ``ordinal``.

        pyarrow counts the ``skip_rows`` lines it skipped, then non-empty lines only.
        """
        with open(self.path, encoding=self.schema.encoding, errors="replace") as f:
            line_no, count = 0, self._data_skip
            for line in f:
                line_no += 1
                if line_no <= self._data_skip:
                    continue
                if line.rstrip("\r\n"):
                    count += 1
                    if count == ordinal:
                        return line_no, line.rstrip("\r\n")
        return None, None

    def _first_undecodable(self) -> tuple[int | None, str | None]:
        """The first line that does not decode in the schema's encoding."""
        with open(self.path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    raw.decode(self.schema.encoding)
                except UnicodeDecodeError:
                    return line_no, raw.rstrip(b"\r\n").decode(self.schema.encoding, "replace")
        return None, None


class _RowState:
    """Rows pyarrow skipped (whitespace-only, by ordinal) or rejected while reading."""

    def __init__(self) -> None:
        self.skipped: list[int] = []
        self.bad: list = []

    def ordinal(self, data_skip: int, row: int) -> int:
        """pyarrow's ordinal of the ``row``-th (0-based) row it yielded.

        Yielded rows and skipped whitespace-only rows share one count after
        ``data_skip``: the ordinal ``o`` solves ``o = data_skip + row + 1 + #{s <= o}``.
        """
        o = data_skip + row + 1
        while True:
            nxt = data_skip + row + 1 + sum(1 for s in self.skipped if s <= o)
            if nxt == o:
                return o
            o = nxt
