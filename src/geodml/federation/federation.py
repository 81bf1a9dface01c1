"""The :class:`Federation`: every site behind one narrow, metered interface.

Algorithms see only this class. It calls all sites concurrently, meters every
message per link and direction (:class:`~geodml.federation.meter.Meter`), writes
each boundary crossing to the audit log, and hides support-restricted exchange:
callers always pass and receive full-dimension vectors, while the wire carries
only the coordinates a site's rows touch when that is enabled.

Each round: the job's coordinator halves encode what goes down (support restriction
:mod:`geodml.job.support`, down compression :mod:`geodml.job.compression`), the client
calls every site (:mod:`geodml.federation.client`: session, meter, audit, journal,
retry; :mod:`geodml.federation.recovery`: replay and recovery), and the halves decode
what comes up (expand, per-row means, secure-aggregation unmasking
:mod:`geodml.job.secure`) before the sums are returned.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from geodml.data.dataset import Dataset, FeatureSpace
from geodml.errors import GeodmlError
from geodml.federation.channels import Channels
from geodml.federation.client import SiteClient
from geodml.federation.journal import Journal
from geodml.federation.meter import AuditLog, Meter
from geodml.federation.recovery import Recovery
from geodml.federation.reliability import Reliability, SiteLostError
from geodml.job import secure as secure_job
from geodml.job import support as support_job
from geodml.job.compression import CompressionConfig, DownChannel, UpReceiver
from geodml.job.privacy import PrivacyJob, privacy_request
from geodml.job.secure import SecureAggregation
from geodml.job.spec import prepare_request
from geodml.job.validation import SiteValidation, ValidationJob, combine, histogram_from_wire
from geodml.wire.codec import WireFormat, encode_vector
from geodml.wire.errors import SiteCallError
from geodml.wire.info import SiteInfo
from geodml.wire.protocol import PROTOCOL_VERSION, pb, with_chunks
from geodml.wire.rows import decode_rows
from geodml.wire.transport import Transport

__all__ = ["AGGREGATE", "CompressionConfig", "Federation", "PrivacyJob", "SecureAggregation",
           "SiteCallError", "SiteEval", "SiteInfo", "SiteLostError"]

AGGREGATE = "(all sites)"  # the one "site" a secure-aggregation round returns

@dataclass
class SiteEval:
    site: str
    loss_sum: float
    rows: int
    grad: np.ndarray | None
    hvp: np.ndarray | None
    derivatives: tuple[float, ...] = ()  # a step's exact slope sums along p (Evaluate)


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


class Federation(SiteClient, Recovery, Channels):
    """The coordinator's handle on K sites (in-process or gRPC transports)."""

    def __init__(
        self, transports: Iterable[Transport], home: str, wire: WireFormat | None = None,
        audit: AuditLog | None = None, timeout: float | None = None,
        compression: CompressionConfig | None = None, sample_fraction: float = 1.0,
        reliability: Reliability | None = None, journal: Journal | None = None,
        secure: SecureAggregation | None = None, nonce_seed: bytes | None = None,
        validation: ValidationJob | None = None, serial: bool = False,
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
        left out of the masks and the survivors are asked again.

        ``validation``: every site holds out a share of its rows, scored in every gradient
        round (:mod:`geodml.job.validation`); :meth:`take_validation`: the last point's.
        ``serial``: one site's call at a time (sites sharing one machine), so that each
        call's time is its site's compute alone, as in a DC of its own."""
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
        self._up = UpReceiver(CompressionConfig())
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
        self._replaying = set(self.transports if journal is not None and journal.resume else ())
        self.dropped: dict[str, str] = {}  # sites the run continued without, and why
        self.recoveries: dict[str, int] = {}  # restarted sites recovered, per site
        self._pool = ThreadPoolExecutor(1 if serial else len(self.transports))
        self._round = self._home_rounds = 0  # home rounds: to the home DC's site alone
        self.vectors_down = self.vectors_up = 0  # model-sized vectors to and from every site
        self._jobs: dict[str, _Job] = {}
        self.secure = secure
        self.nonce_seed = nonce_seed  # makes job nonces reproducible (a resumed run's)
        self._jobs_prepared = 0
        self._peers: set[str] = set()  # the sites the current job's masks cover
        self._fraction_bits = 0  # the current job's fixed point
        self.validation = validation
        self._validated: dict[str, float] = {}  # metrics at the last point evaluated
        try:
            secure_job.check_job(secure, bool(self.compression.up or self.compression.down),
                                 validation is not None)
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
        return self.site_rows

    @property
    def site_rows(self) -> int:
        """Every row the sites hold (held-out rows and rows outside a sample included)."""
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

    def _next_round(self, down: int = 0, up: int = 0, home_only: bool = False) -> int:
        self._round += 1
        self._home_rounds += home_only  # inside the home DC: no WAN round, no WAN vectors
        self.vectors_down += 0 if home_only else down
        self.vectors_up += 0 if home_only else up
        return self._round

    @property
    def rounds(self) -> int:
        """WAN rounds so far: calls to every site, not those to the home DC's site alone."""
        return self._round - self._home_rounds

    @property
    def vector_rounds(self) -> float:
        """Rounds' worth of model-sized vectors: one vector each way per site is 1."""
        return (self.vectors_down + self.vectors_up) / 2

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
        return support_job.restrict(v, self._job(site).support)

    def _expand(self, site: str, v: np.ndarray) -> np.ndarray:
        return support_job.expand(v, self._job(site).support, self.n_features)

    def _dim(self, site: str) -> int:
        return support_job.dim(self._job(site).support, self.n_features)

    def _stream(self, head, cls, vectors: list[tuple[int, np.ndarray]],
                formats: Mapping[int, WireFormat] | None = None) -> Iterator:
        """The header message, then every chunk of the given (slot, vector) pairs; a slot
        in ``formats`` in that format, the others in :attr:`down_format`."""
        fmt, formats = self.down_format, formats or {}
        return with_chunks(head, (c for slot, v in vectors
                                  for c in encode_vector(v, slot, formats.get(slot, fmt))),
                           cls)

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
        cfg = self.compression
        self._down, self._up = DownChannel(cfg.down, self.n_features, self.wire), UpReceiver(cfg)
        if restrict_to_support is None and not self._down.keeps_subsets:
            restrict_to_support = False  # int8 down: dense, or the sites' points drift

        def one(site: str) -> _Job:
            info = self.sites[site]
            restrict = (info.support_size > 0) if restrict_to_support is None else (
                restrict_to_support)
            req = prepare_request(loss, lam, info.space, self.n_features, restrict, self.wire,
                                  job, cfg.up, self.sample_fraction, self.validation
                                  if privacy is None else None, cfg.down, cfg.deltas)
            if secure is not None:
                req.secure.CopyFrom(secure)
            if privacy is not None:
                req.privacy.CopyFrom(privacy_request(privacy, site, dp_nonce))
            n = self.n_features
            first, assembler = self._call(
                site, "Prepare", req,
                lengths=lambda r: support_job.reply_lengths(r.support_size, n),
                slot_kinds={"index_slots": (support_job.INDEX_SLOT, support_job.BITMAP_SLOT)})
            support = support_job.from_reply(assembler.result, first.support_size, n,
                                             site) if restrict else None
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
        """A fresh nonce per job (:func:`geodml.job.secure.job_nonce`)."""
        self._jobs_prepared += 1
        return secure_job.job_nonce(self.nonce_seed, self._jobs_prepared)

    def _secure_setup(self) -> pb.SecureAggregation | None:
        """The peers (every site, with its public key), a fresh nonce, the fixed point."""
        if self.secure is None:
            return None
        secure_job.check_sites(list(self.transports))  # before a nonce is drawn
        setup = secure_job.setup(self.secure, self.sites, list(self.transports),
                                 self._job_nonce())
        self._fraction_bits = setup.fraction_bits
        return setup

    @property
    def sum_resolution(self) -> float:
        """Largest rounding error of a sum over the sites: 0 for float64 sums; under
        secure aggregation, half a fixed-point unit per site."""
        if self.secure is None:
            return 0.0
        return secure_job.sum_resolution(len(self.transports), self._fraction_bits)

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
        return secure_job.unmask(parts, self._fraction_bits)

    def evaluate(self, w: np.ndarray | None = None, *, step: float | None = None,
                 direction: np.ndarray | None = None, want_grad: bool = True,
                 v: np.ndarray | None = None, commit: np.ndarray | None = None,
                 memory: int = 0, sites: Iterable[str] | None = None) -> list[SiteEval]:
        """Loss sums (and gradient / Hessian-vector sums) at ``w``, at ``w + step p`` (``p``
        cached, or ``direction``, sent and cached now; with the exact slope sums), or at
        the current point moved to ``w + D commit`` (as :meth:`subspace` would, keeping
        ``memory`` steps); one round to every site, or to ``sites`` (unmasked only)."""
        if (commit is not None and (w is not None or step is not None)) or (
                direction is not None and (w is not None or step is None)):
            raise GeodmlError("evaluate: commit moves the current point (no w or step), "
                              "a direction goes with a step (no w)")
        if sites is not None and self.secure is not None:
            raise GeodmlError("evaluate: masked sums cancel only over every site")
        round_id = self._next_round(down=(w is not None) + (v is not None)
                                    + (direction is not None), up=want_grad + (v is not None))
        full_precision, as_mean = self._up.begin_evaluate()
        coefficients = [] if commit is None else [float(x) for x in commit]
        validate = want_grad and self.validation is not None and self.secure is None
        scored: dict[str, SiteValidation] = {}

        def one(site: str) -> SiteEval:
            job = self._job(site)
            head = pb.EvaluateRequest(session=job.session, round=round_id,
                                      want_gradient=want_grad, want_hvp=v is not None,
                                      has_w=w is not None, full_precision=full_precision,
                                      dropped_peers=self._dropped_peers(), validate=validate,
                                      commit=commit is not None, commit_memory=memory,
                                      commit_coefficients=coefficients,
                                      has_direction=direction is not None)
            if step is not None and w is None:
                head.step = step
            vectors = []
            if w is not None:
                vectors.append((0, self._restrict(site, w)))
            if v is not None:
                vectors.append((1, self._restrict(site, v)))
            if direction is not None:
                vectors.append((2, self._restrict(site, direction)))
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
                grad = self._up.receive(site, round_id, grad, first.rows, as_mean,
                                        first.gradient_delta)
            hvp = self._expand(site, asm.result(1)) if v is not None else None
            if validate:
                scored[site] = SiteValidation(
                    first.validation_loss_sum, first.validation_rows,
                    histogram_from_wire(first.validation_histogram, site))
            return SiteEval(site, first.loss_sum, first.rows, grad, hvp,
                            tuple(first.derivative_sums))

        if self.secure is None:
            evals = list(self._map(one, sites).values())
            if validate:
                self._validated = combine([scored[site] for site in self.transports])
            return evals
        replies = self._secure_map(one).values()
        total = self._unmask(masked for _, masked in replies)
        d = self.n_features
        grad = total[1:1 + d] if want_grad else None
        hvp = total[1 + d * want_grad:] if v is not None else None
        return [SiteEval(AGGREGATE, float(total[0]), sum(rows for rows, _ in replies), grad,
                         hvp)]

    def take_validation(self) -> dict[str, float]:
        """The held-out metrics (``val_log_loss``, ``val_auc``, ``val_rows``) at the last
        point a gradient round evaluated, once: a second call, or one before any
        such round, returns ``{}``."""
        out, self._validated = self._validated, {}
        return out

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
                return secure_job.masked_field(site, "LineSearch", reply, 2 * len(alphas))
            return np.array(reply.loss_sums), np.array(reply.derivative_sums)

        if self.secure is None:
            return list(self._map(one).values())
        total = self._unmask(self._secure_map(one).values())
        return [(total[:len(alphas)], total[len(alphas):])]

    def local_solve(self, procedure: str, params: dict, inputs: list[np.ndarray],
                    formats: Mapping[int, WireFormat] | None = None, outputs: int = 1,
                    sites: Iterable[str] | None = None) -> list[tuple[np.ndarray, dict, int]]:
        """Run a local procedure at every site (or ``sites``, unmasked: the home DC's
        site alone is no WAN round); returns (vector, info, rows) per site. Inputs in
        ``formats`` travel in that format, not the down compression (a metric), and
        ``outputs`` blocks come back one after the other, each model-sized."""
        sites = None if sites is None else list(sites)
        round_id = self._next_round(len(inputs), outputs, set(sites or ()) == {self.home})

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
                lambda: self._stream(head, pb.LocalSolveRequest, vectors, formats),
                round_id, lengths=lambda _r: {0: dim * outputs}, slot_kinds=ring)
            if self.secure is not None:
                return first.rows, asm.result(0)
            blocks = np.split(asm.result(0), outputs)
            return (np.concatenate([self._expand(site, b) for b in blocks]),
                    json.loads(first.info_json or "{}"), first.rows)

        if self.secure is None:
            return list(self._map(one, sites).values())
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
                return m, reply.rows, secure_job.masked_field(site, "Subspace", reply, n)
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
