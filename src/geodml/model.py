"""A trained linear model: weights, the objective that produced them, and I/O.

A model file is an ``.npz`` archive with the weights ``w`` and a JSON header
(loss, lambda, feature space, training summary). Scores are margins ``z = X w``;
for logistic loss ``P(y = 1 | x) = sigmoid(z)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

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

    def margins(self, X: sp.csr_matrix) -> np.ndarray:
        if X.shape[1] != self.w.shape[0]:
            raise DataError(
                f"data has {X.shape[1]} features but the model has {self.w.shape[0]}"
            )
        return np.asarray(X @ self.w.astype(X.dtype, copy=False), dtype=np.float64)

    def evaluate(self, data: Dataset) -> dict[str, float]:
        """Log loss, accuracy and ROC AUC (binary losses) or RMSE (squared loss)."""
        if data.space.fingerprint() != self.space.fingerprint():
            raise DataError(
                "the data's feature space differs from the model's "
                f"({data.space.fingerprint()} vs {self.space.fingerprint()})"
            )
        z = self.margins(data.X)
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
