"""Compression transforms: bit-exact agreement with the codec, composition, error feedback,
specs from untrusted input, measured byte savings, and exact convergence with compression on."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.compression import (
    MAX_DEPTH,
    MAX_SPEC_CHARS,
    MAX_STEPS,
    CompressionError,
    CompressionSpecError,
    ErrorFeedbackState,
    QuantizeState,
    Transform,
    cast,
    chain,
    error_feedback,
    from_spec,
    has_error_feedback,
    identity,
    quantize_int8,
    spec_text,
    to_spec,
    top_k,
    top_k_indices,
    wire_format_for,
)
from geodml.errors import GeodmlError
from geodml.job.compression import AdaptivePrecision, CompressedGradientOracle
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim.lbfgs import LbfgsOptions, lbfgs
from geodml.wire.codec import WireFormat, encode_vector, roundtrip, vector_bytes

from .conftest import SHARED_DATASETS
from .datasets import load_shared_libsvm

F16_MAX = 65504.0


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _vector(n: int = 5000, seed: int = 0) -> np.ndarray:
    """Gradient-like: normal values with log-normal magnitudes, some zeros, a few extremes."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n) * np.exp(2 * rng.standard_normal(n))
    v[rng.random(n) < 0.2] = 0.0
    v[:6] = [-0.0, 1e5, -7e4, 1e-30, 2.0**-24, 3.0]
    return v


def _apply(t: Transform, vectors: list[np.ndarray]) -> tuple[list[np.ndarray], object]:
    state = t.init(len(vectors[0]))
    outs = []
    for v in vectors:
        out, state = t.update(v, state)
        outs.append(out)
    return outs, state


# ---------------------------------------------------------------- each transform vs the codec


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cast_equals_codec_roundtrip(dtype):
    v = _vector()
    out, _ = _apply(cast(dtype), [v])
    assert _same_bits(out[0], roundtrip(v, WireFormat(dtype)))
    if dtype == "float16":
        assert out[0][1] == F16_MAX and out[0][2] == -F16_MAX  # saturates, never inf
    assert math.copysign(1, out[0][0]) == -1.0


def test_cast_to_float8_is_the_codecs_qfloat8_with_one_scale_for_the_vector():
    v = _vector()
    v[7] = -1e300  # the scale saturates at 2^127; nothing becomes infinite
    out, _ = _apply(cast("float8"), [v])
    assert _same_bits(out[0], roundtrip(v, WireFormat("qfloat8")))
    assert np.isfinite(out[0]).all() and math.copysign(1, out[0][0]) == 1.0  # no -0
    w = _vector(3 << 19)  # beyond one chunk of 2^20: still one scale, so the output travels
    w[1 << 20:] *= 1e-3  # exactly in 2^20-element chunks and in any support restriction
    out, _ = _apply(cast("float8"), [w])
    assert _same_bits(out[0], roundtrip(w, WireFormat("qfloat8", chunk_bytes=3 << 19)))
    assert wire_format_for(cast("float8")) == WireFormat("qfloat8", "zstd")
    assert _same_bits(roundtrip(out[0], WireFormat("qfloat8")), out[0])
    support = np.flatnonzero(np.arange(3 << 19) % 3 == 1)
    assert _same_bits(roundtrip(out[0][support], WireFormat("qfloat8")), out[0][support])
    s = 2.0 ** math.ceil(math.log2(np.abs(w).max() / 57344))  # a power of two near max / 2^15
    normal = np.abs(w) >= 2.0**-14 * s
    assert normal.sum() > 0.9 * np.count_nonzero(w)  # relative error <= 1/8 over 2^30
    assert np.max(np.abs(out[0] - w)[normal] / np.abs(w[normal])) <= 2.0**-3


