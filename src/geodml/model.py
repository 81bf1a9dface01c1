"""A trained linear model: weights, the objective that produced them, and I/O.

A model file is an ``.npz`` archive with the weights ``w`` and a JSON header
(loss, lambda, feature space, training summary). Scores are margins ``z = X w``;
for logistic loss ``P(y = 1 | x) = sigmoid(z)``.

Scoring follows scikit-learn's shapes: ``decision_function(X)`` is ``z`` (n,),
``predict_proba(X)`` is ``[1 - sigmoid(z), sigmoid(z)]`` (n, 2) with columns in the
order of ``classes_ = [0, 1]``, ``predict(X)`` is ``[z > 0]`` (a label; ``z`` itself
for the squared loss). ``X`` is a :class:`~geodml.data.Dataset` (whose feature
space, hashing included, must be the model's) or a matrix of the model's width.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

from geodml import metrics
from geodml.data.dataset import Dataset, FeatureSpace
from geodml.errors import DataError, DataFormatError


@dataclass
class LinearModel:
    w: np.ndarray
    loss: str
    lam: float
    space: FeatureSpace
    info: dict = field(default_factory=dict)

    @property
    def binary(self) -> bool:
        """Whether the model classifies (labels 0/1) rather than regresses."""
        return self.loss != "squared"

    @property
    def classes_(self) -> np.ndarray:
        """The labels of :meth:`predict_proba`'s columns, as in scikit-learn."""
        if not self.binary:
            raise DataError("a squared-loss (regression) model has no classes")
        return np.array([0.0, 1.0])

    def check_space(self, space: FeatureSpace, what: str = "the data") -> None:
        """Refuse data whose features were mapped otherwise than the model's
        (dimension, indexing or hashing, hash bits and seed, fields), naming every
        difference."""
        if space.fingerprint() == self.space.fingerprint():
            return
        mine, theirs = self.space.to_dict(), space.to_dict()
        diffs = [f"{k} {theirs.get(k)!r} (model: {mine.get(k)!r})"
                 for k in ("n_features", "kind", "hash_bits", "hash_seed") if
                 theirs.get(k) != mine.get(k)]
        if theirs.get("fields") != mine.get("fields"):
            diffs.append("its fields (names, kinds or transforms) differ from the model's")
        raise DataError(
            f"{what}'s feature space differs from the model's: {'; '.join(diffs)}. Score "
            "data converted with the same options (--format, --preset, hash bits) as the "
            "training data")

    def _matrix(self, X) -> sp.csr_matrix:
        if isinstance(X, Dataset):
            self.check_space(X.space)
            X = X.X
        if not sp.issparse(X):
            X = np.asarray(X)
            if X.ndim != 2:
                raise DataError(f"expected a 2-D matrix of rows, got shape {X.shape}")
            X = sp.csr_matrix(X)
        return X

    def margins(self, X) -> np.ndarray:
        """``z = X w`` in float64 (``X``: a Dataset, a sparse or a dense matrix)."""
        X = self._matrix(X)
        if X.shape[1] != self.w.shape[0]:
            raise DataError(
                f"data has {X.shape[1]} features but the model has {self.w.shape[0]}"
            )
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        return np.asarray(X @ self.w.astype(dtype, copy=False), dtype=np.float64).ravel()

    def decision_function(self, X) -> np.ndarray:
        """The margins ``z = X w``, shape (n,) (scikit-learn's name)."""
        return self.margins(X)

    def predict_proba(self, X) -> np.ndarray:
        """``[P(y=0|x), P(y=1|x)] = [1 - sigmoid(z), sigmoid(z)]``, shape (n, 2);
        logistic models only (other losses do not model a probability)."""
        if self.loss != "logistic":
            raise DataError(f"predict_proba needs a logistic model; this one was trained "
                            f"with loss {self.loss!r}, which models no probability "
                            "(use decision_function)")
        p = expit(self.margins(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        """Labels ``[z > 0]`` as 0.0/1.0; for the squared loss the prediction ``z``."""
        z = self.margins(X)
        return (z > 0).astype(np.float64) if self.binary else z

    def evaluate(self, data: Dataset) -> dict[str, float]:
        """Log loss, accuracy and ROC AUC (binary losses) or RMSE (squared loss)."""
        z = self.margins(data)
        if self.loss == "squared":
            return {"rmse": float(np.sqrt(np.mean((z - data.y) ** 2)))}
        return {
            "log_loss": metrics.log_loss(data.y, z),
            "accuracy": metrics.accuracy(data.y, z),
            "auc": metrics.roc_auc(data.y, z),
        }

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": "geodml-model",
            "version": 1,
            "loss": self.loss,
            "lam": self.lam,
            "feature_space": self.space.to_dict(),
            "info": self.info,
        }
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, w=self.w, header=np.array(json.dumps(header)))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> LinearModel:
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                w = np.array(z["w"], dtype=np.float64)
        except (OSError, ValueError, KeyError) as e:
            raise DataFormatError(str(path), None, f"not a geodml model file ({e})") from None
        if header.get("format") != "geodml-model":
            raise DataFormatError(str(path), None, "not a geodml model file")
        return cls(
            w, header["loss"], header["lam"], FeatureSpace.from_dict(header["feature_space"]),
            header.get("info", {}),
        )
