"""CSV/TSV tables with a column schema, streamed with pyarrow (:class:`CsvSource`).

A :class:`~geodml.data.readers.table_schema.TableSchema` says which column is the
label (and which of its values are positive), which columns are numeric (with a
transform), which are categorical, and how to read the text (delimiter, header,
encoding, missing tokens); it also states the feature space. Columns the schema does
not name are dropped. :class:`~geodml.data.readers.table_convert.TableConverter`
turns an Arrow table of those columns into CSR rows in the schema's feature space;
the CSV source here and the Parquet source both use it. Presets of the shared
datasets are in :mod:`geodml.data.readers.table_presets`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from geodml.data.readers.table_convert import (
    CellError,
    TableConverter,
    check_schema_columns,
    columns_to_read,
    rebatch,
)
from geodml.data.readers.table_schema import TableSchema
from geodml.data.source import DEFAULT_CHUNK_ROWS, Chunk, KeySpec
from geodml.errors import ConfigError, DataFormatError

DEFAULT_BLOCK_SIZE = 1 << 22


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
