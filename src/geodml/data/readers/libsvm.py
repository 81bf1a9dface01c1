"""LIBSVM / SVMlight text: ``label idx:val idx:val ... [# comment]``, one row a line.

Labels: with ``labels="binary"`` (default) ``+1``/``1`` map to 1.0 and ``-1``/``0`` to 0.0;
any other label is a :class:`DataFormatError`. ``labels="real"`` keeps any finite number
(regression). Indices are integers, 1-based by default (``zero_based=False``), 0-based
with ``zero_based=True``; ``"auto"`` makes a first pass over the file and is 0-based iff
some index 0 occurs. ``n_features=None`` also makes that pass and takes the largest index
seen; give it explicitly so that every DC (and train and test) share one feature space.
Values are finite numbers, and a bare ``idx`` (no ``:val``) has value 1; ``qid:`` tokens
are skipped; blank and comment lines are skipped.

Each piece of a chunk is tokenized with numpy over its bytes and its numbers parsed by
Arrow casts; a piece that fails any structural check is parsed again line by line by
the reference parser, which raises the error with the exact line and offending token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from geodml.data.dataset import FeatureSpace
from geodml.data.source import DEFAULT_CHUNK_ROWS, Chunk, KeySpec
from geodml.errors import ConfigError, DataFormatError

LabelKind = Literal["binary", "real"]
IndexBase = bool | Literal["auto"]

_NUMBER = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INDEX = re.compile(rb"[0-9]+")
_SEPARATORS = np.zeros(256, dtype=bool)
_SEPARATORS[[9, 10, 11, 12, 13, 32, 58]] = True  # whitespace and ':'
_DIGITS = np.zeros(256, dtype=bool)
_DIGITS[48:58] = True
_COLON, _NEWLINE = 58, 10
_PIECE_LINES = 8192


class _Parsed:
    """One chunk parsed: CSR parts in the file's raw index numbering, plus line numbers."""

    __slots__ = ("indices", "indptr", "labels", "lines", "values")

    def __init__(self, labels, indptr, indices, values, lines):
        self.labels = labels  # float64[n] raw label values
        self.indptr = indptr  # int64[n + 1]
        self.indices = indices  # int64[nnz], raw (as written in the file)
        self.values = values  # float64[nnz]
        self.lines = lines  # int64[n], 1-based physical line of each row

    @staticmethod
    def concat(parts: list[_Parsed]) -> _Parsed:
        if len(parts) == 1:
            return parts[0]
        starts = np.cumsum([0] + [len(p.indices) for p in parts[:-1]])
        indptr = np.concatenate(
            [[0]] + [p.indptr[1:] + s for p, s in zip(parts, starts, strict=True)])
        return _Parsed(
            np.concatenate([p.labels for p in parts]), indptr.astype(np.int64),
            np.concatenate([p.indices for p in parts]),
            np.concatenate([p.values for p in parts]),
            np.concatenate([p.lines for p in parts]),
        )


