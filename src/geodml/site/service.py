"""The Site API, independent of the transport: dispatch and the call handlers.

:class:`SiteService` turns request messages into reply messages. The gRPC server
(:mod:`geodml.site.server`) and the in-process federation both call it with the
same encoded messages, which is why their byte counts are identical. Each method
takes the caller's identity (certificate common name) for the policy check.

Errors are :class:`SiteError` with a gRPC status name: INVALID_ARGUMENT for a
malformed request (wrong dimension, NaN, garbage bytes), NOT_FOUND for an
unknown session, PERMISSION_DENIED for a policy refusal, FAILED_PRECONDITION for
a call out of order. None of them disturbs other sessions.

The site's rows and their facts are :mod:`geodml.site.rows`, a session's state
:mod:`geodml.site.session`; each job concern's site half is in :mod:`geodml.job`
(the job's spec, support, compression, secure aggregation, privacy).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from google.protobuf.message import Message

from geodml.data.dataset import Dataset
from geodml.data.streamed import StreamedRows
from geodml.job import support as support_job
from geodml.job.compression import UpSender
from geodml.job.privacy import PrivateRows, check_request, private_gradient
from geodml.job.secure import mask, masker_for
from geodml.job.spec import JobSpec
from geodml.job.validation import ValidationRows
from geodml.models.losses import Loss
from geodml.privacy.dp import (
    PrivacyLedger,
)
from geodml.privacy.secure_aggregation import (
    public_bytes,
    site_key,
)
from geodml.site.audit import SignedAuditLog
from geodml.site.executor import Executor, ThreadExecutor
from geodml.site.policy import Policy, PolicyError
from geodml.site.procedures import PROCEDURES, ProcedureContext
from geodml.site.rows import SiteRows
from geodml.site.session import (
    MAX_SUBSPACE,
    EvaluateResult,
    Session,
    read_message_stream,
    subspace_coefficients,
    subspace_memory,
    sums_where_asked,
)
from geodml.wire.codec import (
    CodecError,
    VectorAssembler,
    encode_indices,
    encode_ring,
    encode_vector,
)
from geodml.wire.digest import add_message, message_digest
from geodml.wire.errors import SiteError
from geodml.wire.info import PrivacyBudget, SiteInfo
from geodml.wire.protocol import CONTENT, PROTOCOL_VERSION, pb, with_chunks

CAPABILITIES = ("evaluate", "hvp", "line_search", "local_solve", "export", "support", "step",
                "subspace", "sample", "secure_aggregation", "privacy")
MAX_SESSIONS = 64
MAX_PARAMS_JSON = 65536  # bytes of a LocalSolve's parameters
EXPORT_CHUNK_BYTES = (64 << 10, 32 << 20)  # the range Export's max_chunk_bytes is clamped to


@dataclass(frozen=True)
class RayPlacement:
    """Where a site's Ray executor finds its rows and its cluster."""

    path: str  # the geodml dataset directory the site's data was loaded from
    address: str = "auto"


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
        self.rows = SiteRows(data, stream, block_nnz)
        self.block_nnz = self.rows.block_nnz
        if ray is not None:  # connect now, in the site's main thread (Ray needs it)
            from geodml.site.ray_executor import ensure_ray

            ensure_ray(ray.address)
        self.sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self.audit: SignedAuditLog | None = None  # the site's own signed log, if configured
        self._float32 = self.data.X.dtype == np.float32
        self._secret = secret if secret is not None else os.urandom(32)
        self._secure_key = site_key(self._secret)
        self.ledger = None
        if self.policy.dp_epsilon is not None:
            self.ledger = PrivacyLedger(self.policy.dp_epsilon, self.policy.dp_delta,
                                        privacy_ledger, self._secret)

    # -- data-derived facts (geodml.site.rows) ------------------------------------
    @property
    def fingerprint(self) -> str:
        """A digest of the data's shape, feature space, labels and edges of its arrays."""
        return self.rows.fingerprint

    def support(self) -> np.ndarray:
        """Sorted feature indices that at least one of the site's rows touches."""
        return self.rows.support()

    def export_bytes_estimate(self) -> int:
        """Bytes a full :meth:`export` would send (:meth:`SiteRows.export_bytes_estimate`)."""
        return self.rows.export_bytes_estimate()

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

    def prepare(self, request: pb.PrepareRequest, peer: str | None) -> Iterator[pb.PrepareReply]:
        self._guard(peer)
        spec = JobSpec.from_request(request, self.name, self.data)
        masker = masker_for(request, self.name, self._secure_key, self.policy)
        privacy = check_request(request, self.name, self.policy, self.ledger)
        support, rows = None, None
        if spec.restrict:
            self.policy.check_support(self.name)
            support = self.support()
        if 0 < spec.sample_fraction < 1:
            rows = self.rows.sample(spec.sample_fraction)
        validation = None
        if spec.validation_share > 0:
            validation, rows = self._hold_out(spec, masker is not None or privacy is not None,
                                              rows, support)
        if rows is not None:
            self.policy.check_aggregate(self.name, len(rows))
        X, y = self.rows.session_rows(rows, support)
        executor = self._executor(X, y, spec.loss, rows, support)
        with self._lock:
            if len(self.sessions) >= MAX_SESSIONS:
                executor.close()
                raise SiteError("RESOURCE_EXHAUSTED",
                                f"site {self.name}: {MAX_SESSIONS} sessions are open")
            session = Session(
                uuid.uuid4().hex, spec.job, spec.loss, spec.lam, executor,
                X.shape[1], support, spec.reply_format, X, y, self.shards, self.threads,
            )
            if spec.up is not None:
                session.up = UpSender(spec.up, session.dim, spec.up_deltas)
            session.directions = spec.directions  # None: as its gradients travel
            session.masker, session.privacy = masker, privacy
            session.validation = validation
            if privacy is not None:
                session.private_rows = PrivateRows(X, y)
            self.sessions[session.id] = session
        first = pb.PrepareReply(session=session.id, rows=X.shape[0],
                                support_size=0 if support is None else len(support),
                                validation_rows=0 if validation is None else validation.n_rows)
        chunks = [] if support is None else encode_indices(
            *reversed(support_job.support_to_wire(support, self.data.n_features)),
            session.reply_format)
        return with_chunks(first, chunks, pb.PrepareReply)

    def _hold_out(self, spec: JobSpec, hidden: bool, rows: np.ndarray | None,
                  support: np.ndarray | None) -> tuple[ValidationRows, np.ndarray]:
        """The held-out rows of ``spec`` and the training rows left (of the sample
        ``rows`` when given); refused where every reply is masked or noisy, since the
        validation sums would cross in the clear."""
        if hidden:
            raise SiteError("FAILED_PRECONDITION",
                            f"site {self.name}: validation scores travel unmasked; a masked "
                            "or differentially private job cannot hold out rows")
        (Xv, yv), train = self.rows.hold_out(spec.validation_share, spec.validation_seed,
                                             rows, support)
        self.policy.check_aggregate(self.name, len(yv))
        if len(train) == 0:
            raise SiteError("FAILED_PRECONDITION",
                            f"site {self.name}: validation_share {spec.validation_share} "
                            "leaves no rows to train on")
        return ValidationRows(Xv, yv, spec.loss), train

    def evaluate(
        self, requests: Iterable[pb.EvaluateRequest], peer: str | None
    ) -> Iterator[pb.EvaluateReply]:
        self._guard(peer)

        def lengths(first):
            s = self._session(first.session)
            return {0: s.dim if first.has_w else 0, 1: s.dim if first.want_hvp else 0,
                    2: s.dim if first.has_direction else 0}
        first, vectors = read_message_stream(requests, lengths, self.name, self._float32)
        s = self._session(first.session)
        with s.lock:
            result = s.cached("evaluate", first.round)
            if result is None:
                result = s.remember("evaluate", first.round, self._evaluate(s, first, vectors))
        grad, hvp, validation = result.grad, result.hvp, result.validation
        if s.masker is not None:  # one masked vector: loss, then gradient, then Hv
            parts = [np.array([result.loss]), *(v for v in (grad, hvp) if v is not None)]
            masked = self._mask(s, first, "Evaluate", np.concatenate(parts))
            return with_chunks(pb.EvaluateReply(rows=result.rows),
                               encode_ring(masked, 0, s.reply_format), pb.EvaluateReply)
        chunks = []
        if grad is not None:
            chunks.append(encode_vector(grad, 0, result.grad_format))
        if hvp is not None:
            chunks.append(encode_vector(hvp, 1, s.reply_format))
        head = pb.EvaluateReply(loss_sum=result.loss, rows=result.rows,
                                gradient_delta=result.delta,
                                derivative_sums=result.derivatives)
        if validation is not None:
            head.validation_loss_sum = validation.loss_sum
            head.validation_rows = validation.rows
            head.validation_histogram.extend(validation.histogram.ravel().tolist())
        return with_chunks(head, itertools.chain(*chunks), pb.EvaluateReply)

    def _mask(self, s: Session, request, kind: str, values: np.ndarray) -> np.ndarray:
        """``values`` fixed-point encoded and masked for the request's round."""
        return mask(s.masker, request, kind, values, self.name)

    def _refuse_private(self, s: Session, call: str) -> None:
        if s.privacy is not None:
            raise SiteError("FAILED_PRECONDITION",
                            f"site {self.name}: a differentially private session sends only "
                            f"noisy gradient sums at a given point; {call} is refused")

    def _private_gradient(self, s: Session, first: pb.EvaluateRequest,
                          vectors: VectorAssembler) -> EvaluateResult:
        """The clipped gradient sum at w plus Gaussian noise (:mod:`geodml.job.privacy`)."""
        w = vectors.result(0) if first.has_w else None
        grad = private_gradient(s.privacy, first, w, s.private_rows, s.loss, self.ledger,
                                self._secret, self.name)
        return EvaluateResult(0.0, s.private_rows.X.shape[0], grad, None, s.reply_format)

    def _evaluate(self, s: Session, first: pb.EvaluateRequest,
                  vectors: VectorAssembler) -> EvaluateResult:
        if s.privacy is not None:
            return self._private_gradient(s, first, vectors)
        ex = s.executor
        sums, derivatives = sums_where_asked(s, first, vectors, self.name)
        hvp = ex.hess_vec(vectors.result(1)) if first.want_hvp else None
        if first.full_precision:  # exact from now on; no residual owed
            s.up = s.directions = None
        grad, grad_format, delta = sums.grad if first.want_gradient else None, s.reply_format, False
        if grad is not None and not np.all(np.isfinite(grad)):  # e.g. w near float32's max
            raise SiteError("INVALID_ARGUMENT",
                            f"site {self.name}: the gradient sum at this point is not finite "
                            "(the products with the data overflow): send a smaller point")
        if grad is not None and s.up is not None and s.up.active:
            # compressed sums travel as per-row means (geodml.job.compression)
            (grad, delta), grad_format = s.up.send(grad, sums.rows), s.up.format
        validation = None
        if first.validate:
            if s.validation is None:
                raise SiteError("FAILED_PRECONDITION",
                                f"site {self.name}: validate asked of a job without held-out "
                                "rows (PrepareRequest.validation_share)")
            validation = s.validation.score(ex.point)
        return EvaluateResult(sums.loss, sums.rows, grad, hvp, grad_format, delta, validation,
                              derivatives)

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
        fmt = proc.reply_format(s.reply_format, s.up and s.up.format, s.directions)
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
            c = subspace_coefficients(m, first.coefficients, self.name)
            if first.commit:
                subspace_memory(first.memory, self.name)
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
        for rows, blob in self.rows.export_chunks(size):
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


