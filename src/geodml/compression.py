"""Compression of the vectors sites and coordinator exchange, as composable transforms.

A :class:`Transform` is a pair of pure functions with explicit state, in the manner of optax's
gradient transformations::

    state = t.init(d)                    # for vectors of d elements
    v_out, state = t.update(v, state)    # v_out: exactly what the receiver reconstructs

``update`` never mutates its arguments. ``v_out`` is a float64 vector equal, bit for bit, to what
the receiver decodes when the sender encodes ``v_out`` with :func:`wire_format_for` of the
transform (the codec round trip of ``v_out`` is ``v_out``), so sender and receiver agree exactly
and the sender can keep whatever the receiver lost.

Transforms (``x`` a d-vector)

``identity()``
    ``x``.
``cast(dtype)``, dtype float32, float16, bfloat16 or float8
    Round to nearest even in ``dtype``, saturating at its largest finite value: exactly the
    codec's cast, ``wire_values(x, WireFormat(dtype))``. float8 is the codec's scaled E5M2
    (``qfloat8``) with one chunk for the whole vector: a power-of-two scale
    ``s ~ max|x| / 2^15`` and ``x / s`` rounded to E5M2, relative error ``<= 2^-3`` down to
    ``2^-14 s``; the output travels exactly in ``qfloat8`` at any chunk size, and so does any
    subset of it (a support-restricted vector).
``quantize_int8(chunk_elements, stochastic, seed)``
    Per chunk of ``chunk_elements`` consecutive elements: scale ``s`` = the smallest float32
    ``>= max|x_chunk| / 127``, codes ``c = round(x / s)`` in ``[-127, 127]``, output ``c * s``:
    exactly the codec's ``qint8`` dtype with ``chunk_bytes = chunk_elements`` (itemsize 1), so
    the codec carries it as one float32 scale and one byte per element. Error per element
    ``<= s / 2``. With ``stochastic=True`` the codes are ``floor(x / s + u)``, ``u ~ U[0, 1)``
    drawn from ``numpy.random.default_rng([seed, t])`` for the t-th vector (t is the state), so
    ``E[c s] = x`` (unbiased; the chunk's largest element is rounded to nearest, see
    :func:`geodml.wire.codec.quantize_qint8`).
``top_k(fraction=f)`` or ``top_k(k=k)``
    Keep the ``k`` entries of largest ``|x_i|`` (ties: lower index first), zero the others;
    ``k = max(1, round(f d))`` for a fraction, ``min(k, d)`` in any case. Sent sparse: 4 bytes
    of offset plus the value per kept entry.
``error_feedback(inner)``
    Keeps the residual ``e`` of what ``inner`` dropped and adds it to the next vector
    (error feedback / error compensation)::

        u_t = x_t + e_t,   sent_t = inner(u_t),   e_{t+1} = u_t - sent_t,   e_0 = 0

    Hence ``sum_{t<T} sent_t + e_T = sum_{t<T} x_t``: nothing is lost, only delayed, and
    ``|e|`` stays at the size of one compression error (for qint8, ``<= s / 2`` per element).
``chain(t1, ..., tn)``
    ``tn(...t1(x))``, each step with its own state.

Spec (JSON; what a coordinator sends a site in ``PrepareRequest.up_compression``)::

    {"kind": "identity"}
    {"kind": "cast", "dtype": "float16"}                      # float32/16, bfloat16, float8
    {"kind": "quantize_int8", "chunk_elements": 1048576, "stochastic": false, "seed": 0}
    {"kind": "top_k", "fraction": 0.01}                       # or {"kind": "top_k", "k": 1000}
    {"kind": "chain", "steps": [<spec>, ...]}

Any node may add ``"error_feedback": true``, which wraps that node in ``error_feedback``. An
empty string means no compression (identity). Parsing is safe on untrusted input: at most
:data:`MAX_SPEC_CHARS` characters, bracket depth checked before the JSON parser runs, chains
nested at most :data:`MAX_DEPTH` deep with at most :data:`MAX_STEPS` steps and
:data:`MAX_NODES` transforms in all, only known kinds and fields, and bounded numbers. Every
problem raises :class:`CompressionSpecError` naming the field (e.g. ``steps[1].fraction``).

Exact convergence: a compressed gradient is an inexact one. :class:`AdaptivePrecision`
(:mod:`geodml.job.compression`) compresses while the received gradient norm is above
``threshold * ||g_0||`` and the true slope along each direction agrees with the compressed
one, then sends full precision for good, so exact methods reach the uncompressed optimum.
Measurements: ``docs/compression.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np

from geodml.errors import GeodmlError
from geodml.wire.codec import (
    WireFormat,
    chunk_bounds,
    dequantize_qint8,
    quantize_qint8,
    wire_values,
)

Spec = dict[str, Any]

MAX_SPEC_CHARS = 4096  # longest JSON spec accepted
MAX_DEPTH = 4  # transforms nested at most this deep (a chain in a chain in a chain ...)
MAX_STEPS = 16  # steps per chain
MAX_NODES = 64  # transforms in one spec
MAX_COUNT = (1 << 32) - 1  # bound on k and chunk_elements
MAX_SEED = (1 << 63) - 1
DEFAULT_CHUNK_ELEMENTS = 1 << 20  # WireFormat's default chunk_bytes with itemsize 1

CAST_DTYPES = ("float32", "float16", "bfloat16", "float8")
_CAST_WIRE = {"float8": "qfloat8"}  # the wire dtype of a cast, where its name differs
_KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "identity": (),
    "cast": ("dtype",),
    "quantize_int8": ("chunk_elements", "stochastic", "seed"),
    "top_k": ("fraction", "k"),
    "chain": ("steps",),
}
# (values already in `first`, cast to `second`): unchanged, so `first` still carries them.
_CAST_KEEPS = {("float16", "float16"), ("float16", "float32"), ("bfloat16", "bfloat16"),
               ("bfloat16", "float32"), ("float32", "float32")}


class CompressionError(GeodmlError, ValueError):
    """A transform got an invalid argument or vector."""


class CompressionSpecError(CompressionError):
    """An invalid compression spec. ``field`` is the path of the offending field
    (``""`` for the whole spec), e.g. ``steps[1].fraction``."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"compression spec: {field}: {problem}" if field
                         else f"compression spec: {problem}")


