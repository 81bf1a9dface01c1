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


class Meter:
    """Bytes, messages and calls per site and direction (down: to the site)."""

    def __init__(self, home: str):
        self.home = home
        self._lock = threading.Lock()
        self.counters: dict[tuple[str, str], LinkCounter] = defaultdict(LinkCounter)
        self.calls: dict[str, int] = defaultdict(int)

    def record(self, site: str, direction: str, call: str, nbytes: int, messages: int) -> None:
        if direction not in ("down", "up"):
            raise ValueError(f"direction must be down or up, got {direction!r}")
        with self._lock:
            c = self.counters[(site, direction)]
            c.bytes += nbytes
            c.messages += messages
            c.calls += 1
            if direction == "down":
                self.calls[call] += 1

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
