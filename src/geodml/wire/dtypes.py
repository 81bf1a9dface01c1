"""The wire dtypes and the wire format: casting with saturation, bfloat16, 8-bit
quantization, and :class:`WireFormat` (see :mod:`geodml.wire.codec` for the spec; the
scaled float8 math is in :mod:`geodml.wire.float8`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import zstandard

from geodml.wire.errors import CodecError
from geodml.wire.protocol import pb

DTypeName = Literal["float64", "float32", "float16", "bfloat16", "qint8", "qfloat8"]



CompressionName = Literal["none", "zstd"]



_U32_MAX = (1 << 32) - 1  # largest count, slot and index



_OFFSET_BYTES = 4



_SCALE_BYTES = 4  # the float32 scale in front of a QINT8 or QFLOAT8 payload



_QMAX = 127  # QINT8 codes lie in [-127, 127]



_ZSTD_MIN_LEVEL = -(1 << 17)  # zstd's fastest (negative) level



# Wire code -> (name, itemsize, numpy dtype of the bytes on the wire).
_WIRE = {
    pb.FLOAT64: ("float64", 8, np.dtype("<f8")),
    pb.FLOAT32: ("float32", 4, np.dtype("<f4")),
    pb.FLOAT16: ("float16", 2, np.dtype("<f2")),
    pb.BFLOAT16: ("bfloat16", 2, np.dtype("<u2")),
    pb.QINT8: ("qint8", 1, np.dtype("i1")),
    pb.QFLOAT8: ("qfloat8", 1, np.dtype("u1")),
    pb.UINT32: ("uint32", 4, np.dtype("<u4")),
    pb.UINT64: ("uint64", 8, np.dtype("<u8")),
}



_INTEGER_CODES = frozenset({pb.UINT32, pb.UINT64})



_FLOAT_CODES = frozenset({pb.FLOAT64, pb.FLOAT32, pb.FLOAT16, pb.BFLOAT16, pb.QINT8,
                          pb.QFLOAT8})



_SCALED_CODES = frozenset({pb.QINT8, pb.QFLOAT8})  # a float32 scale, then 1-byte codes



_CODE_OF = {name: code for code, (name, _, _) in _WIRE.items()}



_COMPRESSION_CODE = {"none": pb.NONE, "zstd": pb.ZSTD}



_COMPRESSION_NAME = {code: name for name, code in _COMPRESSION_CODE.items()}



_F64_MAX = float(np.finfo(np.float64).max)



_F32_MAX = float(np.finfo(np.float32).max)



_F16_MAX = float(np.finfo(np.float16).max)



_BF16_MAX = float(np.array([0x7F7F0000], dtype="<u4").view("<f4")[0])  # 3.3895314e38



_F32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32, 2**-126



@dataclass(frozen=True)
class WireFormat:
    """How vectors are encoded. Only dtype, compression and allow_sparse travel on the wire;
    chunk_bytes (target payload bytes per chunk, before compression) and zstd_level are the
    sender's local choices."""

    dtype: DTypeName = "float64"
    compression: CompressionName = "none"
    allow_sparse: bool = True
    chunk_bytes: int = 1 << 20
    zstd_level: int = 1

    def __post_init__(self) -> None:
        if self.dtype not in _CODE_OF or self.dtype in ("uint32", "uint64"):
            raise CodecError(f"unknown wire dtype {self.dtype!r}; use float64, float32, "
                             "float16, bfloat16, qint8 or qfloat8")
        if self.compression not in _COMPRESSION_CODE:
            raise CodecError(f"unknown compression {self.compression!r}; use none or zstd")
        if not isinstance(self.chunk_bytes, int) or self.chunk_bytes < 1:
            raise CodecError(f"chunk_bytes must be a positive integer, got {self.chunk_bytes!r}")
        lo, hi = _ZSTD_MIN_LEVEL, zstandard.MAX_COMPRESSION_LEVEL
        if not isinstance(self.zstd_level, int) or not lo <= self.zstd_level <= hi:
            raise CodecError(f"zstd_level must be an integer in [{lo}, {hi}], "
                             f"got {self.zstd_level!r}")

    @property
    def itemsize(self) -> int:
        """Bytes per value on the wire (1 for qint8 and qfloat8, whose per-chunk scale is
        extra)."""
        return _WIRE[_CODE_OF[self.dtype]][1]

    def to_proto(self) -> pb.WireFormat:
        return pb.WireFormat(dtype=_CODE_OF[self.dtype],
                             compression=_COMPRESSION_CODE[self.compression],
                             allow_sparse=self.allow_sparse)

    @classmethod
    def from_proto(cls, m: pb.WireFormat) -> WireFormat:
        """The format a peer asked for. An entirely unset message means all defaults; an
        unspecified dtype means float64 and an unspecified compression means none (proto3
        cannot tell an unset allow_sparse from false, so a set message is taken as written)."""
        if m.ByteSize() == 0:
            return cls()
        dtype = m.dtype if m.dtype != pb.DTYPE_UNSPECIFIED else pb.FLOAT64
        if dtype not in _FLOAT_CODES:
            raise CodecError(f"wire format asks for dtype {_enum_name(pb.DType, dtype)}; "
                             "vectors travel as FLOAT64, FLOAT32, FLOAT16, BFLOAT16, QINT8 "
                             "or QFLOAT8")
        comp = m.compression if m.compression != pb.COMPRESSION_UNSPECIFIED else pb.NONE
        if comp not in _COMPRESSION_NAME:
            raise CodecError(f"wire format asks for unknown compression "
                             f"{_enum_name(pb.Compression, comp)}")
        return cls(dtype=_WIRE[dtype][0], compression=_COMPRESSION_NAME[comp],
                   allow_sparse=bool(m.allow_sparse))



