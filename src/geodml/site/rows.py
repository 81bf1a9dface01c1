"""A site's rows and the facts derived from them: fingerprint, support, samples,
the size of an export, and the rows a session computes over (in memory, or streamed
block by block from memory-mapped arrays)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp

from geodml.data.dataset import Dataset
from geodml.data.streamed import DEFAULT_BLOCK_NNZ, StreamedRows, release_pages
from geodml.job.support import renumber_columns, support_of
from geodml.job.validation import held_out
from geodml.wire.rows import encode_rows, encode_streamed

EXPORT_SAMPLE_ROWS = 32768  # rows encoded to estimate the size of a full Export


class SiteRows:
    """One DC's rows (``stream``: read block by block, ``block_nnz`` nonzeros each,
    releasing each block's pages after use; see :mod:`geodml.data.streamed`)."""

    def __init__(self, data: Dataset, stream: bool = False, block_nnz: int | None = None):
        self.data, self.stream = data, stream
        self.block_nnz = (block_nnz or DEFAULT_BLOCK_NNZ) if stream else block_nnz
        self._support: np.ndarray | None = None
        self._restricted_X: sp.csr_matrix | None = None
        self._export_estimate: int | None = None
        self.fingerprint = self._digest()
        if stream:  # the fingerprint read the edges of the mapped arrays
            release_pages(self.data.X.indices)
            release_pages(self.data.X.data)

    def _digest(self) -> str:
        """A digest of the data's shape, feature space, labels and edges of its arrays."""
        X, h = self.data.X, hashlib.blake2b(digest_size=12)
        h.update(json.dumps([self.data.n_rows, X.nnz, self.data.space.fingerprint()]).encode())
        for arr in (X.indptr, X.indices, X.data, self.data.y):
            h.update(arr[:65536].tobytes())  # edges only: a mapped array stays unread
            h.update(arr[-65536:].tobytes())
        h.update(np.float64(self.data.y.sum()).tobytes())
        return h.hexdigest()

    def support(self) -> np.ndarray:
        """Sorted feature indices that at least one of the site's rows touches."""
        if self._support is None and self.stream:
            self._support = StreamedRows(self.data.X).support(self.block_nnz)
        if self._support is None:
            self._support = support_of(self.data.X.indices, self.data.n_features)
        return self._support

    def export_bytes_estimate(self) -> int:
        """Bytes a full :meth:`export` would send, from encoding a sample of rows.

        ``estimate = bytes(sample) * (nnz + rows) / (nnz(sample) + rows(sample))``: the
        sample is up to ``EXPORT_SAMPLE_ROWS`` rows in 16 evenly spaced contiguous blocks
        (contiguous, so zstd sees neighbouring rows as it does in a real export), encoded
        exactly as Export encodes; all rows when there are fewer.
        """
        if self._export_estimate is None:
            n, rows = self.data.n_rows, None
            if n > EXPORT_SAMPLE_ROWS:
                block = EXPORT_SAMPLE_ROWS // 16
                starts = np.linspace(0, n - block, 16).astype(np.int64)
                rows = np.concatenate([np.arange(s, s + block) for s in starts])
            nbytes, sample_nnz, sample_rows = self._encoded_sample(rows)
            scale = (self.data.nnz + n) / max(1, sample_nnz + sample_rows)
            self._export_estimate = round(nbytes * scale)
        return self._export_estimate

    def sample(self, fraction: float) -> np.ndarray:
        """An evenly spaced sample of ``round(fraction * rows)`` row numbers (at least 1)."""
        n = self.data.n_rows
        k = min(n, max(1, round(fraction * n)))
        return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))

    def _encoded_sample(self, rows: np.ndarray | None) -> tuple[int, int, int]:
        """Bytes of the sample ``rows`` (None: all rows) encoded as Export encodes, its
        nonzeros and its rows; streamed, read chunk by chunk (the same bytes)."""
        if self.stream:
            src = StreamedRows(self.data.X, rows)
            y = self.data.y if rows is None else self.data.y[rows]
            return sum(len(blob) for _, blob in encode_streamed(src, y)), src.nnz, len(y)
        sample = self.data if rows is None else self.data.take(rows)
        return sum(len(blob) for _, blob in encode_rows(sample)), sample.nnz, sample.n_rows

    def session_rows(self, rows: np.ndarray | None, support: np.ndarray | None
                      ) -> tuple[sp.csr_matrix | StreamedRows, np.ndarray]:
        """A session's rows (``rows``: a sample, None: all) and labels, with columns
        renumbered to ``support`` when given: streamed, a view that applies both per
        block; in memory, the restricted matrix and a copy of the sample."""
        y = self.data.y if rows is None else self.data.y[rows]
        if self.stream:
            return StreamedRows(self.data.X, rows, support), y
        X = self.data.X if support is None else self.restricted()
        return (X if rows is None else X[rows]), y

    def hold_out(self, share: float, seed: int, rows: np.ndarray | None,
                 support: np.ndarray | None
                 ) -> tuple[tuple[sp.csr_matrix, np.ndarray], np.ndarray]:
        """The held-out rows (in memory, columns as :meth:`session_rows` numbers them)
        with their labels, and the training rows left: all others, or those of the
        sample ``rows`` (:func:`geodml.job.validation.held_out` picks them)."""
        held = held_out(self.data.n_rows, share, seed)
        train = np.flatnonzero(~held)
        if rows is not None:
            train = np.intersect1d(rows, train, assume_unique=True)
        Xv, yv = self.session_rows(np.flatnonzero(held), support)
        return (Xv.to_csr() if isinstance(Xv, StreamedRows) else Xv, yv), train

    def restricted(self) -> sp.csr_matrix:
        """The rows with columns renumbered to positions in :meth:`support`."""
        if self._restricted_X is None:
            self._restricted_X = renumber_columns(self.data.X, self.support(),
                                                  self.data.n_features)
        return self._restricted_X

    def export_chunks(self, max_chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
        """Every row, as Export sends them: ``(rows, Arrow IPC bytes)`` chunks."""
        if self.stream:
            return encode_streamed(StreamedRows(self.data.X), self.data.y, max_chunk_bytes)
        return encode_rows(self.data, max_chunk_bytes)


__all__ = ["EXPORT_SAMPLE_ROWS", "SiteRows"]
