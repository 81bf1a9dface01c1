"""Deadlines scaled to the machine, and polling with them.

Every deadline a test waits on (a site starting, a file appearing, a subprocess
ending) is written for an idle development machine and multiplied by a factor:
``GEODML_TEST_TIME_SCALE`` when set (e.g. ``GEODML_TEST_TIME_SCALE=4`` on a slow
machine), else ``1 + load / cores`` from the 1-minute load average, read at each
call (a machine running two CPU-bound jobs on two cores waits twice as long), at
most 8. Polling never sleeps longer than a small interval, so a fast machine waits
no longer than it must.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ENV = "GEODML_TEST_TIME_SCALE"
MAX_AUTO_SCALE = 8.0


def time_scale() -> float:
    """The factor of every test deadline (see the module doc), at least 1."""
    raw = os.environ.get(ENV)
    if raw is None:
        try:
            load = os.getloadavg()[0]
        except OSError:
            load = 0.0
        return min(1.0 + load / (os.cpu_count() or 1), MAX_AUTO_SCALE)
    try:
        scale = float(raw)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r} is not a number") from None
    return max(scale, 1.0)


def scaled(seconds: float) -> float:
    """``seconds`` times :func:`time_scale`."""
    return seconds * time_scale()


def poll(probe: Callable[[], T | None], seconds: float, what: str,
         interval: float = 0.02) -> T:
    """Call ``probe`` until it returns something other than None or False, for at most
    ``scaled(seconds)``; return that value, or fail naming ``what`` and the deadline."""
    deadline = time.monotonic() + scaled(seconds)
    delay = 0.001
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {scaled(seconds):.1f} s "
                                 f"({ENV}={time_scale():g})")
        time.sleep(delay)  # polling; bounded by the deadline
        delay = min(delay * 2, interval)
