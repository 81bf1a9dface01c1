"""How the coordinator reaches one site (re-exported from the protocol layer:
:mod:`geodml.wire.transport`; the in-process transport is
:mod:`geodml.site.inprocess`)."""

from geodml.wire.errors import SiteCallError, SiteIdentityError
from geodml.wire.protocol import KEEPALIVE_MS, MAX_MESSAGE_BYTES, METHODS
from geodml.wire.transport import GrpcTransport, Transport

__all__ = ["KEEPALIVE_MS", "MAX_MESSAGE_BYTES", "METHODS", "GrpcTransport", "SiteCallError",
           "SiteIdentityError", "Transport"]
