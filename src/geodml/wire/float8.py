"""The scaled float8 wire dtype (``QFLOAT8``): one float32 scale per chunk and one
float8 E5M2 code per element (see "Scaled float8" in :mod:`geodml.wire.codec`).

E5M2 is the top byte of an IEEE binary16: a sign bit, 5 exponent bits (bias 15) and 2
mantissa bits. Its finite values are ``±m 2^(e-2)`` with ``m`` in 4..7 for the
exponents ``e`` in -14..15 (largest 57344 = 7 * 2^13) and the subnormals ``±{1, 2, 3}
2^-16``. The codes ``0x7C..0x7F`` and ``0xFC..0xFF`` are infinities and NaNs, and
``0x80`` is -0: none of them is ever sent, and a receiver refuses them.

The scale is a power of two, so a decoded value is a number of at most 3 significant
bits, and any subset of a decoded chunk (a support-restricted vector, other chunk
bounds) re-encodes to the same values: its own scale is a power of two no larger, on
whose finer grid those values lie.
"""

from __future__ import annotations

import math

import numpy as np

E5M2_MAX = 57344.0  # the largest finite E5M2 value, 0x7B
_MIN_NORMAL_EXP = -14  # E5M2 normals are >= 2^-14; below, the spacing is 2^-16
_MANTISSA_BITS = 2
_TOP_EXP = 15  # E5M2's top binade: [2^15, 57344]
_MIN_SCALE_EXP = -149  # float32's smallest subnormal, 2^-149
_MAX_SCALE_EXP = 127  # float32's largest power of two
_ALL_ZERO = 2.0**-166  # max|x| at or below this: every code is 0 even with s = 2^-149
_NEGATIVE_ZERO = 0x80
_FIRST_NONFINITE = 0x7C  # codes whose low 7 bits are >= this are infinities or NaNs


def qfloat8_scale_exponent(x: np.ndarray) -> int | None:
    """``k`` of the QFLOAT8 scale ``s = 2^k`` of one chunk of finite values x: with ``2^E``
    the binade of ``max|x|`` rounded to 3 significant bits (E5M2's precision; nearest, ties
    to even), ``k = E - 15``, clamped to ``[-149, 127]``; None (``s = 0``) when
    ``max|x| <= 2^-166`` (every code would be 0) or x is empty."""
    x = np.asarray(x, dtype=np.float64)
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if not m > _ALL_ZERO:
        return None
    f, e = math.frexp(m)  # m = f 2^e, f in [0.5, 1): the binade of m is 2^(e-1)
    if round(f * 8) == 8:  # rounded to 3 significant bits, m reaches 2^e
        e += 1
    return min(max(e - 1 - _TOP_EXP, _MIN_SCALE_EXP), _MAX_SCALE_EXP)


def qfloat8_scale(x: np.ndarray) -> np.float32:
    """The QFLOAT8 scale of one chunk of finite values x: ``2^k`` (a float32) for
    :func:`qfloat8_scale_exponent`'s k, or 0."""
    k = qfloat8_scale_exponent(x)
    return np.float32(0.0) if k is None else np.float32(math.ldexp(1.0, k))


def e5m2_codes(q: np.ndarray) -> np.ndarray:
    """The E5M2 codes (uint8) of float64 values ``|q| <= 57344``, each rounded once to the
    nearest E5M2 value, ties to even (a tie at the top of a binade carries into the next
    exponent). A value that rounds to zero gets the code of +0, whatever its sign."""
    q = np.asarray(q, dtype=np.float64)
    _, e = np.frexp(q)  # |q| = f 2^e with f in [0.5, 1): the binade of |q| is 2^(e-1)
    step = np.ldexp(1.0, np.maximum(e - 1, _MIN_NORMAL_EXP) - _MANTISSA_BITS)
    r = np.rint(q / step) * step + 0.0  # exact (powers of two); + 0.0 turns -0 into +0
    return (r.astype("<f2").view("<u2") >> np.uint16(8)).astype("u1")


def e5m2_values(codes: np.ndarray) -> np.ndarray:
    """The float64 values of E5M2 codes (exact: the code is the top byte of a binary16)."""
    bits = np.asarray(codes, dtype=np.uint8).astype("<u2") << np.uint16(8)
    return bits.view("<f2").astype(np.float64)


def quantize_qfloat8(x: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """(scale, E5M2 codes) of one chunk of finite values x: ``s = 2^k`` from
    :func:`qfloat8_scale_exponent`, codes = :func:`e5m2_codes` of ``x / s`` (exact in
    float64: a power of two) clipped to ``±57344`` (only a scale clamped at ``2^127``
    needs it); all codes 0 when ``s = 0``."""
    x = np.asarray(x, dtype=np.float64)
    k = qfloat8_scale_exponent(x)
    if k is None:
        return np.float32(0.0), np.zeros(x.shape, dtype="u1")
    q = np.clip(np.ldexp(x, -k), -E5M2_MAX, E5M2_MAX)
    return np.float32(math.ldexp(1.0, k)), e5m2_codes(q)


def dequantize_qfloat8(scale: float, codes: np.ndarray) -> np.ndarray:
    """The float64 values ``e5m2(code) * scale`` a receiver decodes (exact for any float32
    scale: 3 + 24 significant bits)."""
    return e5m2_values(codes) * float(np.float32(scale))


def invalid_e5m2(codes: np.ndarray) -> np.ndarray:
    """Mask of the codes never sent: infinities, NaNs and -0."""
    codes = np.asarray(codes, dtype=np.uint8)
    return ((codes & np.uint8(0x7F)) >= _FIRST_NONFINITE) | (codes == _NEGATIVE_ZERO)


__all__ = ["E5M2_MAX", "dequantize_qfloat8", "e5m2_codes", "e5m2_values", "invalid_e5m2",
           "qfloat8_scale", "qfloat8_scale_exponent", "quantize_qfloat8"]
