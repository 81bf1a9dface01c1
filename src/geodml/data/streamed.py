"""A DC's rows read block by block from memory-mapped files, each block's pages
released after use: training on data that does not fit in memory.

For a CSR matrix ``X`` (row pointers ``P``, column indices, values) whose ``indices``
and ``data`` are views of file mappings (:func:`geodml.data.store.map_dataset`), rows
``a:b`` are the nonzeros ``P[a] .. P[b]``. :meth:`StreamedRows.block` builds the CSR
matrix of rows ``a:b`` on them without copying (views of the mappings plus a
block-local row pointer ``P[a:b+1] - P[a]``; their pages mapped in one
``madvise(MADV_POPULATE_READ)`` first), and :meth:`StreamedRows.release` drops
their pages from the process: ``madvise(MADV_DONTNEED)`` on the page-aligned byte
range of each array, widened by the kernel's fault-around window. A file-backed
page that was read stays mapped, and counts in the process's resident memory
(``RssFile``), until it is unmapped or released; released, it stays in the kernel's
page cache (clean, reclaimable) for the next pass, and a later read maps it again.
Releasing a page that a neighbouring block still reads is harmless: that read
faults it back in. A read may map a whole large folio of the page cache, past the
window; :class:`~geodml.models.site_sums.SiteSums` therefore also releases the whole
span of its rows after every pass (one ``madvise``).

A session's rows may be a sample (sorted row numbers) and its columns restricted to
the site's support (kept columns renumbered ``0 .. k-1``; every column a row
touches must be kept). A sample's block gathers its rows' nonzeros, a copy of
O(block); the restriction is applied to the vectors, not to every block's indices
(:meth:`StreamedRows.expand`). Values that the store left out (every value 1) are a
zero-stride stand-in; a block's values are then a fresh array of ones of the
block's length.

Memory of a :class:`StreamedRows`: its row pointers (the matrix's own for all rows;
int64, 8 bytes per row, for a sample or a shard) and, when restricted, the column
map (int32, 4 bytes per column of the data); per block in flight, O(block): its
mapped pages, its row pointers and any copy above (gathered: 16 bytes per nonzero,
positions, values and indices).
"""

from __future__ import annotations

import itertools
import mmap
import sys

import numpy as np
import scipy.sparse as sp

DEFAULT_BLOCK_NNZ = 1 << 22  # nonzeros per streamed block: 32 MiB of float32 values + indices
_DONTNEED = getattr(mmap, "MADV_DONTNEED", None)  # None where madvise is missing
# MADV_POPULATE_READ (Linux 5.14+; Python's mmap module does not name it yet)
_POPULATE = getattr(mmap, "MADV_POPULATE_READ", 22 if sys.platform == "linux" else None)
# A read fault on a file mapping also maps the neighbouring cached pages of its 64 KiB
# window (Linux's fault_around_bytes): a block releases that much beyond its own
# bytes, so that pages its reads mapped in a neighbour's range (or the neighbour's in
# its own) do not stay behind.
FAULT_AROUND = 64 << 10


def _mapping(arr: np.ndarray) -> tuple[mmap.mmap, int] | None:
    """The ``mmap`` under ``arr`` and the byte offset of ``arr`` in it (None: ``arr``
    is not a view of a file mapping)."""
    base = arr
    while isinstance(base, np.ndarray):
        base = base.base
    if not isinstance(base, mmap.mmap) or base.closed:
        return None
    start = np.frombuffer(base, dtype=np.uint8).ctypes.data
    return base, arr.ctypes.data - start


def _mapped_range(arr: np.ndarray, margin: int) -> tuple[mmap.mmap, int, int] | None:
    """``(mapping, start, length)`` of the page-aligned byte range of ``arr`` widened
    by ``margin`` bytes on either side (clipped to the mapping), or None when ``arr``
    is empty, zero-stride or not a view of a file mapping."""
    if arr.nbytes == 0 or arr.strides[0] == 0:
        return None
    found = _mapping(arr)
    if found is None:
        return None
    mm, offset = found
    lo = max(0, offset - margin)
    lo -= lo % mmap.PAGESIZE
    hi = min(len(mm), offset + arr.nbytes + margin)
    return (mm, lo, hi - lo) if hi > lo else None