@pytest.mark.parametrize("chunk_elements", [1, 7, 1000, 1 << 20])
def test_quantize_int8_equals_codec_roundtrip(chunk_elements):
    v = _vector()
    outs, state = _apply(quantize_int8(chunk_elements), [v, 2 * v])
    fmt = WireFormat("qint8", chunk_bytes=chunk_elements)
    assert _same_bits(outs[0], roundtrip(v, fmt))
    assert _same_bits(outs[1], roundtrip(2 * v, fmt))
    assert state == QuantizeState(2)
    assert _same_bits(roundtrip(outs[0], fmt), outs[0])


def test_stochastic_quantization_is_seeded_unbiased_and_exact_on_the_wire():
    v = np.random.default_rng(1).standard_normal(256)
    t = quantize_int8(64, stochastic=True, seed=7)
    s0 = t.init(256)
    a, s1 = t.update(v, s0)
    b, _ = t.update(v, s0)  # same state: same draws (update is pure)
    c, _ = t.update(v, s1)  # next state: new draws
    assert _same_bits(a, b) and not np.array_equal(a, c)
    other, _ = quantize_int8(64, stochastic=True, seed=8).update(v, s0)
    assert not np.array_equal(a, other)
    fmt = WireFormat("qint8", chunk_bytes=64)
    assert _same_bits(roundtrip(a, fmt), a)  # the receiver decodes exactly what was kept
    nearest = roundtrip(v, fmt)
    scales = np.repeat([np.abs(nearest[i:i + 64]).max() / 127 for i in range(0, 256, 64)], 64)
    assert np.all(np.abs(a - v) < scales * (1 + 1e-12))  # floor or ceil
    draws, state = [], s0
    for _ in range(2000):
        out, state = t.update(v, state)
        draws.append(out)
    mean = np.mean(draws, axis=0)
    assert np.all(np.abs(mean - v) < 5 * 0.5 * scales / math.sqrt(2000))  # unbiased
    assert np.abs(nearest - v).mean() > 2 * np.abs(mean - v).mean()


def test_top_k_keeps_the_k_largest_magnitudes():
    rng = np.random.default_rng(2)
    v = rng.integers(-20, 21, 3000).astype(float)  # many ties
    for k in (1, 10, 299, 2999, 3000, 5000):
        out, _ = top_k(k=k).update(v, None)
        ref = np.sort(np.argsort(-np.abs(v), kind="stable")[: min(k, 3000)])  # ties: low index
        assert np.array_equal(top_k_indices(v, k), ref)
        expected = np.zeros(3000)
        expected[ref] = v[ref]
        assert _same_bits(out, expected)
    assert len(top_k_indices(v, 0)) == 0


@pytest.mark.parametrize(("fraction", "n", "k"), [(0.01, 1 << 20, 10486), (0.01, 10, 1),
                                                  (0.5, 5, 2), (1.0, 7, 7), (0.3, 10, 3)])
def test_top_k_fraction_rounds_to_at_least_one(fraction, n, k):
    v = np.arange(1.0, n + 1)
    out, _ = top_k(fraction).update(v, None)
    assert np.count_nonzero(out) == k and out[-1] == n
    assert top_k(fraction).update(np.zeros(0), None)[0].shape == (0,)


def test_top_k_output_is_exact_as_sparse_float64():
    v = _vector(20_000)
    out, _ = top_k(0.01).update(v, None)
    fmt = wire_format_for(top_k(0.01), "none")
    assert fmt == WireFormat("float64", allow_sparse=True)
    assert _same_bits(roundtrip(out, fmt), out)
    chunks = list(encode_vector(out, 0, fmt))
    assert sum(len(c.data) for c in chunks) == 200 * (4 + 8)


def test_identity_copies():
    v = _vector(100)
    out, state = identity().update(v, identity().init(100))
    assert _same_bits(out, v) and out is not v and state is None


# ---------------------------------------------------------------- composition


