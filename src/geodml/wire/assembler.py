"""The receiving half of the codec: :class:`VectorAssembler` validates every chunk
and decodes it into a preallocated array (see :mod:`geodml.wire.codec` for the rules).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import zstandard

from geodml.wire.dtypes import (
    _INTEGER_CODES,
    _OFFSET_BYTES,
    _QMAX,
    _SCALE_BYTES,
    _SCALED_CODES,
    _WIRE,
    _check_slot,
    _enum_name,
    bfloat16_to_float32,
    dequantize_qint8,
)
from geodml.wire.errors import CodecError
from geodml.wire.float8 import dequantize_qfloat8, invalid_e5m2
from geodml.wire.protocol import pb


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
        head = _SCALE_BYTES if code in _SCALED_CODES and count > 0 else 0
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
        elif code in _SCALED_CODES:
            values = _decode_scaled(code, payload, values, offsets, slot, start)
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



def _decode_scaled(code: int, payload: bytes, codes: np.ndarray, offsets: np.ndarray | None,
                   slot: int, start: int) -> np.ndarray:
    """A QINT8 or QFLOAT8 chunk's values (``codes * scale``, ``e5m2(codes) * scale``), after
    checking the scale (finite, no sign bit) and the codes (QINT8: no -128; QFLOAT8: no
    infinity, NaN or -0). The payload's size was checked, so it holds the scale unless the
    chunk is empty."""
    if not payload:  # the one chunk of a zero-length vector
        return np.zeros(0)
    name = pb.DType.Name(code)
    scale = np.frombuffer(payload, dtype="<f4", count=1)[0]
    if not np.isfinite(scale) or np.signbit(scale):
        raise CodecError(f"{name} scale is {float(scale)!r}; it must be finite and >= +0.0",
                         slot=slot, start=start)
    bad = codes == -_QMAX - 1 if code == pb.QINT8 else invalid_e5m2(codes)
    if bad.any():
        i = int(np.argmax(bad))
        where = i if offsets is None else int(offsets[i])
        if code == pb.QINT8:
            raise CodecError(f"QINT8 code -128 at index {start + where}; codes lie in "
                             f"[-{_QMAX}, {_QMAX}]", slot=slot, start=start)
        raise CodecError(f"QFLOAT8 code 0x{int(codes[i]):02X} at index {start + where}; "
                         "infinities, NaNs (0x7C-0x7F, 0xFC-0xFF) and -0 (0x80) are never "
                         "sent", slot=slot, start=start)
    if code == pb.QINT8:
        return dequantize_qint8(scale, codes)
    return dequantize_qfloat8(scale, codes)



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
