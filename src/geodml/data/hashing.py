"""Stable feature hashing shared by every reader and DC.

Python's ``hash`` is salted per process, so it cannot map features identically in
two DCs. Here a categorical value becomes a 64-bit token (integers as themselves,
strings through BLAKE2b), and the bucket of value token ``t`` in field ``f`` is

    bucket = mix64(t XOR mix64(seed * 2**32 + f + 1)) >> (64 - bits)

where ``mix64`` is the SplitMix64 finalizer (a bijection with full avalanche).
All of it is vectorized over numpy ``uint64`` arrays.
"""

from __future__ import annotations

import hashlib

import numpy as np

_C1 = np.uint64(0xBF58476D1CE4E5B9)
_C2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _C1
        z = (z ^ (z >> np.uint64(27))) * _C2
        return z ^ (z >> np.uint64(31))


def string_tokens(values: list[str] | np.ndarray) -> np.ndarray:
    """64-bit tokens of strings (BLAKE2b, 8-byte digest, little-endian)."""
    out = np.empty(len(values), dtype=np.uint64)
    for i, v in enumerate(values):
        out[i] = int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little")
    return out


def hash_buckets(tokens: np.ndarray, field_index: int, seed: int, bits: int) -> np.ndarray:
    """Buckets in ``[0, 2**bits)`` of value tokens of one field (int64 array)."""
    if not 1 <= bits <= 31:
        raise ValueError(f"hash_bits must be in 1..31, got {bits}")
    salt = mix64(np.array([(seed << 32) + field_index + 1], dtype=np.uint64))[0]
    h = mix64(np.asarray(tokens, dtype=np.uint64) ^ salt)
    return (h >> np.uint64(64 - bits)).astype(np.int64)