def test_chain_applies_steps_in_order():
    v = _vector()
    t = chain(top_k(0.05), cast("float16"))
    out, state = t.update(v, t.init(len(v)))
    step, _ = top_k(0.05).update(v, None)
    assert _same_bits(out, roundtrip(step, WireFormat("float16")))
    assert state == (None, None)
    assert _same_bits(chain().update(v, chain().init(len(v)))[0], v)
    q = chain(top_k(0.05), quantize_int8(1000))
    out, state = q.update(v, q.init(len(v)))
    assert _same_bits(out, roundtrip(step, WireFormat("qint8", chunk_bytes=1000)))
    assert state == (None, QuantizeState(1))
    with pytest.raises(CompressionError, match="chain step 1 is not a Transform"):
        chain(identity(), "top_k")  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [
    lambda: error_feedback(top_k(0.05)),
    lambda: error_feedback(quantize_int8(500)),
    lambda: error_feedback(quantize_int8(500, stochastic=True, seed=3)),
    lambda: error_feedback(cast("float16")),
    lambda: error_feedback(chain(top_k(0.02), quantize_int8())),
    lambda: chain(error_feedback(top_k(0.1)), cast("bfloat16")),
    lambda: error_feedback(cast("float8")),
], ids=["top_k", "qint8", "qint8-stochastic", "float16", "top_k+qint8", "inner-ef", "float8"])
def test_error_feedback_loses_nothing(make):
    """sum of sent vectors + final residual == sum of inputs (up to float64 rounding)."""
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal(2000) * 10 ** rng.uniform(-2, 2) for _ in range(40)]
    t = make()
    sent, state = _apply(t, xs)
    ef = state if isinstance(state, ErrorFeedbackState) else state[0]
    total, inputs = np.sum(sent, axis=0), np.sum(xs, axis=0)
    if isinstance(state, ErrorFeedbackState):
        np.testing.assert_allclose(total + ef.residual, inputs, rtol=0, atol=1e-10)
        assert np.linalg.norm(ef.residual) < np.linalg.norm(inputs)
    else:  # the cast after the feedback loop is not corrected: only bfloat16 rounding remains
        np.testing.assert_allclose(total + ef.residual, inputs, rtol=0,
                                   atol=40 * 2.0**-8 * max(np.abs(x).max() for x in xs))
    fmt = wire_format_for(t)
    for s in sent:
        assert _same_bits(roundtrip(s, fmt), s)


def test_error_feedback_residual_is_one_quantization_error():
    rng = np.random.default_rng(5)
    t = error_feedback(quantize_int8(100))
    state = t.init(1000)
    for _ in range(20):
        x = rng.standard_normal(1000)
        u = x + state.residual
        sent, state = t.update(x, state)
        scales = np.repeat(np.abs(u.reshape(10, 100)).max(axis=1) / 127, 100)
        assert np.all(np.abs(state.residual) <= scales / 2 * (1 + 1e-6))
        assert _same_bits(state.residual, u - sent)


def test_error_feedback_of_an_exact_transform_keeps_no_residual():
    xs = [_vector(300, seed) for seed in range(5)]
    sent, state = _apply(error_feedback(identity()), xs)
    assert not state.residual.any()
    assert all(np.array_equal(s, x) for s, x in zip(sent, xs, strict=True))  # -0.0 + 0 = +0.0


def test_updates_are_pure():
    v = _vector(1000)
    v_copy = v.copy()
    t = error_feedback(chain(top_k(0.1), quantize_int8(64, stochastic=True)))
    s0 = t.init(1000)
    a, s1 = t.update(v, s0)
    b, _ = t.update(v, s0)
    assert _same_bits(a, b) and _same_bits(v, v_copy)
    assert not s0.residual.any() and s1.residual.any()


