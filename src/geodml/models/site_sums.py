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
the DC. The products run in the data's dtype (float32 data: float32 products);
margins and the loss are float64.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from geodml.models.losses import Loss

BLOCK_MIN_NNZ = 1 << 20  # below this many nonzeros per block, threads cost more than they give
LINE_CACHE_MAX = 1 << 25  # pointwise derivatives kept from a line search (rows x steps)


@dataclass
class Sums:
    """The loss sum (and gradient sum, when asked) over a DC's rows at one point."""

    loss: float
    grad: np.ndarray | None
    rows: int


class _Block:
    """A contiguous row range of the CSR matrix, sharing its memory."""

    def __init__(self, X: sp.csr_matrix, y: np.ndarray, start: int, stop: int):
        lo, hi = int(X.indptr[start]), int(X.indptr[stop])
        indptr = np.asarray(X.indptr[start : stop + 1]) - lo
        self.X = sp.csr_matrix(
            (X.data[lo:hi], X.indices[lo:hi], indptr), shape=(stop - start, X.shape[1])
        )
        self.XT = self.X.T  # CSC view: X^T v without a conversion per call
        self.y = np.asarray(y[start:stop], dtype=np.float64)
        self.rows = slice(start, stop)


class SiteSums:
    """Loss, gradient, Hessian-vector and line-search sums over one DC's rows.

    State: the current point ``w`` and its margins ``z``; after
    :meth:`set_direction`, the direction ``p`` and ``q = X p``. Every method that
    needs the current point raises if :meth:`evaluate` was never called.
    """

    def __init__(self, X: sp.csr_matrix, y: np.ndarray, loss: Loss, n_threads: int | None = None):
        X = sp.csr_matrix(X)
        if X.shape[0] != len(y):
            raise ValueError(f"{X.shape[0]} rows but {len(y)} labels")
        if X.dtype not in (np.float32, np.float64):
            X = X.astype(np.float64)
        self.X = X
        self.y = np.asarray(y, dtype=np.float64)
        self.loss = loss
        self.n_rows, self.n_features = X.shape
        self.dtype = X.dtype
        threads = n_threads or os.cpu_count() or 1
        n_blocks = max(1, min(threads, X.nnz // BLOCK_MIN_NNZ))
        bounds = np.searchsorted(X.indptr, np.linspace(0, X.nnz, n_blocks + 1)).tolist()
        bounds[0], bounds[-1] = 0, self.n_rows
        self._blocks = [
            _Block(X, self.y, a, b) for a, b in itertools.pairwise(bounds) if b > a
        ] or [_Block(X, self.y, 0, self.n_rows)]
        self._pool = ThreadPoolExecutor(len(self._blocks)) if len(self._blocks) > 1 else None
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

    # -- helpers ---------------------------------------------------------------
    def _map(self, fn):
        if self._pool is None:
            return [fn(b) for b in self._blocks]
        return list(self._pool.map(fn, self._blocks))

    def _cast(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v)
        if v.shape != (self.n_features,):
            raise ValueError(f"vector has shape {v.shape}, expected ({self.n_features},)")
        return v.astype(self.dtype, copy=False)

    def _require_point(self) -> None:
        if self.z is None:
            raise RuntimeError("no current point: call evaluate(w) first")

    def _sums_at_margins(
        self, need_grad: bool, cached: list[tuple[float, np.ndarray]] | None = None
    ) -> Sums:
        def block(i_b: tuple[int, _Block]):
            i, b = i_b
            if cached is not None:
                val_sum, d = cached[i]
            else:
                zb = self.z[b.rows]
                if not need_grad:
                    return float(self.loss.value(b.y, zb).sum()), None
                val, d = self.loss.value_and_deriv(b.y, zb)
                val_sum = float(val.sum())
            if not need_grad:
                return val_sum, None
            return val_sum, b.XT @ d.astype(self.dtype, copy=False)

        blocks = list(enumerate(self._blocks))
        parts = [block(ib) for ib in blocks] if self._pool is None else list(
            self._pool.map(block, blocks))
        self.counts["rmatvec"] += int(need_grad)
        loss = float(sum(v for v, _ in parts))
        grad = None
        if need_grad:
            grad = np.asarray(parts[0][1], dtype=np.float64)
            for _, g in parts[1:]:
                grad = grad + g
        return Sums(loss, grad, self.n_rows)

    # -- the sums --------------------------------------------------------------
    def _margins(self, w: np.ndarray) -> np.ndarray:
        """``X w`` (one matrix product)."""
        wc = self._cast(w)
        z = np.empty(self.n_rows, dtype=np.float64)

        def margins(b: _Block) -> None:
            z[b.rows] = b.X @ wc

        self._map(margins)
        self.counts["matvec"] += 1
        return z

    def _direction_margins(self, v: np.ndarray) -> np.ndarray:
        """``X v`` in float64 whatever the data's dtype: the margins of a direction are
        added to the cached ``z`` on every move, so float32 rounding (~1e-7 of each
        ``|X v|``) would pile up; with steps that nearly cancel, FADL's objective drifted
        by 4e-4 from ``F(w)`` after 100 iterations. float32 blocks are widened for the
        product (a transient copy of one block's values)."""
        if self.dtype == np.float64:
            return self._margins(v)
        self._cast(v)  # the shape check
        v = np.asarray(v, dtype=np.float64)
        q = np.empty(self.n_rows, dtype=np.float64)

        def block(b: _Block) -> None:
            q[b.rows] = b.X.astype(np.float64) @ v

        self._map(block)
        self.counts["matvec"] += 1
        return q

    def evaluate(self, w: np.ndarray, need_grad: bool = True) -> Sums:
        """Move to ``w``: compute margins ``z = X w``, then ``L(w)`` and ``G(w)``."""
        z = self._margins(w)
        self.w = np.asarray(w)  # as given (a float32 receiver keeps one 4-byte copy)
        self.z = z
        self.p = self.q = None
        self._line_cache = {}
        return self._sums_at_margins(need_grad)

    def current(self, need_grad: bool = True) -> Sums:
        """``L(w)`` (and ``G(w)``) at the current point, from the cached margins."""
        self._require_point()
        return self._sums_at_margins(need_grad)

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        """``H(w) v = X^T (l''(z) * (X v))`` at the current point."""
        self._require_point()
        vc = self._cast(v)

        def block(b: _Block):
            zb = self.z[b.rows]
            dv = self.loss.curvature(b.y, zb) * (b.X @ vc)
            return b.XT @ dv.astype(self.dtype, copy=False)

        parts = self._map(block)
        self.counts["matvec"] += 1
        self.counts["rmatvec"] += 1
        out = np.asarray(parts[0], dtype=np.float64)
        for part in parts[1:]:
            out = out + part
        return out

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
        keep = self.n_rows * len(alphas) <= LINE_CACHE_MAX

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
        """Move to ``w + alpha p`` with margins ``z + alpha q`` (no matrix product)."""
        if self.q is None:
            raise RuntimeError("no cached direction: call set_direction(p) first")
        cached = self._line_cache.get(float(alpha))
        self.w = self.w + alpha * self.p
        self.z = self.z + alpha * self.q
        self.p = self.q = None
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