def populate_pages(arr: np.ndarray) -> None:
    """Map the pages of ``arr`` (a view of a file mapping) before reading it, in one
    call: ``madvise(MADV_POPULATE_READ)`` (Linux 5.14+), as if every page were read,
    but without one page fault each; a pass over released pages then costs about what
    a pass over resident ones does. A no-op where the kernel lacks it."""
    global _POPULATE
    if _POPULATE is None:
        return
    found = _mapped_range(arr, 0)
    if found is None:
        return
    mm, start, length = found
    try:
        mm.madvise(_POPULATE, start, length)
    except OSError:  # EINVAL before Linux 5.14: the reads fault the pages in instead
        _POPULATE = None


def release_pages(arr: np.ndarray, margin: int = 0) -> None:
    """Drop the pages of ``arr`` (a contiguous view of a read-only file mapping), and
    of ``margin`` bytes on either side, from the process: ``madvise(MADV_DONTNEED)``
    on ``[floor((o - margin) / page) * page, o + nbytes + margin)`` for ``arr``'s byte
    offset ``o`` in the mapping (clipped to it). Its bytes stay readable (a read maps
    the page again, from the page cache or the file). A no-op for arrays that are not
    views of a file mapping, and where ``madvise`` is not available."""
    if _DONTNEED is None:
        return
    found = _mapped_range(arr, margin)
    if found is not None:
        mm, start, length = found
        mm.madvise(_DONTNEED, start, length)


def shared(arr: np.ndarray) -> np.ndarray:
    """``arr`` in a form scipy's sparse constructors keep instead of copying.

    They copy an index or value array that is a view of an array more than twice its
    size (scipy's ``_prune_array``): every row block of a large matrix is such a view,
    so a matrix cut into three or more blocks was held twice, once in anonymous
    memory, also when it was memory-mapped. Seen through a ``memoryview``, the view is
    its own base (of its own size), and scipy shares it."""
    return arr if arr.base is None else np.asarray(memoryview(arr))