def test_transforms_refuse_bad_vectors():
    t = error_feedback(top_k(0.5))
    state = t.init(4)
    with pytest.raises(CompressionError, match="value at index 2 is nan"):
        t.update(np.array([1.0, 2.0, math.nan, 4.0]), state)
    with pytest.raises(CompressionError, match="vector has 3 elements, the state was made for 4"):
        t.update(np.ones(3), state)
    with pytest.raises(CompressionError, match="1-D real vector"):
        cast("float16").update(np.ones((2, 2)), None)
    with pytest.raises(CompressionError, match="non-negative integer"):
        quantize_int8().init(-1)
    for bad in (lambda: cast("int8"), lambda: top_k(), lambda: top_k(0.1, k=3),
                lambda: top_k(0.0), lambda: top_k(k=0), lambda: quantize_int8(0),
                lambda: quantize_int8(seed=-1), lambda: error_feedback(error_feedback(top_k(1.0)))):
        with pytest.raises(CompressionError):
            bad()
    assert issubclass(CompressionSpecError, CompressionError)
    assert issubclass(CompressionError, GeodmlError) and issubclass(CompressionError, ValueError)


# ---------------------------------------------------------------- wire formats


@pytest.mark.parametrize(("t", "fmt"), [
    (identity(), WireFormat("float64")),
    (cast("float16"), WireFormat("float16")),
    (cast("bfloat16"), WireFormat("bfloat16")),
    (cast("float32"), WireFormat("float32")),
    (chain(cast("float16"), cast("float32")), WireFormat("float16")),
    (chain(cast("bfloat16"), cast("float16")), WireFormat("float16")),
    (chain(cast("float16"), cast("bfloat16")), WireFormat("bfloat16")),
    (quantize_int8(4096), WireFormat("qint8", chunk_bytes=4096)),
    (chain(top_k(0.01), quantize_int8()), WireFormat("qint8")),
    (chain(quantize_int8(), top_k(0.01)), WireFormat("float64")),
    (chain(quantize_int8(), cast("float32")), WireFormat("float32")),
    (error_feedback(chain(top_k(0.01), cast("float16"))), WireFormat("float16")),
    (chain(chain(quantize_int8(10)), identity()), WireFormat("qint8", chunk_bytes=10)),
    (cast("float8"), WireFormat("qfloat8")),
    (error_feedback(chain(top_k(0.01), cast("float8"))), WireFormat("qfloat8")),
    (chain(cast("float8"), top_k(0.01)), WireFormat("qfloat8")),
    (chain(cast("float8"), cast("float8")), WireFormat("qfloat8")),
    (chain(quantize_int8(10), cast("float8")), WireFormat("qfloat8")),
    (chain(cast("float8"), cast("float32")), WireFormat("float32")),
    (chain(cast("float8"), quantize_int8(10)), WireFormat("qint8", chunk_bytes=10)),
])
def test_wire_format_for(t, fmt):
    assert wire_format_for(t, "none") == fmt
    assert wire_format_for(to_spec(t), "none") == fmt
    # compressed vectors travel zstd-compressed unless told otherwise; the identity not
    assert wire_format_for(json.dumps(to_spec(t))).compression == (
        "none" if to_spec(t) == {"kind": "identity"} else "zstd")
    v = _vector(3000)
    outs, _ = _apply(t, [v, -v, v / 3])
    for out in outs:  # what the sender keeps is what the receiver decodes
        assert _same_bits(roundtrip(out, fmt), out)
        assert _same_bits(roundtrip(out, WireFormat(fmt.dtype, "zstd", True, fmt.chunk_bytes)),
                          out)
    assert wire_format_for("") == WireFormat() == wire_format_for(None)


def test_wire_format_for_needs_a_spec():
    custom = Transform(lambda d: None, lambda v, s: (v, s))
    with pytest.raises(CompressionError, match="no spec"):
        wire_format_for(custom)
    with pytest.raises(CompressionError, match="no spec"):
        to_spec(custom)
    assert chain(custom, identity()).spec is None


def _bytes(v: np.ndarray, fmt: WireFormat) -> int:
    return vector_bytes(encode_vector(v, 0, fmt))


