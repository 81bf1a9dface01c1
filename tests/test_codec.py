"""The vector codec: exact round trips per dtype, layout and compression choices, byte
accounting, rejection of every kind of malformed chunk, and streaming with bounded memory."""

from __future__ import annotations

import gc
import math
import struct
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest
import zstandard
from google.protobuf.message import DecodeError

from geodml.errors import GeodmlError
from geodml.wire.codec import (
    CodecError,
    VectorAssembler,
    WireFormat,
    bfloat16_bits,
    chunk_bounds,
    dequantize_qint8,
    encode_indices,
    encode_vector,
    expected_dense_bytes,
    qint8_scale,
    quantize_qint8,
    roundtrip,
    roundtrip_counted,
    vector_bytes,
    wire_values,
)
from geodml.wire.protocol import pb

try:
    import hypothesis
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:  # pragma: no cover - hypothesis is optional
    hypothesis = None

F16_MAX = 65504.0
BF16_MAX = 3.3895313892515355e38
F32_MAX = float(np.finfo(np.float32).max)


def _assemble(chunks, lengths: dict[int, int], **kw) -> VectorAssembler:
    asm = VectorAssembler(lengths, **kw)
    for c in chunks:
        asm.add(c)
    return asm


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _special_values() -> np.ndarray:
    tiny = np.finfo(np.float64).tiny
    return np.array([0.0, -0.0, 1.0, -1.0, math.pi, 1e-300, tiny / 4, -tiny / 2**20, 1e300,
                     -1e300, 123456789.123456789, 2.0**-1074])


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("allow_sparse", [True, False])
def test_float64_roundtrip_is_bitwise(compression, allow_sparse):
    rng = np.random.default_rng(1)
    v = np.concatenate([_special_values(), rng.standard_normal(5000),
                        np.zeros(3000), rng.standard_normal(7) * 1e-310])
    v[6000:6010] = -0.0
    fmt = WireFormat("float64", compression, allow_sparse, chunk_bytes=4096)
    assert _same_bits(roundtrip(v, fmt), v)


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_float32_roundtrip_equals_astype(compression):
    rng = np.random.default_rng(2)
    v = np.concatenate([rng.standard_normal(3000) * 10.0 ** rng.integers(-40, 38, 3000),
                        np.zeros(2000), [-0.0, 1e-45, 3e38]])
    fmt = WireFormat("float32", compression, chunk_bytes=1000)
    out = roundtrip(v, fmt)
    assert out.dtype == np.float64
    assert _same_bits(out, v.astype(np.float32).astype(np.float64))
    # float32 input arrives exactly
    w = rng.standard_normal(1001).astype(np.float32)
    assert np.array_equal(roundtrip(w, fmt), w.astype(np.float64))


def test_float32_saturates_instead_of_overflowing():
    out = roundtrip(np.array([1e39, -1e300, 3.5e38]), WireFormat("float32"))
    assert out.tolist() == [F32_MAX, -F32_MAX, F32_MAX]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_float16_roundtrip_within_precision_and_saturates(compression):
    rng = np.random.default_rng(3)
    v = np.concatenate([rng.standard_normal(4000) * 100, np.zeros(100),
                        [65504.0, 65519.9, 65520.0, 1e38, -1e300, 6e-8, 1e-9, -0.0]])
    out = roundtrip(v, WireFormat("float16", compression, chunk_bytes=512))
    expected = np.clip(v, -F16_MAX, F16_MAX).astype(np.float16).astype(np.float64)
    assert _same_bits(out, expected)
    normal = np.abs(v) <= F16_MAX
    assert np.all(np.abs(out - v)[normal] <= np.abs(v[normal]) * 2.0**-11 + 2.0**-25)
    assert out[-8:-2].tolist() == [65504.0, 65504.0, 65504.0, 65504.0, -65504.0, 2.0**-24 * 1]
    assert out[-2] == 0.0 and math.copysign(1, out[-1]) == -1.0


def _bf16_reference(x: float) -> float:
    """bfloat16 of x by choosing the nearer of the two bfloat16 neighbours of float32(x)
    (ties to the even pattern), saturating at BF16_MAX. Pure Python, no bit tricks shared
    with the codec."""
    x = max(-BF16_MAX, min(BF16_MAX, x))
    (bits,) = struct.unpack("<I", struct.pack("<f", x))
    f = struct.unpack("<f", struct.pack("<I", bits))[0]
    lo_bits = bits & 0xFFFF0000
    hi_bits = lo_bits + 0x10000
    lo = struct.unpack("<f", struct.pack("<I", lo_bits))[0]
    hi = struct.unpack("<f", struct.pack("<I", hi_bits))[0] if hi_bits < 2**32 else math.inf
    d_lo, d_hi = abs(f - lo), abs(hi - f)
    if d_lo < d_hi or (d_lo == d_hi and (lo_bits >> 16) % 2 == 0):
        return lo
    return hi


def test_bfloat16_known_values():
    v = np.array([1.0, 3.14159, 65504.0, 1e38, 3.4e38, 1e300, -1e300, -0.0,
                  1 + 2.0**-8, 1 + 3 * 2.0**-8, 2.0**-133, -2.5])
    out = roundtrip(v, WireFormat("bfloat16"))
    assert out[0] == 1.0
    assert out[1] == 3.140625
    assert out[2] == 65536.0                       # 65504 rounds up in bfloat16
    assert out[3] == _bf16_reference(1e38) and abs(out[3] - 1e38) / 1e38 < 2**-8
    assert out[4:6].tolist() == [BF16_MAX, BF16_MAX]  # saturation, not inf
    assert out[6] == -BF16_MAX
    assert out[7] == 0.0 and math.copysign(1, out[7]) == -1.0
    assert out[8] == 1.0                           # tie -> even
    assert out[9] == 1 + 2.0**-6                   # tie -> even (upwards)
    assert out[10] == 2.0**-133                    # subnormal survives
    assert out[11] == -2.5
    assert bfloat16_bits(np.array([1.0, -2.0])).tolist() == [0x3F80, 0xC000]


