"""The site's executor on a Ray cluster: one actor per shard, reduced inside the DC.

For a DC whose rows outgrow one machine. Each shard is a Ray actor that loads *its
own* rows from the DC's storage (a geodml dataset directory, memory-mapped, so it
reads only its rows' pages) and keeps a :class:`~geodml.models.site_sums.SiteSums`
with its cached margins. The executor fans every call out to the actors and adds
their sums in shard order, exactly as :class:`~geodml.site.executor.ThreadExecutor`
does with the same shard bounds and threads per shard, so both give the same numbers.
Only the reduced sums leave the site process, and only the site's reply leaves the DC.

Enable it in the site config (``pip install geodml[ray]``)::

    [executor]
    kind = "ray"
    shards = 8
    ray_address = "auto"      # start a local Ray; or "ray://head:10001", "head:6379"
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from geodml.errors import ConfigError
from geodml.models.losses import Loss, get_loss
from geodml.models.site_sums import SiteSums, Sums
from geodml.site.executor import ThreadExecutor


@dataclass(frozen=True)
class ShardSource:
    """Where a session's rows are: the dataset directory, the session's rows (None:
    all, in order) and its support (None: all columns; else the columns kept, in
    order, renumbered 0..len-1)."""

    path: str
    rows: np.ndarray | None = None
    support: np.ndarray | None = None


def load_shard(source: ShardSource, start: int, stop: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """Rows ``start:stop`` of the session's matrix, read from storage."""
    from geodml.data.store import load_dataset

    data = load_dataset(source.path, mmap=True)
    rows = slice(start, stop) if source.rows is None else source.rows[start:stop]
    X, y = data.X[rows], data.y[rows]
    if source.support is not None:
        position = np.zeros(data.n_features, dtype=np.int32)
        position[source.support] = np.arange(len(source.support), dtype=np.int32)
        X = sp.csr_matrix((X.data, position[X.indices], X.indptr),
                          shape=(X.shape[0], len(source.support)))
    return X, np.asarray(y)


class ShardActor:
    """One shard's rows, with one :class:`SiteSums` per *view* over them: the
    session's (``main``) and the local procedures' (``scratch``), which must not move
    the session's point (made a Ray actor by :func:`_actor_class`)."""

    def __init__(self, source: ShardSource, start: int, stop: int, loss: str, threads: int):
        self.X, self.y = load_shard(source, start, stop)
        self.loss, self.threads = get_loss(loss), threads
        self.views: dict[str, SiteSums] = {}

    def _view(self, view: str) -> SiteSums:
        if view not in self.views:  # a second view shares the first one's blocks
            first = next(iter(self.views.values()), None)
            self.views[view] = first.sibling() if first is not None else SiteSums(
                self.X, self.y, self.loss, n_threads=self.threads)
        return self.views[view]

    def call(self, view: str, method: str, *args):
        return getattr(self._view(view), method)(*args)

    def get(self, view: str, name: str):
        value = getattr(self._view(view), name)
        return len(value) if name == "subspace" else value

    def has(self, view: str, name: str) -> bool:
        return getattr(self._view(view), name) is not None

    def close(self) -> None:
        for sums in self.views.values():
            sums.close()


def ensure_ray(address: str = "auto", num_cpus: int | None = None) -> None:
    """Connect to Ray: ``auto`` starts a local instance (unless RAY_ADDRESS names one);
    anything else is a cluster address."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor kind = \"ray\" needs Ray: pip install 'geodml[ray]'"
                          ) from None
    if ray.is_initialized():
        return
    if address == "auto" and not os.environ.get("RAY_ADDRESS"):
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    else:
        ray.init(address=None if address == "auto" else address, log_to_driver=False,
                 configure_logging=False)


_ACTOR = None


def _actor_class():
    global _ACTOR
    if _ACTOR is None:
        import ray

        _ACTOR = ray.remote(num_cpus=0)(ShardActor)
    return _ACTOR


class RayExecutor:
    """``shards`` row ranges of equal nonzeros, each a Ray actor (see the module doc)."""

    def __init__(self, X: sp.csr_matrix, y: np.ndarray, loss: Loss, source: ShardSource,
                 shards: int = 1, threads: int | None = None, address: str = "auto"):
        import ray

        ensure_ray(address)
        self._ray, self._view = ray, "main"
        threads = threads or os.cpu_count() or 1
        self.n_rows, self.n_features = X.shape
        shards = max(1, min(shards, max(1, self.n_rows)))
        bounds = np.searchsorted(X.indptr, np.linspace(0, X.nnz, shards + 1)).tolist()
        bounds[0], bounds[-1] = 0, self.n_rows
        per_shard = max(1, threads // shards) if shards > 1 else threads
        actor = _actor_class()
        self.actors = [actor.remote(source, a, b, loss.name, per_shard)
                       for a, b in itertools.pairwise(bounds)]

    def sibling(self) -> RayExecutor:
        """An executor over the same actors with its own point and directions (the
        local procedures' scratch executor, without loading the rows again)."""
        other = object.__new__(RayExecutor)
        other.__dict__.update(self.__dict__)
        other._view = "scratch"
        return other

    def _map(self, method: str, *args) -> list:
        refs = [a.call.remote(self._view, method, *args) for a in self.actors]
        return self._ray.get(refs)

    def evaluate(self, w: np.ndarray, need_grad: bool = True) -> Sums:
        return ThreadExecutor._reduce(self._map("evaluate", w, need_grad))

    def current(self, need_grad: bool = True) -> Sums:
        return ThreadExecutor._reduce(self._map("current", need_grad))

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        parts = self._map("hess_vec", v)
        return np.sum(parts, axis=0) if len(parts) > 1 else parts[0]

    def hess_diag(self, curvature: float | None = None) -> np.ndarray:
        parts = self._map("hess_diag", curvature)
        return np.sum(parts, axis=0) if len(parts) > 1 else parts[0]

    def label_sum(self) -> float:
        return float(sum(self._map("label_sum")))

    def set_direction(self, p: np.ndarray) -> None:
        self._map("set_direction", p)

    def line_sums(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = self._map("line_sums", alphas)
        return sum(v for v, _ in parts), sum(d for _, d in parts)

    def step(self, alpha: float, need_grad: bool = True) -> Sums:
        return ThreadExecutor._reduce(self._map("step", alpha, need_grad))

    def add_direction(self, d: np.ndarray) -> None:
        self._map("add_direction", d)

    def subspace_sums(self, c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        parts = self._map("subspace_sums", c)
        return (sum(v for v, _, _ in parts), sum(g for _, g, _ in parts),
                sum(h for _, _, h in parts))

    def subspace_commit(self, c: np.ndarray, memory: int) -> None:
        self._map("subspace_commit", c, memory)

    @property
    def subspace_size(self) -> int:
        return self._ray.get(self.actors[0].get.remote(self._view, "subspace"))

    @property
    def point(self) -> np.ndarray | None:
        return self._ray.get(self.actors[0].get.remote(self._view, "w"))

    @property
    def has_direction(self) -> bool:
        return self._ray.get(self.actors[0].has.remote(self._view, "q"))

    def close(self) -> None:
        if self._view == "main":  # the session's executor owns the actors
            for a in self.actors:
                self._ray.kill(a)
        self.actors = []