def test_byte_reductions_on_a_2_pow_20_gradient():
    n = 1 << 20
    rng = np.random.default_rng(6)
    g = rng.standard_normal(n) * np.exp(rng.standard_normal(n))  # dense, gradient-like
    full = _bytes(g, WireFormat())
    ratios = {}
    for name, t in [("float16", cast("float16")), ("bfloat16", cast("bfloat16")),
                    ("float8", cast("float8")), ("qint8", quantize_int8()), ("top1%", top_k(0.01)),
                    ("top1%+float16", chain(top_k(0.01), cast("float16"))),
                    ("top1%+qint8", chain(top_k(0.01), quantize_int8()))]:
        out, _ = t.update(g, t.init(n))
        fmt = wire_format_for(t, "none")  # the raw bytes (zstd: docs/compression.md)
        ratios[name] = full / _bytes(out, fmt)
        assert _same_bits(roundtrip(out, fmt), out)
    assert 3.99 < ratios["float16"] < 4.01 and 3.99 < ratios["bfloat16"] < 4.01
    assert 7.95 < ratios["qint8"] < 8.01 and 7.95 < ratios["float8"] < 8.01
    assert 1 / ratios["top1%"] == pytest.approx(0.01 * (4 + 8) / 8, rel=0.01)
    assert 1 / ratios["top1%+float16"] == pytest.approx(0.01 * (4 + 2) / 8, rel=0.01)
    assert 1 / ratios["top1%+qint8"] == pytest.approx(0.01 * (4 + 1) / 8, rel=0.01)


# ---------------------------------------------------------------- specs

GOOD_SPECS = [
    ({"kind": "identity"}, {"kind": "identity"}),
    ({"kind": "cast", "dtype": "bfloat16"}, {"kind": "cast", "dtype": "bfloat16"}),
    ({"kind": "quantize_int8"},
     {"kind": "quantize_int8", "chunk_elements": 1 << 20, "stochastic": False, "seed": 0}),
    ({"kind": "top_k", "k": 10, "error_feedback": True},
     {"kind": "top_k", "k": 10, "error_feedback": True}),
    ({"kind": "top_k", "fraction": 1, "error_feedback": False},
     {"kind": "top_k", "fraction": 1.0}),
    ({"kind": "chain", "steps": [{"kind": "top_k", "fraction": 0.01},
                                 {"kind": "cast", "dtype": "float16"}], "error_feedback": True},
     {"kind": "chain", "steps": [{"kind": "top_k", "fraction": 0.01},
                                 {"kind": "cast", "dtype": "float16"}], "error_feedback": True}),
    ({"kind": "chain", "steps": [{"kind": "chain", "steps": [
        {"kind": "chain", "steps": [{"kind": "quantize_int8", "chunk_elements": 5,
                                     "stochastic": True, "seed": 9, "error_feedback": True}]}]}]},
     {"kind": "chain", "steps": [{"kind": "chain", "steps": [
         {"kind": "chain", "steps": [{"kind": "quantize_int8", "chunk_elements": 5,
                                      "stochastic": True, "seed": 9,
                                      "error_feedback": True}]}]}]}),
    ({"kind": "cast", "dtype": "float8", "error_feedback": True},
     {"kind": "cast", "dtype": "float8", "error_feedback": True}),
]


@pytest.mark.parametrize(("spec", "canonical"), GOOD_SPECS)
def test_spec_round_trip(spec, canonical):
    t = from_spec(spec)
    assert to_spec(t) == canonical
    assert to_spec(from_spec(json.dumps(spec))) == canonical
    assert to_spec(from_spec(to_spec(t))) == canonical
    v = _vector(500)
    a, _ = _apply(t, [v, v])
    b, _ = _apply(from_spec(canonical), [v, v])
    assert all(_same_bits(x, y) for x, y in zip(a, b, strict=True))


