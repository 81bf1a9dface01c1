"""The :class:`Federation`: every site behind one narrow, metered interface.

Algorithms see only this class. It calls all sites concurrently, meters every
message per link and direction (:class:`~geodml.federation.meter.Meter`), writes
each boundary crossing to the audit log, and hides support-restricted exchange:
callers always pass and receive full-dimension vectors, while the wire carries
only the coordinates a site's rows touch when that is enabled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from geodml.data.dataset import Dataset, FeatureSpace
from geodml.errors import GeodmlError
from geodml.federation.journal import (
    DIGEST_PREFIX,
    CallRecord,
    Journal,
    JournalError,
    replies_digest,
)
from geodml.federation.meter import AuditLog, Meter, link_name
from geodml.federation.reliability import TRANSIENT, Reliability, SiteLostError
from geodml.job.compression import CompressionConfig, DownChannel, UpReceiver
from geodml.privacy.secure_aggregation import (
    MEAN_BITS,
    decode,
    fraction_bits_for,
    new_nonce,
    ring_sum,
)
from geodml.wire.codec import VectorAssembler, WireFormat, encode_vector
from geodml.wire.digest import add_message, message_digest
from geodml.wire.errors import SiteCallError
from geodml.wire.info import SiteInfo
from geodml.wire.protocol import (
    METHODS,
    PROTOCOL_VERSION,
    REPLAYED_ON_RECOVERY,
    SESSION_CALLS,
    pb,
    with_chunks,
)
from geodml.wire.rows import decode_rows
from geodml.wire.transport import Transport

__all__ = ["AGGREGATE", "CompressionConfig", "Federation", "SecureAggregation", "SiteCallError",
           "SiteEval", "SiteInfo", "SiteLostError"]

AGGREGATE = "(all sites)"  # the one "site" a secure-aggregation round returns

@dataclass(frozen=True)
class SecureAggregation:
    """Mask every reply so the coordinator learns only sums over the sites
    (:mod:`geodml.privacy.secure_aggregation`). Fixed point: ``fraction_bits``, or
    (None) as many as resolve per-row means to ``2^-mean_bits``."""

    fraction_bits: int | None = None
    mean_bits: int = MEAN_BITS


@dataclass
class SiteEval:
    site: str
    loss_sum: float
    rows: int
    grad: np.ndarray | None
    hvp: np.ndarray | None


@dataclass(frozen=True)
class PrivacyJob:
    """A differentially private job: per-row clip norm, and each site's noise
    multiplier (calibrated to its remaining budget, :mod:`geodml.privacy.dp`)."""

    clip: float
    noise_multipliers: dict[str, float]


def _symmetric(upper: np.ndarray, m: int) -> np.ndarray:
    """The symmetric ``m x m`` matrix from its upper triangle, row by row."""
    out = np.zeros((m, m))
    out[np.triu_indices(m)] = upper
    return out + np.triu(out, 1).T


@dataclass
class _Job:
    session: str
    support: np.ndarray | None  # global indices of the wire coordinates, or None (dense)
    rows: int = 0  # rows the session computes over (fewer than the site's when sampled)

    @property
    def restricted(self) -> bool:
        return self.support is not None


class Federation:
    """The coordinator's handle on K sites (in-process or gRPC transports)."""

    def __init__(
        self, transports: Iterable[Transport], home: str, wire: WireFormat | None = None,
        audit: AuditLog | None = None, timeout: float | None = None,
        compression: CompressionConfig | None = None, sample_fraction: float = 1.0,
        reliability: Reliability | None = None, journal: Journal | None = None,
        secure: SecureAggregation | None = None, nonce_seed: bytes | None = None,
    ):
        """``sample_fraction`` < 1 binds every job to an evenly spaced sample of that
        share of each site's rows (the planner's calibration runs); ``n_rows`` is then
        the sample's total once a job is prepared.

        ``reliability``: deadlines, retries and site recovery
        (:mod:`geodml.federation.reliability`). ``journal``: where every call is
        journaled (a run directory's, for ``--resume``); a journal opened with
        ``resume=True`` answers the calls it holds, in order, before any goes to a
        site. Without one, remote sites get a temporary journal, so a restarted site
        can still be recovered.

        ``secure``: secure aggregation. Every round then returns one result, the sum
        over the sites (named :data:`AGGREGATE`); a site that drops out of a round is
        left out of the masks and the survivors are asked again."""
        self.transports = {t.site: t for t in transports}
        if not 0 < sample_fraction <= 1:
            raise GeodmlError(f"sample_fraction must be in (0, 1], got {sample_fraction}")
        self.sample_fraction = float(sample_fraction)
        if not self.transports:
            raise GeodmlError("a federation needs at least one site")
        self.home = home
        self.wire = wire or WireFormat()
        self.compression = compression or CompressionConfig()
        self._down = DownChannel(None, 0, self.wire)  # the job's channels (see prepare)
        self._up = UpReceiver(None)
        self.meter = Meter(home)
        self.audit = audit
        self.reliability = reliability or Reliability()
        self.timeout = timeout or self.reliability.call_timeout
        self._scratch_journal: tempfile.TemporaryDirectory | None = None
        if journal is None and self.reliability.recover_sites and any(
                getattr(t, "remote", False) for t in self.transports.values()):
            self._scratch_journal = tempfile.TemporaryDirectory(prefix="geodml-journal-")
            journal = Journal(self._scratch_journal.name, compact=True)
        self.journal = journal
        self._replaying = set(self.transports) if journal is not None and journal.resume \
            else set()
        self.dropped: dict[str, str] = {}  # sites the run continued without, and why
        self.recoveries: dict[str, int] = {}  # restarted sites recovered, per site
        self._pool = ThreadPoolExecutor(len(self.transports))
        self._round = 0
        self.vectors_down = 0  # model-sized vectors sent to every site, counted per round
        self.vectors_up = 0  # and received from every site
        self._jobs: dict[str, _Job] = {}
        self.secure = secure
        self.nonce_seed = nonce_seed  # makes job nonces reproducible (a resumed run's)
        self._jobs_prepared = 0
        self._peers: set[str] = set()  # the sites the current job's masks cover
        self._fraction_bits = 0  # the current job's fixed point
        if secure is not None and (self.compression.up or self.compression.down):
            self._release()
            raise GeodmlError("secure aggregation sums exact fixed-point vectors: it does not "
                              "combine with compression")
        try:
            self.sites = self._map(self._describe)
            self._check_compatible()
        except BaseException:
            self._release()  # the caller gets no object to close
            raise

    # -- plumbing ------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self.transports)

    @property
    def n_rows(self) -> int:
        """Rows of the prepared job (a sample when ``sample_fraction`` < 1), else of the
        sites."""
        if self._jobs:
            return sum(job.rows for job in self._jobs.values())
        return sum(s.rows for s in self.sites.values())

    @property
    def n_features(self) -> int:
        return next(iter(self.sites.values())).features

    @property
    def space(self) -> FeatureSpace:
        return next(iter(self.sites.values())).space

    def _map(self, fn: Callable[[str], object], names: Iterable[str] | None = None) -> dict:
        """``fn(site)`` for every site, concurrently; waits for all of them. A site lost
        for good is dropped when the reliability policy allows, else its error raises
        (after the other sites' calls have finished, so the journal stays whole)."""
        names = list(names or self.transports)
        futures = {n: self._pool.submit(fn, n) for n in names}
        out, errors = {}, []
        for name, future in futures.items():
            try:
                out[name] = future.result()
            except SiteLostError as e:
                if not self.reliability.drop_lost_sites:
                    errors.append(e)
                else:
                    self._drop(name, str(e))
            except Exception as e:  # re-raised below, the first one wins
                errors.append(e)
        if errors:
            raise errors[0]
        return out

    def _drop(self, site: str, why: str) -> None:
        """Continue without ``site`` (the policy allows it)."""
        self.dropped[site] = why
        self.transports.pop(site, None)
        self._jobs.pop(site, None)
        if not self.transports:
            raise GeodmlError(f"every site is lost; the last: {why}")

    def map_sites(self, fn: Callable[[str], object]) -> list:
        """``fn(site)`` for every site, concurrently, in site order."""
        return list(self._map(fn).values())

    def _next_round(self, down: int = 0, up: int = 0) -> int:
        self._round += 1
        self.vectors_down += down
        self.vectors_up += up
        return self._round

    @property
    def rounds(self) -> int:
        """Rounds so far: calls that went to every site (Evaluate, LineSearch, LocalSolve)."""
        return self._round

    @property
    def vector_rounds(self) -> float:
        """Rounds' worth of model-sized vectors: one vector each way per site is 1."""
        return (self.vectors_down + self.vectors_up) / 2

    def _counted(self, messages: Iterable, tally: list[int], journal=None,
                 digest=None) -> Iterator:
        """Count the messages (and journal them, and add them to an audit digest)."""
        for m in messages:
            tally[0] += m.ByteSize()
            tally[1] += 1
            if journal is not None or digest is not None:
                data = m.SerializeToString()
                if journal is not None:
                    journal(data)
                if digest is not None:
                    add_message(digest, data)
            yield m

    def _record(self, site: str, direction: str, method: str, tally, rows: int | None,
                round_id: int | None, seconds: float | None = None,
                audit: bool = True, **extra) -> None:
        self.meter.record(site, direction, method, tally[0], tally[1], round_id, seconds)
        if self.audit is not None and audit:
            record = {"link": link_name(self.home, site, direction),
                      "wan": site != self.home, "site": site,
                      "direction": direction, "call": method, "bytes": tally[0],
                      "messages": tally[1], "rows": rows, "round": round_id, **extra}
            if seconds is not None:  # the call's duration, on the up record
                record["seconds"] = round(seconds, 6)
            self.audit.write(record)

    def _messages(self, site: str, method: str, request):
        """A fresh copy of the request (``request`` is a message, or a function making
        the message stream anew for every attempt), naming the site's current session
        (a recovered site has a new one)."""
        req = request() if callable(request) else request
        job = self._jobs.get(site)
        if job is None or method not in SESSION_CALLS:
            return req
        if hasattr(req, "ByteSize"):
            req = type(req).FromString(req.SerializeToString())
            req.session = job.session
            return req

        def with_session(messages: Iterable) -> Iterator:
            it = iter(messages)
            for first in it:
                first.session = job.session
                yield first
                break
            yield from it
        return with_session(req)

    def _call(self, site: str, method: str, request, round_id: int | None = None,
              lengths: Callable[[object], dict[int, int]] | None = None,
              slot_kinds: dict | None = None, journal: bool = True, retry: bool = True):
        """Send a request (a message, or a function making the message stream), meter
        both ways, journal the call; retry transient failures and recover a restarted
        site (see :mod:`geodml.federation.reliability`).

        Returns the first reply and, when ``lengths`` is given, an assembler
        holding the vectors streamed in all replies (else the list of all replies).
        ``slot_kinds``: the assembler's integer slots (``index_slots``, ``ring_slots``).
        ``retry=False``: one attempt (freeing a session needs no second).
        """
        site_journal = self.journal.site(site) if self.journal is not None and journal \
            else None
        if site_journal is not None and site in self._replaying:
            record = self._next_replayed(site, site_journal, method, round_id, request)
            if record is not None:
                return self._from_record(site, method, record, lengths, slot_kinds)
        policy, first_failure, attempt, recoveries = self.reliability, None, 0, 0
        while True:
            writer = site_journal.begin(method, round_id) if site_journal else None
            try:
                return self._attempt(site, method, self._messages(site, method, request),
                                     round_id, lengths, slot_kinds, writer, site_journal)
            except SiteCallError as e:
                if site_journal is not None:
                    site_journal.abandon()
                if e.code in TRANSIENT and retry:
                    now = time.monotonic()
                    first_failure = first_failure or now
                    waited = now - first_failure
                    if waited < policy.site_deadline:
                        time.sleep(min(policy.backoff(attempt), policy.site_deadline - waited))
                        attempt += 1
                        continue
                    lost = SiteLostError(site, method, waited, str(e))
                    if policy.drop_lost_sites:  # the run goes on without it: so must a resume
                        self._journal_outcome(site_journal, method, round_id,
                                              ("LOST", str(lost)))
                    raise lost from None
                if (e.code == "NOT_FOUND" and method in SESSION_CALLS and method != "Close"
                        and site_journal is not None and policy.recover_sites
                        and site in self._jobs and recoveries < 3):
                    self._recover(site, site_journal)
                    recoveries += 1
                    continue
                self._journal_outcome(site_journal, method, round_id, (e.code, str(e)),
                                      *getattr(e, "tallies", ()))
                raise
            except BaseException:
                if site_journal is not None:
                    site_journal.abandon()
                raise

    @staticmethod
    def _journal_outcome(site_journal, method: str, round_id: int | None,
                         error: tuple[str, str], down=(0, 0), up=(0, 0),
                         seconds: float = 0.0) -> None:
        """Journal a call that failed for good, so a resumed run fails it the same way."""
        if site_journal is not None:
            site_journal.begin(method, round_id).finish(down, up, seconds, error)
            site_journal.commit()

    def _attempt(self, site: str, method: str, request, round_id: int | None,
                 lengths, slot_kinds, writer, site_journal):
        """One try of a call (see :meth:`_call`)."""
        down, up = [0, 0], [0, 0]
        streaming = not hasattr(request, "ByteSize")
        if streaming:
            request = self._counted(request, down, writer.request if writer else None)
        else:
            down = [request.ByteSize(), 1]
            if writer is not None:
                writer.request(request.SerializeToString())
        first, result, complete = None, None, False
        digest = message_digest() if self.audit is not None else None
        start = time.perf_counter()
        try:
            replies = self.transports[site].call(method, request, self.timeout)
            first, result = self._assemble(
                self._counted(replies, up, writer.reply if writer else None, digest),
                lengths, slot_kinds)
            complete = True
        except SiteCallError as e:
            e.tallies = (tuple(down), tuple(up), time.perf_counter() - start)
            raise
        finally:
            seconds = time.perf_counter() - start
            self._record(site, "down", method, down, None, round_id)
            rows = getattr(first, "rows", None) if first is not None else None
            extra = {"digest": digest.hexdigest(), "complete": complete} if (
                digest is not None and up[1]) else {}
            self._record(site, "up", method, up, rows, round_id, seconds, **extra)
        if first is None:
            raise SiteCallError(site, method, "INTERNAL", "empty reply")
        if writer is not None:
            writer.finish(down, up, seconds, None)
            site_journal.commit()
        return first, result

    @staticmethod
    def _assemble(replies: Iterable, lengths, slot_kinds):
        """The first reply, and an assembler of the streamed vectors (``lengths``
        given) or the list of the other replies."""
        first, rest, assembler = None, [], None
        for reply in replies:
            if first is None:
                first = reply
                if lengths is not None:
                    assembler = VectorAssembler(lengths(first), **(slot_kinds or {}))
            if assembler is not None:
                if reply.HasField("chunk"):
                    assembler.add(reply.chunk)
            else:
                rest.append(reply)
        return first, (assembler if lengths is not None else rest)

    # -- resuming from a journal -------------------------------------------------------
    def _next_replayed(self, site: str, site_journal, method: str, round_id: int | None,
                       request) -> CallRecord | None:
        """The journaled outcome of this call, checked against what the run asks now;
        None once the site's journal is used up (from then on calls go to the site)."""
        for record in site_journal.pending:
            if record.method == "Recover":
                self._replay_recovery(site, record)
                continue
            if record.method != method or record.round != round_id:
                raise JournalError(
                    f"resume diverged at site {site}: the journal holds {record.method} "
                    f"round {record.round}, the run now asks {method} round {round_id}. "
                    "Resume with the same settings, data and geodml version.")
            messages = self._messages(site, method, request)
            sent = [messages.SerializeToString()] if hasattr(messages, "ByteSize") else [
                m.SerializeToString() for m in messages]
            if sent != record.requests:
                raise JournalError(
                    f"resume diverged at site {site}: {method} round {round_id} sends "
                    "other data than the journaled run did. Resume with the same "
                    "settings, data and geodml version.")
            return record
        self._replaying.discard(site)
        return None

    def _from_record(self, site: str, method: str, record: CallRecord, lengths,
                     slot_kinds):
        """A journaled call's outcome: meter its bytes again (they crossed before the
        crash; the audit log already lists them), return or raise what it returned."""
        self.meter.record(site, "down", method, *record.down, record.round)
        self.meter.record(site, "up", method, *record.up, record.round, record.seconds)
        if record.error is not None:
            code, message = record.error
            if code == "LOST":
                raise SiteLostError(site, method, 0.0, message)
            raise SiteCallError(site, method, code, message.split("): ", 1)[-1])
        reply_type = METHODS[method][1]
        return self._assemble((reply_type.FromString(b) for b in record.replies), lengths,
                              slot_kinds)

    def _replay_recovery(self, site: str, record: CallRecord) -> None:
        self.meter.record(site, "down", "Recover", *record.down)
        self.meter.record(site, "up", "Recover", *record.up)
        self._jobs[site].session = pb.PrepareReply.FromString(record.replies[0]).session
        self.recoveries[site] = self.recoveries.get(site, 0) + 1

    # -- recovering a restarted site -----------------------------------------------------
    def _recover(self, site: str, site_journal) -> None:
        """Re-prepare a restarted site and re-send its journaled calls since its last
        Prepare, checking every reply against the journal, so that its session is
        exactly what it was; journal the new session id."""
        info = self._describe(site)
        before = self.sites[site]
        if info.data_fingerprint != before.data_fingerprint:
            raise GeodmlError(
                f"site {site} came back with other data (fingerprint {info.data_fingerprint}, "
                f"was {before.data_fingerprint}): the run cannot continue from the same "
                "iterate")
        transport, down, up, session = self.transports[site], [0, 0], [0, 0], None
        for record in site_journal.since_last_prepare():
            if record.method not in REPLAYED_ON_RECOVERY:
                continue
            req_type, _, client_streams = METHODS[record.method][:3]
            messages = [req_type.FromString(b) for b in record.requests]
            if session is not None:
                messages[0].session = session
            try:
                replies = list(self._counted(transport.call(
                    record.method, self._counted(messages, down) if client_streams
                    else messages[0], self.timeout), up))
                if not client_streams:
                    down[0] += messages[0].ByteSize()
                    down[1] += 1
                error = None
            except SiteCallError as e:
                if e.code in TRANSIENT:
                    raise
                replies, error = [], e.code
            got = [r.SerializeToString() for r in replies]
            if record.method == "Prepare" and replies:
                session = replies[0].session
                first = type(replies[0]).FromString(record.replies[0])
                first.session = session
                want = [first.SerializeToString(), *record.replies[1:]]
            elif record.replies and record.replies[0].startswith(DIGEST_PREFIX):
                got, want = [replies_digest(got)], record.replies  # a compact journal
            else:
                want = record.replies
            if got != want or error != (record.error[0] if record.error else None):
                raise GeodmlError(
                    f"site {site} came back but answers {record.method} round "
                    f"{record.round} differently than before its restart (its data or "
                    "software changed): the run cannot continue from the same iterate")
        if session is None:
            raise GeodmlError(f"site {site} lost its session and the journal holds no "
                              "Prepare to rebuild it")
        self._record(site, "down", "Recover", down, None, None, recovery=True)
        self._record(site, "up", "Recover", up, None, None, recovery=True)
        writer = site_journal.begin("Recover", None)
        writer.reply(pb.PrepareReply(session=session).SerializeToString())
        writer.finish(down, up, 0.0, None)
        site_journal.commit()
        self._jobs[site].session = session
        self.recoveries[site] = self.recoveries.get(site, 0) + 1

    def _check_compatible(self) -> None:
        ref = next(iter(self.sites.values()))
        for info in self.sites.values():
            if self.secure is not None and "secure_aggregation" not in info.capabilities:
                raise GeodmlError(f"site {info.name} does not support secure aggregation")
            if info.protocol_version != PROTOCOL_VERSION:
                raise GeodmlError(f"site {info.name} speaks protocol {info.protocol_version}, "
                                  f"this coordinator {PROTOCOL_VERSION}")
            if info.space.fingerprint() != ref.space.fingerprint():
                raise GeodmlError(
                    f"site {info.name} maps features differently from site {ref.name} "
                    f"(feature space {info.space.fingerprint()} vs {ref.space.fingerprint()})")

    def _describe(self, site: str) -> SiteInfo:
        # one attempt: a site that is not there when a run starts is reported at once
        reply, _ = self._call(site, "Describe", pb.DescribeRequest(), journal=False,
                              retry=False)
        return SiteInfo.from_reply(reply)

    def _job(self, site: str) -> _Job:
        job = self._jobs.get(site)
        if job is None:
            raise GeodmlError("no job prepared: call Federation.prepare first")
        return job

    def _restrict(self, site: str, v: np.ndarray) -> np.ndarray:
        job = self._job(site)
        return v[job.support] if job.restricted else v

    def _expand(self, site: str, v: np.ndarray) -> np.ndarray:
        job = self._job(site)
        if not job.restricted:
            return v
        full = np.zeros(self.n_features)
        full[job.support] = v
        return full

    def _dim(self, site: str) -> int:
        job = self._job(site)
        return len(job.support) if job.restricted else self.n_features

    @property
    def down_format(self) -> WireFormat:
        """The codec format of vectors sent to the sites."""
        return self._down.format

    def as_received(self, v: np.ndarray) -> np.ndarray:
        """What the sites will receive when ``v`` is sent: after the down compression (its
        state advances: call once per vector sent) and the wire format. Algorithms send
        and use this vector, so coordinator and sites compute with the same numbers."""
        return self._down.as_received(v)

    def note_gradient(self, grad_norm: float) -> None:
        """Tell the precision policy the norm of a received global gradient; near the
        optimum it switches both directions to full precision, for good."""
        policy = self.compression.precision
        if policy is None or not policy.compressing:
            return
        if not policy.observe(grad_norm):
            self._full_precision()

    @property
    def compressing(self) -> bool:
        """Whether some direction is still compressed under a precision policy."""
        cfg = self.compression
        return cfg.precision is not None and cfg.precision.compressing and bool(
            cfg.up or cfg.down)

    def note_direction(self, believed_slope: float, true_slope: float) -> None:
        """Tell the policy the slope along a direction as computed from compressed
        gradients and as the sites report it exactly; a disagreement (the compressed
        gradient no longer points downhill enough) switches to full precision."""
        policy = self.compression.precision
        if policy is None or not policy.compressing:
            return
        if not policy.observe_direction(believed_slope, true_slope):
            self._full_precision()

    def _full_precision(self) -> None:
        """Stop compressing: down at once, up from the next Evaluate on."""
        self._down.stop()
        self._up.pending = True

    def _stream(self, head, cls, vectors: list[tuple[int, np.ndarray]],
                exact: frozenset[int] = frozenset()) -> Iterator:
        """The header message, then every chunk of the given (slot, vector) pairs; slots
        in ``exact`` in the job's wire format, never compressed."""
        fmt = self.down_format
        return with_chunks(head, (c for slot, v in vectors
                                  for c in encode_vector(v, slot,
                                                         self.wire if slot in exact else fmt)),
                           cls)

    def as_received_exact(self, v: np.ndarray) -> np.ndarray:
        """What the sites receive of ``v`` sent uncompressed (the job's wire format)."""
        return self._down.as_received_exact(v)

    # -- the interface algorithms use -----------------------------------------------
    def prepare(self, loss: str, lam: float, restrict_to_support: bool | None = None,
                job: str = "train", privacy: PrivacyJob | None = None) -> None:
        """Open a session at every site. ``restrict_to_support=None``: wherever allowed
        (never under secure aggregation: masked vectors are dense). ``privacy``: a
        differentially private job (the sites then send only noisy gradient sums)."""
        self.close_sessions()
        for info in self.sites.values():  # before any session is opened
            if self.secure is None and info.requires_secure_aggregation and job != "export":
                raise GeodmlError(f"site {info.name}'s policy requires secure aggregation "
                                  "(require_secure_aggregation): train with it on")
        secure = self._secure_setup()
        if secure is not None or privacy is not None:  # dense: the support is data too
            restrict_to_support = False
        dp_nonce = self._job_nonce() if privacy is not None else b""
        reply_format = self.wire.to_proto()
        cfg = self.compression
        self._down = DownChannel(cfg.down, self.n_features, self.wire)
        self._up = UpReceiver(cfg.up)

        def one(site: str) -> _Job:
            info = self.sites[site]
            restrict = (info.support_size > 0) if restrict_to_support is None else (
                restrict_to_support)
            req = pb.PrepareRequest(
                loss=loss, lam=lam, feature_space_fingerprint=info.space.fingerprint(),
                features=self.n_features, restrict_to_support=restrict,
                reply_format=reply_format, job=job, up_compression=cfg.up or "",
                sample_fraction=self.sample_fraction if self.sample_fraction < 1 else 0.0)
            if secure is not None:
                req.secure.CopyFrom(secure)
            if privacy is not None:
                req.privacy.CopyFrom(pb.PrivacyRequest(
                    clip=privacy.clip, noise_multiplier=privacy.noise_multipliers[site],
                    nonce=dp_nonce))
            first, assembler = self._call(
                site, "Prepare", req, lengths=lambda r: {0: r.support_size},
                slot_kinds={"index_slots": (0,)})
            support = assembler.result(0).astype(np.int64) if restrict else None
            opened[site] = _Job(first.session, support, int(first.rows))
            return opened[site]

        opened: dict[str, _Job] = {}
        try:
            self._jobs = self._map(one)
        except BaseException:
            self._jobs = opened  # close the sessions that did open, then fail
            self.close_sessions()
            raise
        if secure is not None and len(self._jobs) < len(secure.peers):
            self.close_sessions()  # a site lost while preparing: its peers mask with it
            return self.prepare(loss, lam, restrict_to_support, job, privacy)
        self._peers = {p.site for p in secure.peers} if secure is not None else set()

    def _job_nonce(self) -> bytes:
        """A fresh nonce per job: random, or from ``nonce_seed`` (a resumed run must
        send the same requests as the run it resumes)."""
        self._jobs_prepared += 1
        if self.nonce_seed is None:
            return new_nonce()
        return hashlib.blake2b(self.nonce_seed + self._jobs_prepared.to_bytes(8, "little"),
                               digest_size=16, person=b"geodml-job").digest()

    def _secure_setup(self) -> pb.SecureAggregation | None:
        """The peers (every site, with its public key), a fresh nonce, the fixed point."""
        if self.secure is None:
            return None
        if len(self.transports) < 2:
            raise GeodmlError("secure aggregation needs at least 2 sites: the sum over one "
                              f"site is that site's numbers (sites: {self.names})")
        peers = [pb.SecureAggregation.Peer(site=n, public_key=self.sites[n].secure_aggregation_key)
                 for n in sorted(self.transports)]
        bits = self.secure.fraction_bits
        if bits is None:
            bits = fraction_bits_for(sum(self.sites[n].rows for n in self.transports),
                                     self.secure.mean_bits)
        self._fraction_bits = bits
        return pb.SecureAggregation(peers=peers, nonce=self._job_nonce(), fraction_bits=bits)

    @property
    def sum_resolution(self) -> float:
        """Largest rounding error of a sum over the sites: 0 for float64 sums; under
        secure aggregation, half a fixed-point unit per site."""
        if self.secure is None:
            return 0.0
        return len(self.transports) * 2.0 ** -(self._fraction_bits + 1)

    def _dropped_peers(self) -> list[str]:
        """Sites of the current job lost since it was prepared: masks leave them out."""
        return sorted(self._peers & set(self.dropped))

    def _secure_map(self, one: Callable[[str], object]) -> dict:
        """``_map(one)``, asked again of the survivors while sites drop out of the round
        (their masks would not cancel); ``one`` reads :meth:`_dropped_peers`."""
        while True:
            before = len(self.dropped)
            out = self._map(one)
            if len(self.dropped) == before:
                return out
            if len(self.transports) < 2:
                raise GeodmlError("secure aggregation needs at least 2 sites; only "
                                  f"{self.names} remain (lost: {sorted(self.dropped)})")

    def _unmask(self, parts: Iterable[np.ndarray]) -> np.ndarray:
        return decode(ring_sum(parts), self._fraction_bits)

    @staticmethod
    def _masked_field(site: str, method: str, reply, n: int) -> np.ndarray:
        """A unary reply's masked sums, checked for length."""
        if len(reply.masked) != n:
            raise SiteCallError(site, method, "INTERNAL",
                                f"{len(reply.masked)} masked values, expected {n}")
        return np.array(reply.masked, dtype=np.uint64)

    def evaluate(self, w: np.ndarray | None = None, *, step: float | None = None,
                 want_grad: bool = True, v: np.ndarray | None = None) -> list[SiteEval]:
        """Loss sums (and gradient / Hessian-vector sums) at ``w``, at the cached
        ``w + step p``, or at the current point; one round to every site."""
        round_id = self._next_round(down=(w is not None) + (v is not None),
                                    up=want_grad + (v is not None))
        full_precision, as_mean = self._up.begin_evaluate()

        def one(site: str) -> SiteEval:
            job = self._job(site)
            head = pb.EvaluateRequest(session=job.session, round=round_id,
                                      want_gradient=want_grad, want_hvp=v is not None,
                                      has_w=w is not None, full_precision=full_precision,
                                      dropped_peers=self._dropped_peers())
            if step is not None and w is None:
                head.step = step
            vectors = []
            if w is not None:
                vectors.append((0, self._restrict(site, w)))
            if v is not None:
                vectors.append((1, self._restrict(site, v)))
            dim = self._dim(site)
            if self.secure is not None:  # one masked vector: loss, gradient, Hv
                n = 1 + dim * (want_grad + (v is not None))
                first, asm = self._call(
                    site, "Evaluate", lambda: self._stream(head, pb.EvaluateRequest, vectors),
                    round_id, lengths=lambda _r: {0: n}, slot_kinds={"ring_slots": (0,)})
                return first.rows, asm.result(0)
            first, asm = self._call(
                site, "Evaluate", lambda: self._stream(head, pb.EvaluateRequest, vectors), round_id,
                lengths=lambda _r: {0: dim if want_grad else 0, 1: dim if v is not None else 0})
            grad = self._expand(site, asm.result(0)) if want_grad else None
            if grad is not None:
                grad = self._up.receive(grad, first.rows, as_mean)
            hvp = self._expand(site, asm.result(1)) if v is not None else None
            return SiteEval(site, first.loss_sum, first.rows, grad, hvp)

        if self.secure is None:
            return list(self._map(one).values())
        replies = self._secure_map(one).values()
        total = self._unmask(masked for _, masked in replies)
        d = self.n_features
        grad = total[1:1 + d] if want_grad else None
        hvp = total[1 + d * want_grad:] if v is not None else None
        return [SiteEval(AGGREGATE, float(total[0]), sum(rows for rows, _ in replies), grad,
                         hvp)]

    def line_search(self, p: np.ndarray | None, alphas: np.ndarray
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Loss sums and directional-derivative sums at ``w + a p`` for each ``a``.

        ``p`` is sent once (and cached with ``X p`` at the sites); pass ``None`` to
        reuse the cached direction for another batch of step sizes.
        """
        round_id = self._next_round(down=int(p is not None))
        alphas = [float(a) for a in np.asarray(alphas).ravel()]

        def one(site: str):
            job = self._job(site)
            head = pb.LineSearchRequest(session=job.session, round=round_id, step_sizes=alphas,
                                        dropped_peers=self._dropped_peers())
            vectors = [] if p is None else [(0, self._restrict(site, p))]
            reply, _ = self._call(
                site, "LineSearch", lambda: self._stream(head, pb.LineSearchRequest, vectors),
                round_id)
            if self.secure is not None:
                return self._masked_field(site, "LineSearch", reply, 2 * len(alphas))
            return np.array(reply.loss_sums), np.array(reply.derivative_sums)

        if self.secure is None:
            return list(self._map(one).values())
        total = self._unmask(self._secure_map(one).values())
        return [(total[:len(alphas)], total[len(alphas):])]

    def local_solve(self, procedure: str, params: dict, inputs: list[np.ndarray],
                    exact: frozenset[int] = frozenset(), outputs: int = 1
                    ) -> list[tuple[np.ndarray, dict, int]]:
        """Run a local procedure at every site; returns (vector, info, rows) per site.
        Input slots in ``exact`` travel uncompressed (e.g. a metric); a procedure with
        ``outputs`` blocks returns them one after the other, each model-sized."""
        round_id = self._next_round(down=len(inputs), up=outputs)

        def one(site: str):
            job = self._job(site)
            head = pb.LocalSolveRequest(session=job.session, round=round_id,
                                        procedure=procedure, params_json=json.dumps(params),
                                        dropped_peers=self._dropped_peers())
            vectors = [(slot, self._restrict(site, v)) for slot, v in enumerate(inputs)]
            dim = self._dim(site)
            ring = {"ring_slots": (0,)} if self.secure is not None else None
            first, asm = self._call(
                site, "LocalSolve",
                lambda: self._stream(head, pb.LocalSolveRequest, vectors, exact),
                round_id, lengths=lambda _r: {0: dim * outputs}, slot_kinds=ring)
            if self.secure is not None:
                return first.rows, asm.result(0)
            blocks = np.split(asm.result(0), outputs)
            return (np.concatenate([self._expand(site, b) for b in blocks]),
                    json.loads(first.info_json or "{}"), first.rows)

        if self.secure is None:
            return list(self._map(one).values())
        replies = self._secure_map(one).values()  # masked sums of rows * vector
        rows = sum(r for r, _ in replies)
        return [(self._unmask(masked for _, masked in replies) / rows, {}, rows)]

    def subspace(self, new: list[np.ndarray] | None = None, *, add_last_local_input: bool = False,
                 coefficients: np.ndarray | None = None, commit: bool = False,
                 memory: int = 0) -> list[tuple[float, np.ndarray, np.ndarray, int]]:
        """Append directions to every site's subspace, then evaluate at ``coefficients``
        (loss sum, gradient and Hessian in the coefficients: scalars only) or commit
        the move ``w + D c``. Returns ``(loss, gradient, Hessian, rows)`` per site."""
        new = new or []
        round_id = self._next_round(down=len(new))
        coeffs = [] if coefficients is None else [float(c) for c in coefficients]

        def one(site: str):
            job = self._job(site)
            head = pb.SubspaceRequest(
                session=job.session, round=round_id, new_directions=len(new),
                add_last_local_input=add_last_local_input, coefficients=coeffs,
                commit=commit, memory=memory, dropped_peers=self._dropped_peers())
            vectors = [(slot, self._restrict(site, v)) for slot, v in enumerate(new)]
            reply, _ = self._call(site, "Subspace",
                                  lambda: self._stream(head, pb.SubspaceRequest, vectors), round_id)
            m = reply.directions
            if self.secure is not None and not commit:
                n = 1 + m + m * (m + 1) // 2
                return m, reply.rows, self._masked_field(site, "Subspace", reply, n)
            hess = None
            if reply.hessian:
                if len(reply.hessian) != m * (m + 1) // 2:
                    raise SiteCallError(site, "Subspace", "INTERNAL",
                                        f"{len(reply.hessian)} Hessian values for {m} directions")
                hess = _symmetric(np.array(reply.hessian), m)
            return reply.loss_sum, np.array(reply.gradient), hess, reply.rows

        if self.secure is None or commit:
            return list(self._map(one).values())
        replies = list(self._secure_map(one).values())
        m = replies[0][0]
        if any(r[0] != m for r in replies):
            raise GeodmlError(f"sites hold subspaces of different sizes: {[r[0] for r in replies]}")
        total = self._unmask(masked for _, _, masked in replies)
        return [(float(total[0]), total[1:1 + m], _symmetric(total[1 + m:], m),
                 sum(r[1] for r in replies))]

    def describe_site(self, site: str) -> SiteInfo:
        """The site's Describe, asked now (e.g. the privacy budget it has spent)."""
        return self._describe(site)

    def support(self, site: str) -> np.ndarray | None:
        """The global feature indices a site's vectors cover (None: all of them)."""
        return self._job(site).support

    def export(self, site: str, max_chunk_bytes: int = 4 << 20) -> Dataset:
        """The site's raw rows (refused with PERMISSION_DENIED unless its policy allows)."""
        job = self._job(site)
        _, replies = self._call(site, "Export", pb.ExportRequest(
            session=job.session, max_chunk_bytes=max_chunk_bytes))
        return decode_rows([r.arrow_ipc for r in replies], self.sites[site].space)

    def close_sessions(self, journal: bool = True) -> None:
        """Free every site's session (``journal=False``: at shutdown, not part of the run
        a resume replays)."""
        jobs, self._jobs = self._jobs, {}
        for site, job in jobs.items():
            with contextlib.suppress(SiteCallError):  # a site already gone has nothing to free
                self._call(site, "Close", pb.CloseRequest(session=job.session), retry=False,
                           journal=journal)

    def close(self, keep_sessions: bool = False) -> None:
        """Close the sessions (unless ``keep_sessions``: a failed resumable run leaves
        them at the sites for ``--resume``), the channels and the journal."""
        if not keep_sessions:
            self.close_sessions(journal=False)
        self._release()

    def _release(self) -> None:
        """Channels, worker threads, audit log and journal (no call to any site)."""
        for t in self.transports.values():
            t.close()
        self._pool.shutdown(wait=False)
        if self.audit is not None:
            self.audit.close()
        if self.journal is not None:
            self.journal.close()
        if self._scratch_journal is not None:
            self._scratch_journal.cleanup()

    def __enter__(self) -> Federation:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # a run with a resumable journal that failed keeps its sessions for --resume
        resumable = self.journal is not None and self._scratch_journal is None
        self.close(keep_sessions=exc_type is not None and resumable)
