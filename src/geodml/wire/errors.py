"""The protocol's errors, shared by both ends.

:class:`SiteError` is what a site raises: a refused or failed call with a gRPC status
name (the server turns it into that status). :class:`SiteCallError` is what a
coordinator sees of a failed call: the site, the call and the status.
:class:`CodecError` is a malformed vector or chunk.
"""

from __future__ import annotations

from geodml.errors import GeodmlError


class SiteError(GeodmlError):
    """A refused or failed call: ``code`` is a gRPC status name."""

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)


class SiteCallError(GeodmlError):
    """A call to a site failed; names the site, the call and the status."""

    def __init__(self, site: str, method: str, code: str, message: str):
        self.site, self.method, self.code = site, method, code
        super().__init__(f"site {site}: {method} failed ({code}): {message}")


class SiteIdentityError(SiteCallError):
    """The server at a site's address is not that site: the coordinator refuses it.

    Not transient (code ``UNAUTHENTICATED``): retrying would only reach the same
    server. The message names the site expected, the address and who answered."""

    def __init__(self, site: str, method: str, address: str, answered: str):
        self.address, self.answered = address, answered
        SiteCallError.__init__(self, site, method, "UNAUTHENTICATED", "")
        self.args = (f"site {site}: refused the server at {address}: expected site "
                     f"{site!r}, but {answered}",)


class CodecError(GeodmlError):
    """A malformed vector or chunk. The message names the slot, the chunk start and the problem."""

    def __init__(self, problem: str, slot: int | None = None, start: int | None = None):
        self.problem = problem
        self.slot = slot
        self.start = start
        where = []
        if slot is not None:
            where.append(f"slot {slot}")
        if start is not None:
            where.append(f"chunk start {start}")
        super().__init__(f"{', '.join(where)}: {problem}" if where else problem)


__all__ = ["CodecError", "SiteCallError", "SiteError", "SiteIdentityError"]
