"""The protocol contract between a coordinator and a site, in one table.

Both ends read it: the gRPC server registers one handler per row of :data:`METHODS`
(:mod:`geodml.site.server`), the in-process transport parses and re-serializes by it,
the coordinator's client (:mod:`geodml.federation.client`) knows from it which calls
name a session and which ones rebuild a session's state when a restarted site is
recovered, and both audit logs describe each call's reply by its row.
"""

from __future__ import annotations

from typing import NamedTuple

from geodml.wire._generated import geodml_site_pb2 as pb
from geodml.wire._generated import geodml_site_pb2_grpc as pb_grpc
from geodml.wire.framing import with_chunks

PROTOCOL_VERSION = 1
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Site"].full_name  # "geodml.site.v1.Site"

MAX_MESSAGE_BYTES = 64 << 20  # largest single message either end accepts
KEEPALIVE_MS = 30_000  # the coordinator's keepalive ping interval (the site permits it)
KEEPALIVE_TIMEOUT_MS = 10_000  # a ping unanswered this long: the peer is dead


class Method(NamedTuple):
    """One Site RPC: its messages, its streaming shape, and what the two ends do with it.

    ``session``: the request names a session (the client fills in the current one);
    ``replayed``: the call builds a session's state, so recovering a restarted site
    re-sends it; ``kind`` / ``content``: what the reply carries out of the DC, as both
    audit logs write it (``aggregate``, ``metadata`` or ``raw-rows``)."""

    request: type
    reply: type
    client_streams: bool
    server_streams: bool
    session: bool
    replayed: bool
    kind: str
    content: str


METHODS: dict[str, Method] = {
    "Describe": Method(pb.DescribeRequest, pb.DescribeReply, False, False, False, False,
                       "metadata", "site statistics: row, nonzero and positive counts, "
                       "feature space"),
    "Prepare": Method(pb.PrepareRequest, pb.PrepareReply, False, True, False, True,
                      "metadata", "session id; the feature indices the rows touch (support)"),
    "Evaluate": Method(pb.EvaluateRequest, pb.EvaluateReply, True, True, True, True,
                       "aggregate", "loss sum over the rows; gradient / Hessian-vector sums"),
    "LineSearch": Method(pb.LineSearchRequest, pb.LineSearchReply, True, False, True, True,
                         "aggregate", "loss and slope sums at the step sizes asked"),
    "LocalSolve": Method(pb.LocalSolveRequest, pb.LocalSolveReply, True, True, True, True,
                         "aggregate", "a local solver's direction over the rows"),
    "Subspace": Method(pb.SubspaceRequest, pb.SubspaceReply, True, False, True, True,
                       "aggregate", "loss, gradient and Hessian sums in subspace coefficients"),
    "Export": Method(pb.ExportRequest, pb.ExportReply, False, True, True, False,
                     "raw-rows", "RAW ROWS (Arrow IPC)"),
    "Close": Method(pb.CloseRequest, pb.CloseReply, False, False, True, False,
                    "metadata", "nothing"),
}

#: requests that name a session
SESSION_CALLS = frozenset(m for m, row in METHODS.items() if row.session)
#: the calls that build a session's state (re-sent to a restarted site)
REPLAYED_ON_RECOVERY = frozenset(m for m, row in METHODS.items() if row.replayed)
#: what each call's reply carries out of the DC: (kind, content)
CONTENT = {m: (row.kind, row.content) for m, row in METHODS.items()}

__all__ = ["CONTENT", "KEEPALIVE_MS", "KEEPALIVE_TIMEOUT_MS", "MAX_MESSAGE_BYTES", "METHODS",
           "PROTOCOL_VERSION", "REPLAYED_ON_RECOVERY", "SERVICE_NAME", "SESSION_CALLS", "Method",
           "pb", "pb_grpc", "with_chunks"]
