"""The Site API, independent of the transport.

:class:`SiteService` turns request messages into reply messages. The gRPC server
(:mod:`geodml.site.server`) and the in-process federation both call it with the
same encoded messages, which is why their byte counts are identical. Each method
takes the caller's identity (certificate common name) for the policy check.

Errors are :class:`SiteError` with a gRPC status name: INVALID_ARGUMENT for a
malformed request (wrong dimension, NaN, garbage bytes), NOT_FOUND for an
unknown session, PERMISSION_DENIED for a policy refusal, FAILED_PRECONDITION for
a call out of order. None of them disturbs other sessions.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from google.protobuf.message import Message

from geodml.compression import CompressionError, from_spec
from geodml.data.dataset import Dataset
from geodml.data.streamed import DEFAULT_BLOCK_NNZ, StreamedRows, release_pages
from geodml.job.compression import UpSender
from geodml.models.losses import Loss, get_loss
from geodml.privacy.dp import (
    PrivacyBudgetError,
    PrivacyLedger,
    PrivacyReplayError,
    clipped_gradient_sum,
    gaussian_noise,
    row_l2_norms,
)
from geodml.privacy.secure_aggregation import (
    FixedPointOverflowError,
    Masker,
    Peer,
    SecureAggregationError,
    public_bytes,
    site_key,
)
from geodml.site.audit import SignedAuditLog
from geodml.site.executor import Executor, ThreadExecutor
from geodml.site.policy import Policy, PolicyError
from geodml.site.procedures import PROCEDURES, ProcedureContext
from geodml.wire.codec import (
    CodecError,
    VectorAssembler,
    WireFormat,
    encode_indices,
    encode_ring,
    encode_vector,
)
from geodml.wire.digest import add_message, message_digest
from geodml.wire.errors import SiteError
from geodml.wire.info import PrivacyBudget, SiteInfo
from geodml.wire.protocol import CONTENT, PROTOCOL_VERSION, pb, with_chunks
from geodml.wire.rows import encode_rows, encode_streamed

CAPABILITIES = ("evaluate", "hvp", "line_search", "local_solve", "export", "support", "step",
                "subspace", "sample", "secure_aggregation", "privacy")
EXPORT_SAMPLE_ROWS = 32768  # rows encoded to estimate the size of a full Export
MAX_SUBSPACE = 64  # directions a subspace may hold
MAX_SESSIONS = 64
MAX_PARAMS_JSON = 65536  # bytes of a LocalSolve's parameters
EXPORT_CHUNK_BYTES = (64 << 10, 32 << 20)  # the range Export's max_chunk_bytes is clamped to


@dataclass(frozen=True)
class RayPlacement:
    """Where a site's Ray executor finds its rows and its cluster."""

    path: str  # the geodml dataset directory the site's data was loaded from
    address: str = "auto"


@dataclass
class Session:
    id: str
    job: str
    loss: Loss
    lam: float
    executor: Executor
    dim: int
    support: np.ndarray | None
    reply_format: WireFormat
    X: sp.csr_matrix | StreamedRows  # the session's rows (support-restricted columns
    # when restricted); streamed: read from the mapped files block by block
    y: np.ndarray
    shards: int = 1
    threads: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: dict = field(default_factory=dict)  # what local procedures keep between calls
    up: UpSender | None = None  # compression of the gradient sums sent up, with its state
    _scratch: Executor | None = None
    # (call, round) -> result of the last round of each call, to answer a retry
    cache: dict[tuple[str, int], tuple] = field(default_factory=dict)
    has_point: bool = False
    masker: Masker | None = None  # secure aggregation: every reply's sums masked
    privacy: pb.PrivacyRequest | None = None  # differential privacy: noisy gradients only
    row_norms: np.ndarray | None = None  # ||x_i||, for per-row clipping

    def scratch(self) -> Executor:
        """A second executor on the same rows, for local procedures: they never move
        the session's point or its cached directions."""
        if self._scratch is None:  # the same blocks or workers, its own state
            self._scratch = self.executor.sibling()
        return self._scratch

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
        self.executor.close()

    def cached(self, call: str, round_id: int) -> tuple | None:
        return self.cache.get((call, round_id)) if round_id else None

    def remember(self, call: str, round_id: int, result: tuple) -> tuple:
        if round_id:
            self.cache = {k: v for k, v in self.cache.items() if k[0] != call}
            self.cache[(call, round_id)] = result
        return result