def test_bfloat16_matches_independent_reference():
    rng = np.random.default_rng(4)
    v = np.concatenate([rng.standard_normal(3000) * 10.0 ** rng.integers(-40, 39, 3000),
                        rng.standard_normal(500)])
    out = roundtrip(v, WireFormat("bfloat16", chunk_bytes=256))
    assert out.tolist() == [_bf16_reference(float(x)) for x in v]


def test_dense_half_and_zero_half_give_mixed_layouts():
    rng = np.random.default_rng(5)
    v = np.concatenate([rng.standard_normal(1000), np.zeros(1000)])
    v[1500] = 7.0
    fmt = WireFormat("float64", chunk_bytes=800)  # 100 elements per chunk
    chunks = list(encode_vector(v, 3, fmt))
    layouts = [c.layout for c in chunks]
    assert layouts[:10] == [pb.DENSE] * 10 and layouts[10:] == [pb.SPARSE] * 10
    assert chunks[15].nnz == 1 and all(c.nnz == 0 for i, c in enumerate(chunks[10:], 10)
                                       if i != 15)
    asm = _assemble(chunks, {3: 2000})
    assert _same_bits(asm.result(3), v)


def test_sparse_only_when_strictly_smaller():
    fmt = WireFormat("float32", chunk_bytes=32)  # 8 elements per chunk; sparse iff nnz < 4
    three = np.array([1.0, 0, 0, 2.0, 0, 0, 3.0, 0])
    four = np.array([1.0, 0, 0, 2.0, 0, 0, 3.0, 4.0])
    (c3,) = encode_vector(three, 0, fmt)
    (c4,) = encode_vector(four, 0, fmt)
    assert (c3.layout, c3.nnz, len(c3.data)) == (pb.SPARSE, 3, 3 * 8)
    assert c3.data[:12] == struct.pack("<3I", 0, 3, 6)
    assert c3.data[12:] == struct.pack("<3f", 1.0, 2.0, 3.0)
    assert (c4.layout, c4.nnz, len(c4.data)) == (pb.DENSE, 0, 32)
    (c3d,) = encode_vector(three, 0, WireFormat("float32", chunk_bytes=32, allow_sparse=False))
    assert c3d.layout == pb.DENSE
    for v in (three, four):
        assert np.array_equal(roundtrip(v, fmt), v)


def test_sparse_keeps_negative_zero_and_drops_underflow():
    v = np.array([0.0, -0.0, 1e-30, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    (c,) = encode_vector(v, 0, WireFormat("float16"))
    assert c.layout == pb.SPARSE and c.nnz == 1  # 1e-30 underflows to 0 in float16
    out = roundtrip(v, WireFormat("float16"))
    assert math.copysign(1, out[1]) == -1.0 and out[2] == 0.0


def test_zstd_kept_only_when_smaller():
    rng = np.random.default_rng(6)
    noise = rng.integers(0, 2**64, 4096, dtype=np.uint64, endpoint=False).view(np.float64)
    noise = np.where(np.isfinite(noise), noise, 1.0)  # random bits: incompressible
    zeros = np.zeros(4096)
    (c_noise,) = encode_vector(noise, 0, WireFormat(compression="zstd"))
    assert c_noise.compression == pb.NONE and len(c_noise.data) == 4096 * 8
    dense = WireFormat(compression="zstd", allow_sparse=False)
    (c_zero,) = encode_vector(zeros, 0, dense)
    assert c_zero.compression == pb.ZSTD and len(c_zero.data) < 100
    assert zstandard.ZstdDecompressor().decompress(c_zero.data) == bytes(4096 * 8)
    # an all-zero sparse chunk has an empty payload: nothing to compress
    (c_empty,) = encode_vector(zeros, 0, WireFormat(compression="zstd"))
    assert (c_empty.layout, c_empty.compression, c_empty.data) == (pb.SPARSE, pb.NONE, b"")
    for v in (noise, zeros):
        assert _same_bits(roundtrip(v, dense), v)


@pytest.mark.parametrize("fmt", [WireFormat(), WireFormat("bfloat16", "zstd"),
                                 WireFormat(chunk_bytes=1), WireFormat("qint8", "zstd")])
def test_zero_length_vector_is_one_empty_chunk(fmt):
    chunks = list(encode_vector(np.zeros(0), 2, fmt))
    assert len(chunks) == 1
    assert (chunks[0].slot, chunks[0].start, chunks[0].count, chunks[0].data) == (2, 0, 0, b"")
    asm = VectorAssembler({2: 0})
    assert not asm.complete
    asm.add(chunks[0])
    assert asm.complete and asm.result(2).shape == (0,)
    with pytest.raises(CodecError, match="after the vector is complete"):
        asm.add(chunks[0])


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16", "qint8",
                                   "qfloat8"])
def test_chunking_covers_vector_in_order(dtype):
    fmt = WireFormat(dtype, chunk_bytes=1000)
    per = 1000 // fmt.itemsize
    n = 5 * per + 3
    v = np.random.default_rng(7).standard_normal(n)
    chunks = list(encode_vector(v, 1, fmt))
    assert [c.start for c in chunks] == [i * per for i in range(6)]
    assert [c.count for c in chunks] == [per] * 5 + [3]
    assert all(c.slot == 1 and c.dtype == pb.DType.Value(dtype.upper()) for c in chunks)


