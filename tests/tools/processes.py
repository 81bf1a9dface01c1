"""The processes a test session started, found and ended (Linux /proc).

The suite's conftest puts ``GEODML_TEST_SESSION=<uuid>`` in its own environment at
start; every process it starts (site servers, ``geodml train``, their children)
inherits it, so ``/proc/PID/environ`` tells the session's processes from anyone
else's, also after their parent died and they were re-parented to PID 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable

ENV = "GEODML_TEST_SESSION"


def _pids() -> Iterable[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _state_and_parent(pid: int) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def live(pid: int) -> bool:
    """Running or sleeping, not a zombie and not gone."""
    info = _state_and_parent(pid)
    return info is not None and info[0] not in ("Z", "X")


def descendants(pid: int | None = None) -> list[int]:
    """Every live process below ``pid`` (default: this one), children first."""
    pid = os.getpid() if pid is None else pid
    parent_of = {}
    for p in _pids():
        info = _state_and_parent(p)
        if info is not None and info[0] not in ("Z", "X"):
            parent_of[p] = info[1]
    out, frontier = [], [pid]
    while frontier:
        nxt = [p for p, parent in parent_of.items() if parent in frontier]
        out += nxt
        frontier = nxt
    return out


def with_token(token: str) -> list[int]:
    """Live processes (other than this one) whose environment holds ``ENV=token``."""
    needle = f"{ENV}={token}".encode()
    out = []
    for p in _pids():
        if p == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue  # gone, or another user's
        if needle in env and live(p):
            out.append(p)
    return out


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "(gone)"


def kill_all(pids: Iterable[int], grace: float = 2.0) -> None:
    """SIGTERM ``pids``, then SIGKILL whichever still lives after ``grace`` seconds."""
    pids = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, sig)
        end = time.monotonic() + grace
        while any(live(p) for p in pids) and time.monotonic() < end:
            time.sleep(0.02)  # waiting for the kernel to end them, bounded
        pids = [p for p in pids if live(p)]
        if not pids:
            return
