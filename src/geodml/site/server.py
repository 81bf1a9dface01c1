"""The site's gRPC server: :class:`SiteService` behind the ``Site`` service.

Status codes come from the service's errors; an unexpected exception in one call
becomes INTERNAL for that call and is logged, and the server keeps serving.
SIGTERM and SIGINT stop it gracefully (in-flight calls get a grace period).

The log (logger ``geodml.site``) has one line per job, when its ``Prepare`` opens a
session (who asked, from where, the job's name, loss, rows and session id), and one
per refused request (the call, who asked, the status and the reason). A handshake
that TLS refuses never reaches this code: gRPC's Python server exposes no hook for
it (``GRPC_TRACE=handshaker GRPC_VERBOSITY=info`` makes gRPC itself print them).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from google.protobuf.message import DecodeError

from geodml.data.store import load_dataset, map_dataset
from geodml.errors import ConfigError
from geodml.site.config import SiteConfig
from geodml.site.service import SiteService
from geodml.wire.errors import SiteError
from geodml.wire.protocol import KEEPALIVE_MS, MAX_MESSAGE_BYTES, METHODS, SERVICE_NAME

log = logging.getLogger("geodml.site")


def _status(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)


class SiteServicer:
    """Every RPC forwards to :meth:`SiteService.handle` with the caller's identity.

    Requests arrive as raw bytes and are parsed here, so that bytes which are not the
    call's message get INVALID_ARGUMENT naming the site and the call (gRPC's own
    parsing would answer INTERNAL)."""

    def __init__(self, service: SiteService, tls: bool):
        self.service, self.tls = service, tls

    def _peer(self, context: grpc.ServicerContext) -> str | None:
        if not self.tls:
            return None
        from geodml.wire.tls import peer_identity

        return peer_identity(context)

    def _parse(self, method: str, data: bytes):
        try:
            return METHODS[method][0].FromString(data)
        except (DecodeError, RecursionError) as e:
            raise SiteError("INVALID_ARGUMENT", f"site {self.service.name}: malformed "
                            f"{method} request ({type(e).__name__}: {e})") from None

    def _parsed_stream(self, method: str, chunks: Iterator[bytes]) -> Iterator:
        for data in chunks:
            yield self._parse(method, data)

    def _who(self, context: grpc.ServicerContext) -> str:
        """``'coordinator' (ipv4:10.0.0.5:41234)``: the caller's certificate name (or
        'anonymous' on plaintext) and address, for the log."""
        identity = self._peer(context) or "anonymous"
        return f"{identity!r} ({context.peer()})"

    def _replies(self, method: str, request, context):
        try:
            if METHODS[method][2]:
                request = self._parsed_stream(method, request)
            else:
                request = self._parse(method, request)
            replies = self.service.handle(method, request, self._peer(context))
            if method == "Prepare":
                replies = self._logged_job(request, replies, context)
            yield from replies
        except SiteError as e:
            log.warning("site %s: refused %s from %s: %s: %s", self.service.name, method,
                        self._who(context), e.code, e)
            context.abort(_status(e.code), str(e))
        except grpc.RpcError:  # the client went away mid-upload: nothing to answer
            log.debug("site %s: %s cancelled by the client", self.service.name, method)
        except Exception as e:  # one bad call must not take the site down
            log.exception("site %s: %s failed", self.service.name, method)
            context.abort(grpc.StatusCode.INTERNAL,
                          f"site {self.service.name}: {method}: {type(e).__name__}: {e}")

    def _logged_job(self, request, replies, context):
        """Pass a Prepare's replies through, logging the job once its session is open."""
        first = True
        for reply in replies:
            if first:
                first = False
                part = (f", a {request.sample_fraction:g} sample" if
                        0 < request.sample_fraction < 1 else "")
                log.info("site %s: job %r for coordinator %s: loss %s, %d rows%s, "
                         "session %s", self.service.name, request.job or "(unnamed)",
                         self._who(context), request.loss, reply.rows, part, reply.session)
            yield reply

    def handlers(self) -> grpc.GenericRpcHandler:
        """The Site service's method handlers, taking raw request bytes."""
        table = {}
        for method, (_, reply_type, client_streams, server_streams, *_) in METHODS.items():
            def replies(request, context, method=method):
                return self._replies(method, request, context)

            def unary(request, context, method=method):
                return next(iter(self._replies(method, request, context)), None)

            make = {(False, False): grpc.unary_unary_rpc_method_handler,
                    (False, True): grpc.unary_stream_rpc_method_handler,
                    (True, False): grpc.stream_unary_rpc_method_handler,
                    (True, True): grpc.stream_stream_rpc_method_handler}[
                        (client_streams, server_streams)]
            table[method] = make(replies if server_streams else unary,
                                 request_deserializer=None,
                                 response_serializer=reply_type.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE_NAME, table)


