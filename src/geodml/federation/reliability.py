"""What the coordinator does when a call to a site fails.

* Every call has a deadline (``call_timeout``).
* A *transient* failure (``UNAVAILABLE``: the site is down, restarting or unreachable;
  ``DEADLINE_EXCEEDED``) is retried with exponential backoff and full jitter: before
  retry ``k`` the coordinator waits a uniform random time in
  ``[0, min(backoff_max, backoff_initial * 2**k)]``, within a budget of
  ``site_deadline`` seconds for the call (one round at that site). Retries are safe:
  every request carries its session and round id, and a site answers a repeated round
  from its cache instead of computing (and counting) it twice.
* A site that answers ``NOT_FOUND`` for the session was restarted: the federation
  prepares a new session and re-sends the site's calls from its journal
  (:mod:`geodml.federation.journal`), checking every reply, then retries the call; the
  run continues from the same iterate.
* A site still unreachable after ``site_deadline`` fails the run with
  :class:`SiteLostError` naming the site, unless ``drop_lost_sites``: then the run
  continues without it, and its result says which DCs it covers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from geodml.errors import GeodmlError

TRANSIENT = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED"})


@dataclass(frozen=True)
class Reliability:
    call_timeout: float = 600.0  # seconds one call may take
    site_deadline: float = 300.0  # seconds a site may stay unreachable during one call
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    drop_lost_sites: bool = False  # continue without a site that stays away
    recover_sites: bool = True  # re-prepare and replay a restarted site

    def __post_init__(self) -> None:
        for name in ("call_timeout", "site_deadline", "backoff_initial", "backoff_max"):
            value = getattr(self, name)
            if not value > 0:
                raise GeodmlError(f"reliability: {name} must be > 0, got {value}")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (0-based): full jitter."""
        cap = min(self.backoff_max, self.backoff_initial * 2.0 ** min(attempt, 30))
        return (rng or random).uniform(0.0, cap)


class SiteLostError(GeodmlError):
    """A site stayed unreachable past the deadline; names the site and the call."""

    def __init__(self, site: str, method: str, seconds: float, last: str):
        self.site, self.method, self.seconds = site, method, seconds
        super().__init__(
            f"site {site} unreachable for {seconds:.0f} s during {method} ({last}); the "
            "run stopped here. Bring the site back (same data) and resume the run "
            "(geodml train --resume RUN_DIR), or allow the run to continue without it "
            "(--drop-lost-sites).")