def _enum_name(enum: object, value: int) -> str:
    try:
        return enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return f"unknown value {value}"



def _check_slot(slot: int) -> None:
    if not isinstance(slot, (int, np.integer)) or not 0 <= int(slot) <= _U32_MAX:
        raise CodecError(f"slot must be an integer in [0, 2**32), got {slot!r}")



def _check_finite(values: np.ndarray, slot: int | None, offset: int) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        i = int(np.argmin(finite))
        raise CodecError(f"value at index {offset + i} is {values[i]}; only finite values "
                         "can be sent", slot=slot)



def _saturate(x: np.ndarray, limit: float) -> np.ndarray:
    """x as floats with magnitudes clipped to limit (skipped when x's dtype cannot exceed it)."""
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    if float(np.finfo(x.dtype).max) > limit:
        x = np.clip(x, -limit, limit)
    return x



def bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """The bfloat16 encodings (as little-endian uint16) of finite values x: saturated to
    ±3.3895314e38, then round-to-nearest-even of the float32's top 16 bits."""
    u = _saturate(x, _BF16_MAX).astype("<f4").view("<u4")
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
            >> np.uint32(16)).astype("<u2")



def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 encodings (uint16)."""
    return (bits.astype("<u4") << np.uint32(16)).view("<f4")



def qint8_scale(x: np.ndarray) -> np.float32:
    """The QINT8 scale of one chunk of finite values x: the smallest float32 ``s`` with
    ``s >= max|x| / 127``, saturated at the largest float32, and 0 when ``max|x| < 127 * 2**-126``
    (or x is empty)."""
    x = np.asarray(x, dtype=np.float64)
    m = float(np.max(np.abs(x))) if x.size else 0.0
    if not m >= _QMAX * _F32_TINY:
        return np.float32(0.0)
    s = np.float32(min(m / _QMAX, _F32_MAX))
    # float(s) * 127 is exact (24 + 7 bits); s is float32(m / 127) or one float32 below the
    # smallest float32 >= m / 127, so one step up is enough.
    if float(s) * _QMAX < m and float(s) < _F32_MAX:
        s = np.nextafter(s, np.float32(np.inf))
    return s



def quantize_qint8(x: np.ndarray,
                   noise: np.ndarray | None = None) -> tuple[np.float32, np.ndarray]:
    """(scale, int8 codes) of one chunk of finite values x; see "8-bit quantization".

    Without noise the codes are ``round(x / s)`` (half to even). With noise (uniform draws in
    ``[0, 1)``, one per element) they are ``floor(x / s + u)``: stochastic rounding, unbiased
    (``E[c] s = x``), except that the chunk's first largest-magnitude element is always rounded
    to nearest, so it gets ``±127`` and the decoded chunk re-encodes to itself (its quotient is
    within ``127 * 2**-23`` of ``±127``, so the bias this adds is below ``2**-16 s``).
    """
    x = np.asarray(x, dtype=np.float64)
    scale = qint8_scale(x)
    if scale == 0:
        return scale, np.zeros(x.shape, dtype="i1")
    q = x / float(scale)  # |q| <= 127 exactly: no overflow even when x is near float64's max
    if noise is None:
        c = np.rint(q)
    else:
        noise = np.asarray(noise, dtype=np.float64)
        if noise.shape != x.shape:
            raise CodecError(f"noise has shape {noise.shape}, values have shape {x.shape}")
        c = np.floor(q + noise)
        i = int(np.argmax(np.abs(x)))
        c[i] = np.rint(q[i])
    return scale, np.clip(c, -_QMAX, _QMAX).astype("i1")



def dequantize_qint8(scale: float, codes: np.ndarray) -> np.ndarray:
    """The float64 values ``codes * scale`` (exact) a receiver decodes from a QINT8 chunk."""
    return np.asarray(codes, dtype=np.int8).astype(np.float64) * float(np.float32(scale))



def _to_wire(x: np.ndarray, code: int) -> np.ndarray:
    """Finite values x cast (saturating) to a float wire dtype, as a little-endian array."""
    if code == pb.FLOAT64:
        return _saturate(x, _F64_MAX).astype("<f8", copy=False)
    if code == pb.FLOAT32:
        return _saturate(x, _F32_MAX).astype("<f4", copy=False)
    if code == pb.FLOAT16:
        return _saturate(x, _F16_MAX).astype("<f2", copy=False)
    return bfloat16_bits(x)



def _bits(w: np.ndarray) -> np.ndarray:
    """w's bits as unsigned integers of the same width (nonzero <=> not all-zero bits)."""
    return w.view(f"<u{w.dtype.itemsize}")


def metric_format(wire: WireFormat) -> WireFormat:
    """How a per-feature metric (a Hessian diagonal, or a site's statistic of one)
    travels in a compressed job: bfloat16, unless ``wire`` is already as coarse. A
    metric preconditions; rounding it to 2^-8 relative error changes the condition
    number of ``D^(-1/2) H D^(-1/2)`` by a factor of at most ``(1 + 2^-8) / (1 - 2^-8)``,
    about 1.008, where float64 costs as much as four bfloat16 vectors. zstd-compressed,
    as compressed vectors are (:func:`geodml.compression.wire_format_for`)."""
    dtype = wire.dtype if wire.dtype in ("bfloat16", "float16") else "bfloat16"
    return replace(wire, dtype=dtype, compression="zstd")
