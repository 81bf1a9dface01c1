"""The vector codec: how a vector becomes a stream of ``VectorChunk`` messages and back.

The same functions serve the gRPC transport and the in-process federation, so the bytes
counted for a vector are identical in both.

Chunking
    A vector of ``n`` elements sent in slot ``s`` becomes ``ceil(n / m)`` chunks, where
    ``m = max(1, chunk_bytes // itemsize)`` (capped at ``2**32 - 1``); chunk ``k`` covers the
    elements ``[k*m, min(n, (k+1)*m))`` and carries ``start = k*m``, ``count`` = its length.
    Chunks are sent in order. A zero-length vector is one chunk with ``count = 0``, which tells
    the receiver the (empty) vector is present.

Wire dtypes (``itemsize`` in bytes), all little-endian
    ``FLOAT64`` IEEE binary64 (8), ``FLOAT32`` binary32 (4), ``FLOAT16`` binary16 (2),
    ``BFLOAT16`` the top 16 bits of a binary32 (2), ``QINT8`` int8 codes with one float32
    scale per chunk (1, plus 4 bytes per chunk), ``UINT32`` unsigned 32-bit integers (4;
    index vectors only, always ``DENSE``), ``UINT64`` ring elements mod ``2^64`` (8; the
    masked sums of secure aggregation only, always ``DENSE``).

Chunk payload (``VectorChunk.data`` before compression)
    ``DENSE``:  ``count`` values: ``count * itemsize`` bytes; ``nnz = 0``.
    ``SPARSE``: ``nnz`` uint32 offsets (element index minus ``start``), strictly increasing and
    ``< count``, then the ``nnz`` values at those offsets: ``nnz * (4 + itemsize)`` bytes. The
    elements not listed are ``+0.0``.
    ``QINT8`` payloads start with the chunk's scale ``s`` (a float32, 4 bytes), followed by the
    ``DENSE`` or ``SPARSE`` body above with int8 codes as values; a chunk with ``count = 0``
    (a zero-length vector) has an empty payload, without a scale.

8-bit quantization (``QINT8``, per chunk of elements ``x``)
    ``m = max|x|``; the scale ``s`` is the smallest float32 ``>= m / 127`` (so ``|x| / s <= 127``
    exactly), saturated at the largest float32; a chunk with ``m < 127 * 2**-126`` (the scale
    would be a float32 subnormal) gets ``s = 0``: its values underflow to zero. Codes are
    ``c = round(x / s)`` (round half to even), clipped to ``[-127, 127]`` (``-128`` is never
    sent and is refused); all codes are 0 when ``s = 0``. The receiver decodes ``c * s`` in
    float64, which is exact (7 + 24 significant bits). The largest element of a chunk gets
    code ``±127``, so decoding and re-encoding a chunk gives back the same scale and codes:
    ``roundtrip`` is idempotent. The error per element is at most ``s / 2`` (plus one float64
    rounding of ``x / s``) unless the scale saturated, in which case values beyond ``127 s``
    arrive as ``±127 s``; the sign of zero is not kept. Elements per chunk follow the usual
    rule with ``itemsize = 1``: ``chunk_bytes`` counts codes, not the 4-byte scale.

Layout rule (per chunk)
    ``SPARSE`` if ``allow_sparse`` and ``nnz * (4 + itemsize) < count * itemsize``, otherwise
    ``DENSE`` (the ``QINT8`` scale is in both, so it does not enter the rule). ``nnz`` counts the
    elements whose *wire* encoding is not all zero bits, so values that underflow to zero in the
    wire dtype are dropped and ``-0.0`` is kept (bit-exact; ``QINT8`` has no ``-0``).

Compression rule (per chunk)
    With ``compression="zstd"`` the payload is compressed into one zstd frame (content size in
    the frame header, no checksum); the frame replaces the payload, with ``compression = ZSTD``,
    only if it is strictly shorter. Otherwise the chunk says ``NONE`` and carries the raw payload.

Casting and saturation
    Values are cast to the wire dtype with round-to-nearest-even. Narrowing casts *saturate*:
    a finite value beyond the wire dtype's largest finite value ``M`` is sent as ``±M``
    (``M`` = 3.4028235e38 for float32, 65504 for float16, 3.3895314e38 for bfloat16, and
    1.7976931e308 for float64 when the input is wider), never as infinity. Integer inputs are
    converted to floating point first. bfloat16 is computed from the (saturated) float32 value
    ``u`` seen as a uint32: ``(u + 0x7FFF + ((u >> 16) & 1)) >> 16``. NaN or infinite input
    values are refused with a ``CodecError`` naming the slot and the first bad index: the wire
    carries finite values only.

Validation (``VectorAssembler.add``); every violation raises ``CodecError`` naming the slot,
the chunk start and the problem
    * the slot is one the receiver expects, with the kind it expects (``UINT32`` for the
      slots it declared as index slots, ``UINT64`` for ring slots, a floating dtype for
      the others);
    * ``dtype``, ``layout`` and ``compression`` are known values (``UINT32`` and ``UINT64``
      chunks are ``DENSE``; ``DENSE`` chunks have ``nnz = 0``; ``SPARSE`` chunks have
      ``nnz <= count``);
    * chunks of a slot are contiguous and in order (``start`` equals the next expected
      element), ``start + count <= length``, and ``count > 0`` except for the single chunk of a
      zero-length vector; no chunk follows the one that completes the vector;
    * a ``ZSTD`` payload is one valid zstd frame, with nothing after it, whose declared content
      size (if any) and output are exactly the size ``count``/``nnz`` imply; decompression
      stops at that size, so no zip bombs; a ``NONE`` payload has exactly that size;
    * sparse offsets are strictly increasing and ``< count``;
    * a ``QINT8`` scale is finite and ``>= +0.0`` (no sign bit), its codes are not ``-128``;
    * decoded values are finite.
    A chunk that fails validation changes nothing, so the assembler's state stays consistent.
    Output arrays are float64 (``uint32`` for index slots, ``uint64`` for ring slots), decoded
    straight into a preallocated array, so a receiver holds the output plus one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import zstandard

from geodml.errors import GeodmlError
from geodml.wire.protocol import pb

DTypeName = Literal["float64", "float32", "float16", "bfloat16", "qint8"]
CompressionName = Literal["none", "zstd"]

_U32_MAX = (1 << 32) - 1  # largest count, slot and index
_OFFSET_BYTES = 4
_SCALE_BYTES = 4  # the float32 scale in front of a QINT8 payload
_QMAX = 127  # QINT8 codes lie in [-127, 127]
_ZSTD_MIN_LEVEL = -(1 << 17)  # zstd's fastest (negative) level

# Wire code -> (name, itemsize, numpy dtype of the bytes on the wire).
_WIRE = {
    pb.FLOAT64: ("float64", 8, np.dtype("<f8")),
    pb.FLOAT32: ("float32", 4, np.dtype("<f4")),
    pb.FLOAT16: ("float16", 2, np.dtype("<f2")),
    pb.BFLOAT16: ("bfloat16", 2, np.dtype("<u2")),
    pb.QINT8: ("qint8", 1, np.dtype("i1")),
    pb.UINT32: ("uint32", 4, np.dtype("<u4")),
    pb.UINT64: ("uint64", 8, np.dtype("<u8")),
}
_INTEGER_CODES = frozenset({pb.UINT32, pb.UINT64})
_FLOAT_CODES = frozenset({pb.FLOAT64, pb.FLOAT32, pb.FLOAT16, pb.BFLOAT16, pb.QINT8})
_CODE_OF = {name: code for code, (name, _, _) in _WIRE.items()}
_COMPRESSION_CODE = {"none": pb.NONE, "zstd": pb.ZSTD}
_COMPRESSION_NAME = {code: name for name, code in _COMPRESSION_CODE.items()}

_F64_MAX = float(np.finfo(np.float64).max)
_F32_MAX = float(np.finfo(np.float32).max)
_F16_MAX = float(np.finfo(np.float16).max)
_BF16_MAX = float(np.array([0x7F7F0000], dtype="<u4").view("<f4")[0])  # 3.3895314e38
_F32_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32, 2**-126


class CodecError(GeodmlError):
    """A malformed vector or chunk. The message names the slot, the chunk start and the problem."""

    def __init__(self, problem: str, slot: int | None = None, start: int | None = None):
        self.problem = problem
        self.slot = slot
        self.start = start
        where = []
        if slot is not None:
            where.append(f"slot {slot}")
        if start is not None:
            where.append(f"chunk start {start}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


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
                             "float16, bfloat16 or qint8")
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
        """Bytes per value on the wire (1 for qint8, whose per-chunk scale is extra)."""
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
                             "vectors travel as FLOAT64, FLOAT32, FLOAT16, BFLOAT16 or QINT8")
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


# ---------------------------------------------------------------- encoding


def _elements_per_chunk(chunk_bytes: int, itemsize: int) -> int:
    return min(_U32_MAX, max(1, chunk_bytes // itemsize))


def _chunk_bounds(n: int, per_chunk: int) -> Iterator[tuple[int, int]]:
    if n == 0:
        yield 0, 0
        return
    for start in range(0, n, per_chunk):
        yield start, min(n, start + per_chunk)


def chunk_bounds(n: int, fmt: WireFormat) -> Iterator[tuple[int, int]]:
    """The element ranges ``[start, stop)`` of the chunks of an n-element vector sent in fmt
    (one empty range for n = 0). For qint8 each range has its own scale."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise CodecError(f"vector length must be a non-negative integer, got {n!r}")
    return _chunk_bounds(int(n), _elements_per_chunk(fmt.chunk_bytes, fmt.itemsize))


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