class LibsvmSource:
    """A LIBSVM/SVMlight file as a :class:`~geodml.data.source.Source`.

    ``featindex`` names a feature map (lines ``name<TAB>index``, iPinYou's
    ``featindex.fm.txt``, indices in the same base as the data file); it is needed for
    ``KeySpec(feature_prefix=...)``, whose key is the name of the row's one active feature
    starting with the prefix (``""`` if it has none; two of them is an error).
    """

    def __init__(
        self,
        path: str | Path,
        n_features: int | None = None,
        zero_based: IndexBase = False,
        labels: LabelKind = "binary",
        featindex: str | Path | None = None,
        dtype: type | np.dtype = np.float64,
    ):
        self.path = str(path)
        if not Path(self.path).is_file():
            raise DataFormatError(self.path, None, "no such file")
        if labels not in ("binary", "real"):
            raise ConfigError(f"labels must be 'binary' or 'real', got {labels!r}")
        if zero_based not in (True, False, "auto"):
            raise ConfigError(f"zero_based must be True, False or 'auto', got {zero_based!r}")
        if n_features is not None and n_features < 1:
            raise ConfigError(f"n_features must be positive, got {n_features}")
        self.labels: LabelKind = labels
        self.dtype = np.dtype(dtype)
        self.featindex = None if featindex is None else str(featindex)
        if n_features is None or zero_based == "auto":
            lo, hi = self._index_range()
            if zero_based == "auto":
                zero_based = lo == 0
            if n_features is None:
                n_features = max(hi + 1 if zero_based else hi, 1)
        self.zero_based: bool = bool(zero_based)
        self.n_features: int = int(n_features)
        self.space = FeatureSpace(n_features=self.n_features, kind="indexed")

    # -- public --------------------------------------------------------------------------

    def chunks(
        self, key: KeySpec | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        """Yield the file's rows in chunks of at most ``chunk_rows`` rows.

        Memory is bounded by one chunk: lines are read ``chunk_rows`` at a time.
        """
        if chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be positive, got {chunk_rows}")
        key_of_column = self._key_map(key)
        offset = 0 if self.zero_based else 1
        for parsed in self._parsed_chunks(chunk_rows, check_range=True):
            n = len(parsed.labels)
            y = self._map_labels(parsed)
            cols = (parsed.indices - offset).astype(np.int32)
            X = sp.csr_matrix(
                (parsed.values.astype(self.dtype), cols, parsed.indptr),
                shape=(n, self.n_features),
            )
            X.sum_duplicates()
            X.eliminate_zeros()
            keys = None if key_of_column is None else self._keys(parsed, cols, key_of_column)
            yield Chunk(X, y, keys)

    # -- parsing -------------------------------------------------------------------------

    def _parsed_chunks(self, chunk_rows: int, check_range: bool) -> Iterator[_Parsed]:
        """Parsed chunks of up to ``chunk_rows`` lines (blank and comment lines give no row).

        Each chunk is tokenized in pieces of at most ``_PIECE_LINES`` lines, which bounds
        the vectorized parser's temporaries independently of ``chunk_rows``.
        """
        line_no = 1
        with open(self.path, "rb") as f:
            while True:
                parts = []
                remaining = chunk_rows
                while remaining:
                    lines = list(islice(f, min(remaining, _PIECE_LINES)))
                    if not lines:
                        break
                    parsed = self._parse_fast(lines, line_no, check_range)
                    if parsed is None:
                        parsed = self._parse_slow(lines, line_no, check_range)
                    parts.append(parsed)
                    line_no += len(lines)
                    remaining -= len(lines)
                if not parts:
                    return
                merged = _Parsed.concat(parts)
                if len(merged.labels):
                    yield merged

    def _index_range(self) -> tuple[int, int]:
        """First pass: the smallest and largest raw index in the file."""
        lo, hi = None, None
        for parsed in self._parsed_chunks(DEFAULT_CHUNK_ROWS, check_range=False):
            if len(parsed.indices):
                a, b = int(parsed.indices.min()), int(parsed.indices.max())
                lo = a if lo is None else min(lo, a)
                hi = b if hi is None else max(hi, b)
        if hi is None:
            raise DataFormatError(self.path, None, "no feature indices found to infer n_features")
        return lo, hi

    def _range_ok(self, indices: np.ndarray) -> bool:
        if not len(indices):
            return True
        offset = 0 if self.zero_based else 1
        return bool(indices.min() >= offset and indices.max() - offset < self.n_features)

    def _parse_fast(self, lines: list[bytes], first_line: int, check_range: bool):
        """Vectorized parse of a block of lines, or None if anything looks wrong.

        Bytes that are whitespace or ':' separate tokens. In a well-formed line the first
        token (the label) touches no ':', every ':' sits between two tokens, a token
        preceded by ':' is a value and any other token an index (value 1 unless a ':'
        follows it); any deviation sends the piece to the reference parser.
        """
        blob = b"".join(lines)
        if b"#" in blob or b"qid:" in blob:
            return None
        if not blob.endswith(b"\n"):
            blob += b"\n"
        buf = np.frombuffer(blob, dtype=np.uint8)
        solid = ~_SEPARATORS[buf]
        edge = np.diff(solid.view(np.int8), prepend=np.int8(0), append=np.int8(0))
        starts = np.flatnonzero(edge == 1)
        ends = np.flatnonzero(edge == -1)
        newline_count = np.cumsum(buf == _NEWLINE, dtype=np.int32)
        if newline_count[-1] != len(lines):  # a stray '\r' or similar: let the slow path decide
            return None
        line_of_tok = newline_count[starts]
        per_line = np.bincount(line_of_tok, minlength=len(lines))
        first_tok = np.concatenate(([0], np.cumsum(per_line)[:-1]))
        is_label = np.arange(len(starts)) == first_tok[line_of_tok]
        followed = buf[ends] == _COLON  # ends < len(buf): the blob ends with '\n'
        preceded = (starts > 0) & (buf[starts - 1] == _COLON)
        colons = np.flatnonzero(buf == _COLON)
        if len(colons) and (colons[0] == 0 or not np.all(solid[colons - 1] & solid[colons + 1])):
            return None  # a ':' without a token right before and after it
        if np.any(is_label & (followed | preceded)) or np.any(followed & preceded):
            return None
        is_idx = ~is_label & ~preceded  # the other tokens (preceded by ':') are values
        # index tokens must be plain digits: count the non-digits inside each of them
        nondigit = np.cumsum(~_DIGITS[buf], dtype=np.int32)
        s_idx, e_idx = starts[is_idx], ends[is_idx]
        inside = nondigit[e_idx - 1] - np.where(s_idx > 0, nondigit[s_idx - 1], 0)
        if np.any(inside):
            return None
        lengths = ends - starts
        offsets = np.zeros(len(starts) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = pa.LargeStringArray.from_buffers(
            len(starts), pa.py_buffer(offsets), pa.py_buffer(buf[solid])
        )
        try:
            numbers = pc.cast(tokens, pa.float64()).to_numpy()
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        labels = numbers[is_label]
        idx_pos = np.flatnonzero(is_idx)
        has_value = followed[idx_pos]
        values = np.ones(len(idx_pos), dtype=np.float64)  # a bare index has value 1
        values[has_value] = numbers[idx_pos[has_value] + 1]
        if np.any(numbers[idx_pos] >= 2.0**53):
            return None
        indices = numbers[idx_pos].astype(np.int64)
        if not (np.all(np.isfinite(labels)) and np.all(np.isfinite(values))):
            return None
        if self.labels == "binary" and not np.all(np.isin(labels, (1.0, -1.0, 0.0))):
            return None
        if check_range and not self._range_ok(indices):
            return None
        nnz_per_line = np.bincount(line_of_tok[idx_pos], minlength=len(lines))
        nonempty = np.flatnonzero(per_line > 0)
        nnz_per_row = nnz_per_line[nonempty]
        indptr = np.zeros(len(nonempty) + 1, dtype=np.int64)
        np.cumsum(nnz_per_row, out=indptr[1:])
        return _Parsed(labels, indptr, indices, values, first_line + nonempty)

    def _parse_slow(self, lines: list[bytes], first_line: int, check_range: bool) -> _Parsed:
        """Reference line-by-line parser; raises on the first malformed line."""
        labels, indptr, indices, values, rows = [], [0], [], [], []
        offset = (0 if self.zero_based else 1) if check_range else 0
        for i, raw in enumerate(lines):
            line_no = first_line + i
            text = raw.split(b"#", 1)[0]
            tokens = text.split()
            if not tokens:
                continue
            labels.append(self._parse_label(tokens[0], line_no, raw))
            for tok in tokens[1:]:
                if tok.startswith(b"qid:"):
                    continue
                idx_text, colon, val_text = tok.partition(b":")
                if not _INDEX.fullmatch(idx_text):
                    self._fail(line_no, "bad feature token (expected index:value)", tok)
                if colon and not _NUMBER.fullmatch(val_text):
                    self._fail(line_no, "bad feature value", tok)
                idx = int(idx_text)
                if check_range:
                    if idx < offset:
                        self._fail(line_no, "index 0 in a 1-based file (use zero_based=True)", tok)
                    if idx - offset >= self.n_features:
                        self._fail(
                            line_no, f"feature index beyond n_features={self.n_features}", tok
                        )
                value = float(val_text) if colon else 1.0
                if not np.isfinite(value):
                    self._fail(line_no, "non-finite feature value", tok)
                indices.append(idx)
                values.append(value)
            indptr.append(len(indices))
            rows.append(line_no)
        return _Parsed(
            np.array(labels, dtype=np.float64),
            np.array(indptr, dtype=np.int64),
            np.array(indices, dtype=np.int64),
            np.array(values, dtype=np.float64),
            np.array(rows, dtype=np.int64),
        )

    def _parse_label(self, tok: bytes, line_no: int, raw: bytes) -> float:
        if not _NUMBER.fullmatch(tok):
            self._fail(line_no, "bad label (expected a number first on the line)", tok)
        value = float(tok)
        if not np.isfinite(value):
            self._fail(line_no, "non-finite label", tok)
        if self.labels == "binary" and value not in (1.0, -1.0, 0.0):
            self._fail(line_no, "label not in the allowed set {+1, -1, 1, 0}", tok)
        return value

    def _fail(self, line_no: int, problem: str, text: bytes) -> None:
        raise DataFormatError(self.path, line_no, problem, text.decode("utf-8", "replace"))

    # -- labels and keys -----------------------------------------------------------------

    def _map_labels(self, parsed: _Parsed) -> np.ndarray:
        """Binary: 1 -> 1.0, -1 and 0 -> 0.0. Real: unchanged."""
        if self.labels == "real":
            return parsed.labels.copy()
        return (parsed.labels > 0).astype(np.float64)

    def _key_map(self, key: KeySpec | None) -> tuple[np.ndarray, np.ndarray] | None:
        """For a feature-prefix key: (key id of every column or -1, key names + [""])."""
        if key is None:
            return None
        if key.feature_prefix is None:
            raise ConfigError(
                f"{self.path}: a LIBSVM source takes only KeySpec(feature_prefix=...)"
            )
        if self.featindex is None:
            raise ConfigError(
                f"{self.path}: KeySpec(feature_prefix=...) needs the featindex option "
                "(a file of 'name<TAB>index' lines)"
            )
        prefix = key.feature_prefix
        offset = 0 if self.zero_based else 1
        key_id = np.full(self.n_features, -1, dtype=np.int64)
        names: list[str] = []
        with open(self.featindex, encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").rsplit("\t", 1)
                if len(parts) != 2 or not parts[1].strip().isdigit():
                    raise DataFormatError(
                        self.featindex, line_no, "expected 'name<TAB>index'", line.rstrip("\n")
                    )
                name, col = parts[0], int(parts[1]) - offset
                if not name.startswith(prefix):
                    continue
                if not 0 <= col < self.n_features:
                    raise DataFormatError(
                        self.featindex, line_no,
                        f"index outside the {self.n_features} features of {self.path} "
                        f"(zero_based={self.zero_based})", line.rstrip("\n"),
                    )
                key_id[col] = len(names)
                names.append(name)
        if not names:
            raise DataFormatError(self.featindex, None, f"no feature name starts with {prefix!r}")
        return key_id, np.array([*names, ""], dtype=str)

    def _keys(
        self, parsed: _Parsed, cols: np.ndarray, key_map: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """Per row: the name of its one column that is a key feature, or ``""``."""
        key_id, names = key_map
        n = len(parsed.labels)
        ids = key_id[cols]
        hit = ids >= 0
        rows = np.repeat(np.arange(n), np.diff(parsed.indptr))[hit]
        count = np.bincount(rows, minlength=n)
        if np.any(count > 1):
            r = int(np.flatnonzero(count > 1)[0])
            found = ", ".join(names[ids[hit][rows == r]])
            raise DataFormatError(
                self.path, int(parsed.lines[r]), "row has more than one key feature", found
            )
        out = np.full(n, len(names) - 1, dtype=np.int64)
        out[rows] = ids[hit]
        return names[out]
