"""The local executor: a DC's rows split into shards, results reduced in the DC.

This is the paper's hierarchical aggregation: each shard computes its sums (see
:mod:`geodml.models.site_sums`) and the executor adds them, so one vector per DC
crosses the WAN however many shards or workers the DC has. ``ThreadExecutor`` runs
the shards on a thread pool in this process; its interface (a ``SumsProvider``)
is what a distributed executor implements as well.
"""

from __future__ import annotations

import copy
import itertools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import scipy.sparse as sp

from geodml.data.streamed import StreamedRows, csr_rows
from geodml.models.losses import Loss
from geodml.models.site_sums import Rows, SiteSums, Sums

Executor = Any  # ThreadExecutor, or geodml.site.ray_executor.RayExecutor: the same calls


def shard_rows(X: Rows, start: int, stop: int) -> Rows:
    """Rows ``start:stop`` sharing ``X``'s memory: a CSR view, or a streamed subset."""
    if isinstance(X, StreamedRows):
        return X.subset(start, stop)
    return csr_rows(sp.csr_matrix(X), start, stop)


class ThreadExecutor:
    """``shards`` row ranges of equal nonzeros, each a :class:`SiteSums`, on threads.

    ``X`` is in memory (a CSR matrix; shards are views of it) or streamed (a
    :class:`~geodml.data.streamed.StreamedRows`; shards are subsets read block by
    block); ``block_nnz`` is the nonzeros per block of every shard (see
    :class:`SiteSums`)."""

    def __init__(
        self, X: Rows, y: np.ndarray, loss: Loss, shards: int = 1,
        threads: int | None = None, block_nnz: int | None = None,
    ):
        threads = threads or os.cpu_count() or 1
        self.n_rows, self.n_features = X.shape
        shards = max(1, min(shards, max(1, self.n_rows)))
        bounds = np.searchsorted(X.indptr, np.linspace(0, X.nnz, shards + 1)).tolist()
        bounds[0], bounds[-1] = 0, self.n_rows
        per_shard_threads = max(1, threads // shards)
        self.shards = [
            SiteSums(shard_rows(X, a, b), y[a:b], loss, n_threads=per_shard_threads,
                     block_nnz=block_nnz)
            for a, b in itertools.pairwise(bounds)
        ] if shards > 1 else [SiteSums(X, y, loss, n_threads=threads, block_nnz=block_nnz)]
        self._workers = min(threads, len(self.shards))
        self._pool = ThreadPoolExecutor(self._workers) if len(self.shards) > 1 else None

    def sibling(self) -> ThreadExecutor:
        """An executor over the same shards with its own point and directions (the
        local procedures' scratch executor), sharing their blocks: the rows are not
        cut, counted or relabeled again (:meth:`SiteSums.sibling`)."""
        other = copy.copy(self)
        other.shards = [s.sibling() for s in self.shards]
        other._pool = ThreadPoolExecutor(self._workers) if self._pool else None
        return other

    def _map(self, fn):
        if self._pool is None:
            return [fn(s) for s in self.shards]
        return list(self._pool.map(fn, self.shards))

    @staticmethod
    def _reduce(parts: list[Sums]) -> Sums:
        grad = None
        if parts[0].grad is not None:
            grad = parts[0].grad.copy()
            for p in parts[1:]:
                grad += p.grad
        return Sums(sum(p.loss for p in parts), grad, sum(p.rows for p in parts))

    def evaluate(self, w: np.ndarray, need_grad: bool = True) -> Sums:
        return self._reduce(self._map(lambda s: s.evaluate(w, need_grad)))

    def current(self, need_grad: bool = True) -> Sums:
        return self._reduce(self._map(lambda s: s.current(need_grad)))

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        parts = self._map(lambda s: s.hess_vec(v))
        return np.sum(parts, axis=0) if len(parts) > 1 else parts[0]

    def hess_diag(self, curvature: float | None = None) -> np.ndarray:
        parts = self._map(lambda s: s.hess_diag(curvature))
        return np.sum(parts, axis=0) if len(parts) > 1 else parts[0]

    def label_sum(self) -> float:
        return float(sum(self._map(lambda s: s.label_sum())))

    def set_direction(self, p: np.ndarray) -> None:
        self._map(lambda s: s.set_direction(p))

    def line_sums(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = self._map(lambda s: s.line_sums(alphas))
        return sum(v for v, _ in parts), sum(d for _, d in parts)

    def step(self, alpha: float, need_grad: bool = True) -> Sums:
        return self._reduce(self._map(lambda s: s.step(alpha, need_grad)))

    def add_direction(self, d: np.ndarray) -> None:
        self._map(lambda s: s.add_direction(d))

    def subspace_sums(self, c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        parts = self._map(lambda s: s.subspace_sums(c))
        return (sum(v for v, _, _ in parts), sum(g for _, g, _ in parts),
                sum(h for _, _, h in parts))

    def subspace_commit(self, c: np.ndarray, memory: int) -> None:
        self._map(lambda s: s.subspace_commit(c, memory))

    @property
    def subspace_size(self) -> int:
        return len(self.shards[0].subspace)

    @property
    def point(self) -> np.ndarray | None:
        """The current point (every shard holds the same one)."""
        return self.shards[0].w

    @property
    def has_direction(self) -> bool:
        return self.shards[0].q is not None

    def close(self) -> None:
        for s in self.shards:
            s.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
