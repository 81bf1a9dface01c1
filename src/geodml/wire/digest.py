"""The audit digest of a call's reply messages, computed alike by both ends.

``digest`` = SHA-256 over the serialized reply messages, each prefixed by its length
(4 bytes, little-endian). The site writes it in its own signed audit log
(:mod:`geodml.site.audit`), the coordinator over what it received in its audit log
(:mod:`geodml.federation.meter`), so the two logs can be matched message by message.
"""

from __future__ import annotations

import hashlib


def message_digest():
    """The running digest of a reply's messages (see the module docstring)."""
    return hashlib.sha256()


def add_message(digest, data: bytes) -> None:
    """Add one serialized message to ``digest``: its length (4 bytes LE), then it."""
    digest.update(len(data).to_bytes(4, "little"))
    digest.update(data)


__all__ = ["add_message", "message_digest"]