def test_tiny_chunk_bytes_gives_one_element_per_chunk():
    v = np.arange(1.0, 40.0)
    fmt = WireFormat("float32", "zstd", chunk_bytes=1)
    chunks = list(encode_vector(v, 0, fmt))
    assert len(chunks) == 39 and all(c.count == 1 for c in chunks)
    assert np.array_equal(_assemble(chunks, {0: 39}).result(0), v)
    assert np.array_equal(roundtrip(v, WireFormat("float64", chunk_bytes=9)), v)


def test_integer_input_vectors_are_accepted():
    v = np.array([1, -2, 3, 0, 0], dtype=np.int64)
    assert roundtrip(v, WireFormat("float32")).tolist() == [1.0, -2.0, 3.0, 0.0, 0.0]


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_indices_roundtrip(compression):
    idx = np.sort(np.random.default_rng(8).choice(2**32 - 1, 10_000, replace=False))
    fmt = WireFormat("float16", compression, chunk_bytes=4096)
    chunks = list(encode_indices(idx, 0, fmt))
    assert all(c.dtype == pb.UINT32 and c.layout == pb.DENSE for c in chunks)
    assert [c.count for c in chunks] == [1024] * 9 + [784]
    out = _assemble(chunks, {0: len(idx)}, index_slots=[0]).result(0)
    assert out.dtype == np.uint32 and np.array_equal(out, idx)
    if compression == "zstd":
        ramp = np.arange(100_000, dtype=np.uint32)
        assert all(c.compression == pb.ZSTD for c in encode_indices(ramp, 0, fmt))


def test_indices_out_of_range_or_wrong_type():
    with pytest.raises(CodecError, match=r"slot 4: index at position 2 is -1"):
        list(encode_indices(np.array([0, 1, -1]), 4, WireFormat()))
    with pytest.raises(CodecError, match="outside"):
        list(encode_indices(np.array([2**32], dtype=np.uint64), 0, WireFormat()))
    with pytest.raises(CodecError, match="integer index vector"):
        encode_indices(np.array([0.5]), 0, WireFormat())


def test_several_slots_in_one_message():
    rng = np.random.default_rng(9)
    g, h = rng.standard_normal(1000), rng.standard_normal(1000)
    fmt = WireFormat(chunk_bytes=800)
    a, b = list(encode_vector(g, 0, fmt)), list(encode_vector(h, 1, fmt))
    asm = VectorAssembler({0: 1000, 1: 1000})
    for x, y in zip(a, b, strict=True):  # interleaved slots, each in order
        asm.add(x)
        assert not asm.complete
        asm.add(y)
    assert asm.complete and asm.is_complete(0)
    assert _same_bits(asm.result(0), g) and _same_bits(asm.result(1), h)


# ---------------------------------------------------------------- qint8


def _f32_below(x: np.float32) -> float:
    return float(np.nextafter(np.float32(x), np.float32(0)))


def _qint8_chunks_check(v: np.ndarray, out: np.ndarray, fmt: WireFormat) -> None:
    """Per chunk: the scale is the smallest float32 >= max|x|/127 (0 below 127 * 2**-126,
    float32 max above 127 times it), the largest element arrives as +-127 s, and every element
    within range is off by at most s/2 (out-of-range ones saturate)."""
    for start, stop in chunk_bounds(len(v), fmt):
        x, y = v[start:stop], out[start:stop]
        m = float(np.max(np.abs(x))) if len(x) else 0.0
        s = float(qint8_scale(x))
        if m < 127 * 2.0**-126:
            assert s == 0 and not y.any()
            continue
        if m / 127 > F32_MAX:
            assert s == F32_MAX
        else:
            assert s * 127 >= m > _f32_below(s) * 127  # smallest float32 with s >= m / 127
        assert float(np.max(np.abs(y))) == 127 * s
        inside = np.abs(x) <= 127 * s
        assert np.all(np.abs(y - x)[inside] <= s / 2 * (1 + 2.0**-40))
        assert np.array_equal(y[~inside], np.sign(x[~inside]) * 127 * s)


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("allow_sparse", [True, False])
def test_qint8_roundtrip_error_within_half_scale_and_idempotent(compression, allow_sparse):
    rng = np.random.default_rng(20)
    v = np.concatenate([rng.standard_normal(3000) * 10.0 ** rng.integers(-5, 5, 3000),
                        np.zeros(2000), rng.standard_normal(1000) * 1e-3, [1e-300, -0.0]])
    v[4000:4010] = 3.0
    fmt = WireFormat("qint8", compression, allow_sparse, chunk_bytes=500)
    out = roundtrip(v, fmt)
    assert out.dtype == np.float64 and out.shape == v.shape
    _qint8_chunks_check(v, out, fmt)
    assert _same_bits(roundtrip(out, fmt), out)  # re-sending what arrived changes nothing
    assert _same_bits(wire_values(v, fmt), out)
    assert math.copysign(1, out[-1]) == 1.0  # no -0 in qint8


def test_qint8_payload_is_scale_then_codes():
    v = np.array([1.0, -0.5, 0.25, 0.0, -1.0, 0.3])
    (c,) = encode_vector(v, 0, WireFormat("qint8", allow_sparse=False))
    assert (c.dtype, c.layout, c.count, c.nnz, len(c.data)) == (pb.QINT8, pb.DENSE, 6, 0, 4 + 6)
    (scale,) = struct.unpack("<f", c.data[:4])
    assert scale == float(np.float32(1 / 127)) or scale == float(
        np.nextafter(np.float32(1 / 127), np.float32(1)))
    assert scale * 127 >= 1.0 > _f32_below(np.float32(scale)) * 127
    codes = np.frombuffer(c.data[4:], dtype=np.int8)
    assert codes.tolist() == [127, round(-0.5 / scale), round(0.25 / scale), 0, -127,
                              round(0.3 / scale)]
    assert roundtrip(v, WireFormat("qint8")).tolist() == (codes * scale).tolist()
    assert (quantize_qint8(v)[0], quantize_qint8(v)[1].tolist()) == (np.float32(scale),
                                                                    codes.tolist())
    assert dequantize_qint8(scale, codes).tolist() == (codes.astype(float) * scale).tolist()