class _Packer:
    """Turns one chunk's wire values into a VectorChunk (layout and compression choice)."""

    def __init__(self, slot: int, code: int, fmt: WireFormat, sparse_ok: bool):
        self.slot = slot
        self.code = code
        self.sparse_ok = sparse_ok
        self.itemsize = _WIRE[code][1]
        self.zstd = (zstandard.ZstdCompressor(level=fmt.zstd_level, write_checksum=False,
                                              write_content_size=True)
                     if fmt.compression == "zstd" else None)

    def pack(self, start: int, w: np.ndarray, prefix: bytes = b"") -> pb.VectorChunk:
        """The chunk of wire values w starting at element `start`; `prefix` (the QINT8 scale)
        goes in front of the payload whatever the layout."""
        count = len(w)
        layout, nnz = pb.DENSE, 0
        if self.sparse_ok and count:
            bits = _bits(w)
            k = int(np.count_nonzero(bits))
            if k * (_OFFSET_BYTES + self.itemsize) < count * self.itemsize:
                offsets = np.flatnonzero(bits).astype("<u4")
                payload = prefix + offsets.tobytes() + w[offsets].tobytes()
                layout, nnz = pb.SPARSE, k
        if layout == pb.DENSE:
            payload = prefix + w.tobytes()
        compression = pb.NONE
        if self.zstd is not None and payload:
            packed = self.zstd.compress(payload)
            if len(packed) < len(payload):
                payload, compression = packed, pb.ZSTD
        return pb.VectorChunk(slot=self.slot, start=start, count=count, dtype=self.code,
                              layout=layout, compression=compression, nnz=nnz, data=payload)


