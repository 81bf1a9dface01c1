"""Parquet files read with a :class:`~geodml.data.readers.table_schema.TableSchema`.

Row groups are read ``chunk_rows`` rows at a time (``ParquetFile.iter_batches``), only
the columns the schema uses, and converted by the same
:class:`~geodml.data.readers.table_convert.TableConverter` as CSV, so a table gives the same
rows whether stored as CSV or Parquet. Native numeric columns are used as they are;
categorical and label values are compared and hashed as text (Arrow's cast of a
non-string column to string, e.g. the integer 1005 as ``"1005"``). The schema's text
options (delimiter, header, encoding, skip_rows) do not apply. Errors name the 1-based
row instead of a line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geodml.data.readers.table_convert import (
    CellError,
    TableConverter,
    check_schema_columns,
    columns_to_read,
)
from geodml.data.readers.table_schema import TableSchema
from geodml.data.source import DEFAULT_CHUNK_ROWS, Chunk, KeySpec
from geodml.errors import ConfigError, DataFormatError


class ParquetSource:
    """A Parquet file as a :class:`~geodml.data.source.Source`."""

    def __init__(self, path: str | Path, schema: TableSchema, dtype: type | np.dtype = np.float64):
        self.path = str(path)
        if not Path(self.path).is_file():
            raise DataFormatError(self.path, None, "no such file")
        self.schema = schema
        self.converter = TableConverter(schema, dtype)
        self.space = self.converter.space
        try:
            self.names = pq.ParquetFile(self.path).schema_arrow.names
        except (pa.ArrowInvalid, OSError) as e:
            raise DataFormatError(self.path, None, f"not a readable Parquet file: {e}") from None
        check_schema_columns(self.path, self.names, schema)

    def chunks(
        self, key: KeySpec | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Yield chunks of at most ``chunk_rows`` rows, one record batch each."""
        if chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be positive, got {chunk_rows}")
        columns = columns_to_read(self.path, self.names, self.converter, key)
        done = 0
        with pq.ParquetFile(self.path) as f:
            for batch in f.iter_batches(batch_size=chunk_rows, columns=columns):
                if batch.num_rows == 0:
                    continue
                try:
                    yield self.converter.convert(pa.Table.from_batches([batch]), key)
                except CellError as e:
                    raise DataFormatError(
                        self.path, None,
                        f"row {done + e.row + 1}, column {e.column!r}: {e.problem}", e.value,
                    ) from None
                done += batch.num_rows
