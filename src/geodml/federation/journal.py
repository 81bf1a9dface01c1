"""The call journal: every call the coordinator made to a site, on disk, checksummed.

One append-only file per site. A *record* is one call: its request messages as sent,
its reply messages as received, the metered bytes and, for a call that failed for good
(a policy refusal, a bad argument), its status. Records are written as the call
streams, so memory stays flat however large the vectors, and each ends with a
BLAKE2b digest of everything in it, then an ``fsync``.

Two things read it:

* **site recovery**: a site that was restarted (same data) answers ``NOT_FOUND`` for
  the session; the federation prepares a new session and re-sends the site's records
  since its last Prepare, checking that every reply is identical, so the site's state
  (point, cached directions, local-solver state, compression residuals) is exactly what
  it was;
* **coordinator resume** (``geodml train --resume``): the method runs again from the
  start, and its calls are answered from the journal, checked request by request,
  until the journal ends; then they go to the sites, whose sessions are still where
  the crashed coordinator left them (a call that was in flight is answered from the
  site's cache of its last round).

Format (all integers little-endian u32)::

    file    := MAGIC record*
    record  := "R" len json(header)  ("Q" len bytes | "A" len bytes)*
               "E" len json(trailer)  digest16
    header  := {"method", "round"}
    trailer := {"down": [bytes, messages], "up": [...], "seconds", "error": [code, message]|null}

``Q`` is a request message, ``A`` a reply message; ``digest16`` is BLAKE2b-128 of the
record's bytes before it. A record that runs past the end of the file is a call that
was in flight when the process died: it is dropped (and the file truncated there)
when the journal is reopened. A bad digest or tag anywhere is corruption: a
:class:`JournalError` names the file, the record and its byte offset; nothing is
silently skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from geodml.errors import GeodmlError

MAGIC = b"GEODML-JOURNAL-1\n"
_U32 = struct.Struct("<I")
_DIGEST = 16


class JournalError(GeodmlError):
    """A journal that cannot be used: corrupt, or not matching the run."""


@dataclass
class CallRecord:
    """One call as the journal holds it."""

    method: str
    round: int | None
    requests: list[bytes] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)
    down: tuple[int, int] = (0, 0)
    up: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    error: tuple[str, str] | None = None


DIGEST_PREFIX = b"sha256:"


def replies_digest(replies: list[bytes]) -> bytes:
    """What a compact journal keeps of a call's replies: ``sha256:`` + digest."""
    h = hashlib.sha256()
    for data in replies:
        h.update(_U32.pack(len(data)))
        h.update(data)
    return DIGEST_PREFIX + h.digest()


class _Writer:
    """The record being written for one call (``digest_replies``: keep only a digest
    of the replies, see :class:`Journal`).

    gRPC reads a call's request stream on its own thread, which may go on after the
    call has failed: once the record is finished or abandoned (``active`` false, under
    ``lock``) such late writes are dropped instead of landing in the next record."""

    def __init__(self, file, lock: threading.Lock, method: str, round_id: int | None,
                 digest_replies: bool = False):
        self._file, self._lock, self.active = file, lock, True
        self._hash = hashlib.blake2b(digest_size=_DIGEST)
        self._replies: list[bytes] | None = [] if digest_replies else None
        self._put(b"R", json.dumps({"method": method, "round": round_id}).encode())

    def _put(self, tag: bytes, payload: bytes) -> None:
        chunk = tag + _U32.pack(len(payload)) + payload
        with self._lock:
            if not self.active:
                return
            self._hash.update(chunk)
            self._file.write(chunk)

    def request(self, message: bytes) -> None:
        self._put(b"Q", message)

    def reply(self, message: bytes) -> None:
        if self._replies is not None:
            self._replies.append(message)
        else:
            self._put(b"A", message)

    def finish(self, down, up, seconds: float, error: tuple[str, str] | None) -> None:
        if self._replies:
            self._put(b"A", replies_digest(self._replies))
        trailer = {"down": list(down), "up": list(up), "seconds": seconds,
                   "error": list(error) if error else None}
        self._put(b"E", json.dumps(trailer).encode())
        with self._lock:
            self.active = False
            self._file.write(self._hash.digest())
            self._file.flush()
            os.fsync(self._file.fileno())