def encode_vector(v: np.ndarray, slot: int, fmt: WireFormat) -> Iterator[pb.VectorChunk]:
    """The chunks of vector v in slot `slot`, lazily (one chunk in memory at a time).

    Raises CodecError (when the offending chunk is reached) if v holds NaN or infinity.
    """
    _check_slot(slot)
    v = np.asarray(v)
    if v.ndim != 1 or v.dtype.kind not in "fiu":
        raise CodecError(f"expected a 1-D real vector, got shape {v.shape} dtype {v.dtype}",
                         slot=int(slot))
    return _encode(v, int(slot), fmt)


def _encode(v: np.ndarray, slot: int, fmt: WireFormat) -> Iterator[pb.VectorChunk]:
    code = _CODE_OF[fmt.dtype]
    packer = _Packer(slot, code, fmt, sparse_ok=fmt.allow_sparse)
    for start, stop in _chunk_bounds(len(v), _elements_per_chunk(fmt.chunk_bytes,
                                                                  fmt.itemsize)):
        x = v[start:stop]
        _check_finite(x, slot, start)
        if code == pb.QINT8:
            if stop == start:  # the zero-length vector: no scale
                yield packer.pack(start, np.zeros(0, dtype="i1"))
                continue
            scale, codes = quantize_qint8(x)
            yield packer.pack(start, codes, prefix=np.float32(scale).astype("<f4").tobytes())
        else:
            yield packer.pack(start, _to_wire(x, code))


