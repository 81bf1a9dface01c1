"""How fast this machine gives a process memory it never had: the rate at which the
centralized baseline's home DC writes its copy of the rows (see
:mod:`geodml.planning.central_time`).

A first touch of a page costs what the kernel (and, in a VM, the hypervisor) pays to
back it. On a VM whose balloon reports free pages to the host (virtio-balloon free page
reporting), memory a process freed in the last few seconds is still backed and is
touched at memory speed, while memory reported back to the host is backed again page by
page. On the 2-core development VM that is 5-7 GB/s against 300-500 MB/s, and a probe
of a fixed 256 MB measured whichever of the two it happened to get: 5-7 GB/s right
after the planner's calibrations at full size had freed gigabytes, where the
baseline's copy, gigabytes of it a minute later, came at 300-500 MB/s (the centralized
plan under-predicted by 40-54% at 1M rows per DC and more).

So the probe touches 16 MB chunks in a fresh child process and times each. The rate
it reports is that of the last :data:`SLOW_RUN` bytes of chunks, so memory the
machine backs slowly is measured once the probe has got past what was recently freed:
it stops at the first :data:`SLOW_RUN` bytes of consecutive chunks each under
``1 / SLOW_FACTOR`` of the fastest chunk's rate (the slow regime found), or at
``cap`` bytes or :data:`PROBE_SECONDS` (no slow regime: a machine whose first touches
all cost the same, or recently freed memory larger than the cap).

The child also fills the last :data:`SLOW_RUN` bytes it touched again, the rate at
which memory is written once it is backed (:func:`backed_rate`): what the copy costs
when its pages come from memory still backed, the low end of the setup's range.

Run as ``python -m geodml.planning.memory_probe CAP_BYTES``: prints both rates in bytes
per second, first-touch then backed.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from typing import NamedTuple

CHUNK = 16 << 20
SLOW_RUN = 128 << 20  # the slow regime: this many bytes of consecutive slow chunks
SLOW_CHUNKS = SLOW_RUN // CHUNK
SLOW_FACTOR = 4.0  # a slow chunk: under 1 / SLOW_FACTOR of the fastest chunk's rate
PROBE_SECONDS = 1.2  # the probe's time budget
DEFAULT_CAP = 4 << 30  # at most this many bytes touched (0.6 s at 7 GB/s),
AVAILABLE_SHARE = 0.25  # and at most this share of the memory available
BACKED_REPEATS = 3  # passes over touched chunks, the quickest kept


class MemoryRates(NamedTuple):
    """Bytes per second written into memory: ``fresh``, first touches past recently freed
    memory (:func:`touch_rates`); ``backed``, memory already backed (:func:`backed_rate`)."""

    fresh: float
    backed: float


def touch_rates(cap: int = DEFAULT_CAP, budget: float = PROBE_SECONDS) -> MemoryRates:
    """Bytes per second of the last :data:`SLOW_RUN` bytes of first-touched chunks
    (the whole probe when it touched less), stopping as the module docstring says, and
    of filling the last of them again. Meant for a fresh process: memory this
    process freed earlier would flatter the first."""
    import numpy as np

    chunks: list[np.ndarray] = []  # held, so that every chunk is memory never had
    seconds: list[float] = []
    start = time.perf_counter()
    while (len(chunks) * CHUNK < cap and time.perf_counter() - start < budget
           and not slow_regime(seconds)):
        t = time.perf_counter()
        chunk = np.empty(CHUNK // 8)
        chunk.fill(1.0)
        chunks.append(chunk)
        seconds.append(max(time.perf_counter() - t, 1e-9))
    return MemoryRates(tail_rate(seconds), backed_rate(chunks[-SLOW_CHUNKS:]))


def backed_rate(chunks: list) -> float:
    """Bytes per second of filling ``chunks``, already touched, again (more than a cache
    holds: the last :data:`SLOW_RUN` bytes of them): the quickest of
    :data:`BACKED_REPEATS` passes."""
    best, size = float("inf"), sum(c.nbytes for c in chunks)
    for _ in range(BACKED_REPEATS):
        t = time.perf_counter()
        for chunk in chunks:
            chunk.fill(2.0)
        best = min(best, time.perf_counter() - t)
    return size / max(best, 1e-9)


def slow_regime(seconds: list[float]) -> bool:
    """Whether the last :data:`SLOW_RUN` bytes of chunks, after at least one more, each
    took over :data:`SLOW_FACTOR` times the quickest chunk."""
    quickest = min(seconds, default=0.0)
    return len(seconds) > SLOW_CHUNKS and all(s > SLOW_FACTOR * quickest
                                              for s in seconds[-SLOW_CHUNKS:])


def tail_rate(seconds: list[float]) -> float:
    """Bytes per second over the last :data:`SLOW_RUN` bytes of chunks (all, if fewer)."""
    tail = seconds[-SLOW_CHUNKS:]
    return len(tail) * CHUNK / sum(tail)


@functools.lru_cache(maxsize=1)
def memory_rates(cap: int = DEFAULT_CAP) -> MemoryRates | None:
    """This machine's :class:`MemoryRates`, timed by :func:`touch_rates` in a fresh child
    process (once per process) over at most ``cap`` bytes and :data:`AVAILABLE_SHARE` of
    the memory available; None if the child fails."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        cap = max(CHUNK, min(cap, int(available * AVAILABLE_SHARE)))
    except (AttributeError, ValueError, OSError):  # no sysconf here: the cap alone
        pass
    try:
        out = subprocess.run([sys.executable, "-m", __name__, str(cap)], capture_output=True,
                             text=True, timeout=120, check=True)
        return MemoryRates(*map(float, out.stdout.split()))
    except (OSError, ValueError, TypeError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":
    print(*touch_rates(int(sys.argv[1])))
