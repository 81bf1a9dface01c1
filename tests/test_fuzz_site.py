"""Fuzzing the Site API with hostile input (issue 6, item 4).

Two passes, both driven by hypothesis and bounded in time (``GEODML_FUZZ_SECONDS``,
default 20 s for the whole file: 60% over gRPC, 40% in process):

* over gRPC, against a real site server process (``LocalCluster``, plaintext on
  loopback), through a channel without serializers, so any bytes can be sent:
  random bytes, bit-flipped / truncated / field-injected serializations of valid
  messages, and well-formed messages with hostile fields (unknown sessions, wrong
  dimensions, NaN/Inf in vectors and in scalars, huge declared lengths, zip-bomb
  zstd frames, streams cut short, chunks for slots that do not exist, ...) for
  every RPC;
* in process, the same structured messages straight into ``SiteService.handle``
  (many more inputs per second, plus a site with a restrictive policy).

Every refused call must carry an expected status with a message that names the
site (never UNKNOWN / INTERNAL, never a hang); the server process must stay up,
answer Describe between batches, and compute the same numbers for a real job as
before the fuzzing, both during it (a well-behaved coordinator runs one job per batch
alongside) and after it. Each pass prints how many inputs it tried per RPC.

The bugs the fuzz found (all fixed) are pinned by the ``test_bug_*`` tests; the fuzz
passes fail on any of them, and on a successful LineSearch, Subspace or LocalSolve
with a vector beyond float32 range (the data is float32).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest
import zstandard
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from geodml.data import load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.job.procedure_params import PROCEDURE_PARAMS
from geodml.models.losses import LOSSES
from geodml.site.config import DataConfig, ExecutorConfig, SiteConfig
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.site.procedures import PROCEDURES
from geodml.site.service import SiteError, SiteService
from geodml.wire.codec import VectorAssembler, WireFormat, encode_vector
from geodml.wire.protocol import METHODS, pb, with_chunks

FUZZ_SECONDS = float(os.environ.get("GEODML_FUZZ_SECONDS", "20"))
SITE = "fz"
STRICT_SITE = "fz-strict"
SERVICE = "/geodml.site.v1.Site/"
CALL_TIMEOUT = 30.0  # a call that takes longer counts as a hang
EXPECTED = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION",
                      "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "OUT_OF_RANGE",
                      "UNIMPLEMENTED"})
FRESH = "<a session prepared for this call>"  # Close: prepare one, close it twice

NAN, INF = float("nan"), float("inf")
F64_MAX = float(np.finfo(np.float64).max)
F32_MAX = float(np.finfo(np.float32).max)
SPECIAL_FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 5e-324, 1e-308, 1e-30, 65504.0, 1e30, F32_MAX,
                  1e300, F64_MAX, -F64_MAX, NAN, INF, -INF]
FLOATS = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(), st.floats(-4, 4))
U32 = st.one_of(st.integers(0, 4), st.sampled_from([2**31 - 1, 2**31, 2**32 - 1]),
                st.integers(0, 2**32 - 1))
U64 = st.one_of(U32, st.sampled_from([2**32, 2**63 - 1, 2**63, 2**64 - 1]),
                st.integers(0, 2**64 - 1))
ROUNDS = st.one_of(st.just(0), st.integers(1, 3), st.just(2**64 - 1))
ENUMS = st.one_of(st.integers(0, 7), st.sampled_from([-1, 99, 2**31 - 1, -(2**31)]))


@functools.cache
def zstd_bomb(declare_size: bool, size: int = 64 << 20) -> bytes:
    """One zstd frame of `size` zero bytes (a few KB), with or without its content size."""
    cctx = zstandard.ZstdCompressor(level=1, write_content_size=declare_size)
    obj = cctx.compressobj(size=size if declare_size else -1)
    block = bytes(1 << 20)
    out = [obj.compress(block) for _ in range(size >> 20)]
    return b"".join(out) + obj.flush()


# ------------------------------------------------------------------ the sites


@dataclass
class Target:
    """What the strategies know about one site: its live sessions and their dimensions."""

    name: str
    features: int
    fingerprint: str
    dims: dict[str, int]  # live session -> vector dimension
    peers: tuple = (None,)

    @property
    def live(self) -> list[str]:
        return sorted(self.dims)


@pytest.fixture(scope="module")
def fuzz_data(tmp_path_factory):
    """One DC of synthetic CTR data: 800 rows, 2^8 hashed features (+ numeric)."""
    out = tmp_path_factory.mktemp("fuzz-data")
    write_regional(RegionalCTRConfig(regions=(SITE,), rows_per_region=800,
                                     test_rows_per_region=10, hash_bits=8, seed=11), out)
    return site_dirs(out)[SITE]


@pytest.fixture(scope="module")
def fuzz_cluster(fuzz_data, tmp_path_factory):
    config = SiteConfig(name=SITE, region=SITE, insecure=True, data=DataConfig(path=fuzz_data),
                        executor=ExecutorConfig(shards=2, threads=2),
                        policy=Policy(allow_raw_export=True))
    with LocalCluster([config], tmp_path_factory.mktemp("fuzz-site"), insecure=True) as c:
        yield c


class RawSite:
    """A site reached over gRPC with identity serializers: requests and replies are bytes."""

    def __init__(self, address: str):
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 128 << 20)])
        self._calls = {}

    def call(self, method: str, payloads: list[bytes], timeout: float = CALL_TIMEOUT,
             path: str | None = None) -> list[bytes]:
        """The reply messages' bytes; grpc.RpcError on a failed call."""
        _, _, client_streams, server_streams, *_ = METHODS.get(method, (None, None, False, False))
        path = path or SERVICE + method
        kind = {(False, False): "unary_unary", (False, True): "unary_stream",
                (True, False): "stream_unary", (True, True): "stream_stream"}[
                    (client_streams, server_streams)]
        key = (path, kind)
        if key not in self._calls:
            self._calls[key] = getattr(self.channel, kind)(path)
        rpc = self._calls[key]
        request = iter(payloads) if client_streams else payloads[0]
        out = rpc(request, timeout=timeout)
        return list(out) if server_streams else [out]

    def send(self, method: str, messages: list) -> list:
        """Typed: request messages in, parsed reply messages out."""
        reply = METHODS[method][1]
        return [reply.FromString(b) for b in self.call(
            method, [m.SerializeToString() for m in messages])]

    def close(self) -> None:
        self.channel.close()