def wire_values(v: np.ndarray, fmt: WireFormat) -> np.ndarray:
    """What a receiver decodes of v sent in fmt, as float64: bit for bit ``roundtrip(v, fmt)``,
    computed per chunk without building messages (the compression transforms use it).
    CodecError if v is not a 1-D real vector or holds NaN or infinity."""
    v = np.asarray(v)
    if v.ndim != 1 or v.dtype.kind not in "fiu":
        raise CodecError(f"expected a 1-D real vector, got shape {v.shape} dtype {v.dtype}")
    code = _CODE_OF[fmt.dtype]
    out = np.empty(len(v), dtype=np.float64)
    for start, stop in chunk_bounds(len(v), fmt):
        x = v[start:stop]
        _check_finite(x, None, start)
        seg = out[start:stop]
        if code == pb.QINT8:
            seg[:] = dequantize_qint8(*quantize_qint8(x))
        elif code == pb.BFLOAT16:
            seg[:] = bfloat16_to_float32(bfloat16_bits(x))
        else:
            seg[:] = _to_wire(x, code)
    return out


def encode_indices(idx: np.ndarray, slot: int, fmt: WireFormat) -> Iterator[pb.VectorChunk]:
    """The chunks of an index vector (values in [0, 2**32)): UINT32, DENSE, zstd if asked and
    smaller. fmt.dtype and fmt.allow_sparse do not apply."""
    _check_slot(slot)
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise CodecError(f"expected a 1-D integer index vector, got shape {idx.shape} "
                         f"dtype {idx.dtype}", slot=int(slot))
    return _encode_indices(idx, int(slot), fmt)


def _encode_indices(idx: np.ndarray, slot: int, fmt: WireFormat) -> Iterator[pb.VectorChunk]:
    packer = _Packer(slot, pb.UINT32, fmt, sparse_ok=False)
    for start, stop in _chunk_bounds(len(idx), _elements_per_chunk(fmt.chunk_bytes, 4)):
        x = idx[start:stop]
        if len(x) and (int(x.min()) < 0 or int(x.max()) > _U32_MAX):
            bad = int(np.argmax((x < 0) | (x > _U32_MAX)))
            raise CodecError(f"index at position {start + bad} is {int(x[bad])}, outside "
                             "[0, 2**32)", slot=slot)
        yield packer.pack(start, x.astype("<u4", copy=False))


def encode_ring(values: np.ndarray, slot: int, fmt: WireFormat) -> Iterator[pb.VectorChunk]:
    """The chunks of a vector of ring elements (uint64): UINT64, DENSE, never compressed
    (masked values are uniformly random). fmt gives only the chunk size."""
    _check_slot(slot)
    values = np.asarray(values)
    if values.ndim != 1 or values.dtype != np.uint64:
        raise CodecError(f"expected a 1-D uint64 vector, got shape {values.shape} "
                         f"dtype {values.dtype}", slot=int(slot))
    packer = _Packer(int(slot), pb.UINT64, WireFormat(chunk_bytes=fmt.chunk_bytes),
                     sparse_ok=False)
    for start, stop in _chunk_bounds(len(values), _elements_per_chunk(fmt.chunk_bytes, 8)):
        yield packer.pack(start, values[start:stop].astype("<u8", copy=False))


def vector_bytes(chunks: Iterable[pb.VectorChunk]) -> int:
    """Serialized bytes of the chunks (what a meter sees of a vector)."""
    return sum(c.ByteSize() for c in chunks)


