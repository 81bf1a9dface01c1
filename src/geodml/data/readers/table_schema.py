"""How the columns of a table become labels and features: :class:`TableSchema`.

Feature space: fields are the numeric columns (in schema order) followed by the
categorical columns (in schema order). Numeric field ``j`` is column ``j``; a value
``v`` of the categorical field at position ``f`` of that list is column
``n_numeric + hash_buckets(string_tokens([v]), f, hash_seed, hash_bits)``, value 1.
Missing, NaN and zero numeric values and missing categorical values give no entry.
"""

from __future__ import annotations

import codecs
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from geodml.data.dataset import FeatureSpace, FieldSpec

Transform = str  # identity | log1p | scale:S | affine:C:S | log1p:C:S (parse_transform)


class TableSchema(BaseModel):
    """How the columns of a table become labels and features.

    - ``label``: the label column. With ``label_kind="binary"`` a value in ``positive``
      is 1.0; if ``negative`` is given, a value in it is 0.0 and any other value is an
      error; if not, every other value is 0.0. Both omitted means ``positive=["1"]``,
      ``negative=["0"]``. ``label_kind="real"`` parses the label as a number.
    - ``numeric`` / ``categorical``: feature columns; ``transforms`` maps a numeric column
      to ``identity`` (default), ``log1p`` (``sign(x) log(1 + |x|)``) or ``scale:S``
      (``x / S`` for a fixed ``S > 0``: the same in every DC, so no statistics need to
      be exchanged), ``affine:C:S`` (``(x - C) / S``: centred at a fixed ``C``, for
      columns far from zero such as latitudes or years, which without an intercept
      leave the objective ill-conditioned; docs/data.md) or ``log1p:C:S``
      (``(sign(x) log(1 + |x|) - C) / S``).
    - ``drop``: columns deliberately left out (every column not named is dropped anyway;
      listing one documents the choice and checks that it exists).
    - ``missing``: tokens that mean "no value" (compared after stripping when ``strip``).
    - ``header``: the first non-empty line (after ``skip_rows`` lines) is a header;
      ``"auto"``: it is one iff it equals ``column_names``. ``column_names`` name the
      columns of a header-less file (default ``c0, c1, ...``); with a header they must
      equal it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    label_kind: Literal["binary", "real"] = "binary"
    positive: list[str] | None = None
    negative: list[str] | None = None
    numeric: list[str] = Field(default_factory=list)
    transforms: dict[str, Transform] = Field(default_factory=dict)
    categorical: list[str] = Field(default_factory=list)
    drop: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=lambda: [""])
    delimiter: str = ","
    header: bool | Literal["auto"] = True
    column_names: list[str] | None = None
    encoding: str = "utf-8"
    skip_rows: int = Field(0, ge=0)
    strip: bool = True
    hash_bits: int = Field(18, ge=1, le=31)
    hash_seed: int = Field(0, ge=0, lt=2**32)

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str) -> str:
        if len(v) != 1 or v in ('"', "\n", "\r"):
            raise ValueError(f"must be one character other than a quote or newline, got {v!r}")
        return v

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str) -> str:
        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TableSchema:
        used = [self.label, *self.numeric, *self.categorical, *self.drop]
        dup = sorted({c for c in used if used.count(c) > 1})
        if dup:
            raise ValueError(f"columns named more than once among label/numeric/"
                             f"categorical/drop: {dup}")
        if not self.numeric and not self.categorical:
            raise ValueError("the schema names no numeric or categorical feature column")
        extra = sorted(set(self.transforms) - set(self.numeric))
        if extra:
            raise ValueError(f"transforms name columns that are not numeric: {extra}")
        for column, t in self.transforms.items():
            if parse_transform(t) is None:
                raise ValueError(f"transforms.{column}: {t!r} is not identity, log1p, "
                                 "scale:S, affine:C:S or log1p:C:S (C a number, S a "
                                 "positive number)")
        if self.label_kind == "real" and (self.positive or self.negative):
            raise ValueError("positive/negative apply only to label_kind='binary'")
        if self.negative is not None and self.positive is None:
            raise ValueError("negative is given but positive is not")
        if self.positive is not None and not self.positive:
            raise ValueError("positive must list at least one value")
        if self.header == "auto" and not self.column_names:
            raise ValueError("header='auto' needs column_names to recognise the header")
        if self.column_names is not None:
            names = self.column_names
            if len(set(names)) != len(names):
                raise ValueError("column_names has duplicates")
            unknown = [c for c in used if c not in names]
            if unknown:
                raise ValueError(f"columns not in column_names: {unknown}")
        return self

    @property
    def positive_values(self) -> list[str]:
        return ["1"] if self.positive is None else list(self.positive)

    @property
    def negative_values(self) -> list[str] | None:
        """The allowed negative values, or None when every non-positive value is 0."""
        if self.positive is None and self.negative is None:
            return ["0"]
        return None if self.negative is None else list(self.negative)

    def fields(self) -> tuple[FieldSpec, ...]:
        """Numeric fields (schema order) then categorical fields (schema order)."""
        return tuple(
            [FieldSpec(c, "numeric", self.transforms.get(c, "identity")) for c in self.numeric]
            + [FieldSpec(c, "categorical") for c in self.categorical]
        )

    def feature_space(self) -> FeatureSpace:
        return FeatureSpace.hashed(self.fields(), self.hash_bits, self.hash_seed)


def parse_transform(transform: str) -> tuple[bool, float, float] | None:
    """``(log, C, S)`` of a numeric column's transform ``x -> (t(x) - C) / S``, where
    ``t`` is ``sign(x) log(1 + |x|)`` if ``log`` else the identity: ``identity``,
    ``log1p``, ``scale:S``, ``affine:C:S`` or ``log1p:C:S``, with ``C`` finite and ``S``
    finite and positive; None for anything else."""
    if transform in ("identity", "log1p"):
        return transform == "log1p", 0.0, 1.0
    kind, _, rest = transform.partition(":")
    parts = rest.split(":")
    if (kind, len(parts)) not in (("scale", 1), ("affine", 2), ("log1p", 2)):
        return None
    try:
        numbers = [float(x) for x in parts]
    except ValueError:
        return None
    center, scale = (0.0, *numbers) if kind == "scale" else numbers
    if not (np.isfinite(center) and np.isfinite(scale) and scale > 0):
        return None
    return kind == "log1p", center, scale