def in_process_sender(service: SiteService, peer: str | None = None):
    def send(method: str, messages: list) -> list:
        request = iter(messages) if METHODS[method][2] else messages[0]
        return list(service.handle(method, request, peer))
    return send


def open_live_sessions(send, describe: pb.DescribeReply) -> dict[str, int]:
    """Three long-lived sessions the fuzz aims at: plain float64; support-restricted with
    qint8 + zstd replies; a 50% sample with top-k (error feedback) up-compression."""
    base = dict(features=describe.features, job="fuzz",
                feature_space_fingerprint=describe.feature_space_fingerprint)
    requests = [
        pb.PrepareRequest(loss="logistic", lam=1e-3, **base),
        pb.PrepareRequest(loss="squared_hinge", lam=1e-2, restrict_to_support=True,
                          reply_format=pb.WireFormat(dtype=pb.QINT8, compression=pb.ZSTD,
                                                     allow_sparse=True), **base),
        pb.PrepareRequest(loss="squared", lam=0.0, sample_fraction=0.5,
                          reply_format=pb.WireFormat(dtype=pb.FLOAT16, allow_sparse=True),
                          up_compression='{"kind": "top_k", "fraction": 0.1, '
                                         '"error_feedback": true}', **base),
    ]
    dims = {}
    for req in requests:
        first = send("Prepare", [req])[0]
        dims[first.session] = first.support_size or describe.features
    return dims


def reference_job(send, describe: pb.DescribeReply) -> tuple:
    """The numbers of a small real job: Prepare, Evaluate (gradient and Hessian-vector
    product) at a fixed point, a line search along minus the gradient, Close."""
    d = describe.features
    first = send("Prepare", [pb.PrepareRequest(
        loss="logistic", lam=1e-3, features=d, job="reference",
        feature_space_fingerprint=describe.feature_space_fingerprint)])[0]
    rng = np.random.default_rng(7)
    w, v = 0.05 * rng.standard_normal(d), rng.standard_normal(d)
    fmt = WireFormat()
    head = pb.EvaluateRequest(session=first.session, want_gradient=True, want_hvp=True,
                              has_w=True)
    replies = send("Evaluate", list(with_chunks(
        head, itertools.chain(encode_vector(w, 0, fmt), encode_vector(v, 1, fmt)),
        pb.EvaluateRequest)))
    vectors = VectorAssembler({0: d, 1: d})
    for r in replies:
        if r.HasField("chunk"):
            vectors.add(r.chunk)
    grad = vectors.result(0)
    line = send("LineSearch", list(with_chunks(
        pb.LineSearchRequest(session=first.session, step_sizes=[0.25, 1.0]),
        encode_vector(-grad, 0, fmt), pb.LineSearchRequest)))[0]
    send("Close", [pb.CloseRequest(session=first.session)])
    return (first.rows, replies[0].loss_sum, replies[0].rows, grad.tobytes(),
            vectors.result(1).tobytes(), tuple(line.loss_sums), tuple(line.derivative_sums))


# ------------------------------------------------------------------ strategies


def one_in(draw, n: int) -> bool:
    """True about once in n draws (hypothesis favours small and boundary integers, so the
    value that means True sits in the middle of the range). Throughout, the first choice
    of a strategy (hypothesis' simplest) is the well-formed one, so that most inputs get
    past the first check and reach deeper code."""
    return draw(st.integers(0, n - 1)) == n // 2


def mostly(draw, good, bad, n: int = 5):
    """A draw from `good`, except about once in n draws from `bad` (one hostile field in
    every message would stop nearly all of them at the first check)."""
    return draw(bad) if one_in(draw, n) else draw(good)


def expected_slots(proc, params_json: str) -> int:
    """The input vectors ``proc`` expects with these parameters (1 when unknown)."""
    try:
        params = json.loads(params_json or "{}")
        return proc.slots(params) if proc and isinstance(params, dict) else 1
    except (ValueError, TypeError, RecursionError):
        return 1