class Transform(NamedTuple):
    """A compression step: ``init(d) -> state`` and ``update(v, state) -> (v_out, state)``.

    ``spec`` is the JSON spec the library's constructors attach (canonical form); a transform
    made elsewhere has ``None`` and cannot be sent to a site or given a wire format.
    """

    init: Callable[[int], Any]
    update: Callable[[np.ndarray, Any], tuple[np.ndarray, Any]]
    spec: Spec | None = None


class QuantizeState(NamedTuple):
    """State of :func:`quantize_int8`: how many vectors it has quantized (the random stream
    index of stochastic rounding)."""

    count: int


class ErrorFeedbackState(NamedTuple):
    """State of :func:`error_feedback`: the residual ``e`` and the inner transform's state."""

    residual: np.ndarray
    inner: Any


# ---------------------------------------------------------------- argument checks


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 0:
        raise CompressionError(f"dimension must be a non-negative integer, got {dim!r}")
    return int(dim)


def _vector(v: np.ndarray, name: str) -> np.ndarray:
    """v as a finite 1-D float64 array (CompressionError otherwise); may alias v."""
    a = np.asarray(v)
    if a.ndim != 1 or a.dtype.kind not in "fiu":
        raise CompressionError(f"{name}: expected a 1-D real vector, got shape {a.shape} "
                               f"dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    finite = np.isfinite(a)
    if not finite.all():
        i = int(np.argmin(finite))
        raise CompressionError(f"{name}: value at index {i} is {a[i]}; only finite values "
                               "can be sent")
    return a


def _int_arg(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not lo <= value <= hi:
        raise CompressionError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


# ---------------------------------------------------------------- transforms


def identity() -> Transform:
    """``v_out = v`` (a float64 copy)."""

    def init(dim: int) -> None:
        _check_dim(dim)

    def update(v: np.ndarray, state: None) -> tuple[np.ndarray, None]:
        return np.array(_vector(v, "identity"), dtype=np.float64), state

    return Transform(init, update, {"kind": "identity"})


def cast(dtype: str) -> Transform:
    """Round to ``dtype`` (float32, float16, bfloat16, or float8: the codec's qfloat8 with
    one scale for the whole vector) exactly as the codec does: nearest even, saturating."""
    if dtype not in CAST_DTYPES:
        raise CompressionError(f"cast dtype must be one of {', '.join(CAST_DTYPES)}, "
                               f"got {dtype!r}")
    fmt = WireFormat(_CAST_WIRE.get(dtype, dtype))

    def init(dim: int) -> None:
        _check_dim(dim)

    def update(v: np.ndarray, state: None) -> tuple[np.ndarray, None]:
        x = _vector(v, f"cast({dtype})")
        if fmt.dtype == "qfloat8":  # one scale: exact in any chunking and in any subset
            return wire_values(x, WireFormat("qfloat8", chunk_bytes=max(1, len(x)))), state
        return wire_values(x, fmt), state

    return Transform(init, update, {"kind": "cast", "dtype": dtype})


def quantize_int8(chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, stochastic: bool = False,
                  seed: int = 0) -> Transform:
    """8-bit quantization with one scale per chunk of ``chunk_elements`` elements: the
    codec's qint8 with ``WireFormat(dtype="qint8", chunk_bytes=chunk_elements)``.

    Deterministic: ``v_out = roundtrip(v, that format)``. Stochastic: codes
    ``floor(v / s + u)`` with ``u`` from ``default_rng([seed, t])`` for the t-th vector, so
    ``E[v_out] = v``; ``v_out`` still round-trips through the codec unchanged.
    """
    chunk_elements = _int_arg(chunk_elements, "chunk_elements", 1, MAX_COUNT)
    seed = _int_arg(seed, "seed", 0, MAX_SEED)
    if not isinstance(stochastic, bool):
        raise CompressionError(f"stochastic must be true or false, got {stochastic!r}")
    fmt = WireFormat("qint8", chunk_bytes=chunk_elements)

    def init(dim: int) -> QuantizeState:
        _check_dim(dim)
        return QuantizeState(0)

    def update(v: np.ndarray, state: QuantizeState) -> tuple[np.ndarray, QuantizeState]:
        x = _vector(v, "quantize_int8")
        if not stochastic:
            return wire_values(x, fmt), QuantizeState(state.count + 1)
        rng = np.random.default_rng([seed, state.count])
        out = np.empty(len(x), dtype=np.float64)
        for start, stop in chunk_bounds(len(x), fmt):
            if stop > start:
                scale, codes = quantize_qint8(x[start:stop], rng.random(stop - start))
                out[start:stop] = dequantize_qint8(scale, codes)
        return out, QuantizeState(state.count + 1)

    spec = {"kind": "quantize_int8", "chunk_elements": chunk_elements,
            "stochastic": stochastic, "seed": seed}
    return Transform(init, update, spec)


def top_k_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Sorted indices of the k entries of largest |x| (ties: lower index first), in O(d)."""
    n = len(x)
    if k >= n:
        return np.arange(n)
    if k <= 0:
        return np.zeros(0, dtype=np.intp)
    mag = np.abs(x)
    t = np.partition(mag, n - k)[n - k]  # the k-th largest magnitude
    above = np.flatnonzero(mag > t)
    ties = np.flatnonzero(mag == t)[: k - len(above)]
    return np.sort(np.concatenate([above, ties]))


def top_k(fraction: float | None = None, *, k: int | None = None) -> Transform:
    """Keep the k largest-magnitude entries: ``k = max(1, round(fraction * d))`` or the given
    ``k``, at most d. The output is dense with zeros elsewhere (the codec sends it sparse)."""
    if (fraction is None) == (k is None):
        raise CompressionError("top_k needs exactly one of fraction and k")
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
                or not 0.0 < float(fraction) <= 1.0:
            raise CompressionError(f"top_k fraction must be a number in (0, 1], "
                                   f"got {fraction!r}")
        fraction = float(fraction)
        spec: Spec = {"kind": "top_k", "fraction": fraction}
    else:
        k = _int_arg(k, "top_k k", 1, MAX_COUNT)
        spec = {"kind": "top_k", "k": k}

    def count(n: int) -> int:
        if fraction is not None:
            return min(n, max(1, round(fraction * n)))
        return min(n, k)

    def init(dim: int) -> None:
        _check_dim(dim)

    def update(v: np.ndarray, state: None) -> tuple[np.ndarray, None]:
        x = _vector(v, "top_k")
        out = np.zeros(len(x), dtype=np.float64)
        idx = top_k_indices(x, count(len(x)))
        out[idx] = x[idx]
        return out, state

    return Transform(init, update, spec)


def error_feedback(inner: Transform) -> Transform:
    """Error feedback around ``inner``: ``u = v + e``, send ``inner(u)``, keep ``e = u - sent``.

    The sum of everything sent plus the current residual equals the sum of the inputs (up to
    float64 rounding), so a compressor's bias is corrected over the following vectors.
    """
    if inner.spec is not None and inner.spec.get("error_feedback"):
        raise CompressionError("the transform already has error feedback")

    def init(dim: int) -> ErrorFeedbackState:
        dim = _check_dim(dim)
        return ErrorFeedbackState(np.zeros(dim), inner.init(dim))

    def update(v: np.ndarray,
               state: ErrorFeedbackState) -> tuple[np.ndarray, ErrorFeedbackState]:
        x = _vector(v, "error_feedback")
        if x.shape != state.residual.shape:
            raise CompressionError(f"error_feedback: vector has {len(x)} elements, the state "
                                   f"was made for {len(state.residual)}")
        u = x + state.residual
        sent, inner_state = inner.update(u, state.inner)
        return sent, ErrorFeedbackState(u - sent, inner_state)

    spec = None if inner.spec is None else {**inner.spec, "error_feedback": True}
    return Transform(init, update, spec)


def chain(*transforms: Transform) -> Transform:
    """Apply the transforms in order (``chain()`` is the identity); state: a tuple of theirs."""
    for i, t in enumerate(transforms):
        if not isinstance(t, Transform):
            raise CompressionError(f"chain step {i} is not a Transform: {type(t).__name__}")

    def init(dim: int) -> tuple:
        dim = _check_dim(dim)
        return tuple(t.init(dim) for t in transforms)

    def update(v: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        out = np.array(_vector(v, "chain"), dtype=np.float64)
        new = []
        for t, s in zip(transforms, state, strict=True):
            out, s = t.update(out, s)
            new.append(s)
        return out, tuple(new)

    specs = [t.spec for t in transforms]
    spec = None if any(s is None for s in specs) else {"kind": "chain", "steps": specs}
    return Transform(init, update, spec)


# ---------------------------------------------------------------- specs


def to_spec(transform: Transform) -> Spec:
    """The canonical JSON-compatible spec of a transform built by this module."""
    if transform.spec is None:
        raise CompressionError("this transform was not built by geodml.compression and has "
                               "no spec")
    return json.loads(json.dumps(transform.spec))


def from_spec(spec: Mapping[str, Any] | str | None) -> Transform:
    """The transform a spec describes (a dict, its JSON text, or ``""``/``None`` for none).

    Safe on untrusted input; every problem raises :class:`CompressionSpecError` naming the
    field.
    """
    if spec is None:
        return identity()
    if isinstance(spec, str):
        spec = _parse_json(spec)
        if spec is None:
            return identity()
    return _build(spec, "", 1, [0])



#: short names of common specs (``geodml train --compress-up float16``)
SHORT_SPECS: dict[str, dict[str, Any]] = {
    **{dtype: {"kind": "cast", "dtype": dtype} for dtype in CAST_DTYPES},
    "int8": {"kind": "quantize_int8"}}


def spec_text(text: str | None) -> str | None:
    """A validated JSON spec from a short name (:data:`SHORT_SPECS`, no error feedback:
    gradients travel as changes, :mod:`geodml.job.compression`), JSON text, or None."""
    if not text:
        return None
    return json.dumps(to_spec(from_spec(SHORT_SPECS.get(text, text))))


def has_error_feedback(spec: Transform | Mapping[str, Any] | str | None) -> bool:
    """Whether any node of a spec keeps an error-feedback residual."""
    def walk(node: Mapping[str, Any]) -> bool:
        return bool(node.get("error_feedback")) or any(walk(s) for s in node.get("steps", ()))
    return walk(to_spec(spec if isinstance(spec, Transform) else from_spec(spec)))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _max_bracket_depth(text: str) -> int:
    """Deepest nesting of ``{``/``[`` outside JSON strings (checked before json.loads)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "}]":
            depth -= 1
    return deepest


def _parse_json(text: str) -> Any:
    if len(text) > MAX_SPEC_CHARS:
        raise CompressionSpecError("", f"is {len(text)} characters, more than the limit "
                                       f"{MAX_SPEC_CHARS}")
    if not text.strip():
        return None
    # each level of transforms is at most two brackets deep ({"steps": [ ... ]})
    if _max_bracket_depth(text) > 2 * MAX_DEPTH + 1:
        raise CompressionSpecError("", f"nested deeper than {MAX_DEPTH} levels of transforms")

    def no_constants(name: str) -> None:
        raise CompressionSpecError("", f"{name} is not a valid number")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise CompressionSpecError(key, "appears twice")
            out[key] = value
        return out

    try:
        return json.loads(text, parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise CompressionSpecError("", f"not valid JSON: {e}") from None
    except RecursionError:
        raise CompressionSpecError("", "nested too deeply") from None


def _field(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _build(node: Any, path: str, depth: int, nodes: list[int]) -> Transform:
    nodes[0] += 1
    if nodes[0] > MAX_NODES:
        raise CompressionSpecError(path, f"more than {MAX_NODES} transforms")
    if not isinstance(node, Mapping):
        raise CompressionSpecError(path, f"must be an object with a kind, got "
                                         f"{type(node).__name__}")
    if "kind" not in node:
        raise CompressionSpecError(_field(path, "kind"), "missing")
    kind = node["kind"]
    if not isinstance(kind, str) or kind not in _KIND_FIELDS:
        raise CompressionSpecError(_field(path, "kind"), f"unknown kind {_short(kind)}; known: "
                                   f"{', '.join(_KIND_FIELDS)}")
    allowed = {"kind", "error_feedback", *_KIND_FIELDS[kind]}
    for key in node:
        if key not in allowed:
            name = key if isinstance(key, str) and len(key) <= 60 else _short(key)
            raise CompressionSpecError(_field(path, name), f"unknown field for kind {kind!r} "
                                       f"(allowed: {', '.join(sorted(allowed))})")
    ef = node.get("error_feedback", False)
    if not isinstance(ef, bool):
        raise CompressionSpecError(_field(path, "error_feedback"),
                                   f"must be true or false, got {_short(ef)}")
    t = _build_kind(kind, node, path, depth, nodes)
    return error_feedback(t) if ef else t


def _spec_int(node: Mapping[str, Any], path: str, name: str, lo: int, hi: int,
              default: int | None = None) -> int:
    value = node.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise CompressionSpecError(_field(path, name), f"must be an integer in [{lo}, {hi}], "
                                   f"got {_short(value)}")
    return value


def _build_kind(kind: str, node: Mapping[str, Any], path: str, depth: int,
                nodes: list[int]) -> Transform:
    if kind == "identity":
        return identity()
    if kind == "cast":
        dtype = node.get("dtype")
        if dtype not in CAST_DTYPES:
            raise CompressionSpecError(_field(path, "dtype"), f"must be one of "
                                       f"{', '.join(CAST_DTYPES)}, got {_short(dtype)}")
        return cast(dtype)
    if kind == "quantize_int8":
        chunk = _spec_int(node, path, "chunk_elements", 1, MAX_COUNT, DEFAULT_CHUNK_ELEMENTS)
        seed = _spec_int(node, path, "seed", 0, MAX_SEED, 0)
        stochastic = node.get("stochastic", False)
        if not isinstance(stochastic, bool):
            raise CompressionSpecError(_field(path, "stochastic"),
                                       f"must be true or false, got {_short(stochastic)}")
        return quantize_int8(chunk, stochastic, seed)
    if kind == "top_k":
        has_fraction, has_k = "fraction" in node, "k" in node
        if has_fraction == has_k:
            raise CompressionSpecError(path or "top_k", "give exactly one of fraction and k")
        if has_k:
            return top_k(k=_spec_int(node, path, "k", 1, MAX_COUNT))
        f = node["fraction"]
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 < f <= 1.0:
            raise CompressionSpecError(_field(path, "fraction"),
                                       f"must be a number in (0, 1], got {_short(f)}")
        return top_k(float(f))
    # chain
    steps = node.get("steps")
    where = _field(path, "steps")
    if not isinstance(steps, list):
        raise CompressionSpecError(where, f"must be a list, got {type(steps).__name__}")
    if len(steps) > MAX_STEPS:
        raise CompressionSpecError(where, f"has {len(steps)} steps, more than {MAX_STEPS}")
    if steps and depth >= MAX_DEPTH:
        raise CompressionSpecError(where, f"nested deeper than {MAX_DEPTH} levels")
    return chain(*(_build(s, f"{where}[{i}]", depth + 1, nodes) for i, s in enumerate(steps)))


def wire_format_for(transform_spec: Transform | Mapping[str, Any] | str | None,
                    compression: str | None = None) -> WireFormat:
    """The codec format that carries a transform's output exactly and compactly.

    Compactly: unless ``compression`` says otherwise, chunks are zstd-compressed where
    that is shorter (lossless), except the identity's: float8 codes and bfloat16 exponents
    repeat, and zstd saves about a third of them (docs/compression.md).

    Walking the steps in order: a cast to d makes the values d-valued (unless they already
    are in a dtype d contains: float16 and bfloat16 values are float32 values; float8 makes
    them qfloat8, default chunks); quantize_int8 makes them qint8 with its chunking
    (``chunk_bytes = chunk_elements``); top_k keeps the representation, except after
    quantize_int8 (a sparsified chunk would get a new scale, so it travels as float64; a
    subset of qfloat8 values is qfloat8).
    Sparse chunks are always allowed (the codec uses them only when strictly smaller), so
    top-k output costs 4 bytes of offset plus the value per kept entry.
    ``roundtrip(v_out, wire_format_for(t)) == v_out`` bit for bit.
    """
    t = transform_spec if isinstance(transform_spec, Transform) else from_spec(transform_spec)
    dtype, chunk = "float64", None

    def walk(node: Mapping[str, Any]) -> None:
        nonlocal dtype, chunk
        kind = node["kind"]
        if kind == "chain":
            for step in node["steps"]:
                walk(step)
        elif kind == "cast":
            if (dtype, node["dtype"]) not in _CAST_KEEPS:
                dtype = _CAST_WIRE.get(node["dtype"], node["dtype"])
                chunk = DEFAULT_CHUNK_ELEMENTS
        elif kind == "quantize_int8":
            dtype, chunk = "qint8", node["chunk_elements"]
        elif kind == "top_k" and dtype == "qint8":
            dtype = "float64"

    spec = to_spec(t)
    walk(spec)
    if compression is None:
        compression = "none" if spec == {"kind": "identity"} else "zstd"
    if dtype in ("qint8", "qfloat8"):
        return WireFormat(dtype, compression, True, chunk_bytes=chunk)
    return WireFormat(dtype, compression, True)


__all__ = [
    "CompressionError",
    "CompressionSpecError",
    "ErrorFeedbackState",
    "QuantizeState",
    "Transform",
    "cast",
    "chain",
    "error_feedback",
    "from_spec",
    "has_error_feedback",
    "identity",
    "quantize_int8",
    "to_spec",
    "top_k",
    "top_k_indices",
    "wire_format_for",
]
