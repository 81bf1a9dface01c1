"""The in-memory dataset and the feature space every DC shares.

A :class:`FeatureSpace` fixes how raw records become column indices, so that every
DC maps its features identically without exchanging vocabularies: indexed formats
(LIBSVM) use the file's indices; tabular formats put numeric fields in the first
``n_numeric`` columns (in field order) and hash categorical values into the
``2**hash_bits`` columns that follow, with the field folded into the hash.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp

FieldKind = Literal["numeric", "categorical"]
SpaceKind = Literal["indexed", "hashed"]


@dataclass(frozen=True)
class FieldSpec:
    """One input field of a tabular source.

    ``transform`` applies to numeric fields: ``identity`` or ``log1p`` (the signed
    ``sign(x) * log(1 + |x|)``, which tames heavy-tailed counts such as Criteo's), or a
    fixed centring and scaling ``scale:S``, ``affine:C:S``, ``log1p:C:S``
    (:func:`geodml.data.readers.table_schema.parse_transform`).
    """

    name: str
    kind: FieldKind
    transform: str = "identity"


@dataclass(frozen=True)
class FeatureSpace:
    """How records map to the columns ``0 .. n_features-1``.

    ``kind == "indexed"``: columns are the source's own indices (``fields`` empty).
    ``kind == "hashed"``: numeric field ``j`` (counting numeric fields only) is column
    ``j``; a categorical value ``v`` of field ``f`` is column
    ``n_numeric + h(seed, f, v) mod 2**hash_bits``.
    """

    n_features: int
    kind: SpaceKind = "indexed"
    hash_bits: int = 0
    hash_seed: int = 0
    fields: tuple[FieldSpec, ...] = field(default_factory=tuple)

    @property
    def n_numeric(self) -> int:
        return sum(1 for f in self.fields if f.kind == "numeric")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> FeatureSpace:
        fields = tuple(FieldSpec(**f) for f in d.get("fields", ()))
        return cls(
            n_features=int(d["n_features"]),
            kind=d.get("kind", "indexed"),
            hash_bits=int(d.get("hash_bits", 0)),
            hash_seed=int(d.get("hash_seed", 0)),
            fields=fields,
        )

    def fingerprint(self) -> str:
        """A short digest that two DCs compare to check they map features alike."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def hashed(
        cls, fields: tuple[FieldSpec, ...], hash_bits: int, hash_seed: int = 0
    ) -> FeatureSpace:
        n_numeric = sum(1 for f in fields if f.kind == "numeric")
        return cls(
            n_features=n_numeric + (1 << hash_bits if any(
                f.kind == "categorical" for f in fields) else 0),
            kind="hashed",
            hash_bits=hash_bits,
            hash_seed=hash_seed,
            fields=fields,
        )


@dataclass
class Dataset:
    """Rows of one DC (or of a whole dataset): a CSR matrix and its labels.

    Binary labels are stored as 0.0 / 1.0; squared loss takes any real label.
    """

    X: sp.csr_matrix
    y: np.ndarray
    space: FeatureSpace

    def __post_init__(self) -> None:
        if self.X.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"dataset has {self.X.shape[0]} rows but {self.y.shape[0]} labels"
            )
        if self.X.shape[1] != self.space.n_features:
            raise ValueError(
                f"matrix has {self.X.shape[1]} columns but the feature space has "
                f"{self.space.n_features}"
            )

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def nnz(self) -> int:
        return int(self.X.nnz)

    @property
    def positives(self) -> int:
        return int(np.count_nonzero(self.y > 0.5))

    def take(self, rows: np.ndarray) -> Dataset:
        """The sub-dataset of the given row indices (in that order)."""
        return Dataset(self.X[rows], self.y[rows], self.space)

    @classmethod
    def concat(cls, parts: list[Dataset]) -> Dataset:
        if not parts:
            raise ValueError("cannot concatenate zero datasets")
        space = parts[0].space
        for p in parts[1:]:
            if p.space != space:
                raise ValueError("cannot concatenate datasets of different feature spaces")
        X = sp.vstack([p.X for p in parts], format="csr")
        return cls(X, np.concatenate([p.y for p in parts]), space)
