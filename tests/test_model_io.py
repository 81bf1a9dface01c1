"""Model files round-trip and refuse mismatched data."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.data import Dataset, FeatureSpace
from geodml.errors import DataError, DataFormatError
from geodml.model import LinearModel


def test_model_round_trip_and_evaluation(tmp_path):
    space = FeatureSpace(4)
    model = LinearModel(np.array([1.0, -2.0, 0.5, 0.0]), "logistic", 0.01, space, {"k": 1})
    path = model.save(tmp_path / "m.npz")
    loaded = LinearModel.load(path)
    np.testing.assert_array_equal(loaded.w, model.w)
    assert (loaded.loss, loaded.lam, loaded.info) == ("logistic", 0.01, {"k": 1})
    assert loaded.space == space
    X = sp.csr_matrix(np.eye(4))
    scores = loaded.evaluate(Dataset(X, np.array([1.0, 0.0, 0.0, 0.0]), space))
    assert scores["accuracy"] == pytest.approx(0.75)


def test_mismatched_space_and_garbage_file_are_clear_errors(tmp_path):
    model = LinearModel(np.zeros(4), "logistic", 0.01, FeatureSpace(4))
    other = Dataset(sp.csr_matrix((2, 5)), np.zeros(2), FeatureSpace(5))
    with pytest.raises(DataError, match="feature space differs"):
        model.evaluate(other)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a model")
    with pytest.raises(DataFormatError, match=r"bad\.npz: not a geodml model file"):
        LinearModel.load(bad)