def test_short_names_give_canonical_specs():
    # no error feedback: gradient sums travel as changes (geodml.job.compression)
    assert json.loads(spec_text("bfloat16")) == {"kind": "cast", "dtype": "bfloat16"}
    assert json.loads(spec_text("float8")) == {"kind": "cast", "dtype": "float8"}
    assert wire_format_for(spec_text("float8")) == WireFormat("qfloat8", "zstd")
    assert wire_format_for(spec_text("int8")) == WireFormat("qint8", "zstd")
    assert spec_text("") is None
    assert not has_error_feedback(spec_text("int8"))
    assert has_error_feedback(to_spec(error_feedback(chain(top_k(0.01), cast("float16")))))
    assert has_error_feedback({"kind": "chain", "steps": [
        {"kind": "cast", "dtype": "float16", "error_feedback": True}]})


def test_python_built_transforms_have_specs():
    t = error_feedback(chain(top_k(0.01), cast("float16")))
    assert to_spec(t) == GOOD_SPECS[5][1]
    assert to_spec(from_spec("")) == {"kind": "identity"} == to_spec(from_spec(None))
    assert to_spec(from_spec("  ")) == {"kind": "identity"}


def _nested(levels: int) -> dict:
    spec: dict = {"kind": "identity"}
    for _ in range(levels - 1):
        spec = {"kind": "chain", "steps": [spec]}
    return spec


BAD_SPECS = [
    ("not json", "{kind: top_k}", r"^compression spec: not valid JSON"),
    ("unknown kind", {"kind": "gzip"}, r"^compression spec: kind: unknown kind 'gzip'"),
    ("kind not a string", {"kind": 3}, r"kind: unknown kind 3"),
    ("missing kind", {"steps": []}, r"^compression spec: kind: missing"),
    ("not an object", ["top_k"], r"must be an object with a kind, got list"),
    ("fraction zero", {"kind": "top_k", "fraction": 0}, r"fraction: must be a number in \(0, 1\]"),
    ("fraction above one", {"kind": "top_k", "fraction": 1.5}, r"fraction: .* got 1\.5"),
    ("fraction negative", {"kind": "top_k", "fraction": -0.1}, r"fraction: must be"),
    ("fraction string", {"kind": "top_k", "fraction": "0.1"}, r"fraction: .* got '0\.1'"),
    ("fraction bool", {"kind": "top_k", "fraction": True}, r"fraction: must be"),
    ("fraction NaN", '{"kind": "top_k", "fraction": NaN}', r"NaN is not a valid number"),
    ("fraction infinite", '{"kind": "top_k", "fraction": 1e999}', r"fraction: .* got inf"),
    ("fraction and k", {"kind": "top_k", "fraction": 0.1, "k": 3}, r"exactly one"),
    ("neither fraction nor k", {"kind": "top_k"}, r"exactly one"),
    ("k zero", {"kind": "top_k", "k": 0}, r"^compression spec: k: must be an integer"),
    ("k huge", {"kind": "top_k", "k": 2**40}, r"k: must be an integer in \[1, 4294967295\]"),
    ("k float", {"kind": "top_k", "k": 2.0}, r"k: must be an integer"),
    ("bad dtype", {"kind": "cast", "dtype": "int8"}, r"dtype: must be one of float32, float16"),
    ("missing dtype", {"kind": "cast"}, r"dtype: must be one of .* got None"),
    ("chunk_elements zero", {"kind": "quantize_int8", "chunk_elements": 0},
     r"chunk_elements: must be an integer in \[1, "),
    ("negative seed", {"kind": "quantize_int8", "seed": -1}, r"seed: must be an integer"),
    ("stochastic not bool", {"kind": "quantize_int8", "stochastic": "yes"},
     r"stochastic: must be true or false"),
    ("unknown field", {"kind": "identity", "level": 3}, r"level: unknown field for kind"),
    ("error_feedback not bool", {"kind": "identity", "error_feedback": 1},
     r"error_feedback: must be true or false"),
    ("steps not a list", {"kind": "chain", "steps": {"kind": "identity"}},
     r"steps: must be a list, got dict"),
    ("too many steps", {"kind": "chain", "steps": [{"kind": "identity"}] * (MAX_STEPS + 1)},
     rf"steps: has {MAX_STEPS + 1} steps, more than {MAX_STEPS}"),
    ("too deep", _nested(MAX_DEPTH + 1), r"steps\[0\]\.steps\[0\]\.steps: nested deeper than 4"),
    ("too deep as text", "[" * 2000 + "]" * 2000, r"nested deeper than 4 levels"),
    ("too many transforms", {"kind": "chain", "steps": [
        {"kind": "chain", "steps": [{"kind": "identity"}] * 16}] * 16},
     r"more than 64 transforms"),
    ("too long", json.dumps({"kind": "identity", "pad": "x" * MAX_SPEC_CHARS}),
     rf"characters, more than the limit {MAX_SPEC_CHARS}"),
    ("duplicate key", '{"kind": "identity", "kind": "top_k", "k": 1}', r"kind: appears twice"),
    ("nested field path", {"kind": "chain", "steps": [
        {"kind": "identity"}, {"kind": "top_k", "fraction": 2}]},
     r"^compression spec: steps\[1\]\.fraction: must be a number"),
    ("nested unknown kind", {"kind": "chain", "steps": [{"kind": "chain", "steps": [
        {"kind": "lz4"}]}]}, r"steps\[0\]\.steps\[0\]\.kind: unknown kind 'lz4'"),
    ("long hostile key", {"kind": "identity", "k" * 1000: 1}, r"unknown field"),
]


