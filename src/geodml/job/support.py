"""Support restriction in a job: vectors carry only the coordinates a site's rows touch.

A site's support ``S`` is the sorted set of feature indices its rows touch
(:func:`support_of`). With restriction on, the site renumbers its columns to positions
in ``S`` (:func:`renumber_columns`: column ``S[k]`` becomes ``k``, the one copy of that
renumbering), the coordinator sends ``v[S]`` (:func:`restrict`) and puts what comes back
in place (:func:`expand`: zeros off ``S``). For a site's sums nothing is lost: a
gradient or Hessian-vector sum over rows that never touch feature ``j`` is 0 at ``j``,
and ``X w = X[:, S] w[S]``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


# -- the coordinator's half -----------------------------------------------------------
def restrict(v: np.ndarray, support: np.ndarray | None) -> np.ndarray:
    """What travels of the full vector ``v``: ``v[S]`` (``v`` itself unrestricted)."""
    return v if support is None else v[support]


def expand(v: np.ndarray, support: np.ndarray | None, n_features: int) -> np.ndarray:
    """The full vector of a restricted one: ``out[S] = v``, zeros elsewhere."""
    if support is None:
        return v
    full = np.zeros(n_features)
    full[support] = v
    return full


def dim(support: np.ndarray | None, n_features: int) -> int:
    """Elements per vector on the wire."""
    return n_features if support is None else len(support)


# -- the site's half ---------------------------------------------------------------------
def support_of(indices: np.ndarray, n_features: int) -> np.ndarray:
    """Sorted feature indices (uint32) that the column ``indices`` of the rows touch."""
    if len(indices) < n_features // 8:  # few nonzeros: sort them
        return np.unique(indices).astype(np.uint32)
    counts = np.bincount(indices, minlength=n_features)  # cheaper than sorting
    return np.flatnonzero(counts).astype(np.uint32)


def renumber_columns(X: sp.csr_matrix, support: np.ndarray, n_features: int) -> sp.csr_matrix:
    """``X`` with column ``support[k]`` renumbered to ``k`` (every nonzero is in the
    support); shares ``X``'s data and row pointers."""
    position = np.zeros(n_features, dtype=np.int32)
    position[support] = np.arange(len(support), dtype=np.int32)
    return sp.csr_matrix((X.data, position[X.indices], X.indptr),
                         shape=(X.shape[0], len(support)))


__all__ = ["dim", "expand", "renumber_columns", "restrict", "support_of"]
