"""A site in the coordinator's process: :class:`InProcessTransport`.

It moves the same protobuf messages as gRPC: it serializes and parses every message
as the network would, so that what the site sees and what the coordinator's meter
counts are identical to a gRPC run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from geodml.site.service import SiteService
from geodml.wire.errors import SiteCallError, SiteError
from geodml.wire.protocol import METHODS


class InProcessTransport:
    """A site object in this process; messages are still serialized and parsed
    (a :class:`geodml.wire.transport.Transport`)."""

    def __init__(self, service: SiteService, identity: str | None = "coordinator"):
        self.service, self.site, self.identity = service, service.name, identity

    def call(self, method: str, request, timeout: float | None = None) -> Iterator:
        req_type, reply_type, client_streams = METHODS[method][:3]

        def over_the_wire(messages: Iterable) -> Iterator:
            for m in messages:
                yield req_type.FromString(m.SerializeToString())

        payload = over_the_wire(request) if client_streams else req_type.FromString(
            request.SerializeToString())
        try:
            for reply in self.service.handle(method, payload, self.identity):
                yield reply_type.FromString(reply.SerializeToString())
        except SiteError as e:
            raise SiteCallError(self.site, method, e.code, str(e)) from None

    def close(self) -> None:
        self.service.shutdown()


__all__ = ["InProcessTransport"]