@st.composite
def vector_values(draw, n: int) -> np.ndarray:
    """n values: zeros, normal at some scale, huge, subnormal or sparse; maybe NaN/Inf."""
    kind = draw(st.sampled_from(["normal", "zeros", "normal", "huge", "tiny", "sparse"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if kind == "zeros":
        v = np.zeros(n)
    elif kind == "normal":
        v = rng.standard_normal(n) * draw(st.sampled_from([1e-3, 0.1, 1.0, 1e3]))
    elif kind == "huge":
        v = rng.choice([-1.0, 1.0], n) * draw(st.sampled_from([1e30, F32_MAX, 1e300, F64_MAX]))
    elif kind == "tiny":
        v = rng.standard_normal(n) * 1e-310
    else:
        v = np.zeros(n)
        idx = rng.choice(n, size=min(n, 5), replace=False) if n else []
        v[idx] = rng.standard_normal(len(idx))
    if n and one_in(draw, 6):
        for _ in range(draw(st.integers(1, 3))):
            v[draw(st.integers(0, n - 1))] = draw(st.sampled_from([NAN, INF, -INF]))
    return v


def _raw_chunks(v: np.ndarray, slot: int, fmt: WireFormat, draw) -> list[pb.VectorChunk]:
    """Chunks of v as encode_vector would lay them out, but without its finiteness check:
    NaN and Inf go on the wire (QINT8: a non-finite or negative scale, or code -128)."""
    code = {"float64": pb.FLOAT64, "float32": pb.FLOAT32, "float16": pb.FLOAT16,
            "bfloat16": pb.BFLOAT16, "qint8": pb.QINT8}[fmt.dtype]
    per = max(1, fmt.chunk_bytes // fmt.itemsize)
    out = []
    with np.errstate(all="ignore"):
        for start in range(0, max(1, len(v)), per):
            x = v[start:start + per]
            if code == pb.FLOAT64:
                data = x.astype("<f8").tobytes()
            elif code == pb.FLOAT32:
                data = x.astype("<f4").tobytes()
            elif code == pb.FLOAT16:
                data = x.astype("<f2").tobytes()
            elif code == pb.BFLOAT16:
                data = (x.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
            else:
                scale = draw(st.sampled_from([NAN, INF, -1.0, -0.0, 1.0]))
                codes = np.clip(np.nan_to_num(x), -128, 127).astype("i1")
                if len(codes) and draw(st.booleans()):
                    codes[0] = -128
                data = (np.float32(scale).astype("<f4").tobytes() if len(x) else b"") + \
                    codes.tobytes()
            compression = pb.NONE
            if fmt.compression == "zstd" and data:
                data, compression = zstandard.ZstdCompressor().compress(data), pb.ZSTD
            out.append(pb.VectorChunk(slot=slot, start=start, count=len(x), dtype=code,
                                      layout=pb.DENSE, compression=compression, data=data))
    return out


CHUNK_MUTATIONS = ("drop", "cut_stream", "duplicate", "swap", "slot", "start", "count", "nnz",
                   "dtype", "layout", "compression", "flip", "cut", "extend", "random_data",
                   "bomb", "zstd_garbage", "sparse_offsets")


@st.composite
def mutated_chunks(draw, chunks: list[pb.VectorChunk]) -> list[pb.VectorChunk]:
    """Up to three hostile edits of a chunk list (headers, payload bytes, order, count)."""
    chunks = [pb.VectorChunk.FromString(c.SerializeToString()) for c in chunks]
    for op in draw(st.lists(st.sampled_from(CHUNK_MUTATIONS), max_size=3)):
        if not chunks:
            break
        i = draw(st.integers(0, len(chunks) - 1))
        c = chunks[i]
        if op == "drop":
            del chunks[i]
        elif op == "cut_stream":
            del chunks[i:]
        elif op == "duplicate":
            chunks.insert(i, pb.VectorChunk.FromString(c.SerializeToString()))
        elif op == "swap":
            j = draw(st.integers(0, len(chunks) - 1))
            chunks[i], chunks[j] = chunks[j], chunks[i]
        elif op in ("slot", "count", "nnz"):
            setattr(c, op, draw(st.one_of(U32, st.integers(0, 3))))
        elif op == "start":
            c.start = draw(st.one_of(U64, st.sampled_from([c.start + 1, max(0, c.start - 1)])))
        elif op in ("dtype", "layout", "compression"):
            setattr(c, op, draw(ENUMS))
        elif op == "flip" and c.data:
            pos = draw(st.integers(0, len(c.data) - 1))
            data = bytearray(c.data)
            data[pos] ^= 1 << draw(st.integers(0, 7))
            c.data = bytes(data)
        elif op == "cut":
            c.data = c.data[:draw(st.integers(0, max(0, len(c.data) - 1)))]
        elif op == "extend":
            c.data += draw(st.binary(min_size=1, max_size=16))
        elif op == "random_data":
            c.data = draw(st.binary(max_size=512))
        elif op == "bomb":
            c.compression, c.data = pb.ZSTD, zstd_bomb(draw(st.booleans()))
        elif op == "zstd_garbage":
            c.compression = pb.ZSTD
            c.data = zstandard.ZstdCompressor().compress(draw(st.binary(max_size=256)))
        elif op == "sparse_offsets":  # offsets out of range or not increasing
            nnz = draw(st.integers(1, 4))
            near_end = st.integers(0, min(c.count + 2, 2**32 - 1))  # count may be U32's max
            offsets = draw(st.lists(st.one_of(near_end, U32),
                                    min_size=nnz, max_size=nnz))
            c.layout, c.nnz, c.compression = pb.SPARSE, nnz, pb.NONE
            c.data = np.asarray(offsets, "<u4").tobytes() + bytes(nnz * 8)
            c.dtype = pb.FLOAT64
    return chunks


@st.composite
def vector_chunks(draw, slot: int, dim: int) -> tuple[list[pb.VectorChunk], float]:
    """One vector in `slot`: usually `dim` values, encoded in some wire format, sometimes
    with hostile edits; and the largest finite magnitude among the values."""
    n = mostly(draw, st.just(dim), st.one_of(st.sampled_from([0, max(0, dim - 1), dim + 1]),
                                             st.integers(0, 2 * dim)), 6)
    v = draw(vector_values(n))
    fmt = WireFormat(draw(st.sampled_from(["float64", "float32", "float16", "bfloat16",
                                           "qint8"])),
                     draw(st.sampled_from(["none", "zstd"])), draw(st.booleans()),
                     chunk_bytes=draw(st.sampled_from([256, 1000, 1 << 20])))
    if np.all(np.isfinite(v)):
        chunks = list(encode_vector(v, slot, fmt))
    else:
        chunks = _raw_chunks(v, slot, fmt, draw)
    if one_in(draw, 4):
        chunks = draw(mutated_chunks(chunks))
    if not chunks:  # every chunk dropped: no vector is sent, so none can be too large
        return chunks, 0.0
    finite = np.abs(v[np.isfinite(v)])
    if fmt.dtype != "float64":  # narrower formats cannot carry a value beyond float32's range
        finite = finite[finite <= F32_MAX]
    return chunks, float(finite.max()) if finite.size else 0.0


@st.composite
def session_of(draw, target: Target) -> tuple[str, int]:
    """A live session (most of the time) or a made-up one, with the dimension to send."""
    if target.live and not one_in(draw, 5):
        sid = draw(st.sampled_from(target.live))
        return sid, target.dims[sid]
    return draw(st.one_of(st.just(""), st.text(max_size=40))), draw(
        st.sampled_from([target.features, 1, 0]))


def stream(cls, head: dict, chunks: list[pb.VectorChunk], draw) -> list:
    """A client stream: the header message carrying the first chunk (sometimes alone),
    then one message per chunk; sometimes the chunk messages repeat (ignored) header
    fields."""
    msgs = [cls(**head)]
    rest = chunks
    if chunks and not one_in(draw, 8):
        msgs[0].chunk.CopyFrom(chunks[0])
        rest = chunks[1:]
    noisy = one_in(draw, 6)
    for c in rest:
        m = cls(chunk=c)
        if noisy:
            m.session = draw(st.text(max_size=8))
        msgs.append(m)
    return msgs


PARAM_KEYS = ("max_iter", "gtol", "epochs", "batch_size", "eta0", "decay", "t0", "seed",
              "iteration", "rho", "n_total", "eta", "mu", "inner_iterations", "inner_gtol")
JSON_VALUES = st.one_of(st.integers(-3, 50), st.integers(-(2**70), 2**70), FLOATS,
                        st.booleans(), st.none(), st.text(max_size=6),
                        st.lists(st.integers(), max_size=2))
WORK_CAPS = {"epochs": 2, "max_iter": 25, "inner_iterations": 25}  # keep calls short


def _cap_work(params: dict) -> dict:
    """Valid but expensive values (10,000 epochs of SGD) would only slow the fuzz down."""
    for key, cap in WORK_CAPS.items():
        v = params.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v > cap:
            params[key] = cap
    return params


def nesting(n: int) -> str:
    return "[" * n + "]" * n


GOOD_PARAMS = st.fixed_dictionaries({}, optional={  # filtered to the procedure's names
    "max_iter": st.integers(1, 25), "gtol": st.floats(0, 1), "epochs": st.integers(1, 2),
    "batch_size": st.integers(1, 1000), "eta0": st.floats(1e-6, 10), "mu": st.floats(0, 10),
    "iteration": st.integers(0, 3), "rho": st.floats(1e-3, 10), "seed": st.integers(0, 2**63 - 1),
    "inner_iterations": st.integers(1, 10), "eta": st.floats(1e-3, 2),
})
PARAMS_JSON = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(PARAM_KEYS), st.text(max_size=6)), JSON_VALUES,
                    max_size=4).map(_cap_work).map(json.dumps),
    st.just(""),
    st.sampled_from(["null", "[]", "1", '"x"', "NaN", "Infinity", "{", '{"max_iter":', "\x00"]),
    st.text(max_size=40),
    st.integers(1, 400).map(nesting),
    st.integers(900, 60_000).map(nesting),  # deeper than Python's recursion limit
)
COMPRESSION_KEYS = ("kind", "dtype", "k", "fraction", "chunk_elements", "stochastic", "seed",
                    "steps", "error_feedback")
UP_COMPRESSION = st.one_of(
    st.just(""),
    st.sampled_from(['{"kind": "cast", "dtype": "float16"}', '{"kind": "quantize_int8"}',
                     '{"kind": "quantize_int8", "chunk_elements": 1, "stochastic": true}',
                     '{"kind": "top_k", "k": 100000, "error_feedback": true}',
                     '{"kind": "chain", "steps": [{"kind": "top_k", "fraction": 1e-300}, '
                     '{"kind": "cast", "dtype": "bfloat16"}]}']),
    st.dictionaries(st.sampled_from(COMPRESSION_KEYS),
                    st.one_of(JSON_VALUES, st.sampled_from(["top_k", "cast", "chain",
                                                            "float16", "quantize_int8"])),
                    max_size=4).map(json.dumps),
    st.text(max_size=40),
    st.integers(900, 60_000).map(nesting),
)


@dataclass
class Call:
    """One fuzz input: an RPC, its request messages and (in process) the caller's identity."""

    method: str
    messages: list
    peer: str | None = None
    payloads: list[bytes] | None = None  # the bytes actually sent over gRPC
    path: str | None = None  # a method path other than the Site service's
    peak: float = 0.0  # the largest finite magnitude in the vectors sent
    edited: bool = False  # bytes edited after serialization


@st.composite
def structured_call(draw, target: Target, method: str) -> Call:
    """Well-formed protobuf messages of `method` with hostile field values."""
    peer = draw(st.sampled_from(target.peers))
    if method == "Describe":
        return Call(method, [pb.DescribeRequest()], peer)
    if method == "Prepare":
        req = pb.PrepareRequest(
            loss=mostly(draw, st.sampled_from(sorted(LOSSES)), st.text(max_size=12)),
            lam=mostly(draw, st.floats(0, 1), FLOATS),
            feature_space_fingerprint=mostly(draw, st.just(target.fingerprint),
                                             st.text(max_size=30), 8),
            features=mostly(draw, st.just(target.features), U64, 8),
            restrict_to_support=draw(st.booleans()),
            job=draw(st.text(max_size=20)),
            up_compression=mostly(draw, st.just(""), UP_COMPRESSION, 2),
            sample_fraction=mostly(draw, st.one_of(st.just(0.0), st.floats(0, 1)), FLOATS))
        if one_in(draw, 3):
            req.reply_format.CopyFrom(pb.WireFormat(
                dtype=mostly(draw, st.integers(1, 6), ENUMS, 3),
                compression=mostly(draw, st.integers(1, 2), ENUMS, 3),
                allow_sparse=draw(st.booleans())))
        return Call(method, [req], peer)
    if method == "Export":
        sid, _ = draw(session_of(target))
        # below a row's size, every row is its own Arrow stream: rare, as that is slow
        size = draw(st.integers(1, 4095) if one_in(draw, 10) else st.one_of(
            st.sampled_from([0, 4096, 2**32 - 1]), st.integers(1 << 12, 2**32 - 1)))
        return Call(method, [pb.ExportRequest(session=sid, max_chunk_bytes=size)], peer)
    if method == "Close":
        sid = mostly(draw, st.just(FRESH), st.text(max_size=40), 2)
        return Call(method, [pb.CloseRequest(session=sid)], peer)
    if one_in(draw, 31):
        return Call(method, [], peer)  # a client stream without any message
    sid, dim = draw(session_of(target))
    head = {"session": sid, "round": mostly(draw, st.just(0), ROUNDS, 3)}
    chunks: list[pb.VectorChunk] = []
    if method == "Evaluate":
        head.update(want_gradient=not one_in(draw, 3), want_hvp=draw(st.booleans()),
                    has_w=not one_in(draw, 3), full_precision=draw(st.booleans()),
                    has_direction=one_in(draw, 4))
        if draw(st.booleans()):
            head["step"] = mostly(draw, st.floats(-2, 2), FLOATS, 3)
        slots = [s for s, wanted in ((0, head["has_w"]), (1, head["want_hvp"]),
                                     (2, head["has_direction"])) if wanted or one_in(draw, 7)]
    elif method == "LineSearch":
        head["step_sizes"] = mostly(draw, st.lists(st.floats(-2, 2), min_size=1, max_size=4),
                                    st.one_of(st.lists(FLOATS, max_size=6),
                                              st.integers(1020, 1030).map(lambda n: [0.5] * n)))
        slots = [] if one_in(draw, 3) else [0]
    elif method == "LocalSolve":
        head["procedure"] = mostly(draw, st.sampled_from(sorted(PROCEDURES)),
                                   st.text(max_size=16), 8)
        known = PROCEDURE_PARAMS.get(head["procedure"], {})  # others: unknown names
        good = GOOD_PARAMS.map(lambda p: json.dumps({k: v for k, v in p.items() if k in known}))
        head["params_json"] = mostly(draw, good, PARAMS_JSON, 3)
        proc = PROCEDURES.get(head["procedure"])
        slots = list(range(mostly(draw, st.just(expected_slots(proc, head["params_json"])),
                                  st.integers(0, 3), 6)))
    else:  # Subspace
        head.update(new_directions=mostly(draw, st.integers(0, 3),
                                          st.sampled_from([64, 65, 2**32 - 1]), 8),
                    add_last_local_input=one_in(draw, 3),
                    coefficients=mostly(draw, st.one_of(st.just([]), st.lists(
                        st.floats(-1, 1), max_size=6)), st.lists(FLOATS, max_size=6)),
                    commit=one_in(draw, 3),
                    memory=mostly(draw, st.integers(0, 5), st.sampled_from([64, 65, 2**32 - 1])))
        slots = list(range(min(head["new_directions"], 3)))
        if one_in(draw, 5):
            slots = list(range(draw(st.integers(0, 4))))
    if one_in(draw, 9):
        slots.append(draw(st.one_of(st.integers(2, 70), st.just(2**32 - 1))))  # unknown slot
    peak = 0.0
    for slot in slots:
        more, top = draw(vector_chunks(slot, dim))
        chunks += more
        peak = max(peak, top)
    if len(chunks) > 1 and one_in(draw, 9):
        chunks = draw(st.permutations(chunks))
    cls = METHODS[method][0]
    return Call(method, stream(cls, head, chunks, draw), peer, peak=peak)


# byte-level edits of one serialized message (gRPC only)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@st.composite
def injected_field(draw) -> bytes:
    """One encoded protobuf field: a known or unknown number, any wire type (also the
    invalid ones), a value that may lie about its length."""
    number = draw(st.one_of(st.integers(1, 12), st.integers(1, 2**29 - 1)))
    wire = draw(st.sampled_from([0, 0, 1, 2, 2, 2, 5, 3, 4, 6, 7]))
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(draw(st.one_of(st.integers(0, 2**64 - 1), st.just(2**64 - 1))))
    if wire == 1:
        return key + draw(st.binary(min_size=8, max_size=8))
    if wire == 5:
        return key + draw(st.binary(min_size=4, max_size=4))
    if wire == 2:
        body = draw(st.one_of(st.binary(max_size=64),
                              st.builds(lambda c: c.SerializeToString(), st.builds(
                                  pb.VectorChunk, slot=U32, start=U64, count=U32,
                                  dtype=ENUMS, layout=ENUMS, compression=ENUMS, nnz=U32,
                                  data=st.binary(max_size=64)))))
        length = draw(st.one_of(st.just(len(body)), st.integers(0, 2**32)))
        return key + _varint(length) + body
    return key + draw(st.binary(max_size=8))


@st.composite
def byte_edit(draw, data: bytes) -> bytes:
    op = draw(st.sampled_from(["flip", "cut", "insert", "inject", "inject", "double"]))
    if op == "flip" and data:
        pos = draw(st.integers(0, len(data) - 1))
        b = bytearray(data)
        b[pos] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if op == "cut" and data:
        return data[:draw(st.integers(0, len(data) - 1))]
    if op == "insert":
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + draw(st.binary(min_size=1, max_size=8)) + data[pos:]
    if op == "double":
        return data + data  # parses as the merge of two copies
    return data + draw(injected_field())


@st.composite
def grpc_call(draw, target: Target, method: str) -> Call:
    """A structured call, its bytes edited or not, or random bytes; rarely a wrong path."""
    kind = draw(st.sampled_from(["structured"] * 5 + ["edited"] * 3 + ["random"]))
    if kind == "random":
        streams = METHODS[method][2]
        payloads = draw(st.lists(st.binary(max_size=300), min_size=1,
                                 max_size=4 if streams else 1))
        call = Call(method, [], payloads=payloads)
    else:
        call = draw(structured_call(target, method))
        call.payloads = [m.SerializeToString() for m in call.messages]
        fresh = method == "Close" and call.messages[0].session == FRESH
        if kind == "edited" and call.payloads and not fresh:
            i = draw(st.integers(0, len(call.payloads) - 1))
            call.payloads[i] = draw(byte_edit(call.payloads[i]))
            call.edited = True
    if one_in(draw, 61):
        call.path = draw(st.sampled_from(["/geodml.site.v1.Site/Nope", "/other.Service/Describe",
                                          "/geodml.site.v1.Site/describe"]))
    return call


# ------------------------------------------------------------------ running and judging


@dataclass
class Tally:
    tried: Counter = field(default_factory=Counter)
    answered: Counter = field(default_factory=Counter)  # calls that succeeded, per RPC
    outcomes: Counter = field(default_factory=Counter)

    def ok(self, call: Call) -> None:
        self.answered[call.method] += 1
        self.outcomes["OK"] += 1
        assert not (call.method in ("LineSearch", "Subspace", "LocalSolve")
                    and call.peak > F32_MAX and not call.edited), (  # the site is float32
            f"{call.method}: a vector beyond float32's range was accepted: {call!r}")

    def line(self) -> str:
        return "per RPC: " + ", ".join(f"{m} {self.tried[m]} ({self.answered[m]} ok)"
                                      for m in METHODS)


def judge(call: Call, code: str, details: str, site: str, tally: Tally) -> None:
    """Fail unless the refusal is an expected status with a message naming the site."""
    tally.outcomes[code] += 1
    framework = code == "UNIMPLEMENTED" and call.path is not None
    assert code in EXPECTED, f"{call.method}: status {code} ({details!r}) for {call!r}"
    assert details, f"{call.method}: status {code} without a message for {call!r}"
    assert framework or details.startswith(f"site {site}:"), (
        f"{call.method}: message {details!r} does not name the site; {call!r}")


def fuzz_for(seconds: float, batch: int, strategy_for, body, between_batches) -> float:
    """Run `body` on examples of `strategy_for(method)` until `seconds` pass (and at least
    one batch per RPC), in batches of `batch` examples that cycle through the RPCs (one
    hypothesis run per batch, with a fresh random seed); returns the time taken. Sessions
    live on from batch to batch, so every RPC also meets the state the others left."""

    def runner(method: str):
        @settings(max_examples=batch, deadline=None, database=None, print_blob=True,
                  phases=(Phase.generate, Phase.shrink),
                  suppress_health_check=list(HealthCheck))
        @given(strategy_for(method))
        def run(example):
            body(example)
        return run

    runs = [runner(method) for method in METHODS]
    start = time.monotonic()
    for i, run in enumerate(itertools.cycle(runs)):
        if i >= len(runs) and time.monotonic() - start >= seconds:
            break
        run()
        between_batches()
    return time.monotonic() - start


def _close_quietly(send, session: str) -> None:
    with contextlib.suppress(grpc.RpcError, SiteError):
        send("Close", [pb.CloseRequest(session=session)])


# ------------------------------------------------------------------ the gRPC pass


@pytest.mark.slow
def test_fuzz_site_server_over_grpc_answers_every_input_with_a_clear_status(
        fuzz_cluster, capsys):
    site = fuzz_cluster.sites[SITE]
    raw = RawSite(site.address)
    describe = raw.send("Describe", [pb.DescribeRequest()])[0]
    reference = reference_job(raw.send, describe)
    target = Target(SITE, describe.features, describe.feature_space_fingerprint,
                    open_live_sessions(raw.send, describe))
    tally = Tally()

    def body(call: Call) -> None:
        tally.tried[call.method] += 1
        payloads = list(call.payloads)
        fresh = None
        if call.method == "Close" and call.messages and call.messages[0].session == FRESH:
            fresh = raw.send("Prepare", [pb.PrepareRequest(
                loss="logistic", features=describe.features,
                feature_space_fingerprint=describe.feature_space_fingerprint)])[0].session
            payloads = [pb.CloseRequest(session=fresh).SerializeToString()]
        try:
            replies = raw.call(call.method, payloads, path=call.path)
        except grpc.RpcError as e:
            judge(call, e.code().name, e.details() or "", SITE, tally)
            return
        tally.ok(call)
        parsed = [METHODS[call.method][1].FromString(r) for r in replies]
        if call.method == "Prepare":  # keep the site below its session limit
            _close_quietly(raw.send, parsed[0].session)
        if fresh is not None:  # closed: a second Close finds nothing
            with pytest.raises(grpc.RpcError) as err:
                raw.send("Close", [pb.CloseRequest(session=fresh)])
            assert err.value.code() == grpc.StatusCode.NOT_FOUND

    honest = RawSite(site.address)  # a well-behaved coordinator, working alongside
    jobs: list[tuple[threading.Thread, list]] = []

    def honest_job_done() -> None:
        thread, result = jobs.pop()
        thread.join(4 * CALL_TIMEOUT)
        assert not thread.is_alive(), "a real job hangs while the site is fuzzed"
        assert result == [reference], f"a real job during the fuzzing: {result}"

    def between_batches() -> None:
        assert site.process.poll() is None, "the site server died"
        assert raw.send("Describe", [pb.DescribeRequest()])[0].site == SITE
        if jobs:
            honest_job_done()
        result: list = []

        def job():
            try:
                result.append(reference_job(honest.send, describe))
            except Exception as e:  # reported by honest_job_done
                result.append(e)

        jobs.append((threading.Thread(target=job, daemon=True), result))
        jobs[-1][0].start()  # runs during the next batch

    elapsed = fuzz_for(0.6 * FUZZ_SECONDS, 15, lambda m: grpc_call(target, m), body,
                       between_batches)
    honest_job_done()
    honest.close()
    assert site.process.poll() is None, "the site server died"
    for sid in target.live:  # the live sessions survived everything thrown at them
        raw.send("Close", [pb.CloseRequest(session=sid)])
    assert reference_job(raw.send, describe) == reference
    raw.close()
    with capsys.disabled():
        print(f"\nfuzz over gRPC: {sum(tally.tried.values())} inputs in {elapsed:.1f} s, "
              f"server crashes: 0; {tally.line()}; statuses: {dict(tally.outcomes)}")
    assert tally.outcomes["OK"] > 0 and tally.outcomes["INVALID_ARGUMENT"] > 0
    assert all(tally.tried[m] > 0 for m in METHODS)


def test_oversized_and_abandoned_requests_leave_the_server_serving(fuzz_cluster):
    """A message beyond the 64 MiB limit is refused with RESOURCE_EXHAUSTED; a client that
    abandons a stream after its header (cancel) does not disturb the server."""
    site = fuzz_cluster.sites[SITE]
    raw = RawSite(site.address)
    describe = raw.send("Describe", [pb.DescribeRequest()])[0]
    big = pb.EvaluateRequest(session="x", chunk=pb.VectorChunk(data=bytes((64 << 20) + 16)))
    with pytest.raises(grpc.RpcError) as err:
        raw.call("Evaluate", [big.SerializeToString()])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    first = raw.send("Prepare", [pb.PrepareRequest(
        loss="logistic", features=describe.features,
        feature_space_fingerprint=describe.feature_space_fingerprint)])[0]
    for method in ("Evaluate", "LineSearch", "LocalSolve", "Subspace"):
        sent, release = threading.Event(), threading.Event()
        head = METHODS[method][0](session=first.session)  # valid: the site waits for more
        if method == "LocalSolve":
            head.procedure = "local_minimize"

        def requests(head=head, sent=sent, release=release):
            yield head.SerializeToString()
            sent.set()
            release.wait(CALL_TIMEOUT)

        rpc = getattr(raw.channel, "stream_stream" if METHODS[method][3] else
                      "stream_unary")(SERVICE + method)
        if METHODS[method][3]:
            call = rpc(requests(), timeout=CALL_TIMEOUT)
        else:
            call = rpc.future(requests(), timeout=CALL_TIMEOUT)
        assert sent.wait(CALL_TIMEOUT)
        call.cancel()
        release.set()
        with pytest.raises((grpc.RpcError, grpc.FutureCancelledError)):
            list(call) if METHODS[method][3] else call.result()
        assert site.process.poll() is None
        assert raw.send("Describe", [pb.DescribeRequest()])[0].site == SITE
    raw.send("Close", [pb.CloseRequest(session=first.session)])
    raw.close()


# ------------------------------------------------------------------ the in-process pass


@pytest.mark.slow
def test_fuzz_site_service_in_process_raises_only_site_errors(fuzz_data, capsys):
    data = load_dataset(fuzz_data)
    services = {
        SITE: SiteService(SITE, SITE, data, Policy(allow_raw_export=True), shards=2, threads=2),
        STRICT_SITE: SiteService(STRICT_SITE, SITE, data, Policy(
            share_support=False, min_rows_per_aggregate=200,
            allowed_clients=["coordinator"])),
    }
    peers = {SITE: (None,), STRICT_SITE: ("coordinator",) * 3 + (None, "mallory")}
    targets, references = {}, {}
    for name, service in services.items():
        send = in_process_sender(service, "coordinator")
        describe = send("Describe", [pb.DescribeRequest()])[0]
        references[name] = reference_job(send, describe)
        dims = {}
        if name == SITE:
            dims = open_live_sessions(send, describe)
        else:  # no support sharing here: two plain sessions
            for lam in (1e-3, 0.0):
                first = send("Prepare", [pb.PrepareRequest(
                    loss="logistic", lam=lam, features=describe.features,
                    feature_space_fingerprint=describe.feature_space_fingerprint)])[0]
                dims[first.session] = describe.features
        targets[name] = Target(name, describe.features, describe.feature_space_fingerprint,
                               dims, peers[name])
    tally = Tally()

    @st.composite
    def any_call(draw, method: str):
        name = draw(st.sampled_from([SITE, SITE, SITE, STRICT_SITE]))
        return name, draw(structured_call(targets[name], method))

    def body(example) -> None:
        name, call = example
        service = services[name]
        tally.tried[call.method] += 1
        messages, fresh = call.messages, None
        if call.method == "Close" and messages[0].session == FRESH:
            fresh = in_process_sender(service, "coordinator")("Prepare", [pb.PrepareRequest(
                loss="logistic", features=targets[name].features,
                feature_space_fingerprint=targets[name].fingerprint)])[0].session
            messages = [pb.CloseRequest(session=fresh)]
        request = iter(messages) if METHODS[call.method][2] else messages[0]
        try:
            replies = list(service.handle(call.method, request, call.peer))
        except SiteError as e:
            judge(call, e.code, str(e), name, tally)
            return
        except RecursionError as e:
            judge(call, "INTERNAL", f"RecursionError: {e}", name, tally)
            return
        tally.ok(call)
        if call.method == "Prepare":
            _close_quietly(in_process_sender(service, "coordinator"), replies[0].session)
        if fresh is not None:  # closed: a second Close finds nothing
            with pytest.raises(SiteError, match="unknown session") as err:
                list(service.handle("Close", pb.CloseRequest(session=fresh), "coordinator"))
            assert err.value.code == "NOT_FOUND"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow in hostile arithmetic
        elapsed = fuzz_for(0.4 * FUZZ_SECONDS, 30, any_call, body, lambda: None)
    for name, service in services.items():
        assert set(targets[name].live) <= set(service.sessions)
        assert reference_job(in_process_sender(service, "coordinator"), in_process_sender(
            service, "coordinator")("Describe", [pb.DescribeRequest()])[0]) == references[name]
        service.shutdown()
    with capsys.disabled():
        print(f"\nfuzz in process: {sum(tally.tried.values())} inputs in {elapsed:.1f} s; "
              f"{tally.line()}; statuses: {dict(tally.outcomes)}")
    assert tally.outcomes["PERMISSION_DENIED"] > 0 and tally.outcomes["OK"] > 0


# ------------------------------------------------------------------ bugs the fuzz found (fixed)


def test_bug_malformed_protobuf_gets_invalid_argument(fuzz_cluster):
    raw = RawSite(fuzz_cluster.sites[SITE].address)
    try:
        for method, (cls, *_) in METHODS.items():
            for payload in (b"\x10\xff", b"\x0a\x05ab"):  # a varint, a length cut short
                with pytest.raises(DecodeError):
                    cls.FromString(payload)
                with pytest.raises(grpc.RpcError) as err:
                    raw.call(method, [payload])
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                assert err.value.details().startswith(f"site {SITE}:"), method
    finally:
        raw.close()


def _local_solve_with_params(service: SiteService, params_json: str) -> None:
    describe = next(service.handle("Describe", pb.DescribeRequest(), None))
    first = next(service.handle("Prepare", pb.PrepareRequest(
        loss="logistic", lam=1e-3, features=describe.features,
        feature_space_fingerprint=describe.feature_space_fingerprint), None))
    w = next(encode_vector(np.zeros(describe.features), 0, WireFormat()))
    request = pb.LocalSolveRequest(session=first.session, procedure="local_minimize",
                                   params_json=params_json, chunk=w)
    list(service.handle("LocalSolve", iter([request]), None))


def test_bug_deeply_nested_params_json_is_invalid_argument(fuzz_data):
    service = SiteService(SITE, SITE, load_dataset(fuzz_data))
    with pytest.raises(SiteError) as err:
        _local_solve_with_params(service, nesting(100_000))
    assert err.value.code == "INVALID_ARGUMENT"
    assert "params_json" in str(err.value)


def test_deeply_nested_params_json_over_grpc_leaves_the_server_serving(fuzz_cluster):
    """The server survives the RecursionError above (one INTERNAL call), and still serves."""
    site = fuzz_cluster.sites[SITE]
    raw = RawSite(site.address)
    describe = raw.send("Describe", [pb.DescribeRequest()])[0]
    first = raw.send("Prepare", [pb.PrepareRequest(
        loss="logistic", features=describe.features,
        feature_space_fingerprint=describe.feature_space_fingerprint)])[0]
    w = next(encode_vector(np.zeros(describe.features), 0, WireFormat()))
    request = pb.LocalSolveRequest(session=first.session, procedure="local_minimize",
                                   params_json=nesting(100_000), chunk=w)
    with pytest.raises(grpc.RpcError) as err:
        raw.send("LocalSolve", [request])
    assert err.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    assert site.process.poll() is None
    request.params_json = '{"max_iter": 3}'
    assert raw.send("LocalSolve", [request])[0].rows == 800
    raw.send("Close", [pb.CloseRequest(session=first.session)])
    raw.close()


def test_bug_empty_request_stream_names_the_site(fuzz_data):
    service = SiteService(SITE, SITE, load_dataset(fuzz_data))
    for method in ("Evaluate", "LineSearch", "LocalSolve", "Subspace"):
        with pytest.raises(SiteError) as err:
            list(service.handle(method, iter([]), None))
        assert err.value.code == "INVALID_ARGUMENT"
        assert str(err.value).startswith(f"site {SITE}:"), method


def test_bug_cancelled_upload_is_not_logged_as_a_site_failure(fuzz_data, caplog):
    from geodml.site.server import SiteServicer

    service = SiteService(SITE, SITE, load_dataset(fuzz_data))
    describe = next(service.handle("Describe", pb.DescribeRequest(), None))
    session = next(service.handle("Prepare", pb.PrepareRequest(
        loss="logistic", features=describe.features,
        feature_space_fingerprint=describe.feature_space_fingerprint), None)).session
    aborted = []

    class Context:
        def abort(self, code, details):
            aborted.append((code, details))
            raise RuntimeError("aborted")

    def requests():  # what grpcio's request iterator does when the client cancels
        yield pb.EvaluateRequest(session=session, has_w=True).SerializeToString()
        raise grpc.RpcError()

    with caplog.at_level("ERROR", logger="geodml.site"):
        replies = list(SiteServicer(service, tls=False)._replies("Evaluate", requests(),
                                                                 Context()))
    assert replies == []  # nothing to answer a client that went away
    assert not [r for r in caplog.records if "failed" in r.getMessage()]
    assert all(code != grpc.StatusCode.INTERNAL for code, _ in aborted)


def test_bug_line_search_direction_may_start_after_the_header(fuzz_data):
    service = SiteService(SITE, SITE, load_dataset(fuzz_data))
    send = in_process_sender(service)
    describe = send("Describe", [pb.DescribeRequest()])[0]
    d = describe.features
    session = send("Prepare", [pb.PrepareRequest(
        loss="logistic", lam=1e-3, features=d,
        feature_space_fingerprint=describe.feature_space_fingerprint)])[0].session
    fmt = WireFormat(chunk_bytes=1024)  # several chunks
    w = next(encode_vector(np.zeros(d), 0, WireFormat()))
    p = list(encode_vector(np.linspace(-1, 1, d), 0, fmt))
    send("Evaluate", [pb.EvaluateRequest(session=session, has_w=True, chunk=w)])
    usual = send("LineSearch", list(with_chunks(
        pb.LineSearchRequest(session=session, step_sizes=[0.5, 1.0]), iter(p),
        pb.LineSearchRequest)))[0]
    send("Evaluate", [pb.EvaluateRequest(session=session, has_w=True, chunk=w)])
    head = pb.LineSearchRequest(session=session, step_sizes=[0.5, 1.0])  # no chunk
    split = send("LineSearch", [head] + [pb.LineSearchRequest(chunk=c) for c in p])[0]
    assert split == usual


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the overflowing cast in SiteSums
@pytest.mark.parametrize("method", ["LineSearch", "Subspace", "LocalSolve"])
def test_bug_vectors_beyond_float32_range_are_refused_by_every_call(fuzz_data, method):
    data = load_dataset(fuzz_data)
    assert data.X.dtype == np.float32
    service = SiteService(SITE, SITE, data)
    send = in_process_sender(service)
    describe = send("Describe", [pb.DescribeRequest()])[0]
    d = describe.features
    session = send("Prepare", [pb.PrepareRequest(
        loss="logistic", lam=1e-3, features=d,
        feature_space_fingerprint=describe.feature_space_fingerprint)])[0].session
    send("Evaluate", [pb.EvaluateRequest(session=session, has_w=True, chunk=next(
        encode_vector(np.zeros(d), 0, WireFormat())))])
    big = next(encode_vector(np.full(d, 1e39), 0, WireFormat()))  # > 3.4e38, finite
    request = {
        "LineSearch": pb.LineSearchRequest(session=session, step_sizes=[1.0], chunk=big),
        "Subspace": pb.SubspaceRequest(session=session, new_directions=1, chunk=big),
        "LocalSolve": pb.LocalSolveRequest(session=session, procedure="local_minimize",
                                           params_json='{"max_iter": 3}', chunk=big),
    }[method]
    with pytest.raises(SiteError) as err:
        send(method, [request])
    assert err.value.code == "INVALID_ARGUMENT"
    assert "float32" in str(err.value), str(err.value)


def test_the_judge_is_strict():
    """The fuzz passes accept only expected statuses with messages naming the site, and
    no success on an out-of-range vector."""
    good = Call("Close", [], payloads=[pb.CloseRequest(session="s").SerializeToString()])
    tally = Tally()
    with pytest.raises(AssertionError):
        judge(good, "UNKNOWN", "boom", SITE, tally)
    with pytest.raises(AssertionError):
        judge(good, "INTERNAL", "Exception deserializing request!", SITE, tally)
    with pytest.raises(AssertionError):
        judge(good, "NOT_FOUND", "unknown session", SITE, tally)
    judge(good, "NOT_FOUND", f"site {SITE}: unknown session 's'", SITE, tally)
    assert tally.outcomes["NOT_FOUND"] == 2
    tally.ok(Call("LineSearch", [], peak=1e3))
    tally.ok(Call("Evaluate", [], peak=1e39))
    with pytest.raises(AssertionError):
        tally.ok(Call("LineSearch", [], peak=1e39))


@pytest.mark.parametrize("up", ["", '{"kind": "top_k", "fraction": 0.1, "error_feedback": true}'])
def test_bug_a_point_whose_products_overflow_is_refused_naming_the_site(fuzz_data, up):
    """Found by the fuzz: w at float32's largest value overflows the float32 products,
    and the gradient sum is NaN. Error feedback raised a CompressionError (INTERNAL);
    now every session refuses it as INVALID_ARGUMENT, naming the site."""
    service = SiteService(SITE, SITE, load_dataset(fuzz_data))
    send = in_process_sender(service)
    describe = send("Describe", [pb.DescribeRequest()])[0]
    d = describe.features
    session = send("Prepare", [pb.PrepareRequest(
        loss="logistic", lam=1e-3, features=d, up_compression=up,
        feature_space_fingerprint=describe.feature_space_fingerprint)])[0].session
    peak = float(np.finfo(np.float32).max)
    with pytest.raises(SiteError) as err:
        send("Evaluate", [pb.EvaluateRequest(session=session, has_w=True, want_gradient=True,
                                             chunk=next(encode_vector(np.full(d, peak), 0,
                                                                      WireFormat())))])
    assert err.value.code == "INVALID_ARGUMENT"
    assert f"site {SITE}" in str(err.value) and "not finite" in str(err.value)
