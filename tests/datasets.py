"""Loading the shared real datasets in tests (skipping when ../shared is absent)."""

from __future__ import annotations

from functools import cache

import numpy as np
from sklearn.datasets import load_svmlight_file

from geodml.data import Dataset, FeatureSpace

from .conftest import shared_path

LIBSVM = {
    "a9a": ("libsvm/a9a", 123),
    "a9a.t": ("libsvm/a9a.t", 123),
    "w8a": ("libsvm/w8a", 300),
    "ipinyou": ("ipinyou_deepctr/train.fm.txt", 133465),
    "ipinyou.test": ("ipinyou_deepctr/test.fm.txt", 133465),
}


@cache
def _load(name: str) -> Dataset:
    rel, d = LIBSVM[name]
    X, y = load_svmlight_file(str(shared_path(rel)), n_features=d)
    return Dataset(X.tocsr(), (y > 0).astype(np.float64), FeatureSpace(d))


def load_shared_libsvm(name: str) -> Dataset:
    """A fresh copy (tests may mutate it) of a shared LIBSVM dataset, in float64."""
    path, _ = LIBSVM[name]
    shared_path(path)  # skips when absent
    data = _load(name)
    return Dataset(data.X.copy(), data.y.copy(), data.space)
