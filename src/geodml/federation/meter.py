"""Counting what crosses DC boundaries: per-link meters and the audit log.

A *link* is a directed pair of DCs ``(src, dst)``. The coordinator runs in its home
DC; a request to site ``s`` crosses ``(home, s)`` and its reply ``(s, home)``.
Traffic between the coordinator and a site in the home DC stays inside the DC: it
is counted (as ``local``) but is not WAN traffic. Bytes are the serialized sizes
of the protobuf messages, counted identically by every transport.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class LinkCounter:
    bytes: int = 0
    messages: int = 0
    calls: int = 0


def link_name(home: str, site: str, direction: str) -> str:
    """``"src->dst"``; traffic with a site in the home DC is marked ``(local down|up)``."""
    src, dst = (home, site) if direction == "down" else (site, home)
    return f"{src}->{dst}" if src != dst else f"{src}->{dst} (local {direction})"


@dataclass
class RoundTraffic:
    """One round's traffic: bytes per link ``"src->dst"`` and the slowest call's
    measured duration (seconds, from the reply records).

    ``round`` is the number the federation gave the round (Evaluate, LineSearch,
    LocalSolve, Subspace: one call to every site); None for a batch of calls without
    one (Describe, Prepare, Export, Close), which :class:`RoundLog` groups: a run of
    consecutive records of one call is one round (the federation calls its sites
    concurrently), and a new one starts when the call changes or a link repeats (a
    second, sequential call).
    """

    round: int | None
    call: str
    links: dict[str, int]
    seconds: float = 0.0


class RoundLog:
    """Traffic records grouped into :class:`RoundTraffic`, in order of first record."""

    def __init__(self) -> None:
        self.rounds: list[RoundTraffic] = []
        self._numbered: dict[int, RoundTraffic] = {}
        self._batch: RoundTraffic | None = None

    def add(self, link: str, call: str, nbytes: int, round_id: int | None,
            seconds: float | None) -> RoundTraffic:
        """Count one record; the round it belongs to."""
        if round_id is not None:
            self._batch = None
            current = self._numbered.get(round_id)
            if current is None:
                current = self._numbered[round_id] = RoundTraffic(round_id, call, {})
                self.rounds.append(current)
        else:
            current = self._batch
            if current is None or call != current.call or link in current.links:
                current = self._batch = RoundTraffic(None, call, {})
                self.rounds.append(current)
        current.links[link] = current.links.get(link, 0) + int(nbytes)
        current.seconds = max(current.seconds, float(seconds or 0.0))
        return current


def audit_rounds(records: Iterable[Mapping]) -> list[RoundTraffic]:
    """The rounds of an audit log (:func:`read_audit`) written by a run in another
    process; a run in this one has them in ``Federation.meter.rounds``."""
    return [traffic for traffic, _ in audit_groups(records)]


def audit_groups(records: Iterable[Mapping]) -> list[tuple[RoundTraffic, list[Mapping]]]:
    """Every round of an audit log with its records (for timing analyses)."""
    log, groups = RoundLog(), {}
    for r in records:
        traffic = log.add(r["link"], r.get("call", ""), r["bytes"], r.get("round"),
                          r.get("seconds"))
        groups.setdefault(id(traffic), (traffic, []))[1].append(r)
    return list(groups.values())


class Meter:
    """Bytes, messages and calls per site and direction (down: to the site), and the
    traffic of every round (:attr:`rounds`: the federation's round numbers)."""

    def __init__(self, home: str):
        self.home = home
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, str], LinkCounter] = defaultdict(LinkCounter)
        self.calls: dict[str, int] = defaultdict(int)
        self._rounds = RoundLog()

    def record(self, site: str, direction: str, call: str, nbytes: int, messages: int,
               round_id: int | None = None, seconds: float | None = None) -> None:
        """Count one call's messages in one direction (``round_id``: the federation's
        round number; ``seconds``: the call's duration, on its reply)."""
        if direction not in ("down", "up"):
            raise ValueError(f"direction must be down or up, got {direction!r}")
        with self._lock:
            c = self.counters[(site, direction)]
            c.bytes += nbytes
            c.messages += messages
            c.calls += 1
            if direction == "down":
                self.calls[call] += 1
            self._rounds.add(link_name(self.home, site, direction), call, nbytes, round_id,
                             seconds)

    @property
    def rounds(self) -> list[RoundTraffic]:
        """Every round's traffic so far, in order (see :class:`RoundTraffic`)."""
        with self._lock:
            return list(self._rounds.rounds)

    def wan_bytes(self) -> int:
        """Bytes that crossed a DC boundary (traffic with non-home sites)."""
        with self._lock:
            return sum(c.bytes for (site, _), c in self.counters.items() if site != self.home)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(c.bytes for c in self.counters.values())

    def site_bytes(self, site: str, direction: str) -> int:
        with self._lock:
            return self.counters[(site, direction)].bytes if (
                site, direction) in self.counters else 0

    def snapshot(self) -> dict:
        """A JSON-able copy: per link ``"src->dst"`` counters, calls, the WAN total."""
        with self._lock:
            links = {
                link_name(self.home, site, d): {**asdict(c), "site": site, "direction": d,
                                                "wan": site != self.home}
                for (site, d), c in sorted(self.counters.items())
            }
            calls = dict(self.calls)
        return {"home": self.home, "links": links, "calls": calls,
                "wan_bytes": sum(v["bytes"] for v in links.values() if v["wan"])}


def wan_links(snapshot: Mapping) -> dict[str, int]:
    """Bytes per WAN link ``"src->dst"`` of a :meth:`Meter.snapshot` (local links left out)."""
    return {name: int(v["bytes"]) for name, v in snapshot["links"].items() if v["wan"]}


class AuditLog:
    """Append-only JSON lines, one per call and direction that crosses a DC boundary."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def write(self, record: dict) -> None:
        line = json.dumps({"time": time.time(), **record}, sort_keys=True)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_audit(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
