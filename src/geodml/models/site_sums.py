"""Sums over one DC's rows: the only things a DC ever reports about its data.

For the rows ``X`` (n x d) and labels ``y`` of one DC, a loss ``l`` and a point ``w``
with cached margins ``z = X w``:

    L(w)     = sum_i l(y_i, z_i)                      (loss sum)
    G(w)     = X^T l'(z)                              (gradient sum)
    H(w) v   = X^T (l''(z) * (X v))                   (Hessian-vector product sum)

For a direction ``p`` sent once, the DC caches ``q = X p``; then for any step size

    phi(a)   = sum_i l(y_i, z_i + a q_i)              (loss along the line)
    phi'(a)  = sum_i l'(y_i, z_i + a q_i) q_i         (its derivative)

cost O(n) each, no matrix product, and moving to ``w + a p`` updates the margins as
``z + a q``. The same holds for a subspace: with directions ``D = [d_1 .. d_m]``
cached with their margins ``Q = X D`` (n x m), for coefficients ``c``

    psi(c)       = sum_i l(y_i, z_i + (Q c)_i)
    grad psi(c)  = Q^T l'(z + Q c)                    (m numbers)
    hess psi(c)  = Q^T diag(l''(z + Q c)) Q           (m x m numbers)

so a Newton method over the subspace needs only O(m^2) scalars per round. Past
steps ``s = D c`` are kept with their margins ``Q c`` as further directions, at no
cost in matrix products. Summing these over DCs gives the global sums exactly, which is why the
coordinator can add them (the regularizer is added once, by the coordinator).

Large inputs are split into row blocks computed on a thread pool (scipy's sparse
products and numpy's ufuncs release the GIL); the block sums are added inside
the DC, in block order, so a layout of blocks gives the same bits however many
threads compute it. The products run in the data's dtype (float32 data: float32
products), except a direction's margins ``X p``, which moves add up and which are
therefore computed in float64 (float32 data in memory: over a float64 copy of the
values, made at the first direction and kept, 8 bytes per nonzero); margins and the
loss are float64.

Hot-first columns (in memory, at least :data:`HOT_FIRST_MIN_FEATURES` features and
:data:`BLOCK_MIN_NNZ` nonzeros): the blocks hold the rows with their columns relabeled
by decreasing count, ``j -> rank(j)`` (ties by index), so the model-sized vectors the
products read and write are laid out hottest first: hashed CTR features are heavy-tailed
(on the regional generator at 2^20, 1,000 columns hold 72% of the nonzeros and 10,000
hold 89%), so most accesses fall in a few cache lines instead of all over a 4-8 MB
vector. Vectors are permuted on the way in (``v[order]``, O(d)) and gradients back on
the way out (``g[rank]``). Within a row the nonzeros keep their order and every
column's terms are added in row order, so the sums are bitwise those of the given
order; the cost is a relabeled copy of the indices (4 bytes per nonzero) and one
counting pass when the sums are built.

Streamed (``X`` a :class:`~geodml.data.streamed.StreamedRows`): blocks hold about
``block_nnz`` nonzeros each and are read from the memory-mapped files when a sum
needs them, their pages released after, with at most ``2 x threads`` blocks in
flight; ``evaluate`` computes ``z_b = X_b w``, the loss and ``X_b^T l'(z_b)`` in one
read of each block. Resident memory is then O(rows) vectors (labels, margins ``z``,
cached direction margins ``q`` and subspace margins ``Q``, the line search's cached
derivatives, at most ``LINE_CACHE_STREAMED`` numbers, and the row pointers) plus
O(threads x block) (the blocks being read, their copies when gathered or widened,
and one partial gradient of ``d`` numbers per block in flight), not O(nnz). Calls
that need no product (line sums, steps, subspace sums and commits, loss-only sums at
the current point) read no block. An in-memory matrix cut into the same blocks
(``block_nnz``) gives bitwise the same sums.
"""

from __future__ import annotations

import copy
import itertools
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

from geodml.data.streamed import DEFAULT_BLOCK_NNZ, StreamedRows, csr_rows
from geodml.models.losses import Loss

T = TypeVar("T")
Rows = sp.csr_matrix | StreamedRows  # a DC's rows: in memory, or streamed from its files

BLOCK_MIN_NNZ = 1 << 20  # below this many nonzeros per block, threads cost more than they give
HOT_FIRST_MIN_FEATURES = 1 << 16  # below, the model-sized vectors fit in L2 in any order
LINE_CACHE_MAX = 1 << 25  # pointwise derivatives kept from a line search (rows x steps)
LINE_CACHE_STREAMED = 1 << 22  # the same for streamed rows, whose memory is mostly O(rows)


