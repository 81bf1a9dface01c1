"""The scaled float8 wire dtype (QFLOAT8): exact decoding of every code, nearest-even
rounding, the error bounds over twelve decades in one chunk, saturation, zero chunks,
layouts, zstd, idempotent round trips and the refusal of codes that are never sent."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from geodml.wire.codec import (
    CodecError,
    VectorAssembler,
    WireFormat,
    chunk_bounds,
    dequantize_qfloat8,
    encode_vector,
    expected_dense_bytes,
    qfloat8_scale,
    quantize_qfloat8,
    roundtrip,
    roundtrip_counted,
    vector_bytes,
    wire_values,
)
from geodml.wire.float8 import E5M2_MAX, e5m2_codes, e5m2_values, invalid_e5m2
from geodml.wire.protocol import pb

F32_MAX = float(np.finfo(np.float32).max)
NEVER_SENT = [0x7C, 0x7D, 0x7E, 0x7F, 0x80, 0xFC, 0xFD, 0xFE, 0xFF]
# the finite non-negative E5M2 values, code 0x00 .. 0x7B, from their definition
E5M2 = np.array([0.0, 2.0**-16, 2.0**-15, 3 * 2.0**-16]
                + [m * 2.0 ** (e - 2) for e in range(-14, 16) for m in (4, 5, 6, 7)])


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _wire(v: np.ndarray, fmt: WireFormat) -> list[bytes]:
    return [c.SerializeToString() for c in encode_vector(v, 0, fmt)]


def _chunk(codes: list[int], scale: float = 1.0, offsets: list[int] | None = None,
           count: int | None = None) -> pb.VectorChunk:
    """A hand-made QFLOAT8 chunk (dense, or sparse with offsets)."""
    head = struct.pack("<f", scale)
    if offsets is None:
        return pb.VectorChunk(slot=0, start=0, count=len(codes), dtype=pb.QFLOAT8,
                              layout=pb.DENSE, compression=pb.NONE, data=head + bytes(codes))
    data = head + struct.pack(f"<{len(offsets)}I", *offsets) + bytes(codes)
    return pb.VectorChunk(slot=0, start=0, count=count, dtype=pb.QFLOAT8, layout=pb.SPARSE,
                          compression=pb.NONE, nnz=len(offsets), data=data)


def _decode(chunk: pb.VectorChunk) -> np.ndarray:
    asm = VectorAssembler({0: chunk.count})
    asm.add(chunk)
    return asm.result(0)


def _scale_exponent(m: float) -> int:
    """k of the scale 2^k for a chunk whose largest magnitude is m > 2^-166, from the
    definition: the binade of m rounded to 3 significant bits, minus 15, in [-149, 127]."""
    f, e = math.frexp(m)  # m = 2f 2^(e-1), 2f in [1, 2)
    e -= 1
    top = float(E5M2[np.argmin(np.abs(E5M2 - 8 * f) + (np.arange(len(E5M2)) % 2) * 1e-9)]) / 4
    return min(max(e + (top == 2.0) - 15, -149), 127)


def _check_chunks(v: np.ndarray, out: np.ndarray, fmt: WireFormat) -> None:
    """Per chunk: the scale is the power of two of :func:`_scale_exponent` (0 at or below
    2^-166), the largest element arrives in E5M2's top binade [32768 s, 57344 s] unless the
    scale is clamped, the relative error is <= 2**-3 from 2**-14 s up (values beyond
    57344 s saturate) and the absolute error <= 2**-17 s below."""
    for start, stop in chunk_bounds(len(v), fmt):
        x, y = v[start:stop], out[start:stop]
        m = float(np.max(np.abs(x))) if len(x) else 0.0
        s = float(qfloat8_scale(x))
        if m <= 2.0**-166:
            assert s == 0 and not y.any()
            continue
        k = _scale_exponent(m)
        assert s == 2.0**k
        if -149 < k < 127:
            assert 32768 * s <= float(np.max(np.abs(y))) <= E5M2_MAX * s
            assert m < 61440 * s
        target = np.clip(x, -E5M2_MAX * s, E5M2_MAX * s)
        err = np.abs(y - target)
        normal = np.abs(target) >= 2.0**-14 * s
        assert np.all(err[normal] <= 2.0**-3 * np.abs(target[normal]))
        assert np.all(err[~normal] <= 2.0**-17 * s)
        assert np.all(np.sign(y) * np.sign(target) >= 0)


# ---------------------------------------------------------------- the code table


def test_every_code_sent_decodes_exactly_and_reencodes_to_itself():
    codes = np.array([c for c in range(256) if c not in NEVER_SENT], dtype=np.uint8)
    assert (invalid_e5m2(np.arange(256, dtype=np.uint8)).nonzero()[0] == NEVER_SENT).all()
    values = e5m2_values(codes)
    signs = np.where(codes >= 0x80, -1.0, 1.0)
    assert values.tolist() == (signs * E5M2[codes & 0x7F]).tolist()
    assert e5m2_codes(values).tolist() == codes.tolist()
    assert (E5M2[-1], E5M2[4]) == (57344.0, 2.0**-14)
    s = np.float32(0.3)  # decoded in float64 as e5m2 * s, exactly
    assert _decode(_chunk(codes.tolist(), float(s))).tolist() == (values * float(s)).tolist()
    assert dequantize_qfloat8(s, codes).tolist() == (values * float(s)).tolist()


def test_codes_are_the_nearest_e5m2_value_ties_to_even():
    rng = np.random.default_rng(30)
    q = np.concatenate([rng.uniform(0, E5M2_MAX, 20000),
                        np.exp(rng.uniform(math.log(1e-9), math.log(E5M2_MAX), 20000)),
                        (E5M2[1:] + E5M2[:-1]) / 2, E5M2])  # midpoints: ties
    i = np.searchsorted(E5M2, q)  # E5M2[i - 1] < q <= E5M2[i]
    lo, hi = E5M2[np.maximum(i - 1, 0)], E5M2[i]
    tie_up = (i % 2 == 0)  # the even code of the two
    nearest = np.where(q - lo < hi - q, lo, np.where(q - lo > hi - q, hi,
                                                     np.where(tie_up, hi, lo)))
    assert e5m2_values(e5m2_codes(q)).tolist() == nearest.tolist()
    assert e5m2_values(e5m2_codes(-q)).tolist() == (-nearest + 0.0).tolist()
    # the carry into the next exponent: 1.875 * 2^e rounds (a tie, to even) up to 2^(e+1),
    # and 3.5 * 2^-16 from the subnormals up to the smallest normal 2^-14
    assert e5m2_values(e5m2_codes(np.array([7.5, 7.4999, 1.875 * 2.0**-14, 3.5 * 2.0**-16,
                                            3.4999 * 2.0**-16]))).tolist() \
        == [8.0, 7.0, 2.0**-13, 2.0**-14, 3 * 2.0**-16]


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("compression", ["none", "zstd"])
@pytest.mark.parametrize("allow_sparse", [True, False])
def test_twelve_decades_in_one_chunk_keep_their_relative_precision(compression, allow_sparse):
    rng = np.random.default_rng(31)
    n = 20000
    v = rng.choice([-1.0, 1.0], n) * np.exp(rng.uniform(math.log(1e-12), math.log(1e3), n))
    fmt = WireFormat("qfloat8", compression, allow_sparse)
    out, nbytes = roundtrip_counted(v, fmt)
    assert nbytes == vector_bytes(encode_vector(v, 0, fmt))
    _check_chunks(v, out, fmt)
    s = float(qfloat8_scale(v))
    normal = np.abs(v) >= 2.0**-14 * s
    assert 0.5 < normal.mean() < 0.7  # nine of the fifteen decades are in E5M2's normal range
    assert np.max(np.abs(out - v)[normal] / np.abs(v[normal])) > 0.1  # the bound is tight
    # qint8 zeroes everything below max/254; float8 keeps values down to 2^-17 s
    q8 = roundtrip(v, WireFormat("qint8"))
    kept8, kept_q8 = np.count_nonzero(out), np.count_nonzero(q8)
    assert kept8 > 0.6 * n and kept_q8 < 0.2 * n
    assert _same_bits(roundtrip(out, fmt), out)  # idempotent: the same values ...
    assert _wire(out, fmt) == _wire(v, fmt)  # ... and the same bytes
    assert _same_bits(wire_values(v, fmt), out)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 500])
def test_many_chunks_each_with_its_scale(chunk_bytes):
    rng = np.random.default_rng(32)
    v = np.concatenate([rng.standard_normal(3000) * 10.0 ** rng.integers(-8, 8, 3000),
                        np.zeros(700), [1e-300, -0.0, 1e300, -1e-40, 5e-34]])
    fmt = WireFormat("qfloat8", chunk_bytes=chunk_bytes)
    out = roundtrip(v, fmt)
    assert len(list(chunk_bounds(len(v), fmt))) == math.ceil(len(v) / chunk_bytes)
    _check_chunks(v, out, fmt)
    assert _same_bits(roundtrip(out, fmt), out)
    assert _wire(out, fmt) == _wire(v, fmt)
    assert _same_bits(wire_values(v, fmt), out)


def test_any_subset_of_decoded_values_reencodes_to_the_same_values():
    """Support restriction sends v[S] of a decoded vector v: with power-of-two scales every
    subset, in any chunking, decodes to exactly v[S] (a per-chunk float32 scale such as
    QINT8's gives the subset a new scale, and the values move)."""
    rng = np.random.default_rng(36)
    n = 5000
    v = rng.choice([-1.0, 1.0], n) * np.exp(rng.uniform(math.log(1e-12), math.log(1e3), n))
    v[rng.random(n) < 0.3] = 0.0
    whole = roundtrip(v, WireFormat("qfloat8", chunk_bytes=n))  # one scale for all
    for trial in range(20):
        subset = np.sort(rng.choice(n, size=int(rng.integers(1, n)), replace=False))
        if trial % 4 == 0:  # the subset's largest value far below the whole's
            subset = subset[np.abs(whole[subset]) < 1e-6]
        for chunk_bytes in (1, 37, 1000, 1 << 20):
            fmt = WireFormat("qfloat8", allow_sparse=bool(trial % 2), chunk_bytes=chunk_bytes)
            part = whole[subset]
            assert _same_bits(roundtrip(part, fmt), part), (trial, chunk_bytes)
    # per-chunk scales too: a subset within each chunk re-encodes to itself
    chunked = roundtrip(v, WireFormat("qfloat8", chunk_bytes=500))
    inside = np.sort(rng.choice(500, size=200, replace=False))
    for start in range(0, n, 500):
        part = chunked[start + inside]
        assert _same_bits(roundtrip(part, WireFormat("qfloat8")), part)


def test_huge_values_saturate_and_never_become_infinite():
    v = np.array([1e308, -np.finfo(np.float64).max, 1e300, 3.0, 0.0])
    out = roundtrip(v, WireFormat("qfloat8"))
    scale, codes = quantize_qfloat8(v)
    assert scale == qfloat8_scale(v) == np.float32(2.0**127)  # float32's largest power of 2
    assert codes.tolist()[:2] == [0x7B, 0xFB] and not invalid_e5m2(codes).any()
    top = E5M2_MAX * 2.0**127
    assert out[:3].tolist() == [top, -top, top]
    assert out[3:].tolist() == [0.0, 0.0]  # 3 / 2^127 is far below 2^-17
    assert _same_bits(roundtrip(out, WireFormat("qfloat8")), out)


def test_zero_tiny_and_empty_chunks():
    fmt = WireFormat("qfloat8", chunk_bytes=4)
    v = np.array([0.0, -0.0, 0.0, 0.0,  # all zero: scale 0
                  2.0**-166, -1e-300, 1e-320, 0.0,  # at most 2^-166: every code 0, scale 0
                  1e-45, -2.0**-165, 0.0, 0.0,  # the smallest scale, 2^-149 (subnormal)
                  7e-34, -1e-40, 1e-44, 0.0])
    chunks = list(encode_vector(v, 0, fmt))
    assert [(c.layout, c.data) for c in chunks[:2]] == [(pb.SPARSE, bytes(4))] * 2
    out = roundtrip(v, fmt)
    assert not out[:8].any() and math.copysign(1, out[1]) == 1.0  # no -0
    assert qfloat8_scale(v[8:12]) == np.float32(2.0**-149) > 0
    assert out[8] == 0.75 * 2.0**-149  # 1e-45 / 2^-149 = 0.7133 -> 0.75 = 1.5 * 2^-1
    assert out[9] == -(2.0**-165)  # 2^16 s: a normal E5M2 value
    assert qfloat8_scale(v[12:]) == np.float32(2.0**-126)  # 7e-34 = 1.82 * 2^-111 ~ 1.75 * ...
    assert abs(out[12] - 7e-34) <= 7e-34 / 8 and abs(out[13] + 1e-40) <= 1e-40 / 8
    assert out[14] == 0.0  # 1e-44 is below 2^-17 s = 2^-143
    _check_chunks(v, out, fmt)
    assert _same_bits(roundtrip(out, fmt), out) and _wire(out, fmt) == _wire(v, fmt)
    assert qfloat8_scale(np.zeros(0)) == 0 and quantize_qfloat8(np.zeros(3))[1].tolist() == [0] * 3
    (empty,) = encode_vector(np.zeros(0), 0, fmt)
    assert (empty.count, empty.data) == (0, b"")
    assert roundtrip(np.zeros(0), fmt).shape == (0,)


def test_payload_is_scale_then_codes_and_sparse_when_five_nnz_below_count():
    v = np.array([7.0, -1.75, 2.0**-20, 0.0, -2.0**-40, 5.0, 2.0**-30, 3 * 2.0**-30])
    (c,) = encode_vector(v, 0, WireFormat("qfloat8", allow_sparse=False))
    assert (c.dtype, c.layout, c.count, c.nnz, len(c.data)) == (pb.QFLOAT8, pb.DENSE, 8, 0,
                                                                4 + 8)
    (scale,) = struct.unpack("<f", c.data[:4])
    assert scale == 2.0**-13 == float(qfloat8_scale(v))  # 7 / 57344
    # x / s: 57344 = 1.75 * 2^15 (0x7B); -1.75 * 2^13 (0xF3); 2^-7 (0x20); 0; -2^-27
    # underflows to +0, never -0; 40960 = 1.25 * 2^15 (0x79); 2^-17, a tie between 0 and
    # 2^-16, goes to the even 0; 1.5 * 2^-16, a tie between codes 1 and 2, goes to 2
    assert list(c.data[4:]) == [0x7B, 0xF3, 0x20, 0x00, 0x00, 0x79, 0x00, 0x02]
    out = roundtrip(v, WireFormat("qfloat8"))
    assert out.tolist() == [7.0, -1.75, 2.0**-20, 0.0, 0.0, 5.0, 0.0, 2.0**-28]
    assert math.copysign(1, out[4]) == 1.0
    w = np.zeros(100)
    w[[3, 50, 99]] = [3.5, -0.875, 2.0**-30]  # -0.0 travels as +0, so it is not counted
    w[10] = -0.0
    (c,) = encode_vector(w, 0, WireFormat("qfloat8"))
    assert (c.layout, c.nnz, len(c.data)) == (pb.SPARSE, 3, 4 + 3 * 4 + 3)
    assert struct.unpack("<f3I", c.data[:16]) == (2.0**-14, 3, 50, 99)
    assert list(c.data[16:]) == [0x7B, 0xF3, 0x01]  # 2^-30 / 2^-14 is the subnormal 2^-16
    assert roundtrip(w, WireFormat("qfloat8"))[[3, 50, 99]].tolist() == [3.5, -0.875, 2.0**-30]
    x = np.zeros(10)
    x[:2] = 1.0
    assert next(encode_vector(x, 0, WireFormat("qfloat8"))).layout == pb.DENSE
    x[1] = 0.0
    assert next(encode_vector(x, 0, WireFormat("qfloat8"))).layout == pb.SPARSE


def test_zstd_is_used_when_smaller_and_decodes_the_same():
    v = np.tile(np.array([1.0, -3e-4, 2e-7, 0.5]), 5000)
    plain, zstd = WireFormat("qfloat8"), WireFormat("qfloat8", "zstd")
    (c,) = encode_vector(v, 0, zstd)
    assert c.compression == pb.ZSTD and len(c.data) < 0.05 * len(v)
    assert _same_bits(roundtrip(v, zstd), roundtrip(v, plain))
    noise = np.random.default_rng(33).standard_normal(64)
    assert all(c.compression in (pb.NONE, pb.ZSTD) for c in encode_vector(noise, 0, zstd))
    assert _same_bits(roundtrip(noise, zstd), roundtrip(noise, plain))


def test_bytes_are_an_eighth_of_float64():
    n = 1 << 20
    v = np.random.default_rng(34).standard_normal(n)
    f64 = vector_bytes(encode_vector(v, 0, WireFormat()))
    chunks = list(encode_vector(v, 0, WireFormat("qfloat8")))
    assert sum(len(c.data) for c in chunks) == expected_dense_bytes(n, "qfloat8") == n + 4
    assert expected_dense_bytes(10, "qfloat8", chunk_bytes=4) == 10 + 3 * 4
    assert 7.99 < f64 / vector_bytes(chunks) <= 8.0


def test_integer_and_float32_inputs():
    v = np.array([57344, -3, 0, 40960], dtype=np.int64)
    assert roundtrip(v, WireFormat("qfloat8")).tolist() == [57344.0, -3.0, 0.0, 40960.0]
    w = np.random.default_rng(35).standard_normal(300).astype(np.float32)
    assert _same_bits(roundtrip(w, WireFormat("qfloat8")),
                      roundtrip(w.astype(np.float64), WireFormat("qfloat8")))


def test_wire_format_proto():
    fmt = WireFormat("qfloat8", "zstd", True)
    assert WireFormat.from_proto(fmt.to_proto()) == fmt
    assert fmt.to_proto().dtype == pb.QFLOAT8 == 8 and fmt.itemsize == 1


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encoding_non_finite_values_is_refused_naming_slot_and_index(bad):
    v = np.ones(1000)
    v[777] = bad
    with pytest.raises(CodecError, match=r"^slot 5: value at index 777 is (nan|-?inf)"):
        list(encode_vector(v, 5, WireFormat("qfloat8", chunk_bytes=300)))
    with pytest.raises(CodecError, match=r"value at index 777"):
        wire_values(v, WireFormat("qfloat8"))


@pytest.mark.parametrize("code", NEVER_SENT)
def test_codes_never_sent_are_refused_dense_and_sparse(code):
    with pytest.raises(CodecError, match=rf"^slot 0, chunk start 0: QFLOAT8 code "
                                         rf"0x{code:02X} at index 5; infinities"):
        _decode(_chunk([0x3C] * 5 + [code, 0x01, 0x7B]))
    with pytest.raises(CodecError, match=rf"QFLOAT8 code 0x{code:02X} at index 11"):
        _decode(_chunk([0x3C, code], offsets=[2, 11], count=16))


@pytest.mark.parametrize(("scale", "shown"), [(math.nan, "nan"), (math.inf, "inf"),
                                              (-0.5, r"-0\.5"), (-0.0, r"-0\.0")])
def test_bad_scales_are_refused(scale, shown):
    with pytest.raises(CodecError, match=rf"^slot 0, chunk start 0: QFLOAT8 scale is {shown}"):
        _decode(_chunk([0x3C, 0x01], scale))


def test_payload_of_the_wrong_size_is_refused():
    good = _chunk([0x3C] * 8)
    for data, expected in ((good.data[4:], "payload is 8 bytes, expected 12 \\(DENSE QFLOAT8"),
                           (good.data[:-1], "payload is 11 bytes, expected 12"),
                           (good.data + b"\x01", "payload is 13 bytes, expected 12")):
        chunk = pb.VectorChunk()
        chunk.CopyFrom(good)
        chunk.data = data
        with pytest.raises(CodecError, match=expected):
            _decode(chunk)
    assert _decode(good).tolist() == [1.0] * 8  # 0x3C is 1.0


# ---------------------------------------------------------------- property-based

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:  # pragma: no cover - hypothesis is optional
    given = None

if given is not None:
    _VECTORS = hnp.arrays(np.float64, st.integers(0, 300),
                          elements=st.one_of(st.just(0.0),
                                             st.floats(allow_nan=False, allow_infinity=False)))

    @settings(max_examples=200, deadline=None)
    @given(v=_VECTORS, chunk_bytes=st.integers(1, 400), compression=st.sampled_from(
        ["none", "zstd"]), allow_sparse=st.booleans())
    def test_property_within_bounds_and_idempotent(v, chunk_bytes, compression, allow_sparse):
        fmt = WireFormat("qfloat8", compression, allow_sparse, chunk_bytes=chunk_bytes)
        out, nbytes = roundtrip_counted(v, fmt)
        assert out.shape == v.shape and np.isfinite(out).all()
        assert nbytes == vector_bytes(encode_vector(v, 0, fmt))
        _check_chunks(v, out, fmt)
        assert _same_bits(roundtrip(out, fmt), out)
        assert _wire(out, fmt) == _wire(v, fmt)
        assert _same_bits(wire_values(v, fmt), out)
