"""Start K site servers as subprocesses on loopback, and tear them down cleanly.

Each site runs ``python -m geodml site serve`` with its own config and a port
file; it binds port 0 and writes the chosen port there. The launcher waits for
the port file and then polls ``Describe`` until the site answers, each with a
deadline; a site that exits early is reported with the tail of its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from geodml.errors import GeodmlError
from geodml.site.config import SiteConfig, dump_site_config
from geodml.wire.errors import SiteCallError
from geodml.wire.protocol import pb
from geodml.wire.transport import GrpcTransport

#: how long LocalCluster waits for its sites to serve, unless told otherwise (seconds)
READY_TIMEOUT = 60.0


class LaunchError(GeodmlError):
    """A site process did not come up; names the site and shows its log."""


@dataclass
class RunningSite:
    config: SiteConfig
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalCluster:
    """Site servers on this machine, one process each (a context manager)."""

    def __init__(self, configs: list[SiteConfig], workdir: str | os.PathLike | None = None,
                 insecure: bool = False, client_tls=None, ready_timeout: float | None = None):
        """``client_tls``: the coordinator's :class:`~geodml.wire.tls.TlsFiles` (mTLS);
        ``ready_timeout``: seconds for every site to serve (default
        :data:`READY_TIMEOUT`)."""
        if not insecure and client_tls is None:
            raise GeodmlError("a TLS cluster needs the coordinator's TLS files (client_tls)")
        self.configs = configs
        self.insecure = insecure
        self.client_tls = client_tls
        self.ready_timeout = READY_TIMEOUT if ready_timeout is None else ready_timeout
        self._tmp = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="geodml-sites-")
            workdir = self._tmp.name
        self.workdir = Path(workdir)
        self.sites: dict[str, RunningSite] = {}

    def start(self) -> LocalCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        pending = {}
        try:
            for cfg in self.configs:
                pending[cfg.name] = self._spawn(cfg)
            deadline = time.monotonic() + self.ready_timeout
            for name, (proc, port_file, log_path) in pending.items():
                port = self._wait_for_port(name, proc, port_file, log_path, deadline)
                self.sites[name] = RunningSite(
                    next(c for c in self.configs if c.name == name), proc, port, log_path)
            for site in self.sites.values():
                self._wait_until_serving(site, deadline)
        except BaseException:
            for proc, _, _ in pending.values():
                proc.kill()
                proc.wait()
            raise
        return self

    def _spawn(self, cfg: SiteConfig):
        config_path = self.workdir / f"{cfg.name}.toml"
        # relative paths mean "relative to where the launcher runs", not to the config file
        config_path.write_text(dump_site_config(cfg.resolve(Path.cwd())))
        port_file = self.workdir / f"{cfg.name}.port"
        port_file.unlink(missing_ok=True)
        log_path = self.workdir / f"{cfg.name}.log"
        cmd = [sys.executable, "-m", "geodml", "site", "serve", "--config", str(config_path),
               "--port-file", str(port_file)]
        if self.insecure:
            cmd.append("--insecure")
        with open(log_path, "ab") as log:  # a restarted site appends
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        return proc, port_file, log_path

    def _wait_for_port(self, name, proc, port_file: Path, log_path: Path, deadline) -> int:
        delay = 0.01
        while time.monotonic() < deadline:
            if port_file.exists():
                return int(port_file.read_text())
            if proc.poll() is not None:
                raise LaunchError(f"site {name} exited with code {proc.returncode}:\n"
                                  f"{_tail(log_path)}")
            time.sleep(delay)  # polling a file the child writes; bounded by the deadline
            delay = min(delay * 2, 0.2)
        raise LaunchError(f"site {name} did not start within {self.ready_timeout} s:\n"
                          f"{_tail(log_path)}")

    def _wait_until_serving(self, site: RunningSite, deadline: float) -> None:
        transport = self.transport(site.config.name)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LaunchError(f"site {site.config.name} does not answer Describe:\n"
                                      f"{_tail(site.log_path)}")
                try:
                    list(transport.call("Describe", pb.DescribeRequest(),
                                        timeout=min(remaining, 5.0)))
                    return
                except SiteCallError as e:
                    if e.code != "UNAVAILABLE":
                        raise
                    if site.process.poll() is not None:
                        raise LaunchError(f"site {site.config.name} exited:\n"
                                          f"{_tail(site.log_path)}") from None
                    time.sleep(0.05)  # the port is bound but the server is not serving yet
        finally:
            transport.close()

    def transport(self, name: str, timeout: float = 600.0) -> GrpcTransport:
        """A gRPC transport to one running site, as the coordinator."""
        creds: grpc.ChannelCredentials | None = None
        if not self.insecure:
            from geodml.wire.tls import channel_credentials

            creds = channel_credentials(self.client_tls)
        site = self.sites[name]
        return GrpcTransport(name, site.address, creds, timeout=timeout)

    def transports(self, timeout: float = 600.0) -> list[GrpcTransport]:
        return [self.transport(n, timeout) for n in self.sites]

    def kill(self, name: str) -> None:
        """Kill one site abruptly (for fault tests)."""
        site = self.sites[name]
        site.process.kill()
        site.process.wait()

    def restart(self, name: str) -> None:
        """Start a killed site again on the same port with the same data, and wait until
        it serves (a restarted site has lost its sessions; see docs/reliability.md)."""
        site = self.sites[name]
        if site.process.poll() is None:
            raise LaunchError(f"site {name} is still running; kill it first")
        host = site.config.listen.rsplit(":", 1)[0]
        cfg = site.config.model_copy(update={"listen": f"{host}:{site.port}"})
        proc, port_file, log_path = self._spawn(cfg)
        deadline = time.monotonic() + self.ready_timeout
        port = self._wait_for_port(name, proc, port_file, log_path, deadline)
        self.sites[name] = RunningSite(site.config, proc, port, log_path)
        self._wait_until_serving(self.sites[name], deadline)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM every site, wait up to ``timeout`` seconds for each to exit (a
        graceful stop drains calls for up to 5 s), then kill what is left."""
        for site in self.sites.values():
            if site.process.poll() is None:
                site.process.send_signal(signal.SIGTERM)
        for site in self.sites.values():
            try:
                site.process.wait(timeout)
            except subprocess.TimeoutExpired:
                site.process.kill()
                site.process.wait()
        self.sites = {}
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