def check_tls(config: SiteConfig) -> None:
    """Check the site's ``[tls]`` files before anything reads them: each must exist
    and hold what it should, and the certificate must be a site certificate of this
    site's name (:meth:`geodml.wire.tls.TlsFiles.load`); else a ConfigError naming
    the entry (``tls.key: PATH does not exist``)."""
    if config.tls is not None:
        from geodml.wire.tls import TlsFiles

        TlsFiles(config.tls.ca, config.tls.cert, config.tls.key).load(
            role="site", site=config.name)


def build_service(config: SiteConfig) -> SiteService:
    """Load the site's data as its config says and wrap it in a service."""
    check_tls(config)
    fmt = config.data.format
    if fmt == "geodml" and config.data.stream:
        data = map_dataset(config.data.path)
    elif fmt == "geodml":
        data = load_dataset(config.data.path, mmap=config.data.mmap)
    else:
        from geodml.data.readers import read_dataset

        data = read_dataset(config.data.path, fmt, **config.data.options)
    ray = None
    if config.executor.kind == "ray":
        from geodml.site.service import RayPlacement

        ray = RayPlacement(str(config.data.path), config.executor.ray_address)
    # the TLS key seeds the site's secure-aggregation key and privacy noise, so a
    # restarted site answers a replayed round with the same bits
    secret = config.tls.key.read_bytes() if config.tls is not None else None
    ledger = config.privacy.ledger if config.privacy is not None else None
    service = SiteService(config.name, config.region, data, config.policy,
                          config.executor.shards, config.executor.threads, ray, secret,
                          ledger, stream=config.data.stream, block_nnz=config.data.block_nnz)
    if config.audit is not None:
        if config.tls is None:
            raise ConfigError(f"site {config.name}: audit: a signed audit log needs [tls]")
        from geodml.site.audit import SignedAuditLog

        service.audit = SignedAuditLog(config.audit.path, config.tls.cert, config.tls.key,
                                       config.name, service.fingerprint)
    return service


RPC_WORKERS = 16  # threads serving calls: created on demand, kept until the server stops


def start_server(config: SiteConfig, service: SiteService, insecure_ok: bool = False
                 ) -> tuple[grpc.Server, int]:
    """Bind and start; returns the server and the bound port."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=RPC_WORKERS, thread_name_prefix=f"site-{config.name}"),
        options=[# gRPC binds with SO_REUSEPORT by default: a second site on a port in
                 # use would start, and the kernel would split connections between them
                 ("grpc.so_reuseport", 0),
                 ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 # accept the coordinator's keepalive pings, also during a long local
                 # solve when no data flows (else the server answers GOAWAY)
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MS // 3),
                 ("grpc.http2.max_ping_strikes", 0)],
    )
    server.add_generic_rpc_handlers((SiteServicer(service, config.tls is not None).handlers(),))
    if config.tls is None:
        from geodml.wire.tls import check_insecure_address

        if not (config.insecure and insecure_ok):
            raise ConfigError(f"site {config.name}: plaintext needs insecure = true in the "
                              "config and the --insecure flag")
        check_insecure_address(config.listen)
        bind = server.add_insecure_port
    else:
        from geodml.wire.tls import TlsFiles, server_credentials

        creds = server_credentials(TlsFiles(config.tls.ca, config.tls.cert, config.tls.key),
                                   site=config.name)

        def bind(address: str) -> int:
            return server.add_secure_port(address, creds)
    try:
        port = bind(config.listen)
    except RuntimeError:  # gRPC >= 1.60 raises where older versions returned 0
        port = 0
    if port == 0:
        raise ConfigError(f"site {config.name}: listen: cannot listen on {config.listen}: "
                          f"{_bind_problem(config.listen)}")
    server.start()
    return server, port


def _bind_problem(address: str) -> str:
    """Why ``address`` cannot be bound, asked of the OS (gRPC does not say)."""
    import errno
    import socket

    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError) as e:
        return f"the address does not resolve ({e})"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(sockaddr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return ("the port is already in use (is another site, or another copy of "
                        "this one, running there?)")
            if e.errno == errno.EADDRNOTAVAIL:
                return "the address is not one of this machine's"
            return e.strerror or str(e)
    return "gRPC refused the address"


def serve(config: SiteConfig, insecure_ok: bool = False, port_file: Path | None = None,
          grace: float = 5.0) -> None:
    """Run the site until SIGTERM/SIGINT."""
    service = build_service(config)
    server, port = start_server(config, service, insecure_ok)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if port_file is not None:
        tmp = Path(str(port_file) + ".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, port_file)
    log.info("site %s serving %d rows on port %d", config.name, service.data.n_rows, port)
    stop.wait()
    server.stop(grace).wait()
    service.shutdown()
