"""One site's call, as the coordinator makes it: session, meter, audit, journal, retry.

:class:`SiteClient` is the part of :class:`~geodml.federation.Federation` that sends one
request to one site (:meth:`SiteClient._call`): it fills in the site's current session
(a recovered site has a new one), meters both directions per link
(:class:`~geodml.federation.meter.Meter`), writes the audit record with the digest of
the replies (:mod:`geodml.wire.digest`), journals the call for ``--resume`` and
recovery (:mod:`geodml.federation.journal`), retries transient failures within the
site's deadline and recovers a restarted site (:mod:`geodml.federation.recovery`,
:mod:`geodml.federation.reliability`). It works on the federation's state:
``transports``, ``meter``, ``audit``, ``home``, ``journal``, ``reliability``,
``timeout``, ``_jobs`` (the sessions) and ``_replaying``.
"""


from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from geodml.federation.meter import link_name
from geodml.federation.reliability import TRANSIENT, SiteLostError
from geodml.wire.codec import VectorAssembler
from geodml.wire.digest import add_message, message_digest
from geodml.wire.errors import SiteCallError
from geodml.wire.protocol import (
    SESSION_CALLS,
)


class SiteClient:
    """The calls to one site (a part of :class:`~geodml.federation.Federation`)."""

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

