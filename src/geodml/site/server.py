"""The site's gRPC server: :class:`SiteService` behind the ``Site`` service.

Status codes come from the service's errors; an unexpected exception in one call
becomes INTERNAL for that call and is logged, and the server keeps serving.
SIGTERM and SIGINT stop it gracefully (in-flight calls get a grace period).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from geodml.data.store import load_dataset
from geodml.errors import ConfigError
from geodml.federation.transport import KEEPALIVE_MS, MAX_MESSAGE_BYTES
from geodml.site.config import SiteConfig
from geodml.site.service import SiteError, SiteService
from geodml.wire.protocol import pb_grpc

log = logging.getLogger("geodml.site")


def _status(code: str) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN)


class SiteServicer(pb_grpc.SiteServicer):
    """Every RPC forwards to :meth:`SiteService.handle` with the caller's identity."""

    def __init__(self, service: SiteService, tls: bool):
        self.service, self.tls = service, tls

    def _peer(self, context: grpc.ServicerContext) -> str | None:
        if not self.tls:
            return None
        from geodml.wire.tls import peer_identity

        return peer_identity(context)

    def _replies(self, method: str, request, context):
        try:
            yield from self.service.handle(method, request, self._peer(context))
        except SiteError as e:
            context.abort(_status(e.code), str(e))
        except Exception as e:  # one bad call must not take the site down
            log.exception("site %s: %s failed", self.service.name, method)
            context.abort(grpc.StatusCode.INTERNAL,
                          f"site {self.service.name}: {method}: {type(e).__name__}: {e}")

    def _unary(self, method: str, request, context):
        return next(iter(self._replies(method, request, context)))

    def Describe(self, request, context):
        return self._unary("Describe", request, context)

    def Prepare(self, request, context):
        return self._replies("Prepare", request, context)

    def Evaluate(self, request_iterator, context):
        return self._replies("Evaluate", request_iterator, context)

    def LineSearch(self, request_iterator, context):
        return self._unary("LineSearch", request_iterator, context)

    def LocalSolve(self, request_iterator, context):
        return self._replies("LocalSolve", request_iterator, context)

    def Subspace(self, request_iterator, context):
        return self._unary("Subspace", request_iterator, context)

    def Export(self, request, context):
        return self._replies("Export", request, context)

    def Close(self, request, context):
        return self._unary("Close", request, context)


def build_service(config: SiteConfig) -> SiteService:
    """Load the site's data as its config says and wrap it in a service."""
    fmt = config.data.format
    if fmt == "geodml":
        data = load_dataset(config.data.path, mmap=config.data.mmap)
    else:
        from geodml.data.readers import read_dataset

        data = read_dataset(config.data.path, fmt, **config.data.options)
    service = SiteService(config.name, config.region, data, config.policy,
                          config.executor.shards, config.executor.threads)
    if config.audit is not None:
        if config.tls is None:
            raise ConfigError(f"site {config.name}: audit: a signed audit log needs [tls]")
        from geodml.site.audit import SignedAuditLog

        service.audit = SignedAuditLog(config.audit.path, config.tls.cert, config.tls.key,
                                       config.name, service.fingerprint)
    return service


def start_server(config: SiteConfig, service: SiteService, insecure_ok: bool = False
                 ) -> tuple[grpc.Server, int]:
    """Bind and start; returns the server and the bound port."""
    server = grpc.server(
        ThreadPoolExecutor(max_workers=16, thread_name_prefix=f"site-{config.name}"),
        options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                 ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                 # accept the coordinator's keepalive pings, also during a long local
                 # solve when no data flows (else the server answers GOAWAY)
                 ("grpc.keepalive_permit_without_calls", 1),
                 ("grpc.http2.min_recv_ping_interval_without_data_ms", KEEPALIVE_MS // 3),
                 ("grpc.http2.max_ping_strikes", 0)],
    )
    pb_grpc.add_SiteServicer_to_server(SiteServicer(service, config.tls is not None), server)
    if config.tls is None:
        from geodml.wire.tls import check_insecure_address

        if not (config.insecure and insecure_ok):
            raise ConfigError(f"site {config.name}: plaintext needs insecure = true in the "
                              "config and the --insecure flag")
        check_insecure_address(config.listen)
        port = server.add_insecure_port(config.listen)
    else:
        from geodml.wire.tls import TlsFiles, server_credentials

        creds = server_credentials(TlsFiles(config.tls.ca, config.tls.cert, config.tls.key))
        port = server.add_secure_port(config.listen, creds)
    if port == 0:
        raise ConfigError(f"site {config.name}: cannot listen on {config.listen}")
    server.start()
    return server, port


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