class SiteJournal:
    """The journal file of one site (calls to one site are sequential).

    Opened for a resumed run, it keeps the complete records, cuts off a record that
    was in flight, and offers the kept ones, oldest first, in :attr:`pending`.
    """

    def __init__(self, path: Path, resume: bool, compact: bool = False):
        self.path, self.compact = path, compact
        self.records = 0
        self.last_prepare: int | None = None  # byte offset of the last Prepare record
        self._start = 0  # where the record being written begins
        self._method: str | None = None
        self._writer: _Writer | None = None  # the record being written
        self._lock = threading.Lock()  # between the caller and gRPC's request thread
        self.pending: Iterator[CallRecord] = iter(())
        if resume and path.exists():
            self._end = len(MAGIC)
            for offset, rec, end in _scan(path):
                self.records += 1
                self._end = end
                if rec.method == "Prepare":
                    self.last_prepare = offset
            self._file = open(path, "r+b")  # noqa: SIM115 (closed in close())
            self._file.truncate(self._end)  # a call in flight when the process died
            self._file.seek(self._end)
            self.pending = (rec for _, rec, _ in _scan(path, end=self._end))
        else:
            self._file = open(path, "wb")  # noqa: SIM115
            self._file.write(MAGIC)
            self._file.flush()
            self._end = len(MAGIC)

    def begin(self, method: str, round_id: int | None) -> _Writer:
        if self.compact and method == "Prepare":  # recovery reads from the last Prepare on
            self._end = len(MAGIC)
            self.abandon()
            self.records = 0
        self._start, self._method = self._end, method
        self._writer = _Writer(self._file, self._lock, method, round_id,
                               digest_replies=self.compact and method != "Prepare")
        return self._writer

    def commit(self) -> None:
        """The record just finished (``_Writer.finish``) is part of the journal."""
        self._end = self._file.tell()
        self.records += 1
        if self._method == "Prepare":
            self.last_prepare = self._start

    def abandon(self) -> None:
        """Cut off the record being written (its call failed and will be retried)."""
        with self._lock:
            if self._writer is not None:
                self._writer.active = False  # late writes from gRPC's thread are dropped
            self._file.flush()
            self._file.truncate(self._end)
            self._file.seek(self._end)

    def since_last_prepare(self) -> Iterator[CallRecord]:
        """The records from the last Prepare on (a recovering site's history)."""
        if self.last_prepare is None:
            return iter(())
        self._file.flush()
        return (rec for _, rec, _ in _scan(self.path, self.last_prepare, self._end))

    def close(self) -> None:
        self._file.close()


def _read_exact(f, n: int) -> bytes | None:
    data = f.read(n)
    return data if len(data) == n else None


def _scan(path: Path, start: int | None = None, end: int | None = None
          ) -> Iterator[tuple[int, CallRecord, int]]:
    """``(offset, record, end offset)`` of every complete record from ``start`` (to
    ``end``); stops quietly at a record cut off by the end of the file; raises on
    corruption."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise JournalError(f"{path}: not a geodml journal (bad header)")
        if start is not None:
            f.seek(start)
        index = 0
        while True:
            offset = f.tell()
            if end is not None and offset >= end:
                return
            tag = f.read(1)
            if not tag:
                return
            index += 1
            rec = _read_record(f, tag, path, index, offset)
            if rec is None:
                return
            yield offset, rec, f.tell()


def _read_record(f, tag: bytes, path: Path, index: int, offset: int) -> CallRecord | None:
    def corrupt(why: str) -> JournalError:
        return JournalError(f"{path}: record {index} at byte {offset} is corrupt: {why}")

    h = hashlib.blake2b(digest_size=_DIGEST)
    rec: CallRecord | None = None
    while True:
        if tag not in (b"R", b"Q", b"A", b"E"):
            raise corrupt(f"unknown tag {tag!r}")
        if (rec is None) != (tag == b"R"):
            raise corrupt(f"tag {tag.decode()} out of place")
        size = _read_exact(f, 4)
        if size is None:
            return None
        payload = _read_exact(f, _U32.unpack(size)[0])
        if payload is None:
            return None
        h.update(tag + size + payload)
        try:
            if tag == b"R":
                head = json.loads(payload)
                rec = CallRecord(head["method"], head["round"])
            elif tag == b"Q":
                rec.requests.append(payload)
            elif tag == b"A":
                rec.replies.append(payload)
            else:
                t = json.loads(payload)
                rec.down, rec.up = tuple(t["down"]), tuple(t["up"])
                rec.seconds = float(t["seconds"])
                rec.error = tuple(t["error"]) if t["error"] else None
        except (ValueError, KeyError, TypeError) as e:
            raise corrupt(f"unreadable {tag.decode()} field ({e})") from None
        if tag == b"E":
            digest = _read_exact(f, _DIGEST)
            if digest is None:
                return None
            if digest != h.digest():
                raise corrupt("checksum mismatch")
            return rec
        tag = f.read(1)
        if not tag:
            return None


class Journal:
    """Per-site journals in one directory.

    ``compact``: for site recovery only (not for resuming a run): each site's file
    starts again at every Prepare and keeps a digest of each call's replies instead
    of the replies, so it holds about the requests since the last Prepare."""

    def __init__(self, directory: str | os.PathLike, resume: bool = False,
                 compact: bool = False):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.resume, self.compact = resume, compact
        self._sites: dict[str, SiteJournal] = {}
        self._lock = threading.Lock()

    def site(self, name: str) -> SiteJournal:
        with self._lock:
            j = self._sites.get(name)
            if j is None:
                j = self._sites[name] = SiteJournal(
                    self.directory / f"{name}.journal", self.resume, self.compact)
            return j

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {name: j.records for name, j in self._sites.items()}

    def close(self) -> None:
        with self._lock:
            for j in self._sites.values():
                j.close()
