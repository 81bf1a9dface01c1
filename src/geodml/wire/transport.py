"""How a coordinator reaches one site: the :class:`Transport` protocol, and
:class:`GrpcTransport`, a site server over gRPC.

A transport moves the protocol's messages (:data:`geodml.wire.protocol.METHODS`) and
turns a failure into :class:`~geodml.wire.errors.SiteCallError`. The in-process
transport, a site object in the same process, is :mod:`geodml.site.inprocess`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import grpc

from geodml.wire.errors import SiteCallError, SiteIdentityError
from geodml.wire.protocol import METHODS, pb, pb_grpc
from geodml.wire.tls import CoordinatorCredentials, peer_certificate, site_channel


class Transport(Protocol):
    """One site, as the coordinator calls it."""

    site: str

    def call(self, method: str, request, timeout: float | None = None) -> Iterator: ...
    def close(self) -> None: ...


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

    The channel is :func:`geodml.wire.tls.site_channel`'s: keepalive pings every 30 s
    (also between calls) detect a dead peer within 40 s; the site's server accepts them.
    """

    remote = True  # a separate process that can fail and restart on its own

    def __init__(
        self, site: str, address: str, credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 600.0,
    ):
        self.site, self.address, self.timeout = site, address, timeout
        self.credentials = credentials
        self._identity_checked = False
        self.channel = site_channel(address, credentials, site)
        self.stub = pb_grpc.SiteStub(self.channel)

    def call(self, method: str, request, timeout: float | None = None) -> Iterator:
        server_streams = METHODS[method].server_streams
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


__all__ = ["GrpcTransport", "SiteCallError", "SiteIdentityError", "Transport"]