def test_qint8_sparse_layout():
    v = np.zeros(100)
    v[[3, 50, 99]] = [127.0, -63.5, 32.5]  # scale exactly 1; ties go to even codes
    (c,) = encode_vector(v, 0, WireFormat("qint8"))
    assert (c.layout, c.nnz, len(c.data)) == (pb.SPARSE, 3, 4 + 3 * 4 + 3)
    assert struct.unpack("<f3I", c.data[:16]) == (1.0, 3, 50, 99)
    assert np.frombuffer(c.data[16:], np.int8).tolist() == [127, -64, 32]
    out = roundtrip(v, WireFormat("qint8"))
    assert out[[3, 50, 99]].tolist() == [127.0, -64.0, 32.0]
    assert np.count_nonzero(out) == 3
    # sparse iff 5 nnz < count (the scale is in both layouts)
    w = np.zeros(10)
    w[:2] = 1.0
    assert next(encode_vector(w, 0, WireFormat("qint8"))).layout == pb.DENSE
    w[1] = 0.0
    assert next(encode_vector(w, 0, WireFormat("qint8"))).layout == pb.SPARSE


def test_qint8_zero_tiny_and_huge_chunks():
    fmt = WireFormat("qint8", chunk_bytes=4)
    v = np.array([0.0, 0.0, -0.0, 0.0,            # all zero: scale 0
                  1e-40, -3e-39, 1e-300, 0.0,     # max|x| < 127 * 2**-126: flushed to zero
                  1e308, -1e300, 5.0, 0.0,        # beyond 127 * float32 max: saturates
                  2e-36, 1e-36, 0.0, 0.0])        # smallest normal scale region
    chunks = list(encode_vector(v, 0, fmt))
    assert [c.layout for c in chunks[:2]] == [pb.SPARSE, pb.SPARSE]
    assert [c.data for c in chunks[:2]] == [bytes(4), bytes(4)]
    out = roundtrip(v, fmt)
    assert not out[:8].any()
    assert out[8:12].tolist() == [127 * F32_MAX, -127 * F32_MAX, 0.0, 0.0]
    assert out[12] == 127 * float(qint8_scale(v[12:16])) and abs(out[12] - 2e-36) < 2e-43
    assert _same_bits(roundtrip(out, fmt), out)
    assert qint8_scale(np.zeros(0)) == 0


def test_qint8_integer_and_float32_inputs():
    v = np.array([127, -3, 0, 64], dtype=np.int64)
    assert roundtrip(v, WireFormat("qint8")).tolist() == [127.0, -3.0, 0.0, 64.0]
    w = np.random.default_rng(21).standard_normal(300).astype(np.float32)
    assert _same_bits(roundtrip(w, WireFormat("qint8")),
                      roundtrip(w.astype(np.float64), WireFormat("qint8")))


def test_qint8_stochastic_rounding_is_unbiased_and_reencodes_to_itself():
    rng = np.random.default_rng(22)
    x = rng.standard_normal(64)
    scale, _ = quantize_qint8(x)
    draws = np.array([quantize_qint8(x, rng.random(64))[1] for _ in range(4000)], float)
    assert draws.min() >= -127 and draws.max() <= 127
    q = x / float(scale)
    assert np.all(np.abs(draws - q) < 1)  # floor or ceil of q
    assert np.abs(draws.mean(axis=0) - q).max() < 0.05  # E[code] = x / s (std <= 0.5/sqrt(4000))
    s2, codes = quantize_qint8(x, rng.random(64))
    assert s2 == scale and np.abs(codes).max() == 127
    y = dequantize_qint8(s2, codes)
    assert _same_bits(roundtrip(y, WireFormat("qint8", chunk_bytes=64)), y)
    with pytest.raises(CodecError, match="noise has shape"):
        quantize_qint8(x, np.zeros(3))


def test_qint8_is_about_an_eighth_of_float64():
    n = 1 << 20
    v = np.random.default_rng(23).standard_normal(n)
    f64 = vector_bytes(encode_vector(v, 0, WireFormat()))
    for chunk_bytes in (1 << 20, 1 << 16):
        fmt = WireFormat("qint8", chunk_bytes=chunk_bytes)
        chunks = list(encode_vector(v, 0, fmt))
        assert len(chunks) == n // chunk_bytes
        assert sum(len(c.data) for c in chunks) == expected_dense_bytes(n, "qint8", chunk_bytes)
        assert expected_dense_bytes(n, "qint8", chunk_bytes) == n + 4 * (n // chunk_bytes)
        q8 = vector_bytes(chunks)
        assert 0 < q8 - expected_dense_bytes(n, "qint8", chunk_bytes) < 0.001 * n
        assert 7.9 < f64 / q8 <= 8.0


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16", "qint8",
                                   "qfloat8"])
def test_wire_values_equal_roundtrip(dtype):
    rng = np.random.default_rng(24)
    v = np.concatenate([_special_values(), rng.standard_normal(2000) * 1e3, np.zeros(500),
                        [1e39, -1e39, 70000.0, -0.0]])
    fmt = WireFormat(dtype, chunk_bytes=333)
    assert _same_bits(wire_values(v, fmt), roundtrip(v, fmt))
    assert wire_values(np.zeros(0), fmt).shape == (0,)
    with pytest.raises(CodecError, match="value at index 3 is nan"):
        wire_values(np.array([1.0, 2.0, 3.0, math.nan]), fmt)
    with pytest.raises(CodecError, match="1-D real vector"):
        wire_values(np.ones((2, 2)), fmt)


