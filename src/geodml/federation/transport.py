"""How the coordinator reaches one site: in this process, or over gRPC.

Both transports move the same protobuf messages. The in-process one serializes
and parses every message as the network would, so that what the site sees and
what the meter counts are identical to a gRPC run.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

import grpc

from geodml.errors import GeodmlError
from geodml.site.service import SiteError, SiteService
from geodml.wire.protocol import pb, pb_grpc

# method -> (request type, reply type, client streams, server streams)
METHODS = {
    "Describe": (pb.DescribeRequest, pb.DescribeReply, False, False),
    "Prepare": (pb.PrepareRequest, pb.PrepareReply, False, True),
    "Evaluate": (pb.EvaluateRequest, pb.EvaluateReply, True, True),
    "LineSearch": (pb.LineSearchRequest, pb.LineSearchReply, True, False),
    "LocalSolve": (pb.LocalSolveRequest, pb.LocalSolveReply, True, True),
    "Subspace": (pb.SubspaceRequest, pb.SubspaceReply, True, False),
    "Export": (pb.ExportRequest, pb.ExportReply, False, True),
    "Close": (pb.CloseRequest, pb.CloseReply, False, False),
}
MAX_MESSAGE_BYTES = 64 << 20
KEEPALIVE_MS = 30_000  # the coordinator's keepalive ping interval


class SiteCallError(GeodmlError):
    """A call to a site failed; names the site, the call and the status."""

    def __init__(self, site: str, method: str, code: str, message: str):
        self.site, self.method, self.code = site, method, code
        super().__init__(f"site {site}: {method} failed ({code}): {message}")


class Transport(Protocol):
    site: str

    def call(self, method: str, request, timeout: float | None = None) -> Iterator: ...
    def close(self) -> None: ...


class InProcessTransport:
    """A site object in this process; messages are still serialized and parsed."""

    def __init__(self, service: SiteService, identity: str | None = "coordinator"):
        self.service, self.site, self.identity = service, service.name, identity

    def call(self, method: str, request, timeout: float | None = None) -> Iterator:
        req_type, reply_type, client_streams, _ = METHODS[method]

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


class SiteIdentityError(SiteCallError):
    """The server at a site's address is not that site: the coordinator refuses it.

    Not transient (code ``UNAUTHENTICATED``): retrying would only reach the same
    server. The message names the site expected, the address and who answered."""

    def __init__(self, site: str, method: str, address: str, answered: str):
        self.address, self.answered = address, answered
        SiteCallError.__init__(self, site, method, "UNAUTHENTICATED", "")
        self.args = (f"site {site}: refused the server at {address}: expected site "
                     f"{site!r}, but {answered}",)


#: what gRPC says when the server's certificate fails the coordinator's checks
_HANDSHAKE_REFUSALS = ("Hostname Verification", "Peer name", "CERTIFICATE_VERIFY_FAILED",
                       "certificate purpose", "unsupported certificate")


class GrpcTransport:
    """A site server reached over gRPC (mutual TLS unless ``credentials`` is None).

    **Identity.** With TLS, the channel accepts only a certificate carrying the
    identity name of site ``site`` (:func:`geodml.wire.tls.identity_options`), on every
    (re)connection; a refused handshake becomes :class:`SiteIdentityError` naming who
    answered. On TLS and plaintext alike, every ``Describe`` reply must name ``site``,
    and the first call of any other method is preceded by one ``Describe`` if none
    was made yet (the Federation always describes first, so it costs nothing there).

    Keepalive pings every 30 s (also between calls) detect a dead peer within 40 s;
    the site's server accepts them (:func:`geodml.site.server.start_server`).
    """

    remote = True  # a separate process that can fail and restart on its own

    def __init__(
        self, site: str, address: str, credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 600.0,
    ):
        self.site, self.address, self.timeout = site, address, timeout
        self.credentials = credentials
        self._identity_checked = False
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # reconnect soon after a site restarts (gRPC's default waits up to 120 s)
            ("grpc.initial_reconnect_backoff_ms", 200),
            # not grpc.min_reconnect_backoff_ms: gRPC core also takes it as the minimum
            # connect timeout, and a TCP + TLS + HTTP/2 handshake takes ~4 RTT
            ("grpc.max_reconnect_backoff_ms", 5_000),
        ]
        if credentials is not None:
            from geodml.wire.tls import identity_options

            options += identity_options(site)
        self.channel = (
            grpc.insecure_channel(address, options=options) if credentials is None
            else grpc.secure_channel(address, credentials, options=options)
        )
        self.stub = pb_grpc.SiteStub(self.channel)

    def call(self, method: str, request, timeout: float | None = None) -> Iterator:
        _, _, _, server_streams = METHODS[method]
        if method != "Describe" and not self._identity_checked:
            list(self.call("Describe", pb.DescribeRequest(), timeout))
        rpc = getattr(self.stub, method)
        try:
            out = rpc(request, timeout=timeout or self.timeout)
            if server_streams:
                yield from out
            elif method == "Describe":
                self._check_describe(out)
                yield out
            else:
                yield out
        except grpc.RpcError as e:
            details = e.details() or ""
            if e.code() == grpc.StatusCode.UNAVAILABLE and any(
                    r in details for r in _HANDSHAKE_REFUSALS):
                raise SiteIdentityError(self.site, method, self.address,
                                        self._who_answered(details)) from None
            raise SiteCallError(self.site, method, e.code().name, details) from None

    def _check_describe(self, reply: pb.DescribeReply) -> None:
        if reply.site != self.site:
            raise SiteIdentityError(self.site, "Describe", self.address,
                                    f"the site there answers Describe as {reply.site!r}")
        self._identity_checked = True

    def _who_answered(self, details: str) -> str:
        """Say who presented the refused certificate (a second, diagnostic handshake)."""
        from geodml.wire.tls import CoordinatorCredentials, peer_certificate

        if isinstance(self.credentials, CoordinatorCredentials):
            peer = peer_certificate(self.address, self.credentials.ca_pem,
                                    self.credentials.files)
            if peer is not None:
                ident, by_ca = peer
                signer = "signed by the deployment CA" if by_ca else \
                    "NOT signed by the deployment CA"
                return f"it presented {ident.describe()}, {signer}"
        return f"its certificate was refused (gRPC: {details})"

    def close(self) -> None:
        self.channel.close()