@dataclass
class Sums:
    """The loss sum (and gradient sum, when asked) over a DC's rows at one point."""

    loss: float
    grad: np.ndarray | None
    rows: int


def block_bounds(indptr: np.ndarray, threads: int, block_nnz: int | None = None) -> list[int]:
    """Row bounds of blocks of equal nonzeros: ``min(threads, nnz // BLOCK_MIN_NNZ)``
    blocks (at least one), and with ``block_nnz`` at least ``ceil(nnz / block_nnz)``,
    so that a block holds about ``block_nnz`` nonzeros (plus at most one row)."""
    n_rows, nnz = len(indptr) - 1, int(indptr[-1])
    n_blocks = max(1, min(threads, nnz // BLOCK_MIN_NNZ))
    if block_nnz is not None:
        n_blocks = max(n_blocks, -(-nnz // max(1, block_nnz)))
    bounds = np.searchsorted(indptr, np.linspace(0, nnz, n_blocks + 1)).tolist()
    bounds[0], bounds[-1] = 0, n_rows
    return bounds


class ColumnOrder:
    """Columns by decreasing count of nonzeros (ties: lower index first).

    ``order[r]`` is the column relabeled ``r`` and ``rank[j]`` the label of column
    ``j`` (``rank[order] = 0..d-1``): a vector in hot-first order is ``v[order]``, and
    one back in the given order ``g[rank]``."""

    CHUNK = 1 << 24  # indices counted and relabeled at a time: numpy widens them to intp

    def __init__(self, indices: np.ndarray, n_features: int):
        counts = np.zeros(n_features, dtype=np.int64)
        for a in range(0, len(indices), self.CHUNK):
            counts += np.bincount(indices[a : a + self.CHUNK], minlength=n_features)
        self.order = np.argsort(-counts, kind="stable")
        self.rank = np.empty(n_features, dtype=np.int32 if n_features < 2**31 else np.int64)
        self.rank[self.order] = np.arange(n_features)

    def relabel(self, indices: np.ndarray) -> np.ndarray:
        """Column indices in hot-first labels (a new array of their dtype), chunk by
        chunk, so the transient widened copy stays O(:attr:`CHUNK`)."""
        out = np.empty(len(indices), dtype=indices.dtype)
        for a in range(0, len(indices), self.CHUNK):
            out[a : a + self.CHUNK] = self.rank[indices[a : a + self.CHUNK]]
        return out

    def to_hot(self, v: np.ndarray) -> np.ndarray:
        return v[self.order]

    def from_hot(self, g: np.ndarray) -> np.ndarray:
        return g[self.rank]


class _Block:
    """Rows ``start:stop`` of a DC's matrix and their labels. In memory it holds a CSR
    view sharing the matrix's arrays; streamed it reads the rows on every use and
    releases their pages after (:mod:`geodml.data.streamed`)."""

    def __init__(self, X: Rows, y: np.ndarray, start: int, stop: int,
                 columns: ColumnOrder | None = None):
        self.rows = slice(start, stop)
        self.y = np.asarray(y[start:stop], dtype=np.float64)
        self._source: StreamedRows | None = None
        self._held: tuple[sp.csr_matrix, sp.csc_matrix] | None = None
        self._wide: sp.csr_matrix | None = None
        if isinstance(X, StreamedRows):
            self._source = X
        else:
            m = csr_rows(X, start, stop)
            if columns is not None:
                m = sp.csr_matrix((m.data, columns.relabel(m.indices), m.indptr),
                                  shape=m.shape)
            self._held = (m, m.T)  # CSC view: X^T v without a conversion per call

    @contextmanager
    def matrix(self) -> Iterator[tuple[sp.csr_matrix, sp.csc_matrix]]:
        """``(X_b, X_b^T)`` for the block's rows while the ``with`` lasts."""
        if self._held is not None:
            yield self._held
            return
        m = self._source.block(self.rows.start, self.rows.stop)
        try:
            yield m, m.T
        finally:
            del m
            self._source.release(self.rows.start, self.rows.stop)


    def widened(self, X: sp.csr_matrix) -> sp.csr_matrix:
        """``X`` (the block's rows, from :meth:`matrix`) with float64 values sharing its
        indices. In memory it is made at the block's first direction and kept: a copy
        made anew for every product (240 MB per direction at 1M rows of 30 nonzeros)
        took as much memory at its peak and made the product 1.4-1.6x slower
        (``bench/bench_throughput.py``, part 4). Streamed rows are widened per read, as
        they are read."""
        if X.dtype == np.float64:
            return X
        if self._held is None:
            return _as_float64(X)
        if self._wide is None:
            self._wide = _as_float64(X)
        return self._wide


def _as_float64(X: sp.csr_matrix) -> sp.csr_matrix:
    return sp.csr_matrix((X.data.astype(np.float64), X.indices, X.indptr), shape=X.shape)


def _squared(XT: sp.csc_matrix) -> sp.csc_matrix:
    """``XT`` with every entry squared, sharing its indices. Not ``XT.power(2)``: that
    sorts the indices in place first, and a block's arrays are views of the DC's
    matrix with its columns relabeled hot-first (:class:`ColumnOrder`), so the sort
    permuted the DC's own values against their columns and every later job at the
    site trained on corrupted rows. Entrywise squaring is exact for a matrix without
    duplicate entries, which every reader and generator guarantees (``sum_duplicates``)."""
    return sp.csc_matrix((XT.data * XT.data, XT.indices, XT.indptr), shape=XT.shape)


def _vector_sum(parts: Iterable[np.ndarray]) -> np.ndarray:
    """``(p_0 + p_1) + p_2 ...`` in float64, in the order given (one running total)."""
    total = None
    for part in parts:
        if total is None:
            total = np.array(part, dtype=np.float64)
        else:
            total += part
    return total


class SiteSums:
    """Loss, gradient, Hessian-vector and line-search sums over one DC's rows.

    State: the current point ``w`` and its margins ``z``; after
    :meth:`set_direction`, the direction ``p`` and ``q = X p``. Every method that
    needs the current point raises if :meth:`evaluate` was never called.
    """

    def __init__(self, X: Rows, y: np.ndarray, loss: Loss, n_threads: int | None = None,
                 block_nnz: int | None = None, hot_first: bool | None = None):
        """``X``: the rows, a CSR matrix in memory or a :class:`StreamedRows` read block by
        block; ``block_nnz``: nonzeros per block (streamed default
        ``DEFAULT_BLOCK_NNZ``; in memory by default one block per thread);
        ``hot_first``: relabel the columns hottest first in memory (default: with at
        least :data:`HOT_FIRST_MIN_FEATURES` features and :data:`BLOCK_MIN_NNZ`
        nonzeros; the same sums either way)."""
        if isinstance(X, StreamedRows):
            block_nnz = block_nnz or DEFAULT_BLOCK_NNZ
        else:
            X = sp.csr_matrix(X)
            if X.dtype not in (np.float32, np.float64):
                X = X.astype(np.float64)
        if X.shape[0] != len(y):
            raise ValueError(f"{X.shape[0]} rows but {len(y)} labels")
        self.X = X
        self.y = np.asarray(y, dtype=np.float64)
        self.loss = loss
        self.n_rows, self.n_features = X.shape
        self.dtype = X.dtype
        threads = n_threads or os.cpu_count() or 1
        if hot_first is None:
            hot_first = (self.n_features >= HOT_FIRST_MIN_FEATURES
                         and X.nnz >= BLOCK_MIN_NNZ)
        in_memory = not isinstance(X, StreamedRows)
        self.columns = ColumnOrder(X.indices, self.n_features) \
            if hot_first and in_memory else None
        bounds = [(a, b) for a, b in itertools.pairwise(block_bounds(X.indptr, threads,
                                                                     block_nnz)) if b > a]
        self._workers = min(threads, len(bounds))
        self._pool = ThreadPoolExecutor(self._workers) if self._workers > 1 else None

        def block(bound: tuple[int, int]) -> _Block:  # relabeling runs on the pool too
            return _Block(X, self.y, *bound, self.columns)

        blocks = list(self._pool.map(block, bounds)) if self._pool else list(map(block, bounds))
        self._blocks = blocks or [_Block(X, self.y, 0, self.n_rows)]
        self._window = 2 * self._workers  # blocks submitted ahead of the one being reduced
        self._reset_state()

    def sibling(self) -> SiteSums:
        """Sums over the same rows, sharing this one's blocks (nothing is read, counted
        or relabeled again), with a point, directions and a thread pool of their own."""
        other = copy.copy(self)
        other._pool = ThreadPoolExecutor(self._workers) if self._workers > 1 else None
        other._reset_state()
        return other

    def _reset_state(self) -> None:
        """No point, direction, line search or subspace yet."""
        self.w: np.ndarray | None = None
        self.z: np.ndarray | None = None
        self.p: np.ndarray | None = None
        self.q: np.ndarray | None = None
        self.counts: Counter[str] = Counter()  # matvec / rmatvec / line_point evaluations
        # l'(z + a q) per step size of the last line search, so that moving to an
        # evaluated step needs only X^T d: {a: [(loss sum, d) per block]}
        self._line_cache: dict[float, list[tuple[float, np.ndarray]]] = {}
        # subspace: this round's new directions and the remembered past steps,
        # each as (vector, margins X v)
        self.new_dirs: list[tuple[np.ndarray, np.ndarray]] = []
        self.memory: list[tuple[np.ndarray, np.ndarray]] = []

    @property
    def streamed(self) -> bool:
        """Whether the rows are read from their files block by block."""
        return isinstance(self.X, StreamedRows)

    # -- helpers ---------------------------------------------------------------
    def _results(self, fn: Callable[..., T], items: Sequence | None = None) -> Iterator[T]:
        """``fn(item)`` for every item (default: every block), yielded in order; on the
        pool at most ``2 x workers`` items are submitted ahead of the one yielded, so
        the blocks being read and the partial results waiting to be added stay
        O(workers) however many blocks there are."""
        items = self._blocks if items is None else items
        if self._pool is None:
            yield from map(fn, items)
        else:
            todo = iter(items)
            pending = deque(self._pool.submit(fn, x)
                            for x in itertools.islice(todo, self._window))
            while pending:
                result = pending.popleft().result()
                for x in itertools.islice(todo, 1):
                    pending.append(self._pool.submit(fn, x))
                yield result
        if self.streamed:  # pages a block's reads mapped in a neighbour's range
            self.X.release(0, self.n_rows)

    def _map(self, fn: Callable[[_Block], T]) -> list[T]:
        return list(self._results(fn))

    def _cast(self, v: np.ndarray, dtype: np.dtype | None = None) -> np.ndarray:
        """``v`` checked, in ``dtype`` (default the data's), over the columns the blocks
        multiply: hot-first, permuted; streamed with a column restriction, widened to
        the stored ones."""
        v = np.asarray(v)
        if v.shape != (self.n_features,):
            raise ValueError(f"vector has shape {v.shape}, expected ({self.n_features},)")
        v = v.astype(dtype or self.dtype, copy=False)
        if self.columns is not None:
            return self.columns.to_hot(v)
        return self.X.expand(v) if self.streamed else v

    def _narrow(self, g: np.ndarray | None) -> np.ndarray | None:
        """A sum of products ``X_b^T d`` back over the session's columns, in their
        given order."""
        if g is None:
            return None
        if self.columns is not None:
            return self.columns.from_hot(g)
        return self.X.contract(g) if self.streamed else g

    def _require_point(self) -> None:
        if self.z is None:
            raise RuntimeError("no current point: call evaluate(w) first")

    def _pointwise(self, b: _Block, zb: np.ndarray, need_grad: bool
                   ) -> tuple[float, np.ndarray | None]:
        """The block's loss sum ``sum_i l(y_i, z_i)`` and, when ``need_grad``, ``l'(z)``."""
        if not need_grad:
            return float(self.loss.value(b.y, zb).sum()), None
        val, d = self.loss.value_and_deriv(b.y, zb)
        return float(val.sum()), d

    def _transposed(self, XT: sp.csc_matrix, d: np.ndarray) -> np.ndarray:
        """``X_b^T d`` in the data's dtype."""
        return XT @ d.astype(self.dtype, copy=False)

    @staticmethod
    def _add_up(parts: Iterable[tuple[float, np.ndarray | None]], need_grad: bool
                ) -> tuple[float, np.ndarray | None]:
        """Loss sums and (when ``need_grad``) gradient sums of the blocks, each added in
        block order into one running total."""
        loss, grad = 0.0, None
        for val, g in parts:
            loss += val
            if not need_grad:
                continue
            if grad is None:
                grad = np.array(g, dtype=np.float64)
            else:
                grad += g
        return loss, grad

    def _sums_at_margins(
        self, need_grad: bool, cached: Sequence[tuple[float, np.ndarray]] | None = None
    ) -> Sums:
        """``L`` and (when ``need_grad``) ``G`` at the cached margins ``z``, with ``l'``
        from ``cached`` (a line search's, per block) when given. A block is read only
        for ``G``."""

        def block(i_b: tuple[int, _Block]) -> tuple[float, np.ndarray | None]:
            i, b = i_b
            if cached is not None:
                val_sum, d = cached[i]
            else:
                val_sum, d = self._pointwise(b, self.z[b.rows], need_grad)
            if not need_grad:
                return val_sum, None
            with b.matrix() as (_, XT):
                return val_sum, self._transposed(XT, d)

        loss, grad = self._add_up(self._results(block, list(enumerate(self._blocks))),
                                  need_grad)
        self.counts["rmatvec"] += int(need_grad)
        return Sums(loss, self._narrow(grad), self.n_rows)

    # -- the sums --------------------------------------------------------------
    def _margins(self, v: np.ndarray, widen: bool = False) -> np.ndarray:
        """``X v`` (one matrix product); ``widen``: in float64, over the block's values
        in float64 (:meth:`_Block.widened`)."""
        q = np.empty(self.n_rows, dtype=np.float64)

        def block(b: _Block) -> None:
            with b.matrix() as (X, _):
                q[b.rows] = (b.widened(X) if widen else X) @ v

        self._map(block)
        self.counts["matvec"] += 1
        return q

    def _direction_margins(self, v: np.ndarray) -> np.ndarray:
        """``X v`` in float64 whatever the data's dtype: the margins of a direction are
        added to the cached ``z`` on every move, so float32 rounding (~1e-7 of each
        ``|X v|``) would pile up; with steps that nearly cancel, FADL's objective drifted
        by 4e-4 from ``F(w)`` after 100 iterations. float32 blocks are multiplied
        in float64 (:meth:`_Block.widened`)."""
        return self._margins(self._cast(v, np.dtype(np.float64)),
                             widen=self.dtype != np.float64)

    def evaluate(self, w: np.ndarray, need_grad: bool = True) -> Sums:
        """Move to ``w``: margins ``z = X w``, then ``L(w)`` and ``G(w) = X^T l'(z)``, in
        one pass over the blocks (each block read once)."""
        wc = self._cast(w)
        z = np.empty(self.n_rows, dtype=np.float64)

        def block(b: _Block) -> tuple[float, np.ndarray | None]:
            with b.matrix() as (X, XT):
                z[b.rows] = X @ wc
                val_sum, d = self._pointwise(b, z[b.rows], need_grad)
                return val_sum, self._transposed(XT, d) if need_grad else None

        loss, grad = self._add_up(self._results(block), need_grad)
        self.counts["matvec"] += 1
        self.counts["rmatvec"] += int(need_grad)
        self.w = np.asarray(w)  # as given (a float32 receiver keeps one 4-byte copy)
        self.z = z
        self.p = self.q = None
        self._line_cache = {}
        return Sums(loss, self._narrow(grad), self.n_rows)

    def current(self, need_grad: bool = True) -> Sums:
        """``L(w)`` (and ``G(w)``) at the current point, from the cached margins."""
        self._require_point()
        return self._sums_at_margins(need_grad)

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        """``H(w) v = X^T (l''(z) * (X v))`` at the current point."""
        self._require_point()
        vc = self._cast(v)

        def block(b: _Block) -> np.ndarray:
            with b.matrix() as (X, XT):
                dv = self.loss.curvature(b.y, self.z[b.rows]) * (X @ vc)
                return self._transposed(XT, dv)

        out = self._narrow(_vector_sum(self._results(block)))
        self.counts["matvec"] += 1
        self.counts["rmatvec"] += 1
        return out

    def hess_diag(self, curvature: float | np.ndarray | None = None) -> np.ndarray:
        """The Hessian's diagonal ``sum_i l''(z_i) x_ij^2`` for every feature ``j`` at the
        current point, or with every row's ``l''`` given by ``curvature`` (a number for
        all rows, or one per row; no point needed): one pass, the per-feature
        preconditioner's statistic."""
        if curvature is None:
            self._require_point()
        elif np.ndim(curvature):
            curvature = np.asarray(curvature, dtype=self.dtype)
            if curvature.shape != (self.n_rows,):
                raise ValueError(f"hess_diag: {curvature.shape[0]} row curvatures for "
                                 f"{self.n_rows} rows")

        def block(b: _Block) -> np.ndarray:
            with b.matrix() as (_X, XT):
                squared = _squared(XT)
                if np.ndim(curvature):
                    return squared @ curvature[b.rows]
                if curvature is not None:
                    return curvature * (squared @ np.ones(XT.shape[1], dtype=self.dtype))
                c = self.loss.curvature(b.y, self.z[b.rows])
                return squared @ c.astype(self.dtype, copy=False)

        out = self._narrow(_vector_sum(self._results(block)))
        self.counts["rmatvec"] += 1
        return np.asarray(out, dtype=np.float64)

    def label_sum(self) -> float:
        """``sum_i y_i`` over this DC's rows."""
        return float(self.y.sum())

    def set_direction(self, p: np.ndarray) -> None:
        """Cache the direction ``p`` and its margins ``q = X p`` at the current point."""
        self._require_point()
        self.q = self._direction_margins(p)
        self.p = np.array(p, dtype=np.float64)
        self._line_cache = {}

    def line_sums(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``phi(a)`` and ``phi'(a)`` for each step size ``a`` along the cached direction."""
        if self.q is None:
            raise RuntimeError("no cached direction: call set_direction(p) first")
        alphas = np.asarray(alphas, dtype=np.float64).ravel()
        cap = LINE_CACHE_STREAMED if self.streamed else LINE_CACHE_MAX
        keep = self.n_rows * len(alphas) <= cap  # a step recomputes them otherwise (same bits)

        def block(b: _Block):
            zb, qb = self.z[b.rows], self.q[b.rows]
            vals = np.empty(len(alphas))
            ders = np.empty(len(alphas))
            kept = []
            for j, a in enumerate(alphas):
                v, d = self.loss.value_and_deriv(b.y, zb + a * qb)
                vals[j] = v.sum()
                ders[j] = d @ qb
                kept.append(d if keep else None)
            return vals, ders, kept

        parts = self._map(block)
        self.counts["line_point"] += len(alphas)
        self._line_cache = {}
        if keep:
            for j, a in enumerate(alphas):
                self._line_cache[float(a)] = [(float(v[j]), k[j]) for v, _, k in parts]
        return sum(v for v, _, _ in parts), sum(d for _, d, _ in parts)

    def step(self, alpha: float, need_grad: bool = True) -> Sums:
        """Move to ``w + alpha p`` with margins ``z + alpha q`` (no matrix product); ``p``
        and ``q = X p`` stay cached (a failed trial step searches on along them)."""
        if self.q is None:
            raise RuntimeError("no cached direction: call set_direction(p) first")
        cached = self._line_cache.get(float(alpha))
        self.w = self.w + alpha * self.p
        self.z = self.z + alpha * self.q
        self._line_cache = {}
        return self._sums_at_margins(need_grad, cached)

    # -- subspace ------------------------------------------------------------------
    def add_direction(self, d: np.ndarray) -> None:
        """Cache a direction and its margins ``X d`` for the subspace calls."""
        q = self._direction_margins(d)
        self.new_dirs.append((np.array(d, dtype=np.float64), q))

    @property
    def subspace(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The directions in subspace order: this round's new ones, then the memory."""
        return self.new_dirs + self.memory

    def subspace_sums(self, c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``psi(c)``, its gradient and its Hessian over the cached subspace."""
        self._require_point()
        dirs = self.subspace
        c = np.asarray(c, dtype=np.float64)
        if len(c) != len(dirs):
            raise ValueError(f"{len(c)} coefficients for a subspace of {len(dirs)} directions")
        Q = np.column_stack([q for _, q in dirs]) if dirs else np.zeros((self.n_rows, 0))
        z = self.z + Q @ c
        val, d = self.loss.value_and_deriv(self.y, z)
        h = self.loss.curvature(self.y, z)
        self.counts["subspace_point"] += 1
        return float(val.sum()), Q.T @ d, Q.T @ (h[:, None] * Q)

    def subspace_commit(self, c: np.ndarray, memory: int) -> None:
        """Move to ``w + D c`` (margins ``z + Q c``), remember the step, drop new dirs."""
        self._require_point()
        dirs = self.subspace
        c = np.asarray(c, dtype=np.float64)
        if len(c) != len(dirs):
            raise ValueError(f"{len(c)} coefficients for a subspace of {len(dirs)} directions")
        step = np.zeros(self.n_features)
        margins = np.zeros(self.n_rows)
        for cj, (v, q) in zip(c, dirs, strict=True):
            step += cj * v
            margins += cj * q
        self.w = self.w + step
        self.z = self.z + margins
        self.p = self.q = None
        self._line_cache = {}
        self.new_dirs = []
        self.memory = [(step, margins), *self.memory][: max(0, memory)]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