def test_chunk_bounds():
    assert list(chunk_bounds(10, WireFormat("qint8", chunk_bytes=4))) == [(0, 4), (4, 8),
                                                                         (8, 10)]
    assert list(chunk_bounds(10, WireFormat("float64", chunk_bytes=40))) == [(0, 5), (5, 10)]
    assert list(chunk_bounds(0, WireFormat())) == [(0, 0)]
    with pytest.raises(CodecError, match="non-negative"):
        chunk_bounds(-1, WireFormat())


# ---------------------------------------------------------------- byte accounting


def test_vector_bytes_is_sum_of_serialized_lengths():
    rng = np.random.default_rng(10)
    v = np.concatenate([rng.standard_normal(30_000), np.zeros(30_000)])
    for fmt in (WireFormat(), WireFormat("float32", "zstd", chunk_bytes=10_000),
                WireFormat("bfloat16", allow_sparse=False, chunk_bytes=333)):
        chunks = list(encode_vector(v, 7, fmt))
        total = sum(len(c.SerializeToString()) for c in chunks)
        assert vector_bytes(chunks) == total
        asm = _assemble(chunks, {7: len(v)})
        assert asm.wire_bytes == {7: total}
        assert asm.total_wire_bytes == total
        assert asm.payload_bytes == {7: sum(len(c.data) for c in chunks)}
        assert roundtrip_counted(v, fmt, slot=7)[1] == total


@pytest.mark.parametrize(("n", "dtype", "chunk_bytes"),
                         [(16_384, "float32", 1 << 20), (2**20, "float64", 1 << 20),
                          (2**20, "float32", 65_536), (2**18, "bfloat16", 1 << 20)])
def test_chunk_header_overhead_below_one_percent(n, dtype, chunk_bytes):
    v = np.random.default_rng(11).standard_normal(n) + 5.0
    chunks = encode_vector(v, 1, WireFormat(dtype, chunk_bytes=chunk_bytes))
    wire = vector_bytes(chunks)
    payload = expected_dense_bytes(n, dtype)
    assert payload >= 65_536
    assert 0 < (wire - payload) / payload < 0.01


def test_expected_dense_bytes():
    assert [expected_dense_bytes(10, d) for d in
            ("float64", "float32", "float16", "bfloat16", "uint32")] == [80, 40, 20, 20, 40]
    assert expected_dense_bytes(10, "qint8") == 14
    assert expected_dense_bytes(10, "qint8", chunk_bytes=4) == 10 + 3 * 4
    assert expected_dense_bytes(0, "qint8") == 0
    with pytest.raises(CodecError):
        expected_dense_bytes(10, "int8")


# ---------------------------------------------------------------- WireFormat


def test_wire_format_proto_roundtrip_and_defaults():
    for fmt in (WireFormat(), WireFormat("bfloat16", "zstd", False),
                WireFormat("float16", "none", True), WireFormat("qint8", "zstd", True)):
        assert WireFormat.from_proto(fmt.to_proto()) == fmt
    assert WireFormat("qint8").to_proto().dtype == pb.QINT8
    assert WireFormat("qint8").itemsize == 1
    assert WireFormat.from_proto(pb.WireFormat()) == WireFormat()
    partial = WireFormat.from_proto(pb.WireFormat(compression=pb.ZSTD))
    assert (partial.dtype, partial.compression, partial.allow_sparse) == ("float64", "zstd",
                                                                           False)


@pytest.mark.parametrize("m", [pb.WireFormat(dtype=pb.UINT32), pb.WireFormat(dtype=42),
                               pb.WireFormat(dtype=pb.FLOAT32, compression=9)])
def test_wire_format_from_proto_rejects_unknown_values(m):
    with pytest.raises(CodecError, match="wire format"):
        WireFormat.from_proto(m)


@pytest.mark.parametrize("kw", [{"dtype": "int8"}, {"compression": "gzip"},
                                {"chunk_bytes": 0}, {"zstd_level": 99}])
def test_wire_format_rejects_bad_settings(kw):
    with pytest.raises(CodecError):
        WireFormat(**kw)


# ---------------------------------------------------------------- malformed input


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encoding_non_finite_values_is_refused(bad):
    v = np.ones(1000)
    v[777] = bad
    gen = encode_vector(v, 5, WireFormat(chunk_bytes=800))
    with pytest.raises(CodecError, match=r"^slot 5: value at index 777 is (nan|-?inf)"):
        list(gen)


def test_encoding_non_vectors_is_refused():
    with pytest.raises(CodecError, match="1-D real vector"):
        encode_vector(np.ones((2, 2)), 0, WireFormat())
    with pytest.raises(CodecError, match="1-D real vector"):
        encode_vector(np.array([1j]), 0, WireFormat())
    with pytest.raises(CodecError, match="slot must be"):
        encode_vector(np.ones(2), -1, WireFormat())


def _chunks(v, fmt, slot=0):
    return list(encode_vector(np.asarray(v, dtype=np.float64), slot, fmt))


def _dense(n=8, dtype="float64", compression="none"):
    """A one-chunk dense vector 1..n."""
    return _chunks(np.arange(1.0, n + 1), WireFormat(dtype, compression, False))[0]


def _sparse_chunk(offsets, values, count=16, start=0):
    data = struct.pack(f"<{len(offsets)}I", *offsets) + struct.pack(f"<{len(values)}d", *values)
    return pb.VectorChunk(slot=0, start=start, count=count, dtype=pb.FLOAT64, layout=pb.SPARSE,
                          compression=pb.NONE, nnz=len(offsets), data=data)


