"""Replay and recovery: answering a resumed run's calls from its journal, and
rebuilding a restarted site's session by re-sending its journaled calls.

A resumed run (``--resume``) first answers every call from the journal, checking that
it asks exactly what the journaled run asked; a site that restarted mid-run gets its
session rebuilt: a new Prepare and the calls since, every reply checked against the
journal, so the session is exactly what it was (:meth:`Recovery._recover`).
:class:`Recovery` is a part of :class:`~geodml.federation.Federation`.
"""


from __future__ import annotations

from geodml.errors import GeodmlError
from geodml.federation.journal import (
    DIGEST_PREFIX,
    CallRecord,
    JournalError,
    replies_digest,
)
from geodml.federation.reliability import TRANSIENT, SiteLostError
from geodml.wire.errors import SiteCallError
from geodml.wire.protocol import (
    METHODS,
    REPLAYED_ON_RECOVERY,
    pb,
)


class Recovery:
    """Replaying a journal and recovering restarted sites (a part of the Federation)."""

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

