"""Deadlines scaled to the machine, and polling with them.

Every deadline a test waits on (a site starting, a file appearing, threads
settling) is written for an idle development machine and multiplied by
``GEODML_TEST_TIME_SCALE`` (a float, default 1): on a busy or slow machine, run the
suite with e.g. ``GEODML_TEST_TIME_SCALE=4``. Polling never sleeps longer than a
small interval, so a fast machine waits no longer than it must.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ENV = "GEODML_TEST_TIME_SCALE"


def time_scale() -> float:
    """The factor of every test deadline (``GEODML_TEST_TIME_SCALE``, at least 1)."""
    raw = os.environ.get(ENV, "1")
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
