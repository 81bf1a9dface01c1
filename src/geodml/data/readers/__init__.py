"""Readers: stream LIBSVM, Criteo, CSV and Parquet files as chunks in a shared feature space.

``open_source(path, fmt, **options)`` returns a :class:`~geodml.data.source.Source`;
``read_dataset`` reads one whole into memory. Options by format:

- ``libsvm``/``svmlight``: ``n_features``, ``zero_based``, ``labels``, ``featindex``, ``dtype``
  (:class:`LibsvmSource`).
- ``criteo``: ``hash_bits``, ``hash_seed``, ``dtype``, ``block_size``.
- ``csv``/``parquet``: ``schema`` (a :class:`TableSchema` or dict), ``preset`` (a name in
  :data:`PRESETS`), any :class:`TableSchema` field as an override, ``dtype``, and for CSV
  ``block_size``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from geodml.data.dataset import Dataset
from geodml.data.readers.criteo import CRITEO_COLUMNS, criteo_schema, criteo_source
from geodml.data.readers.libsvm import LibsvmSource
from geodml.data.readers.parquet import ParquetSource
from geodml.data.readers.table_convert import TableConverter
from geodml.data.readers.table_presets import (
    COVTYPE_WILDERNESS,
    PRESETS,
    load_schema,
    resolve_schema,
)
from geodml.data.readers.table_schema import TableSchema
from geodml.data.readers.tabular import CsvSource
from geodml.data.source import KeySpec, Source, read_all
from geodml.errors import ConfigError

FORMATS = ("libsvm", "svmlight", "criteo", "csv", "parquet")

__all__ = [
    "COVTYPE_WILDERNESS",
    "CRITEO_COLUMNS",
    "FORMATS",
    "PRESETS",
    "CsvSource",
    "LibsvmSource",
    "ParquetSource",
    "TableConverter",
    "TableSchema",
    "criteo_schema",
    "criteo_source",
    "load_schema",
    "open_source",
    "read_dataset",
    "resolve_schema",
]


def open_source(path: str | Path, fmt: str, **options) -> Source:
    """A streaming source for ``path`` in format ``fmt`` (one of :data:`FORMATS`)."""
    fmt = fmt.lower()
    if fmt in ("libsvm", "svmlight"):
        return LibsvmSource(path, **_checked(LibsvmSource, fmt, options))
    if fmt == "criteo":
        return criteo_source(path, **_checked(criteo_source, fmt, options))
    if fmt in ("csv", "parquet"):
        schema = options.pop("schema", None)
        preset = options.pop("preset", None)
        overrides = {k: options.pop(k) for k in list(options) if k in TableSchema.model_fields}
        resolved = resolve_schema(schema, preset, **overrides)
        cls = CsvSource if fmt == "csv" else ParquetSource
        return cls(path, resolved, **_checked(cls, fmt, options))
    raise ConfigError(f"unknown data format {fmt!r}; known: {', '.join(FORMATS)}")


def read_dataset(
    path: str | Path, fmt: str, key: KeySpec | None = None, **options
) -> Dataset:
    """Read a whole file into memory (through the same chunked reader)."""
    return read_all(open_source(path, fmt, **options), key=key)[0]


def _checked(target, fmt: str, options: dict) -> dict:
    accepted = set(inspect.signature(target).parameters) - {"self", "path", "schema"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {unknown} for format {fmt!r}; accepted: {sorted(accepted)}")
    return options