def csr_rows(X: sp.csr_matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of ``X`` sharing its ``data`` and ``indices`` (scipy's
    ``X[start:stop]`` copies them); a zero-stride ``data`` (the store's stand-in for
    all-ones values) is made contiguous, a copy of the rows' length."""
    lo, hi = int(X.indptr[start]), int(X.indptr[stop])
    indptr = np.asarray(X.indptr[start : stop + 1]) - lo
    data = shared(np.ascontiguousarray(X.data[lo:hi]))
    return sp.csr_matrix((data, shared(X.indices[lo:hi]), indptr),
                         shape=(stop - start, X.shape[1]))


def _row_pointers(indptr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row pointers of the sorted ``rows`` of a CSR matrix with row pointers ``indptr``,
    gathered: ``[0, cumsum(indptr[r + 1] - indptr[r])]`` (int64)."""
    local = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(indptr[rows + 1].astype(np.int64) - indptr[rows], out=local[1:])
    return local


def _gather_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the nonzeros of the sorted ``rows`` in the CSR arrays,
    ``concat(indptr[r] .. indptr[r + 1] - 1)``, and their row pointers gathered.

    One int64 array: the positions step by 1 within a row and jump, at the first
    nonzero after row ``i - 1``, by ``indptr[r_i] - indptr[r_(i-1) + 1]`` (summed over
    empty rows in between), so they are the running sum of those steps."""
    local = _row_pointers(indptr, rows)
    total = int(local[-1])
    steps = np.ones(total, dtype=np.int64)
    if total == 0:
        return steps, local
    starts = indptr[rows].astype(np.int64)
    ends = indptr[rows + 1].astype(np.int64)
    at = local[1:-1]
    inside = at < total  # rows after the last nonzero jump nowhere
    np.add.at(steps, at[inside], (starts[1:] - ends[:-1])[inside])
    steps[0] += starts[0] - 1
    return np.cumsum(steps, out=steps), local


class StreamedRows:
    """A session's rows of a site's CSR matrix, read block by block (see the module doc).

    ``X``: the site's whole matrix (its arrays views of the dataset's file mappings);
    ``rows``: the session's rows, sorted (None: all, in order); ``columns``: the sorted
    columns kept, renumbered ``0 .. len(columns)-1`` (None: all, as stored). Rows are
    numbered ``0 .. shape[0]-1`` in the session's order; ``indptr`` are their row
    pointers, as a CSR matrix of exactly these rows would have them.

    :meth:`block` keeps the stored column numbers (no per-block renumbering): with a
    restriction, a vector over the session's columns is widened to the stored ones
    with :meth:`expand` before a product and a product's result narrowed back with
    :meth:`contract`, O(columns) per call instead of O(nnz) per pass, with the same
    numbers (the same terms added in the same order).
    """

    def __init__(self, X: sp.csr_matrix, rows: np.ndarray | None = None,
                 columns: np.ndarray | None = None):
        if not sp.issparse(X) or X.format != "csr":
            raise TypeError(f"StreamedRows needs a CSR matrix, got {type(X).__name__}")
        self._X = X
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        if self._rows is not None and len(self._rows) > 1 and np.any(np.diff(self._rows) <= 0):
            raise ValueError("StreamedRows: the session's rows must be sorted and distinct")
        self._first = 0  # contiguous rows: the session's row 0 is the matrix's _first
        self._columns = None if columns is None else np.asarray(columns)
        self._position: np.ndarray | None = None
        n_cols = X.shape[1]
        if self._columns is not None:
            self._position = np.zeros(X.shape[1], dtype=np.int32)
            self._position[self._columns] = np.arange(len(self._columns), dtype=np.int32)
            n_cols = len(self._columns)
        if self._rows is None:
            self.indptr = X.indptr  # scipy's: int32 below 2**31 nonzeros, no copy
        else:
            self.indptr = _row_pointers(X.indptr, self._rows)
        self.shape = (len(self.indptr) - 1, n_cols)
        self.dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def subset(self, start: int, stop: int) -> StreamedRows:
        """The session's rows ``start:stop`` (a shard), sharing the mappings and the
        column map."""
        out = object.__new__(StreamedRows)
        out.__dict__.update(self.__dict__)
        if self._rows is None:
            out._first = self._first + start
        else:
            out._rows = self._rows[start:stop]
        out.indptr = self.indptr[start : stop + 1] - self.indptr[start]
        out.shape = (stop - start, self.shape[1])
        return out

    # -- reading ---------------------------------------------------------------------
    def _matrix_rows(self, start: int, stop: int) -> slice | np.ndarray:
        """The matrix's row numbers of the session's rows ``start:stop``."""
        if self._rows is None:
            return slice(self._first + start, self._first + stop)
        return self._rows[start:stop]

    def _locate(self, rows: slice | np.ndarray) -> tuple[slice | np.ndarray, np.ndarray]:
        """Where the matrix's ``rows`` (a range, or sorted numbers) keep their nonzeros:
        a slice of its arrays or the positions to gather, and their row pointers."""
        P = self._X.indptr
        if isinstance(rows, slice):
            lo, hi = int(P[rows.start]), int(P[rows.stop])
            return slice(lo, hi), np.asarray(P[rows.start : rows.stop + 1], np.int64) - lo
        return _gather_positions(P, rows)

    def _span(self, rows: slice | np.ndarray) -> slice:
        """The range of the matrix's nonzeros that ``rows`` lie in."""
        P = self._X.indptr
        if isinstance(rows, slice):
            return slice(int(P[rows.start]), int(P[rows.stop]))
        if len(rows) == 0:
            return slice(0, 0)
        return slice(int(P[rows[0]]), int(P[rows[-1] + 1]))

    def _indices(self, where: slice | np.ndarray, renumber: bool = True) -> np.ndarray:
        indices = self._X.indices[where]
        if self._position is None or not renumber:
            return shared(indices)
        return self._position[indices]

    def _values(self, where: slice | np.ndarray) -> np.ndarray:
        # contiguous, in the session's dtype: the zero-stride stand-in of ones becomes
        # an array of ones of the block's length; views of the mapping stay views
        return shared(np.ascontiguousarray(self._X.data[where], dtype=self.dtype))

    def _read(self, rows: slice | np.ndarray, renumber: bool) -> sp.csr_matrix:
        where, indptr = self._locate(rows)
        width = self.shape[1] if renumber else self.stored_columns
        return sp.csr_matrix((self._values(where), self._indices(where, renumber), indptr),
                             shape=(len(indptr) - 1, width))

    def _release(self, rows: slice | np.ndarray) -> None:
        span = self._span(rows)
        release_pages(self._X.indices[span], FAULT_AROUND)
        release_pages(self._X.data[span], FAULT_AROUND)

    @property
    def stored_columns(self) -> int:
        """Columns of the stored matrix (of :meth:`block`'s matrices)."""
        return int(self._X.shape[1])

    def expand(self, v: np.ndarray) -> np.ndarray:
        """``v`` over the session's columns as a vector over the stored columns (zero
        off the kept ones): what :meth:`block`'s matrices multiply."""
        if self._columns is None:
            return v
        out = np.zeros(self.stored_columns, dtype=v.dtype)
        out[self._columns] = v
        return out

    def contract(self, g: np.ndarray) -> np.ndarray:
        """A vector over the stored columns restricted to the session's."""
        return g if self._columns is None else g[self._columns]

    def block(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as a CSR matrix in the stored column numbering (see
        :meth:`expand`); call :meth:`release` when done with it. Contiguous rows have
        their pages mapped in one call first (a sample's rows fault in only the pages
        they touch: its span may hold many more)."""
        rows = self._matrix_rows(start, stop)
        if isinstance(rows, slice):
            span = self._span(rows)
            populate_pages(self._X.indices[span])
            populate_pages(self._X.data[span])
        return self._read(rows, renumber=False)

    def release(self, start: int, stop: int) -> None:
        """Drop the pages of rows ``start:stop`` (their nonzeros' span) from the process."""
        self._release(self._matrix_rows(start, stop))

    def __getitem__(self, rows: np.ndarray) -> sp.csr_matrix:
        """The given rows (sorted, in the session's numbering) as an in-memory CSR matrix,
        their pages released (a local procedure's minibatch, a sample for estimates)."""
        rows = np.asarray(rows, dtype=np.int64)
        picked = self._rows[rows] if self._rows is not None else rows + self._first
        X = self._read(picked, renumber=True)
        self._release(picked)
        return X

    def to_csr(self) -> sp.csr_matrix:
        """Every row in memory (O(nnz)): for code that needs one whole matrix."""
        return self[np.arange(self.shape[0])]

    def bounds(self, block_nnz: int) -> list[int]:
        """Row bounds of blocks of about ``block_nnz`` nonzeros (plus at most one row)."""
        n_blocks = max(1, -(-self.nnz // max(1, block_nnz)))
        cuts = np.searchsorted(self.indptr, np.linspace(0, self.nnz, n_blocks + 1)).tolist()
        cuts[0], cuts[-1] = 0, self.shape[0]
        return [a for a, b in itertools.pairwise(cuts) if b > a] + [self.shape[0]]

    def all_ones(self, block_nnz: int = DEFAULT_BLOCK_NNZ) -> bool:
        """Whether every value of these rows is 1.0 (the stand-in for absent values:
        one look; else the values read block by block)."""
        if self._X.data.strides == (0,):
            return bool(np.all(self._X.data[:1] == 1))
        for a, b in itertools.pairwise(self.bounds(block_nnz)):
            rows = self._matrix_rows(a, b)
            ones = bool(np.all(self._values(self._locate(rows)[0]) == 1))
            self._release(rows)
            if not ones:
                return False
        return True

    def support(self, block_nnz: int = DEFAULT_BLOCK_NNZ) -> np.ndarray:
        """Sorted column numbers (of these rows' numbering) that at least one row touches:
        a mark per column (O(columns)), set block by block."""
        seen = np.zeros(self.shape[1], dtype=bool)
        for a, b in itertools.pairwise(self.bounds(block_nnz)):
            rows = self._matrix_rows(a, b)
            seen[self._indices(self._locate(rows)[0])] = True
            self._release(rows)
        return np.flatnonzero(seen).astype(np.uint32)
