"""Loading the shared real datasets in tests (skipping when ../shared is absent)."""

from __future__ import annotations

from functools import cache

import numpy as np

from geodml.data import Dataset
from geodml.data.readers import read_dataset

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
    return read_dataset(shared_path(rel), "libsvm", n_features=d, dtype=np.float64)


def load_shared_libsvm(name: str) -> Dataset:
    """A fresh copy (tests may mutate it) of a shared LIBSVM dataset, in float64."""
    path, _ = LIBSVM[name]
    shared_path(path)  # skips when absent
    data = _load(name)
    return Dataset(data.X.copy(), data.y.copy(), data.space)
