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
    scale per chunk (1, plus 4 bytes per chunk), ``QFLOAT8`` float8 E5M2 codes with one
    float32 scale per chunk (1, plus 4 bytes per chunk), ``UINT32`` unsigned 32-bit integers (4;
    index vectors only, always ``DENSE``), ``UINT64`` ring elements mod ``2^64`` (8; the
    masked sums of secure aggregation only, always ``DENSE``).

Chunk payload (``VectorChunk.data`` before compression)
    ``DENSE``:  ``count`` values: ``count * itemsize`` bytes; ``nnz = 0``.
    ``SPARSE``: ``nnz`` uint32 offsets (element index minus ``start``), strictly increasing and
    ``< count``, then the ``nnz`` values at those offsets: ``nnz * (4 + itemsize)`` bytes. The
    elements not listed are ``+0.0``.
    ``QINT8`` and ``QFLOAT8`` payloads start with the chunk's scale ``s`` (a float32, 4 bytes),
    followed by the ``DENSE`` or ``SPARSE`` body above with the 1-byte codes as values; a chunk
    with ``count = 0`` (a zero-length vector) has an empty payload, without a scale.

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

Scaled float8 (``QFLOAT8``, per chunk of elements ``x``; :mod:`geodml.wire.float8`)
    A code is a float8 E5M2 value: the top byte of an IEEE binary16 (sign, 5 exponent bits
    with bias 15, 2 mantissa bits; normals ``m 2^(e-2)``, ``m`` in 4..7, ``e`` in -14..15, up to
    ``57344``; subnormals ``{1, 2, 3} 2^-16``). The scale is a power of two, ``s = 2^k``: with
    ``2^E`` the binade of ``max|x|`` rounded to 3 significant bits (ties to even),
    ``k = E - 15`` clamped to ``[-149, 127]``, so the largest element lands in E5M2's top
    binade ``[32768, 57344]`` (``max|x| / s < 61440``: nothing overflows); ``s = 0`` when
    ``max|x| <= 2^-166`` (all codes 0). Codes are ``x / s`` (exact in float64) rounded once to
    the nearest E5M2 value, ties to even, clipped to ``±57344`` (only when ``k = 127``
    saturates); a value that rounds to zero gets code ``0x00`` whatever its sign. Never sent
    and refused: the infinities and NaNs (``0x7C..0x7F``, ``0xFC..0xFF``) and ``-0``
    (``0x80``). The receiver decodes ``float16(code << 8) * s`` in float64, exact for any
    float32 ``s`` it accepts. The error per element is at most ``2^-3 |x|`` when
    ``|x| >= 2^-14 s`` (E5M2's normal range: half a step of ``2^(e-2)`` against ``|x| >= 2^e``)
    and at most ``2^-17 s`` below it (half the subnormal step ``2^-16``); values of at most
    ``2^-17 s`` arrive as zero. Unlike ``QINT8``, whose codes are linear, the small entries
    of a chunk keep their relative precision down to ``2^-30`` of its largest (nine decades).
    Decoding and re-encoding a chunk gives back the same scale and codes (its largest value,
    rounded, stays in the same binade): ``roundtrip`` is idempotent. More: a decoded value
    has at most 3 significant bits on the grid ``2^-16 s``, so any subset of a decoded chunk
    (a support-restricted vector, other chunk bounds) re-encodes to the same values, its scale
    being a power of two no larger. Elements per chunk as for ``QINT8``.

Layout rule (per chunk)
    ``SPARSE`` if ``allow_sparse`` and ``nnz * (4 + itemsize) < count * itemsize``, otherwise
    ``DENSE`` (the ``QINT8`` scale is in both, so it does not enter the rule). ``nnz`` counts the
    elements whose *wire* encoding is not all zero bits, so values that underflow to zero in the
    wire dtype are dropped and ``-0.0`` is kept (bit-exact; ``QINT8`` and ``QFLOAT8`` have no
    ``-0``).

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
    * a ``QINT8`` or ``QFLOAT8`` scale is finite and ``>= +0.0`` (no sign bit); ``QINT8`` codes
      are not ``-128``, ``QFLOAT8`` codes are not infinities, NaNs or ``-0``;
    * decoded values are finite.
    A chunk that fails validation changes nothing, so the assembler's state stays consistent.
    Output arrays are float64 (``uint32`` for index slots, ``uint64`` for ring slots), decoded
    straight into a preallocated array, so a receiver holds the output plus one chunk at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import zstandard

from geodml.wire.assembler import VectorAssembler
from geodml.wire.dtypes import (
    _CODE_OF,
    _OFFSET_BYTES,
    _SCALE_BYTES,
    _U32_MAX,
    _WIRE,
    WireFormat,
    _bits,
    _check_finite,
    _check_slot,
    _to_wire,
    bfloat16_bits,
    bfloat16_to_float32,
    dequantize_qint8,
    qint8_scale,
    quantize_qint8,
)
from geodml.wire.errors import CodecError
from geodml.wire.float8 import dequantize_qfloat8, qfloat8_scale, quantize_qfloat8
from geodml.wire.protocol import pb

_QUANTIZE = {pb.QINT8: quantize_qint8, pb.QFLOAT8: quantize_qfloat8}  # chunk -> (scale, codes)


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
    (one empty range for n = 0). For qint8 and qfloat8 each range has its own scale."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise CodecError(f"vector length must be a non-negative integer, got {n!r}")
    return _chunk_bounds(int(n), _elements_per_chunk(fmt.chunk_bytes, fmt.itemsize))



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
        """The chunk of wire values w starting at element `start`; `prefix` (the scale)
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
        if code in _QUANTIZE:
            if stop == start:  # the zero-length vector: no scale
                yield packer.pack(start, np.zeros(0, dtype=_WIRE[code][2]))
                continue
            scale, codes = _QUANTIZE[code](x)
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
        elif code == pb.QFLOAT8:
            seg[:] = dequantize_qfloat8(*quantize_qfloat8(x))
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
    (float64, float32, float16, bfloat16, qint8, qfloat8 or uint32); chunk headers not
    included. For qint8 and qfloat8 that is n codes plus a 4-byte scale per chunk of
    ``chunk_bytes`` codes."""
    if dtype not in _CODE_OF:
        raise CodecError(f"unknown wire dtype {dtype!r}")
    n = int(n)
    payload = n * _WIRE[_CODE_OF[dtype]][1]
    if dtype in ("qint8", "qfloat8") and n:
        per = _elements_per_chunk(chunk_bytes, 1)
        payload += _SCALE_BYTES * ((n + per - 1) // per)
    return payload



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
    "dequantize_qfloat8",
    "dequantize_qint8",
    "encode_indices",
    "encode_ring",
    "encode_vector",
    "expected_dense_bytes",
    "qfloat8_scale",
    "qint8_scale",
    "quantize_qfloat8",
    "quantize_qint8",
    "roundtrip",
    "roundtrip_counted",
    "vector_bytes",
    "wire_values",
]