def _with(chunk: pb.VectorChunk, **fields) -> pb.VectorChunk:
    c = pb.VectorChunk()
    c.CopyFrom(chunk)
    for k, val in fields.items():
        setattr(c, k, val)
    return c


def _zstd(data: bytes, content_size: bool = True) -> bytes:
    return zstandard.ZstdCompressor(write_content_size=content_size).compress(data)


MALFORMED: list[tuple[str, Callable[[], pb.VectorChunk], str]] = [
    ("unknown slot", lambda: _with(_dense(), slot=9), "unknown slot"),
    ("start beyond length", lambda: _with(_dense(), start=8, count=1), "expected start 0"),
    ("count beyond length", lambda: _with(_dense(), count=9), "beyond the vector length"),
    ("payload too short", lambda: _with(_dense(), data=_dense().data[:-1]),
     "payload is 63 bytes, expected 64"),
    ("payload too long", lambda: _with(_dense(), data=_dense().data + b"\0"),
     "payload is 65 bytes"),
    ("dense float32 size mismatch", lambda: _with(_dense(), dtype=pb.FLOAT32),
     "payload is 64 bytes, expected 32"),
    ("unknown dtype", lambda: _with(_dense(), dtype=17), "unknown dtype"),
    ("unspecified dtype", lambda: _with(_dense(), dtype=pb.DTYPE_UNSPECIFIED), "unknown dtype"),
    ("uint32 in float slot", lambda: _with(_dense(), dtype=pb.UINT32, data=bytes(32)),
     "floating vector expected"),
    ("unknown layout", lambda: _with(_dense(), layout=0), "unknown layout"),
    ("unknown compression", lambda: _with(_dense(), compression=5), "unknown compression"),
    ("dense with nnz", lambda: _with(_dense(), nnz=3), "DENSE chunk with nnz 3"),
    ("sparse nnz above count", lambda: _with(_sparse_chunk([0], [1.0]), count=8, nnz=9),
     "nnz 9 > count 8"),
    ("garbage zstd", lambda: _with(_dense(), compression=pb.ZSTD, data=b"\x01garbage!" * 5),
     "not a zstd frame"),
    ("truncated zstd", lambda: _with(_dense(), compression=pb.ZSTD,
                                     data=_zstd(bytes(64))[:-2]), "does not decompress"),
    ("zstd with trailing data", lambda: _with(_dense(), compression=pb.ZSTD,
                                              data=_zstd(bytes(64)) + _zstd(b"x")),
     "does not decompress"),
    ("zip bomb (declared size)", lambda: _with(_dense(), compression=pb.ZSTD,
                                               data=_zstd(bytes(50_000_000))),
     "declares 50000000 bytes, expected 64"),
    ("zip bomb (no declared size)", lambda: _with(_dense(), compression=pb.ZSTD,
                                                  data=_zstd(bytes(50_000_000), False)),
     "does not decompress to 64 bytes"),
    ("zstd frame too small", lambda: _with(_dense(), compression=pb.ZSTD,
                                           data=_zstd(bytes(32), False)),
     "decompresses to 32 bytes, expected 64"),
    ("zstd on empty payload", lambda: _with(_sparse_chunk([], []), compression=pb.ZSTD,
                                            data=_zstd(b"")), "raw payload is empty"),
    ("sparse offsets repeat", lambda: _sparse_chunk([1, 4, 4], [1.0, 2.0, 3.0]),
     r"not strictly increasing at position 2 \(4 then 4\)"),
    ("sparse offsets decrease", lambda: _sparse_chunk([5, 2], [1.0, 2.0]),
     "not strictly increasing"),
    ("sparse offset out of range", lambda: _sparse_chunk([1, 16], [1.0, 2.0]),
     "sparse offset 16 is not below count 16"),
    ("NaN decoded (dense)", lambda: _with(_dense(), data=struct.pack("<8d", *[0.0] * 7, math.nan)),
     "decoded value at index 7 is nan"),
    ("Inf decoded (sparse)", lambda: _sparse_chunk([2, 11], [1.0, -math.inf]),
     "decoded value at index 11 is -inf"),
    ("Inf decoded (float16)", lambda: _with(_dense(dtype="float16"),
                                            data=np.array([1.0] * 7 + [np.inf], "<f2").tobytes()),
     "decoded value at index 7 is inf"),
    ("NaN decoded (bfloat16)", lambda: _with(_dense(dtype="bfloat16"),
                                             data=struct.pack("<8H", *[0x3F80] * 7, 0x7FC0)),
     "decoded value at index 7 is nan"),
    ("empty chunk in non-empty vector", lambda: _with(_dense(), count=0, data=b""),
     "empty chunk"),
    ("qint8 NaN scale", lambda: _q8_scale(math.nan), r"QINT8 scale is nan"),
    ("qint8 infinite scale", lambda: _q8_scale(math.inf), r"QINT8 scale is inf"),
    ("qint8 negative scale", lambda: _q8_scale(-0.5), r"QINT8 scale is -0\.5"),
    ("qint8 negative zero scale", lambda: _q8_scale(-0.0), r"QINT8 scale is -0\.0"),
    ("qint8 payload without its scale", lambda: _with(_q8(), data=_q8().data[4:]),
     r"payload is 8 bytes, expected 12 \(DENSE QINT8, count 8\)"),
    ("qint8 payload one code short", lambda: _with(_q8(), data=_q8().data[:-1]),
     "payload is 11 bytes, expected 12"),
    ("qint8 payload one code long", lambda: _with(_q8(), data=_q8().data + b"\1"),
     "payload is 13 bytes, expected 12"),
    ("qint8 dense code -128", lambda: _with(_q8(), data=_q8().data[:-1] + b"\x80"),
     r"QINT8 code -128 at index 7"),
    ("qint8 sparse code -128", lambda: _q8_sparse([2, 9], [5, -128]),
     r"QINT8 code -128 at index 9"),
    ("qint8 sparse size mismatch", lambda: _with(_q8_sparse([2, 9], [5, 7]), nnz=3),
     "payload is 14 bytes, expected 19"),
    ("qint8 sparse offsets decrease", lambda: _q8_sparse([9, 2], [5, 7]),
     "not strictly increasing"),
    ("qint8 zstd of the wrong size", lambda: _with(_q8(), compression=pb.ZSTD,
                                                   data=_zstd(bytes(11))),
     "declares 11 bytes, expected 12"),
    ("qint8 empty payload in a non-empty chunk", lambda: _with(_q8(), data=b""),
     "payload is 0 bytes, expected 12"),
]


