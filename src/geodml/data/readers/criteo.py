"""Criteo Display Advertising Challenge TSV: a preset of the tabular reader.

Each line has 40 tab-separated fields: the label (0/1), the integer fields I1..I13 and
the categorical fields C1..C26 (32-bit hex strings); any field but the label may be
empty (no entry). Integers are log-transformed, ``sign(x) log(1 + |x|)``, into columns
0..12; categorical values are hashed with their field into ``2**hash_bits`` buckets
after them (the tabular feature-space rule, see :mod:`geodml.data.readers.table_schema`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geodml.data.readers.table_schema import TableSchema
from geodml.data.readers.tabular import DEFAULT_BLOCK_SIZE, CsvSource

CRITEO_INT = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CAT = tuple(f"C{i}" for i in range(1, 27))
CRITEO_COLUMNS = ("label", *CRITEO_INT, *CRITEO_CAT)


def criteo_schema(hash_bits: int = 18, hash_seed: int = 0) -> TableSchema:
    """The Criteo DAC schema: label, 13 log1p integer fields, 26 hashed categorical."""
    return TableSchema(
        label="label", positive=["1"], negative=["0"],
        numeric=list(CRITEO_INT), transforms=dict.fromkeys(CRITEO_INT, "log1p"),
        categorical=list(CRITEO_CAT), delimiter="\t", header=False,
        column_names=list(CRITEO_COLUMNS), strip=False,
        hash_bits=hash_bits, hash_seed=hash_seed,
    )


def criteo_source(
    path: str | Path,
    hash_bits: int = 18,
    hash_seed: int = 0,
    dtype: type | np.dtype = np.float64,
    block_size: int = DEFAULT_BLOCK_SIZE,
) -> CsvSource:
    """A Criteo DAC file as a streaming source (a :class:`CsvSource` with the preset)."""
    return CsvSource(path, criteo_schema(hash_bits, hash_seed), dtype=dtype,
                     block_size=block_size)