@pytest.mark.parametrize(("spec", "message"), [(s, m) for _, s, m in BAD_SPECS],
                         ids=[name for name, _, _ in BAD_SPECS])
def test_bad_specs_are_refused_naming_the_field(spec, message):
    with pytest.raises(CompressionSpecError, match=message) as info:
        from_spec(spec)
    assert len(str(info.value)) < 400
    assert isinstance(info.value, ValueError)


def test_spec_error_carries_the_field():
    with pytest.raises(CompressionSpecError) as info:
        from_spec({"kind": "chain", "steps": [{"kind": "top_k", "k": -1}]})
    assert info.value.field == "steps[0].k"


# ---------------------------------------------------------------- the precision policy


def test_adaptive_precision_gradient_norm_rule():
    p = AdaptivePrecision(threshold=1e-3)
    assert p.compressing
    assert p.observe(2.0) and p.reference == 2.0
    assert p.observe(0.0021)
    assert not p.observe(0.002)  # <= 1e-3 * 2.0
    assert p.switched_at == 3 and "gradient norm" in p.reason
    assert not p.observe(10.0)  # never switches back
    assert not AdaptivePrecision(threshold=1.0).observe(5.0)
    never = AdaptivePrecision(threshold=0.0, agreement=0.0)
    assert never.observe(1.0) and never.observe(0.0) and never.observe_direction(-1.0, -1e-9)


def test_adaptive_precision_direction_rule():
    p = AdaptivePrecision(agreement=0.5)
    p.observe(1.0)
    assert p.observe_direction(-1.0, -0.6)  # true slope 60% of the believed one: fine
    assert p.observe_direction(-1.0, -3.0)
    assert p.observe_direction(0.0, 1.0)  # nothing believed, nothing to judge
    assert not p.observe_direction(-1.0, -0.4)
    assert "true slope" in p.reason
    q = AdaptivePrecision(agreement=0.0)
    assert q.observe_direction(-1.0, -1e-12) and not q.observe_direction(-1.0, 1e-12)
    for bad in ({"threshold": -0.1}, {"threshold": 2}, {"agreement": math.nan},
                {"threshold": True}):
        with pytest.raises(CompressionError):
            AdaptivePrecision(**bad)
    with pytest.raises(CompressionError, match="finite"):
        AdaptivePrecision().observe(math.inf)