def _q8(n: int = 8) -> pb.VectorChunk:
    """A one-chunk dense qint8 vector 1..n."""
    return _chunks(np.arange(1.0, n + 1), WireFormat("qint8", allow_sparse=False))[0]


def _q8_scale(scale: float) -> pb.VectorChunk:
    return _with(_q8(), data=struct.pack("<f", scale) + _q8().data[4:])


def _q8_sparse(offsets, codes, count=16, scale=0.5) -> pb.VectorChunk:
    data = (struct.pack("<f", scale) + struct.pack(f"<{len(offsets)}I", *offsets)
            + struct.pack(f"<{len(codes)}b", *codes))
    return pb.VectorChunk(slot=0, start=0, count=count, dtype=pb.QINT8, layout=pb.SPARSE,
                          compression=pb.NONE, nnz=len(offsets), data=data)


@pytest.mark.parametrize(("make", "message"), [(m, msg) for _, m, msg in MALFORMED],
                         ids=[name for name, _, _ in MALFORMED])
def test_malformed_chunk_raises_codec_error(make, message):
    chunk = make()
    length = 16 if chunk.layout == pb.SPARSE else 8
    asm = VectorAssembler({0: length})
    with pytest.raises(CodecError, match=message) as info:
        asm.add(chunk)
    assert str(info.value).startswith(f"slot {chunk.slot}, chunk start {chunk.start}: ")
    assert info.value.slot == chunk.slot and info.value.start == chunk.start


def test_out_of_order_and_overlapping_chunks():
    v = np.arange(1.0, 101.0)
    c = _chunks(v, WireFormat(chunk_bytes=80))  # 10 chunks of 10
    asm = VectorAssembler({0: 100})
    with pytest.raises(CodecError, match=r"^slot 0, chunk start 10: out-of-order \(gap\) chunk"):
        asm.add(c[1])
    asm.add(c[0])
    asm.add(c[1])
    with pytest.raises(CodecError, match=r"^slot 0, chunk start 10: overlapping chunk: "
                                         r"expected start 20"):
        asm.add(c[1])
    with pytest.raises(CodecError, match="overlapping"):
        asm.add(_with(c[2], start=15))


def test_index_slot_rejects_float_chunks():
    asm = VectorAssembler({0: 8}, index_slots=[0])
    with pytest.raises(CodecError, match=r"^slot 0, chunk start 0: index vector expected"):
        asm.add(_dense())
    with pytest.raises(CodecError, match="must be DENSE"):
        asm.add(pb.VectorChunk(slot=0, count=8, dtype=pb.UINT32, layout=pb.SPARSE,
                               compression=pb.NONE))


def test_failed_chunk_leaves_assembler_usable():
    v = np.arange(1.0, 21.0)
    c = _chunks(v, WireFormat(chunk_bytes=80))
    asm = VectorAssembler({0: 20})
    asm.add(c[0])
    with pytest.raises(CodecError):
        asm.add(_with(c[1], data=c[1].data[:-8] + struct.pack("<d", math.nan)))
    assert asm.payload_bytes == {0: 80}
    asm.add(c[1])
    assert np.array_equal(asm.result(0), v)


def test_incomplete_vector_at_result():
    c = _chunks(np.arange(1.0, 21.0), WireFormat(chunk_bytes=80))
    asm = VectorAssembler({0: 20, 1: 5})
    asm.add(c[0])
    with pytest.raises(CodecError, match=r"^slot 0, chunk start 10: vector incomplete: "
                                         r"received 10 of 20"):
        asm.result(0)
    with pytest.raises(CodecError, match="slot 1, chunk start 0: vector incomplete"):
        asm.result(1)
    with pytest.raises(CodecError, match="slot 2: unknown slot"):
        asm.result(2)
    assert not asm.complete


def test_hostile_lengths_are_refused_before_allocation():
    with pytest.raises(CodecError, match="more than the limit"):
        VectorAssembler({0: 2**40, 1: 5}, max_elements=2**30)
    with pytest.raises(CodecError, match="non-negative"):
        VectorAssembler({0: -1})
    with pytest.raises(CodecError, match="have no length"):
        VectorAssembler({0: 1}, index_slots=[1])
    assert VectorAssembler({0: 10, 1: 10}, max_elements=20).complete is False


def test_codec_error_is_a_geodml_error():
    assert issubclass(CodecError, GeodmlError)


# ---------------------------------------------------------------- property-based