def read_message_stream(
    requests: Iterable, lengths: Callable[[object], dict[int, int]], site: str,
    float32: bool = False, float32_range: bool = False,
) -> tuple[object, VectorAssembler]:
    """The first (header) message and an assembler holding every chunk of the stream
    (decoding into float32 when the receiver computes in float32; ``float32_range``:
    refuse values a float32 site cannot hold, kept in float64)."""
    it = iter(requests)
    first = next(it, None)
    if first is None:
        raise SiteError("INVALID_ARGUMENT", f"site {site}: empty request stream")
    slots = lengths(first)
    assembler = VectorAssembler(slots, float32_slots=slots if float32 else (),
                                float32_range_slots=slots if float32_range else ())
    for msg in itertools.chain((first,), it):  # one message at a time: bounded memory
        if msg.HasField("chunk"):
            assembler.add(msg.chunk)
    return first, assembler


class SiteService:
    """One DC's rows behind the Site API, with its policy and sessions."""

    def __init__(
        self, name: str, region: str, data: Dataset, policy: Policy | None = None,
        shards: int = 1, threads: int | None = None, ray: RayPlacement | None = None,
        secret: bytes | None = None, privacy_ledger: str | os.PathLike | None = None,
        stream: bool = False, block_nnz: int | None = None,
    ):
        """``ray``: run each session's shards as Ray actors that read the rows from
        ``ray.path`` (the dataset directory ``data`` was loaded from); else threads.

        ``stream``: every session reads its rows block by block from ``data``'s arrays
        (memory-mapped: :func:`geodml.data.store.map_dataset`), releasing each block's
        pages after use, so that the site's resident memory is O(rows) + O(block), not
        O(nnz) (:mod:`geodml.data.streamed`); samples and support restriction are
        applied per block. ``block_nnz``: nonzeros per block (streamed default
        ``DEFAULT_BLOCK_NNZ``; in memory, the same layout gives the same bits).

        ``secret``: bytes only this site knows (its TLS private key), from which its
        secure-aggregation key and its privacy noise are derived, so that a restarted
        site answers a replayed round identically; random when not given.
        ``privacy_ledger``: a file keeping the privacy budget spent (the policy's
        ``dp_epsilon``) across restarts."""
        self.name, self.region, self.data = name, region, data
        self.policy = policy or Policy()
        self.shards, self.threads = shards, threads
        self.ray = ray
        if stream and ray is not None:
            raise ValueError(f"site {name}: streaming runs on the thread executor, not Ray")
        self.stream = stream
        self.block_nnz = (block_nnz or DEFAULT_BLOCK_NNZ) if stream else block_nnz
        if ray is not None:  # connect now, in the site's main thread (Ray needs it)
            from geodml.site.ray_executor import ensure_ray

            ensure_ray(ray.address)
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._support: np.ndarray | None = None
        self._restricted_X: sp.csr_matrix | None = None
        self._export_estimate: int | None = None
        self.fingerprint = self._fingerprint()
        if stream:  # the fingerprint read the edges of the mapped arrays
            release_pages(self.data.X.indices)
            release_pages(self.data.X.data)
        self.audit: SignedAuditLog | None = None  # the site's own signed log, if configured
        self._float32 = self.data.X.dtype == np.float32
        self._secret = secret if secret is not None else os.urandom(32)
        self._secure_key = site_key(self._secret)
        self.ledger = None
        if self.policy.dp_epsilon is not None:
            self.ledger = PrivacyLedger(self.policy.dp_epsilon, self.policy.dp_delta,
                                        privacy_ledger, self._secret)

    # -- data-derived facts --------------------------------------------------
    def _fingerprint(self) -> str:
        """A digest of the data's shape, feature space, labels and edges of its arrays."""
        X, h = self.data.X, hashlib.blake2b(digest_size=12)
        h.update(json.dumps([self.data.n_rows, X.nnz, self.data.space.fingerprint()]).encode())
        for arr in (X.indptr, X.indices, X.data, self.data.y):
            h.update(arr[:65536].tobytes())  # edges only: a mapped array stays unread
            h.update(arr[-65536:].tobytes())
        h.update(np.float64(self.data.y.sum()).tobytes())
        return h.hexdigest()

    def support(self) -> np.ndarray:
        """Sorted feature indices that at least one of the site's rows touches."""
        if self._support is None and self.stream:
            self._support = StreamedRows(self.data.X).support(self.block_nnz)
        if self._support is None:
            indices = self.data.X.indices
            if len(indices) < self.data.n_features // 8:  # few nonzeros: sort them
                self._support = np.unique(indices).astype(np.uint32)
            else:  # a count per feature costs less than sorting
                counts = np.bincount(indices, minlength=self.data.n_features)
                self._support = np.flatnonzero(counts).astype(np.uint32)
        return self._support

    def export_bytes_estimate(self) -> int:
        """Bytes a full :meth:`export` would send, from encoding a sample of rows.

        ``estimate = bytes(sample) * (nnz + rows) / (nnz(sample) + rows(sample))``: the
        sample is up to ``EXPORT_SAMPLE_ROWS`` rows in 16 evenly spaced contiguous blocks
        (contiguous, so zstd sees neighbouring rows as it does in a real export), encoded
        exactly as Export encodes; all rows when there are fewer.
        """
        if self._export_estimate is None:
            n, rows = self.data.n_rows, None
            if n > EXPORT_SAMPLE_ROWS:
                block = EXPORT_SAMPLE_ROWS // 16
                starts = np.linspace(0, n - block, 16).astype(np.int64)
                rows = np.concatenate([np.arange(s, s + block) for s in starts])
            nbytes, sample_nnz, sample_rows = self._encoded_sample(rows)
            scale = (self.data.nnz + n) / max(1, sample_nnz + sample_rows)
            self._export_estimate = round(nbytes * scale)
        return self._export_estimate

    def _sample(self, fraction: float) -> np.ndarray:
        """An evenly spaced sample of ``round(fraction * rows)`` row numbers (at least 1)."""
        n = self.data.n_rows
        k = min(n, max(1, round(fraction * n)))
        return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))

    def _encoded_sample(self, rows: np.ndarray | None) -> tuple[int, int, int]:
        """Bytes of the sample ``rows`` (None: all rows) encoded as Export encodes, its
        nonzeros and its rows; streamed, read chunk by chunk (the same bytes)."""
        if self.stream:
            src = StreamedRows(self.data.X, rows)
            y = self.data.y if rows is None else self.data.y[rows]
            return sum(len(blob) for _, blob in encode_streamed(src, y)), src.nnz, len(y)
        sample = self.data if rows is None else self.data.take(rows)
        return sum(len(blob) for _, blob in encode_rows(sample)), sample.nnz, sample.n_rows

    def _session_rows(self, rows: np.ndarray | None, support: np.ndarray | None
                      ) -> tuple[sp.csr_matrix | StreamedRows, np.ndarray]:
        """A session's rows (``rows``: a sample, None: all) and labels, with columns
        renumbered to ``support`` when given: streamed, a view that applies both per
        block; in memory, the restricted matrix and a copy of the sample."""
        y = self.data.y if rows is None else self.data.y[rows]
        if self.stream:
            return StreamedRows(self.data.X, rows, support), y
        X = self.data.X if support is None else self._restricted()
        return (X if rows is None else X[rows]), y

    def _restricted(self) -> sp.csr_matrix:
        """The rows with columns renumbered to positions in :meth:`support`."""
        if self._restricted_X is None:
            X, support = self.data.X, self.support()
            position = np.zeros(self.data.n_features, dtype=np.int32)
            position[support] = np.arange(len(support), dtype=np.int32)
            self._restricted_X = sp.csr_matrix(
                (X.data, position[X.indices], X.indptr), shape=(X.shape[0], len(support))
            )
        return self._restricted_X

    # -- helpers ---------------------------------------------------------------
    def _executor(self, X: sp.csr_matrix | StreamedRows, y: np.ndarray, loss: Loss,
                  rows: np.ndarray | None, support: np.ndarray | None) -> Executor:
        """An executor over a session's rows: threads here, or Ray actors that read
        the same rows from storage (:mod:`geodml.site.ray_executor`); its ``sibling()``
        is the session's scratch executor."""
        if self.ray is None:
            return ThreadExecutor(X, y, loss, self.shards, self.threads, self.block_nnz)
        from geodml.site.ray_executor import RayExecutor, ShardSource

        source = ShardSource(self.ray.path, rows, support)
        return RayExecutor(X, y, loss, source, self.shards, self.threads, self.ray.address)

    def _session(self, session_id: str) -> Session:
        s = self.sessions.get(session_id)
        if s is None:
            raise SiteError("NOT_FOUND", f"site {self.name}: unknown session {session_id!r}")
        return s

    def _guard(self, peer: str | None) -> None:
        self.policy.check_client(self.name, peer)
        self.policy.check_aggregate(self.name, self.data.n_rows)

    # -- the calls ---------------------------------------------------------------
    def describe(self, request: pb.DescribeRequest, peer: str | None) -> pb.DescribeReply:
        self.policy.check_client(self.name, peer)
        return SiteInfo(
            self.name, self.region, self.data.n_rows, self.data.n_features, self.data.nnz,
            self.data.positives, self.fingerprint, self.data.space, PROTOCOL_VERSION,
            CAPABILITIES, len(self.support()) if self.policy.share_support else 0,
            self.shards, self.policy.allow_raw_export, self.export_bytes_estimate(),
            public_bytes(self._secure_key), self.policy.require_secure_aggregation,
            self._budget()).to_reply()

    def _budget(self) -> PrivacyBudget | None:
        if self.ledger is None:
            return None
        spent = tuple(self.ledger.releases.values())
        return PrivacyBudget(self.ledger.epsilon, self.ledger.delta, self.ledger.spent, spent)

    def _masker(self, request: pb.PrepareRequest) -> Masker | None:
        """The job's secure aggregation, checked against the policy."""
        if not request.HasField("secure"):
            self.policy.check_unmasked(self.name)
            return None
        if request.restrict_to_support or request.up_compression:
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: secure aggregation sums dense, exact vectors: "
                            "no support restriction, no up compression")
        sa = request.secure
        try:
            return Masker(self.name, self._secure_key,
                          [Peer(p.site, p.public_key) for p in sa.peers], sa.nonce,
                          sa.fraction_bits)
        except SecureAggregationError as e:
            raise SiteError("INVALID_ARGUMENT", f"site {self.name}: {e}") from None

    def _privacy(self, request: pb.PrepareRequest) -> pb.PrivacyRequest | None:
        """The job's differential privacy, checked against the policy."""
        if not request.HasField("privacy"):
            self.policy.check_unprivate(self.name)
            return None
        dp = request.privacy
        if request.restrict_to_support:
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: a private job may not restrict vectors to the "
                            "site's feature support (it would reveal which features rows touch)")
        if self.ledger is None:
            raise SiteError("FAILED_PRECONDITION",
                            f"site {self.name}: no privacy budget: its policy sets no "
                            "dp_epsilon, so it cannot account for a private job")
        if not (np.isfinite(dp.clip) and dp.clip > 0 and np.isfinite(dp.noise_multiplier)
                and dp.noise_multiplier > 0 and len(dp.nonce) == 16):
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: privacy needs a positive clip and noise "
                            "multiplier and a 16-byte nonce")
        return dp

    def prepare(self, request: pb.PrepareRequest, peer: str | None) -> Iterator[pb.PrepareReply]:
        self._guard(peer)
        try:
            loss = get_loss(request.loss)
        except ValueError as e:
            raise SiteError("INVALID_ARGUMENT", f"site {self.name}: {e}") from None
        if not (np.isfinite(request.lam) and request.lam >= 0):
            raise SiteError("INVALID_ARGUMENT", f"site {self.name}: lambda must be finite, >= 0")
        if request.features != self.data.n_features:
            raise SiteError(
                "INVALID_ARGUMENT",
                f"site {self.name}: job has {request.features} features, the site's data "
                f"has {self.data.n_features}",
            )
        if request.feature_space_fingerprint != self.data.space.fingerprint():
            raise SiteError(
                "FAILED_PRECONDITION",
                f"site {self.name}: feature space {self.data.space.fingerprint()} differs "
                f"from the job's {request.feature_space_fingerprint}",
            )
        if loss.binary and not np.all((self.data.y == 0) | (self.data.y == 1)):
            raise SiteError("FAILED_PRECONDITION",
                            f"site {self.name}: loss {loss.name} needs 0/1 labels")
        up = None
        if request.up_compression:
            try:
                up = from_spec(request.up_compression)
            except CompressionError as e:
                raise SiteError("INVALID_ARGUMENT",
                                f"site {self.name}: up_compression: {e}") from None
        fraction = request.sample_fraction
        if not (np.isfinite(fraction) and 0 <= fraction <= 1):
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: sample_fraction must be in [0, 1], got {fraction}")
        masker, privacy = self._masker(request), self._privacy(request)
        support, rows = None, None
        if request.restrict_to_support:
            self.policy.check_support(self.name)
            support = self.support()
        if 0 < fraction < 1:
            rows = self._sample(fraction)
            self.policy.check_aggregate(self.name, len(rows))
        X, y = self._session_rows(rows, support)
        executor = self._executor(X, y, loss, rows, support)
        with self._lock:
            if len(self.sessions) >= MAX_SESSIONS:
                executor.close()
                raise SiteError("RESOURCE_EXHAUSTED",
                                f"site {self.name}: {MAX_SESSIONS} sessions are open")
            session = Session(
                uuid.uuid4().hex, request.job, loss, request.lam, executor,
                X.shape[1], support, WireFormat.from_proto(request.reply_format),
                X, y, self.shards, self.threads,
            )
            if up is not None:
                session.up = UpSender(up, session.dim)
            session.masker, session.privacy = masker, privacy
            self.sessions[session.id] = session
        first = pb.PrepareReply(session=session.id, rows=X.shape[0],
                                support_size=0 if support is None else len(support))
        chunks = [] if support is None else encode_indices(support, 0, session.reply_format)
        return with_chunks(first, chunks, pb.PrepareReply)

    def evaluate(
        self, requests: Iterable[pb.EvaluateRequest], peer: str | None
    ) -> Iterator[pb.EvaluateReply]:
        self._guard(peer)

        def lengths(first):
            s = self._session(first.session)
            return {0: s.dim if first.has_w else 0, 1: s.dim if first.want_hvp else 0}

        first, vectors = read_message_stream(requests, lengths, self.name, self._float32)
        s = self._session(first.session)
        with s.lock:
            result = s.cached("evaluate", first.round)
            if result is None:
                result = s.remember("evaluate", first.round, self._evaluate(s, first, vectors))
        loss, rows, grad, hvp, grad_format = result
        if s.masker is not None:  # one masked vector: loss, then gradient, then Hv
            parts = [np.array([loss]), *(v for v in (grad, hvp) if v is not None)]
            masked = self._mask(s, first, "Evaluate", np.concatenate(parts))
            return with_chunks(pb.EvaluateReply(rows=rows),
                               encode_ring(masked, 0, s.reply_format), pb.EvaluateReply)
        chunks = []
        if grad is not None:
            chunks.append(encode_vector(grad, 0, grad_format))
        if hvp is not None:
            chunks.append(encode_vector(hvp, 1, s.reply_format))
        head = pb.EvaluateReply(loss_sum=loss, rows=rows)
        return with_chunks(head, itertools.chain(*chunks), pb.EvaluateReply)

    def _mask(self, s: Session, request, kind: str, values: np.ndarray) -> np.ndarray:
        """``values`` fixed-point encoded and masked for the request's round."""
        if not request.round:
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: a masked reply needs a round number")
        try:
            return s.masker.mask(values, request.round, kind, request.dropped_peers)
        except SecureAggregationError as e:
            code = "OUT_OF_RANGE" if isinstance(e, FixedPointOverflowError) else (
                "INVALID_ARGUMENT")
            raise SiteError(code, f"site {self.name}: {kind} round {request.round}: {e}"
                            ) from None

    def _refuse_private(self, s: Session, call: str) -> None:
        if s.privacy is not None:
            raise SiteError("FAILED_PRECONDITION",
                            f"site {self.name}: a differentially private session sends only "
                            f"noisy gradient sums at a given point; {call} is refused")

    def _private_gradient(self, s: Session, first: pb.EvaluateRequest,
                          vectors: VectorAssembler) -> tuple:
        """The clipped gradient sum at w plus Gaussian noise, charged to the ledger
        first (see :mod:`geodml.privacy.dp`)."""
        if not (first.has_w and first.want_gradient) or first.want_hvp or not first.round:
            raise SiteError("FAILED_PRECONDITION",
                            f"site {self.name}: a differentially private session answers "
                            "only Evaluate with a point w, for its gradient, in a round")
        dp = s.privacy
        w = np.asarray(vectors.result(0), dtype=np.float64)
        digest = hashlib.sha256(w.tobytes() + f"{dp.clip!r} {dp.noise_multiplier!r}".encode()
                                ).hexdigest()  # what the release depends on
        try:
            self.ledger.charge(f"{dp.nonce.hex()}:{first.round}", dp.noise_multiplier,
                               self.name, digest)
        except PrivacyBudgetError as e:
            raise SiteError("RESOURCE_EXHAUSTED", str(e)) from None
        except PrivacyReplayError as e:
            raise SiteError("PERMISSION_DENIED", str(e)) from None
        if isinstance(s.X, StreamedRows):  # geodml.privacy computes on one whole matrix
            s.X = s.X.to_csr()
        if s.row_norms is None:
            s.row_norms = row_l2_norms(s.X)
        grad = clipped_gradient_sum(s.X, s.y, w, s.loss, dp.clip, s.row_norms)
        grad += gaussian_noise(self._secret, dp.nonce, first.round, len(grad),
                               dp.noise_multiplier * dp.clip)
        return 0.0, s.X.shape[0], grad, None, s.reply_format

    def _evaluate(self, s: Session, first: pb.EvaluateRequest, vectors: VectorAssembler) -> tuple:
        if s.privacy is not None:
            return self._private_gradient(s, first, vectors)
        ex = s.executor
        if first.has_w:
            sums = ex.evaluate(vectors.result(0), first.want_gradient)
        elif first.HasField("step"):
            if not ex.has_direction:
                raise SiteError("FAILED_PRECONDITION",
                                f"site {self.name}: step without a cached direction")
            if not np.isfinite(first.step):
                raise SiteError("INVALID_ARGUMENT", f"site {self.name}: step is not finite")
            sums = ex.step(first.step, first.want_gradient)
        elif s.has_point:
            sums = ex.current(first.want_gradient)
        else:
            raise SiteError("FAILED_PRECONDITION",
                            f"site {self.name}: no point yet: send w first")
        s.has_point = True
        hvp = ex.hess_vec(vectors.result(1)) if first.want_hvp else None
        if first.full_precision and s.up is not None:
            s.up = None  # exact from now on; no residual owed
        grad, grad_format = sums.grad if first.want_gradient else None, s.reply_format
        if grad is not None and not np.all(np.isfinite(grad)):  # e.g. w near float32's max
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: the gradient sum at this point is not finite "
                            "(the products with the data overflow): send a smaller point")
        if grad is not None and s.up is not None and s.up.active:
            # compressed sums travel as per-row means (geodml.job.compression)
            grad, grad_format = s.up.send(grad, sums.rows), s.up.format
        return sums.loss, sums.rows, grad, hvp, grad_format

    def line_search(
        self, requests: Iterable[pb.LineSearchRequest], peer: str | None
    ) -> pb.LineSearchReply:
        self._guard(peer)

        def lengths(first):
            s = self._session(first.session)
            return {0: s.dim}  # p may come in the header's chunk or after it, or not at all

        first, vectors = read_message_stream(requests, lengths, self.name,
                                             float32_range=self._float32)
        s = self._session(first.session)
        alphas = np.array(first.step_sizes, dtype=np.float64)
        if alphas.size == 0 or alphas.size > 1024 or not np.all(np.isfinite(alphas)):
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: step sizes must be 1..1024 finite numbers")
        self._refuse_private(s, "LineSearch")
        with s.lock:
            hit = s.cached("line_search", first.round)
            if hit is not None:
                return self._masked_line_search(s, first, hit[0])
            if not s.has_point:
                raise SiteError("FAILED_PRECONDITION",
                                f"site {self.name}: line search before any Evaluate")
            if vectors.received(0):
                s.executor.set_direction(vectors.result(0))
            elif not s.executor.has_direction:
                raise SiteError("FAILED_PRECONDITION",
                                f"site {self.name}: no cached direction: send p")
            vals, ders = s.executor.line_sums(alphas)
            reply = pb.LineSearchReply(loss_sums=vals.tolist(), derivative_sums=ders.tolist(),
                                       rows=s.executor.n_rows)
            s.remember("line_search", first.round, (reply,))
        return self._masked_line_search(s, first, reply)

    def _masked_line_search(self, s: Session, first, reply: pb.LineSearchReply
                            ) -> pb.LineSearchReply:
        if s.masker is None:
            return reply
        values = np.concatenate([reply.loss_sums, reply.derivative_sums])
        return pb.LineSearchReply(rows=reply.rows,
                                  masked=self._mask(s, first, "LineSearch", values).tolist())

    def local_solve(
        self, requests: Iterable[pb.LocalSolveRequest], peer: str | None
    ) -> Iterator[pb.LocalSolveReply]:
        self._guard(peer)

        def lengths(first):
            s = self._session(first.session)
            proc = PROCEDURES.get(first.procedure)
            if proc is None:
                raise SiteError("INVALID_ARGUMENT",
                                f"site {self.name}: unknown procedure {first.procedure!r}; "
                                f"known: {', '.join(sorted(PROCEDURES))}")
            try:
                slots = proc.slots(self._local_params(first))
            except (ValueError, TypeError) as e:
                raise SiteError("INVALID_ARGUMENT",
                                f"site {self.name}: {first.procedure}: {e}") from None
            return {slot: s.dim for slot in range(slots)}

        first, vectors = read_message_stream(requests, lengths, self.name,
                                             float32_range=self._float32)
        s = self._session(first.session)
        params = self._local_params(first)
        proc = PROCEDURES[first.procedure]
        self._refuse_private(s, "LocalSolve")
        with s.lock:
            # keyed by procedure too: another procedure in the same round is no retry
            result = s.cached(f"local_solve:{first.procedure}", first.round)
            if result is None:
                inputs = [vectors.result(slot) for slot in range(proc.slots(params))]
                touched = None
                if s.support is None and self.policy.share_support and s.masker is None:
                    touched = np.zeros(s.dim, dtype=bool)
                    touched[self.support()] = True
                ctx = ProcedureContext(s.scratch(), s.loss, s.lam, s.X.shape[0],
                                       s.executor.point if s.has_point else None, touched,
                                       s.state)
                if inputs:  # what Subspace(add_last_local_input) reuses; a procedure
                    s.state["last_local_input"] = inputs[0]  # may leave another
                try:
                    result = proc.run(ctx, params, inputs)
                except (ValueError, TypeError) as e:
                    raise SiteError("INVALID_ARGUMENT",
                                    f"site {self.name}: {first.procedure}: {e}") from None
                s.remember(f"local_solve:{first.procedure}", first.round, result)
        vector, info = result
        if len(vector) != proc.outputs * s.dim:
            raise SiteError("INTERNAL", f"site {self.name}: {first.procedure} returned "
                            f"{len(vector)} values, expected {proc.outputs} x {s.dim}")
        rows = s.X.shape[0]
        if s.masker is not None:  # the sum of rows * vector: the coordinator averages
            masked = self._mask(s, first, "LocalSolve", rows * np.asarray(vector))
            return with_chunks(pb.LocalSolveReply(rows=rows, info_json="{}"),
                               encode_ring(masked, 0, s.reply_format), pb.LocalSolveReply)
        head = pb.LocalSolveReply(rows=rows, info_json=json.dumps(info))
        fmt = s.up.format if proc.compressible and s.up is not None else s.reply_format
        return with_chunks(head, encode_vector(vector, 0, fmt), pb.LocalSolveReply)

    def _local_params(self, first: pb.LocalSolveRequest) -> dict:
        """A LocalSolve's parameters (a JSON object of bounded size)."""
        if len(first.params_json) > MAX_PARAMS_JSON:
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: params_json longer than {MAX_PARAMS_JSON}")
        try:
            params = json.loads(first.params_json or "{}")
        except (json.JSONDecodeError, RecursionError) as e:
            raise SiteError("INVALID_ARGUMENT", f"site {self.name}: params_json: "
                            f"{'nested too deeply' if isinstance(e, RecursionError) else e}"
                            ) from None
        if not isinstance(params, dict):
            raise SiteError("INVALID_ARGUMENT", f"site {self.name}: params_json is not an object")
        return params

    def subspace(self, requests: Iterable[pb.SubspaceRequest], peer: str | None
                 ) -> pb.SubspaceReply:
        self._guard(peer)

        def lengths(first):
            s = self._session(first.session)
            if first.new_directions > MAX_SUBSPACE:
                raise SiteError("INVALID_ARGUMENT",
                                f"site {self.name}: at most {MAX_SUBSPACE} new directions")
            return {slot: s.dim for slot in range(first.new_directions)}

        first, vectors = read_message_stream(requests, lengths, self.name,
                                             float32_range=self._float32)
        s = self._session(first.session)
        self._refuse_private(s, "Subspace")
        with s.lock:
            hit = s.cached("subspace", first.round)
            if hit is not None:
                return self._masked_subspace(s, first, hit[0])
            if not s.has_point:
                raise SiteError("FAILED_PRECONDITION",
                                f"site {self.name}: subspace call before any Evaluate")
            ex = s.executor
            new = [vectors.result(slot) for slot in range(first.new_directions)]
            if first.add_last_local_input:
                if "last_local_input" not in s.state:
                    raise SiteError("FAILED_PRECONDITION",
                                    f"site {self.name}: no LocalSolve input to reuse")
                new.append(s.state["last_local_input"])
            m = ex.subspace_size + len(new)
            if m > MAX_SUBSPACE:
                raise SiteError("INVALID_ARGUMENT",
                                f"site {self.name}: a subspace holds at most {MAX_SUBSPACE} "
                                "directions")
            c = np.array(first.coefficients, dtype=np.float64) if first.coefficients else (
                np.zeros(m))
            if len(c) != m or not np.all(np.isfinite(c)):
                raise SiteError("INVALID_ARGUMENT",
                                f"site {self.name}: need {m} finite coefficients, got {len(c)}")
            if first.commit and first.memory > MAX_SUBSPACE:
                raise SiteError("INVALID_ARGUMENT",
                                f"site {self.name}: memory must be <= {MAX_SUBSPACE}")
            for d in new:  # validated: now the call may change the session
                ex.add_direction(d)
            if first.commit:
                ex.subspace_commit(c, first.memory)
                reply = pb.SubspaceReply(directions=ex.subspace_size, rows=ex.n_rows)
            else:
                loss, grad, hess = ex.subspace_sums(c)
                upper = hess[np.triu_indices(m)]  # symmetric: the upper triangle suffices
                reply = pb.SubspaceReply(loss_sum=loss, gradient=grad.tolist(),
                                         hessian=upper.tolist(), directions=m, rows=ex.n_rows)
            s.remember("subspace", first.round, (reply,))
        return self._masked_subspace(s, first, reply)

    def _masked_subspace(self, s: Session, first, reply: pb.SubspaceReply) -> pb.SubspaceReply:
        if s.masker is None or first.commit:  # a commit reply carries no sums
            return reply
        values = np.concatenate([[reply.loss_sum], reply.gradient, reply.hessian])
        return pb.SubspaceReply(directions=reply.directions, rows=reply.rows,
                                masked=self._mask(s, first, "Subspace", values).tolist())

    def export(self, request: pb.ExportRequest, peer: str | None) -> Iterator[pb.ExportReply]:
        self.policy.check_client(self.name, peer)
        self.policy.check_export(self.name)
        self._session(request.session)
        low, high = EXPORT_CHUNK_BYTES
        size = min(max(request.max_chunk_bytes or (4 << 20), low), high)
        chunks = encode_streamed(StreamedRows(self.data.X), self.data.y, size) if (
            self.stream) else encode_rows(self.data, size)
        for rows, blob in chunks:
            yield pb.ExportReply(rows=rows, arrow_ipc=blob)

    def close(self, request: pb.CloseRequest, peer: str | None) -> pb.CloseReply:
        self.policy.check_client(self.name, peer)
        with self._lock:
            s = self.sessions.pop(request.session, None)
        if s is None:
            raise SiteError("NOT_FOUND", f"site {self.name}: unknown session {request.session!r}")
        s.close()
        return pb.CloseReply()

    def handle(self, method: str, request, peer: str | None) -> Iterator:
        """Run ``method`` (a Site RPC name) and yield its reply messages.

        ``request`` is one message, or an iterable of them for client-streaming
        calls. Every failure, also one raised while the replies stream, comes out
        as a :class:`SiteError` with a gRPC status name.
        """
        fn = self._methods.get(method)
        if fn is None:
            raise SiteError("UNIMPLEMENTED", f"site {self.name}: no method {method!r}")
        try:
            out = fn(request, peer)
            replies = (out,) if isinstance(out, Message) else out
            if self.audit is None:
                yield from replies
            else:
                yield from self._audited(method, replies, peer)
        except SiteError:
            raise
        except PolicyError as e:
            raise SiteError("PERMISSION_DENIED", str(e)) from None
        except CodecError as e:
            raise SiteError("INVALID_ARGUMENT", f"site {self.name}: {e}") from None

    def _audited(self, method: str, replies: Iterable, peer: str | None) -> Iterator:
        """Yield the replies and write one signed record of them to the site's audit
        log (:mod:`geodml.site.audit`), also when the stream stops early."""
        digest, count, size, rows = message_digest(), 0, 0, None
        try:
            for reply in replies:
                data = reply.SerializeToString()
                add_message(digest, data)
                count, size = count + 1, size + len(data)
                if rows is None:
                    rows = getattr(reply, "rows", None)
                yield reply
        finally:
            if count:
                kind, content = CONTENT[method]
                self.audit.append({"peer": peer, "call": method, "kind": kind,
                                   "content": content, "rows": rows, "messages": count,
                                   "bytes": size, "digest": digest.hexdigest(),
                                   "complete": sys.exc_info()[0] is None})

    @property
    def _methods(self) -> dict[str, Callable]:
        return {
            "Describe": self.describe, "Prepare": self.prepare, "Evaluate": self.evaluate,
            "LineSearch": self.line_search, "LocalSolve": self.local_solve,
            "Subspace": self.subspace,
            "Export": self.export, "Close": self.close,
        }

    def shutdown(self) -> None:
        with self._lock:
            sessions, self.sessions = list(self.sessions.values()), {}
        for s in sessions:
            s.close()
        if self.audit is not None:
            self.audit.close()