# ---------------------------------------------------------------- exact convergence


def _logistic_problem() -> tuple[sp.csr_matrix, np.ndarray]:
    """a9a when the shared datasets are there, else a synthetic sparse binary problem of the
    same shape class."""
    if (SHARED_DATASETS / "libsvm" / "a9a").exists():
        data = load_shared_libsvm("a9a")
        return data.X.tocsr(), data.y
    rng = np.random.default_rng(7)
    n, d = 20_000, 123
    X = sp.random(n, d, density=0.11, format="csr", random_state=7, data_rvs=np.ones)
    w = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w - 1.0)))).astype(float)
    return X, y


@pytest.fixture(scope="module")
def logistic():
    X, y = _logistic_problem()

    def make() -> RegularizedObjective:
        return RegularizedObjective([SiteSums(X, y, get_loss("logistic"))], 1.0 / X.shape[0],
                                    X.shape[1])

    exact = lbfgs(make(), options=LbfgsOptions(gtol=1e-10, max_iter=3000))
    assert exact.converged
    return make, exact.f


@pytest.mark.parametrize(("name", "make_transform", "policy"), [
    ("ef-qint8", lambda: error_feedback(quantize_int8()), None),
    ("ef-float8", lambda: error_feedback(cast("float8")), None),
    ("top10%+adaptive", lambda: top_k(0.1), AdaptivePrecision()),
    ("top10%+qint8+adaptive", lambda: chain(top_k(0.1), quantize_int8()),
     AdaptivePrecision()),
])
def test_lbfgs_reaches_the_uncompressed_optimum(logistic, name, make_transform, policy):
    make, f_star = logistic
    oracle = CompressedGradientOracle(make(), make_transform(), policy)
    result = lbfgs(oracle, options=LbfgsOptions(gtol=1e-8, max_iter=3000))
    suboptimality = (result.f - f_star) / abs(f_star)
    assert suboptimality <= 1e-6, (name, suboptimality, result.reason)
    assert oracle.gradients >= result.iterations + 1  # one per iteration, plus restarts
    assert oracle.compressed >= 1 and oracle.bytes_sent < oracle.bytes_full
    if policy is None:
        assert oracle.compressed == oracle.gradients
        assert oracle.bytes_sent < 0.2 * oracle.bytes_full  # qint8: 1 byte + headers per 8
    else:
        assert not policy.compressing  # finished in full precision


def test_compressed_oracle_passes_scalars_through(logistic):
    make, _ = logistic
    plain, policy = make(), AdaptivePrecision()
    wrapped = CompressedGradientOracle(make(), top_k(0.1), policy)
    w = np.full(plain.n_features, 0.01)
    f1, g1 = plain.value_grad(w)
    f2, g2 = wrapped.value_grad(w)
    assert f1 == f2 and _same_bits(g2, top_k(0.1).update(g1, None)[0])
    p = -g2
    plain.set_direction(p)
    wrapped.set_direction(p)
    alphas = np.array([0.5, 1.0])
    fa, da = plain.line_values(alphas)
    fb, db = wrapped.line_values(alphas)  # probes step 0 in the same call
    assert _same_bits(fa, fb) and _same_bits(da, db)
    assert policy.compressing  # top-10% of a first gradient still points downhill
    fa, da = plain.line_values(np.array([2.0]))
    fb, db = wrapped.line_values(np.array([2.0]))
    assert _same_bits(fa, fb) and _same_bits(da, db)
    (f3, g3), (f4, g4) = plain.step(1.0), wrapped.step(1.0)
    assert f3 == f4 and _same_bits(g4, top_k(0.1).update(g3, None)[0])
    v = np.ones(plain.n_features)
    assert _same_bits(plain.hess_vec(v), wrapped.hess_vec(v))
    assert wrapped.gradients == wrapped.compressed == 2
    assert wrapped.bytes_full == 2 * _bytes(g1, WireFormat())
