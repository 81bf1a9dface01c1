"""The streaming interface between readers and their consumers.

A :class:`Source` yields its rows in bounded chunks, already mapped into its
:class:`FeatureSpace`; converting, partitioning and generating all consume this
stream, so none of them needs the whole file in memory. A chunk may carry each
row's partition key (see :class:`KeySpec`) for ``geodml partition by-column``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import scipy.sparse as sp

from geodml.data.dataset import Dataset, FeatureSpace

DEFAULT_CHUNK_ROWS = 65536


class Chunk(NamedTuple):
    X: sp.csr_matrix
    y: np.ndarray
    keys: np.ndarray | None  # per-row partition key as str, when a KeySpec was given


@dataclass(frozen=True)
class KeySpec:
    """Which per-row value assigns a row to a DC in a by-column partition.

    Exactly one of:
    - ``column``: a tabular column's raw value (airline ``Origin``, taxi
      ``pickup_community_area``); a missing value is the key ``""``.
    - ``onehot``: the name of the one column among these that is nonzero
      (covtype's ``Wilderness_Area1..4``).
    - ``feature_prefix``: for indexed data with a feature-name map (iPinYou's
      ``featindex``), the name of the row's active feature starting with this
      prefix (``region:``).
    """

    column: str | None = None
    onehot: tuple[str, ...] = ()
    feature_prefix: str | None = None

    def __post_init__(self) -> None:
        given = sum([self.column is not None, bool(self.onehot), self.feature_prefix is not None])
        if given != 1:
            raise ValueError("a KeySpec needs exactly one of column, onehot, feature_prefix")


class Source(Protocol):
    """A readable dataset: a path for error messages, a feature space, a chunk stream."""

    path: str
    space: FeatureSpace

    def chunks(
        self, key: KeySpec | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]: ...


@dataclass
class DatasetSource:
    """An in-memory dataset (with optional per-row keys) seen as a Source."""

    data: Dataset
    keys: np.ndarray | None = None
    path: str = "<memory>"

    @property
    def space(self) -> FeatureSpace:
        return self.data.space

    def chunks(
        self, key: KeySpec | None = None, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> Iterator[Chunk]:
        if key is not None and self.keys is None:
            raise ValueError(f"{self.path}: this in-memory source has no partition keys")
        for start in range(0, self.data.n_rows, chunk_rows):
            stop = min(start + chunk_rows, self.data.n_rows)
            keys = None if key is None else self.keys[start:stop]
            yield Chunk(self.data.X[start:stop], self.data.y[start:stop], keys)


def read_all(source: Source, key: KeySpec | None = None) -> tuple[Dataset, np.ndarray | None]:
    """Concatenate a source's chunks into one in-memory dataset (and its keys)."""
    Xs, ys, ks = [], [], []
    for chunk in source.chunks(key=key):
        Xs.append(chunk.X)
        ys.append(chunk.y)
        if chunk.keys is not None:
            ks.append(chunk.keys)
    if Xs:
        X = sp.vstack(Xs, format="csr")
        y = np.concatenate(ys)
    else:
        X = sp.csr_matrix((0, source.space.n_features), dtype=np.float32)
        y = np.zeros(0)
    keys = np.concatenate(ks) if ks else None
    return Dataset(X, y, source.space), keys