def expected_dense_bytes(n: int, dtype: str, chunk_bytes: int = 1 << 20) -> int:
    """Payload bytes of an n-element vector sent DENSE and uncompressed in `dtype`
    (float64, float32, float16, bfloat16, qint8 or uint32); chunk headers not included.
    For qint8 that is n codes plus a 4-byte scale per chunk of ``chunk_bytes`` codes."""
    if dtype not in _CODE_OF:
        raise CodecError(f"unknown wire dtype {dtype!r}")
    n = int(n)
    payload = n * _WIRE[_CODE_OF[dtype]][1]
    if dtype == "qint8" and n:
        per = _elements_per_chunk(chunk_bytes, 1)
        payload += _SCALE_BYTES * ((n + per - 1) // per)
    return payload


# ---------------------------------------------------------------- decoding


@dataclass
class _Slot:
    length: int
    index: bool
    ring: bool = False  # UINT64 ring elements (secure aggregation)
    float32: bool = False  # decode into float32 (a receiver computing in float32)
    float32_range: bool = False  # refuse values beyond float32's range (also when float64)
    next_start: int = 0
    chunks: int = 0
    payload_bytes: int = 0
    wire_bytes: int = 0
    out: np.ndarray | None = None

    @property
    def complete(self) -> bool:
        return self.next_start == self.length and self.chunks > 0


class VectorAssembler:
    """Rebuilds the vectors of one message from its chunks, validating everything.

    lengths maps each expected slot to its number of elements. Slots listed in index_slots
    hold UINT32 index vectors (output uint32), those in ring_slots UINT64 ring elements
    (output uint64); the others hold floating vectors (output
    float64, or float32 for slots in float32_slots: a receiver that computes in float32
    then holds one 4-byte copy; a value beyond float32's range is an error, as it is in
    float32_range_slots, which stay float64).
    max_elements, if given, bounds the total elements over all slots (a guard against
    hostile lengths before anything is allocated).
    """

    def __init__(self, lengths: dict[int, int], max_elements: int | None = None, *,
                 index_slots: Iterable[int] = (), float32_slots: Iterable[int] = (),
                 float32_range_slots: Iterable[int] = (), ring_slots: Iterable[int] = ()):
        index, narrow, ring = set(index_slots), set(float32_slots), set(ring_slots)
        in_range = narrow | set(float32_range_slots)
        unknown = (index | in_range | ring) - set(lengths)
        if unknown:
            raise CodecError(f"index or float32 slots {sorted(unknown)} have no length")
        total = 0
        self._slots: dict[int, _Slot] = {}
        for slot, n in lengths.items():
            _check_slot(slot)
            if not isinstance(n, (int, np.integer)) or n < 0:
                raise CodecError(f"vector length must be a non-negative integer, got {n!r}",
                                 slot=slot)
            total += int(n)
            self._slots[int(slot)] = _Slot(length=int(n), index=slot in index,
                                           ring=slot in ring,
                                           float32=slot in narrow,
                                           float32_range=slot in in_range)
        if max_elements is not None and total > max_elements:
            raise CodecError(f"message declares {total} elements, more than the limit "
                             f"{max_elements}")
        self._zstd = zstandard.ZstdDecompressor()

    # -- state

    @property
    def complete(self) -> bool:
        """Whether every expected slot has all its elements."""
        return all(s.complete for s in self._slots.values())

    def is_complete(self, slot: int) -> bool:
        return self._slot(slot, None).complete

    def received(self, slot: int) -> bool:
        """Whether any chunk of ``slot`` arrived."""
        return self._slot(slot, None).wire_bytes > 0

    @property
    def payload_bytes(self) -> dict[int, int]:
        """Bytes of chunk payloads (VectorChunk.data, as received) per slot."""
        return {k: s.payload_bytes for k, s in self._slots.items()}

    @property
    def wire_bytes(self) -> dict[int, int]:
        """Serialized bytes of the chunks (headers included) per slot."""
        return {k: s.wire_bytes for k, s in self._slots.items()}

    @property
    def total_wire_bytes(self) -> int:
        return sum(s.wire_bytes for s in self._slots.values())

    def result(self, slot: int) -> np.ndarray:
        """The rebuilt vector; CodecError if not all of its chunks arrived."""
        s = self._slot(slot, None)
        if not s.complete:
            raise CodecError(f"vector incomplete: received {s.next_start} of {s.length} "
                             "elements", slot=slot, start=s.next_start)
        if s.out is None:
            s.out = self._allocate(s)
        return s.out

    # -- adding chunks

    def add(self, chunk: pb.VectorChunk) -> None:
        """Validate one chunk and decode it into its slot's output array."""
        slot, start, count = chunk.slot, chunk.start, chunk.count
        s = self._slot(slot, start)
        self._check_header(chunk, s)
        code = chunk.dtype
        itemsize = _WIRE[code][1]
        nnz = chunk.nnz if chunk.layout == pb.SPARSE else 0
        size = count * itemsize if chunk.layout == pb.DENSE else nnz * (_OFFSET_BYTES + itemsize)
        head = _SCALE_BYTES if code == pb.QINT8 and count > 0 else 0
        size += head
        data = chunk.data  # one copy out of the message
        payload = self._payload(chunk, data, size)
        if chunk.layout == pb.DENSE:
            offsets = None
            values = np.frombuffer(payload, dtype=_WIRE[code][2], offset=head)
        else:
            offsets = np.frombuffer(payload, dtype="<u4", count=nnz, offset=head)
            values = np.frombuffer(payload, dtype=_WIRE[code][2],
                                   offset=head + nnz * _OFFSET_BYTES)
            _check_offsets(offsets, count, slot, start)
        if code == pb.BFLOAT16:
            values = bfloat16_to_float32(values)
        elif code == pb.QINT8:
            values = _decode_qint8(payload, values, offsets, slot, start)
        if code not in _INTEGER_CODES:
            _check_decoded(values, offsets, slot, start)
            if s.float32_range and values.dtype.itemsize > 4 and values.size and (
                    np.abs(values).max() > np.finfo(np.float32).max):
                raise CodecError("a value exceeds the float32 range of this receiver",
                                 slot=slot, start=start)
        if s.out is None:
            s.out = self._allocate(s)
        seg = s.out[start:start + count]
        if offsets is None:
            np.copyto(seg, values)
        else:
            seg.fill(0)
            seg[offsets] = values
        s.next_start = start + count
        s.chunks += 1
        s.payload_bytes += len(data)
        s.wire_bytes += chunk.ByteSize()

    def _slot(self, slot: int, start: int | None) -> _Slot:
        try:
            return self._slots[slot]
        except KeyError:
            raise CodecError(f"unknown slot (expected one of {sorted(self._slots)})",
                             slot=slot, start=start) from None

    def _check_header(self, chunk: pb.VectorChunk, s: _Slot) -> None:
        slot, start, count = chunk.slot, chunk.start, chunk.count

        def fail(problem: str) -> CodecError:
            return CodecError(problem, slot=slot, start=start)

        if chunk.dtype not in _WIRE:
            raise fail(f"unknown dtype {_enum_name(pb.DType, chunk.dtype)}")
        if s.index and chunk.dtype != pb.UINT32:
            raise fail(f"index vector expected (UINT32), got {pb.DType.Name(chunk.dtype)}")
        if s.ring != (chunk.dtype == pb.UINT64):
            raise fail("ring vector expected (UINT64), got " + pb.DType.Name(chunk.dtype)
                       if s.ring else "UINT64 where no ring vector is expected")
        if not s.index and not s.ring and chunk.dtype == pb.UINT32:
            raise fail("floating vector expected, got UINT32")
        if chunk.layout not in (pb.DENSE, pb.SPARSE):
            raise fail(f"unknown layout {_enum_name(pb.Layout, chunk.layout)}")
        if chunk.dtype in _INTEGER_CODES and chunk.layout != pb.DENSE:
            raise fail(f"{pb.DType.Name(chunk.dtype)} chunks must be DENSE")
        if chunk.compression not in (pb.NONE, pb.ZSTD):
            raise fail(f"unknown compression {_enum_name(pb.Compression, chunk.compression)}")
        if chunk.layout == pb.DENSE and chunk.nnz != 0:
            raise fail(f"DENSE chunk with nnz {chunk.nnz} (must be 0)")
        if chunk.layout == pb.SPARSE and chunk.nnz > count:
            raise fail(f"SPARSE chunk with nnz {chunk.nnz} > count {count}")
        if s.complete:
            raise fail(f"chunk after the vector is complete ({s.length} elements)")
        if start != s.next_start:
            kind = "overlapping" if start < s.next_start else "out-of-order (gap)"
            raise fail(f"{kind} chunk: expected start {s.next_start}")
        if start + count > s.length:
            raise fail(f"chunk [start, start + {count}) goes beyond the vector length "
                       f"{s.length}")
        if count == 0 and s.length != 0:
            raise fail("empty chunk in a non-empty vector")

    def _payload(self, chunk: pb.VectorChunk, data: bytes, size: int) -> bytes:
        if chunk.compression == pb.NONE:
            if len(data) != size:
                raise CodecError(f"payload is {len(data)} bytes, expected {size} "
                                 f"({_describe(chunk)})", slot=chunk.slot, start=chunk.start)
            return data
        return self._decompress(chunk, data, size)

    def _decompress(self, chunk: pb.VectorChunk, data: bytes, size: int) -> bytes:
        def fail(problem: str) -> CodecError:
            return CodecError(f"{problem} ({_describe(chunk)})", slot=chunk.slot,
                              start=chunk.start)

        if size == 0:
            raise fail("ZSTD payload where the raw payload is empty")
        try:
            declared = zstandard.get_frame_parameters(data).content_size
        except zstandard.ZstdError as e:
            raise fail(f"ZSTD payload is not a zstd frame: {e}") from None
        if declared not in (zstandard.CONTENTSIZE_UNKNOWN, size):
            raise fail(f"zstd frame declares {declared} bytes, expected {size}")
        try:
            # The frame's declared size (checked above) or max_output_size bounds the output.
            out = self._zstd.decompress(data, max_output_size=size,
                                        allow_extra_data=False)
        except zstandard.ZstdError as e:
            raise fail(f"ZSTD payload does not decompress to {size} bytes: {e}") from None
        if len(out) != size:
            raise fail(f"ZSTD payload decompresses to {len(out)} bytes, expected {size}")
        return out

    @staticmethod
    def _allocate(s: _Slot) -> np.ndarray:
        dtype = (np.uint32 if s.index else np.uint64 if s.ring else
                 np.float32 if s.float32 else np.float64)
        return np.empty(s.length, dtype=dtype)


def _check_decoded(values: np.ndarray, offsets: np.ndarray | None, slot: int,
                   start: int) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        i = int(np.argmin(finite))
        where = i if offsets is None else int(offsets[i])
        raise CodecError(f"decoded value at index {start + where} is {values[i]}; "
                         "only finite values are accepted", slot=slot, start=start)


def _decode_qint8(payload: bytes, codes: np.ndarray, offsets: np.ndarray | None, slot: int,
                  start: int) -> np.ndarray:
    """codes * scale, after checking the scale (finite, no sign bit) and the codes (no -128).
    The payload's size was checked, so it holds the scale unless the chunk is empty."""
    if not payload:  # the one chunk of a zero-length vector
        return codes.astype(np.float64)
    scale = np.frombuffer(payload, dtype="<f4", count=1)[0]
    if not np.isfinite(scale) or np.signbit(scale):
        raise CodecError(f"QINT8 scale is {float(scale)!r}; it must be finite and >= +0.0",
                         slot=slot, start=start)
    low = codes == -_QMAX - 1
    if low.any():
        i = int(np.argmax(low))
        where = i if offsets is None else int(offsets[i])
        raise CodecError(f"QINT8 code -128 at index {start + where}; codes lie in "
                         f"[-{_QMAX}, {_QMAX}]", slot=slot, start=start)
    return dequantize_qint8(scale, codes)


def _check_offsets(offsets: np.ndarray, count: int, slot: int, start: int) -> None:
    if len(offsets) == 0:
        return
    if int(offsets[-1]) >= count:
        raise CodecError(f"sparse offset {int(offsets[-1])} is not below count {count}",
                         slot=slot, start=start)
    rising = offsets[1:] > offsets[:-1]
    if not rising.all():
        i = int(np.argmin(rising))
        raise CodecError(f"sparse offsets not strictly increasing at position {i + 1} "
                         f"({int(offsets[i])} then {int(offsets[i + 1])})",
                         slot=slot, start=start)


def _describe(chunk: pb.VectorChunk) -> str:
    layout = _enum_name(pb.Layout, chunk.layout)
    base = f"{layout} {_enum_name(pb.DType, chunk.dtype)}, count {chunk.count}"
    return f"{base}, nnz {chunk.nnz}" if chunk.layout == pb.SPARSE else base


# ---------------------------------------------------------------- in-process helpers


def roundtrip_counted(v: np.ndarray, fmt: WireFormat, slot: int = 0) -> tuple[np.ndarray, int]:
    """(what a receiver decodes, serialized chunk bytes) for v sent in fmt, without a network."""
    v = np.asarray(v)
    asm = VectorAssembler({slot: int(v.shape[0]) if v.ndim == 1 else 0})
    for chunk in encode_vector(v, slot, fmt):
        asm.add(chunk)
    return asm.result(slot), asm.total_wire_bytes


def roundtrip(v: np.ndarray, fmt: WireFormat) -> np.ndarray:
    """Exactly what a receiver sees of v sent in fmt (encode, then assemble)."""
    return roundtrip_counted(v, fmt)[0]


__all__ = [
    "CodecError",
    "VectorAssembler",
    "WireFormat",
    "bfloat16_bits",
    "bfloat16_to_float32",
    "chunk_bounds",
    "dequantize_qint8",
    "encode_indices",
    "encode_ring",
    "encode_vector",
    "expected_dense_bytes",
    "qint8_scale",
    "quantize_qint8",
    "roundtrip",
    "roundtrip_counted",
    "vector_bytes",
    "wire_values",
]