if hypothesis is not None:
    _FORMATS = st.builds(WireFormat,
                         dtype=st.sampled_from(["float64", "float32", "float16", "bfloat16"]),
                         compression=st.sampled_from(["none", "zstd"]),
                         allow_sparse=st.booleans(),
                         chunk_bytes=st.integers(1, 600))
    _VECTORS = hnp.arrays(np.float64, st.integers(0, 300),
                          elements=st.one_of(st.just(0.0),
                                             st.floats(allow_nan=False, allow_infinity=False)))
    _LIMIT = {"float32": F32_MAX, "float16": F16_MAX, "bfloat16": BF16_MAX}
    _TOL = {"float32": (2.0**-24, 2.0**-150), "float16": (2.0**-11, 2.0**-25),
            "bfloat16": (2.0**-8 + 2.0**-24, 2.0**-133)}

    @settings(max_examples=150, deadline=None)
    @given(v=_VECTORS, fmt=_FORMATS)
    def test_property_roundtrip_within_dtype_tolerance(v, fmt):
        out, nbytes = roundtrip_counted(v, fmt)
        assert out.shape == v.shape and np.isfinite(out).all()
        assert nbytes == vector_bytes(encode_vector(v, 0, fmt))
        if fmt.dtype == "float64":
            assert _same_bits(out, v)
            return
        limit = _LIMIT[fmt.dtype]
        target = np.clip(v, -limit, limit)
        rel, tiny = _TOL[fmt.dtype]
        assert np.all(np.abs(out - target) <= np.abs(target) * rel + tiny)
        assert np.all(np.abs(out) <= limit)

    @settings(max_examples=150, deadline=None)
    @given(v=_VECTORS, chunk_bytes=st.integers(1, 400), compression=st.sampled_from(
        ["none", "zstd"]), allow_sparse=st.booleans())
    def test_property_qint8_within_half_scale(v, chunk_bytes, compression, allow_sparse):
        fmt = WireFormat("qint8", compression, allow_sparse, chunk_bytes=chunk_bytes)
        out, nbytes = roundtrip_counted(v, fmt)
        assert out.shape == v.shape and np.isfinite(out).all()
        assert nbytes == vector_bytes(encode_vector(v, 0, fmt))
        _qint8_chunks_check(v, out, fmt)
        assert _same_bits(roundtrip(out, fmt), out)
        assert _same_bits(wire_values(v, fmt), out)

    @settings(max_examples=150, deadline=None)
    @given(v=_VECTORS, fmt=_FORMATS)
    def test_property_wire_values_equal_roundtrip(v, fmt):
        assert _same_bits(wire_values(v, fmt), roundtrip(v, fmt))

    def _one_chunk_cases() -> list[tuple[pb.VectorChunk, int, bool]]:
        rng = np.random.default_rng(12)
        v = rng.standard_normal(40)
        v[::3] = 0
        s = np.zeros(40)
        s[[3, 17]] = [1.5, -2.0]
        cases = []
        for dtype in ("float64", "float32", "float16", "bfloat16", "qint8", "qfloat8"):
            for comp in ("none", "zstd"):
                for x in (v, s, np.zeros(40)):
                    (c,) = encode_vector(x, 0, WireFormat(dtype, comp))
                    cases.append((c, 40, False))
        (ci,) = encode_indices(np.arange(40), 0, WireFormat(compression="zstd"))
        cases.append((ci, 40, True))
        return cases

    _CASES = _one_chunk_cases()

    def _check_mutant(chunk: pb.VectorChunk, n: int, index: bool) -> None:
        asm = VectorAssembler({0: n}, index_slots=[0] if index else [])
        try:
            asm.add(chunk)
            out = asm.result(0)
        except CodecError:
            return
        assert out.shape == (n,)
        assert out.dtype == (np.uint32 if index else np.float64)
        assert np.isfinite(out).all()

    _EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)),
                      min_size=1, max_size=4)

    @settings(max_examples=300, deadline=None)
    @given(case=st.sampled_from(_CASES), edits=_EDITS)
    def test_property_mutated_serialized_chunk_never_escapes(case, edits):
        chunk, n, index = case
        raw = bytearray(chunk.SerializeToString())
        for pos, byte in edits:
            raw[pos % len(raw)] = byte
        try:
            mutant = pb.VectorChunk.FromString(bytes(raw))
        except DecodeError:
            return  # unparseable messages never reach the codec (gRPC rejects them)
        _check_mutant(mutant, n, index)

    @settings(max_examples=300, deadline=None)
    @given(case=st.sampled_from(_CASES), edits=_EDITS, cut=st.integers(0, 3))
    def test_property_mutated_payload_never_escapes(case, edits, cut):
        chunk, n, index = case
        data = bytearray(chunk.data)
        for pos, byte in edits:
            if data:
                data[pos % len(data)] = byte
        _check_mutant(_with(chunk, data=bytes(data[:len(data) - cut])), n, index)

else:  # pragma: no cover

    @pytest.mark.skip(reason="hypothesis is not installed")
    def test_property_based_tests_need_hypothesis():
        pass


# ---------------------------------------------------------------- streaming at scale


@pytest.mark.slow
def test_streaming_2_pow_26_float32_with_bounded_memory():
    n = 1 << 26
    fmt = WireFormat("float32")
    v = np.random.default_rng(13).standard_normal(n, dtype=np.float32)
    v[-n // 8:] = 0.0  # the tail travels as sparse chunks
    vector_size = v.nbytes  # 256 MB
    gc.collect()

    tracemalloc.start()
    try:
        # Sender alone: the chunks are produced one at a time and dropped.
        sent = 0
        for chunk in encode_vector(v, 0, fmt):
            sent += chunk.ByteSize()
        _, sender_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        # Sender streaming into the receiver, never materializing the list of chunks.
        asm = VectorAssembler({0: n}, max_elements=n)
        for chunk in encode_vector(v, 0, fmt):
            asm.add(chunk)
        out = asm.result(0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert sent == asm.total_wire_bytes
    assert asm.payload_bytes[0] == (n - n // 8) * 4  # dense chunks; all-zero sparse: empty
    assert sender_peak < 8 * fmt.chunk_bytes
    assert peak - out.nbytes < 8 * fmt.chunk_bytes  # output array + O(one chunk)
    assert peak < 2.5 * vector_size
    assert out.dtype == np.float64 and np.array_equal(out, v)
