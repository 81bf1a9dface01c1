"""Emulated WAN on one machine: one Linux network namespace per DC, kernel-shaped links.

Test tool (needs root, ``ip`` and ``tc``). :class:`WanTopology` builds, for DCs
``d_0 .. d_{K-1}`` (the first is usually the home DC)::

    ns <prefix>-<i>   wan0 10.77.0.<i+1>/24 ---veth--- p<i>  \
    ...                                                       ns <prefix>-router:
    ns <prefix>-<j>   wan0 10.77.0.<j+1>/24 ---veth--- p<j>  /  wan_relay.py

* every DC namespace has ``lo`` and ``wan0``, all DCs on one /24, static neighbour
  entries (no ARP), IPv6 off;
* **bandwidth** is shaped by the kernel on the *sending* side of every link: the
  egress of ``wan0`` in the source DC's namespace gets a ``tbf`` qdisc when the DC
  sends to one other DC only, else an ``htb`` class per destination DC (matched on
  the destination IP), each at that directed link's rate;
* **delay and loss** are added by :mod:`tests.tools.wan_relay` in the router
  namespace: an L2 switch over AF_PACKET sockets on the ``p*`` ports that holds
  every frame for half its link's RTT and drops IP frames with the link's loss
  probability (seeded);
* GSO/TSO and TX checksum offload are off on every veth (a frame the relay reads is
  one wire frame with a valid checksum).

:meth:`WanTopology.set_links` changes shaping, delay and loss of every link at once
(``{}``: a plain LAN), :meth:`WanTopology.popen` / :meth:`WanTopology.exec` run
commands inside a DC's namespace. Namespace names are ``gdw<pid>-<random>-<i>`` (and
``-router``): unique per run, so parallel runs do not collide, and
:func:`cleanup_stale` removes what a dead run left behind.
:meth:`WanTopology.close` (also on ``__exit__``) stops every process it started,
then any process still inside its namespaces, then deletes the namespaces.

The module is also a small command-line tool run *inside* a namespace
(``ip netns exec NS python tests/tools/netns.py ...``):

* ``offload DEV...``: turn GSO/TSO/TX checksum offload off (ethtool ioctls);
* ``serve --listen IP:PORT --ready FILE``: a probe server (echo, sink, source);
* ``probe --target IP:PORT [--target ...]``: TCP connect times, echo RTTs, bulk
  goodput each way and request/reply times through the emulated links (all targets
  at once), as JSON.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import fcntl
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.77.0."
PREFIX_RE = re.compile(r"^gdw(\d+)-[0-9a-f]{6}-")
RELAY = Path(__file__).with_name("wan_relay.py")


@dataclass(frozen=True)
class LinkParams:
    """One directed link: rate (Mbit/s), round-trip time (ms), loss probability per frame."""

    bandwidth_mbps: float
    rtt_ms: float
    loss: float = 0.0


# --- helpers -------------------------------------------------------------------------------


def run(cmd: Sequence[str], check: bool = True,
        timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run a short command; on failure raise with its output."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                           f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def unavailable_reason() -> str | None:
    """Why this machine cannot run the emulation (None when it can): root, ``ip
    netns``, ``tc`` with tbf and htb, AF_PACKET."""
    if os.geteuid() != 0:
        return "WAN emulation needs root (network namespaces, tc)"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"WAN emulation needs `{tool}` (apt-get install iproute2)"
    if not hasattr(socket, "AF_PACKET"):
        return "WAN emulation needs AF_PACKET sockets"
    name = f"gdw{os.getpid()}-{random.randrange(1 << 24):06x}-probe"
    try:
        proc = run(["ip", "netns", "add", name], check=False)
        if proc.returncode != 0:
            return f"`ip netns add` does not work here: {proc.stderr.strip()}"
        steps = [
            ["ip", "-n", name, "link", "add", "a0", "type", "veth", "peer", "name", "b0"],
            ["ip", "-n", name, "link", "set", "a0", "up"],
            ["tc", "-n", name, "qdisc", "add", "dev", "a0", "root", "tbf", "rate", "50mbit",
             "burst", "16kb", "latency", "100ms"],
            ["tc", "-n", name, "qdisc", "replace", "dev", "a0", "root", "handle", "1:", "htb"],
            ["tc", "-n", name, "class", "add", "dev", "a0", "parent", "1:", "classid", "1:1",
             "htb", "rate", "50mbit"],
            ["tc", "-n", name, "filter", "add", "dev", "a0", "parent", "1:", "protocol", "ip",
             "prio", "1", "u32", "match", "ip", "dst", "10.0.0.1/32", "flowid", "1:1"],
        ]
        for cmd in steps:
            proc = run(cmd, check=False)
            if proc.returncode != 0:
                return f"`{' '.join(cmd[3:])}` fails here: {proc.stderr.strip()}"
    finally:
        run(["ip", "netns", "del", name], check=False)
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_pids(ns: str) -> None:
    """Kill (by pid) every process still inside namespace ``ns``: we put them there."""
    proc = run(["ip", "netns", "pids", ns], check=False)
    for text in proc.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(text), signal.SIGKILL)


def cleanup_stale() -> list[str]:
    """Delete namespaces of this tool whose creating process has died; returns them."""
    proc = run(["ip", "netns", "list"], check=False)
    removed = []
    for line in proc.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        m = PREFIX_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _kill_namespace_pids(name)
            run(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


def wait_for_file(path: Path, deadline: float, proc: subprocess.Popen | None = None,
                  what: str = "file", log: Path | None = None) -> str:
    """Poll for ``path`` (written by a child) until ``deadline`` (monotonic)."""
    delay = 0.01
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text()
            if text:
                return text
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        time.sleep(delay)  # polling a file the child writes, bounded by the deadline
        delay = min(2 * delay, 0.1)
    raise TimeoutError(f"{what}: {path} did not appear in time")


# --- the topology ----------------------------------------------------------------------------


@dataclass
class WanTopology:
    """Namespaces, veths, shaping and the relay for DCs ``dcs`` (see the module docstring).

    ``links[(src, dst)]`` gives a directed link's rate, RTT and loss; a pair without an
    entry is unshaped, undelayed and lossless. ``workdir`` holds logs, the relay's
    config and statistics.
    """

    dcs: Sequence[str]
    links: Mapping[tuple[str, str], LinkParams]
    workdir: Path
    seed: int = 0
    relay_nice: int = -10
    prefix: str = field(default_factory=lambda: f"gdw{os.getpid()}-{random.randrange(1 << 24):06x}")
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dcs = list(self.dcs)
        if len(self.dcs) > 200:
            raise ValueError("at most 200 DCs")
        self.workdir = Path(self.workdir)
        self.links = dict(self.links)
        self.relay: subprocess.Popen | None = None
        self.relay_stats: dict | None = None
        self._reloads = 0
        self._namespaces: list[str] = []

    # names and addresses
    @property
    def router(self) -> str:
        return f"{self.prefix}-router"

    def ns(self, dc: str) -> str:
        return f"{self.prefix}-{self.dcs.index(dc)}"

    def ip(self, dc: str) -> str:
        return f"{SUBNET}{self.dcs.index(dc) + 1}"

    def mac(self, dc: str) -> str:
        return f"02:77:00:00:00:{self.dcs.index(dc) + 1:02x}"

    # life cycle
    def start(self, ready_timeout: float = 30.0) -> WanTopology:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cleanup_stale()
        try:
            self._build()
            self._start_relay(ready_timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _netns_add(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        for key in ("all", "default"):
            run(["ip", "netns", "exec", name, "sysctl", "-q", "-w",
                 f"net.ipv6.conf.{key}.disable_ipv6=1"], check=False)

    def _build(self) -> None:
        self._netns_add(self.router)
        for i, dc in enumerate(self.dcs):
            ns = self.ns(dc)
            self._netns_add(ns)
            run(["ip", "-n", self.router, "link", "add", f"p{i}", "type", "veth", "peer",
                 "name", "wan0", "netns", ns])
            run(["ip", "-n", ns, "link", "set", "wan0", "address", self.mac(dc)])
            run(["ip", "-n", ns, "addr", "add", f"{self.ip(dc)}/24", "dev", "wan0"])
            run(["ip", "-n", ns, "link", "set", "wan0", "up"])
            run(["ip", "-n", self.router, "link", "set", f"p{i}", "promisc", "on", "up"])
        python = sys.executable
        self._ns_offload(self.router, [f"p{i}" for i in range(len(self.dcs))], python)
        for dc in self.dcs:
            ns = self.ns(dc)
            self._ns_offload(ns, ["wan0"], python)
            for other in self.dcs:
                if other != dc:
                    run(["ip", "-n", ns, "neigh", "replace", self.ip(other), "lladdr",
                         self.mac(other), "dev", "wan0", "nud", "permanent"])
            self._shape(dc)

    @staticmethod
    def _ns_offload(ns: str, devices: list[str], python: str) -> None:
        run(["ip", "netns", "exec", ns, python, str(Path(__file__)), "offload", *devices])

    def _shape(self, dc: str) -> None:
        """Kernel shaping of ``dc``'s egress, per destination DC (tbf or htb); none
        when ``dc`` has no outgoing link."""
        ns = self.ns(dc)
        out = [(dst, self.links[(dc, dst)]) for dst in self.dcs
               if dst != dc and (dc, dst) in self.links]
        tc = ["tc", "-n", ns]
        run([*tc, "qdisc", "del", "dev", "wan0", "root"], check=False)  # back to the default
        if not out:
            return
        if len(out) == 1:
            rate = out[0][1].bandwidth_mbps
            run([*tc, "qdisc", "replace", "dev", "wan0", "root", "tbf", *self._tbf_args(rate)])
            return
        run([*tc, "qdisc", "replace", "dev", "wan0", "root", "handle", "1:", "htb",
             "default", "ffff"])
        run([*tc, "class", "add", "dev", "wan0", "parent", "1:", "classid", "1:ffff", "htb",
             "rate", "10gbit", "quantum", "60000"])
        for k, (dst, link) in enumerate(out, start=1):
            burst = self._burst_bytes(link.bandwidth_mbps)
            run([*tc, "class", "add", "dev", "wan0", "parent", "1:", "classid", f"1:{k:x}",
                 "htb", "rate", f"{link.bandwidth_mbps}mbit", "ceil",
                 f"{link.bandwidth_mbps}mbit", "burst", str(burst), "cburst", str(burst),
                 "quantum", "1514"])
            run([*tc, "filter", "add", "dev", "wan0", "parent", "1:", "protocol", "ip", "prio",
                 "1", "u32", "match", "ip", "dst", f"{self.ip(dst)}/32", "flowid", f"1:{k:x}"])

    @staticmethod
    def _burst_bytes(mbps: float) -> int:
        """Bucket size: 1 ms of the rate, at least two full frames."""
        return max(2 * 1514, int(mbps * 1e6 / 8 * 1e-3))

    @classmethod
    def _tbf_args(cls, mbps: float) -> list[str]:
        # a queue of 1 s at the rate: the sender's TCP (small queues) keeps it short
        limit = max(64 * 1514, int(mbps * 1e6 / 8))
        return ["rate", f"{mbps}mbit", "burst", str(cls._burst_bytes(mbps)),
                "limit", str(limit)]

    def _relay_config(self) -> Path:
        ports = [{"dev": f"p{i}", "dc": dc, "mac": self.mac(dc)}
                 for i, dc in enumerate(self.dcs)]
        links = [{"src": s, "dst": d, "delay_ms": p.rtt_ms / 2.0, "loss": p.loss}
                 for (s, d), p in self.links.items()]
        config = {"ports": ports, "links": links, "seed": self.seed,
                  "ready": str(self.workdir / "relay.ready"),
                  "stats": str(self.workdir / "relay.stats.json"),
                  "nice": self.relay_nice}
        path = self.workdir / "relay.json"
        tmp = self.workdir / "relay.json.tmp"
        tmp.write_text(json.dumps(config, indent=1))
        tmp.rename(path)
        return path

    def _start_relay(self, ready_timeout: float) -> None:
        (self.workdir / "relay.ready").unlink(missing_ok=True)
        (self.workdir / "relay.stats.json").unlink(missing_ok=True)
        path = self._relay_config()
        self.relay = self.popen(None, [sys.executable, str(RELAY), str(path)],
                                self.workdir / "relay.log")
        wait_for_file(self.workdir / "relay.ready", time.monotonic() + ready_timeout,
                      self.relay, "wan relay", self.workdir / "relay.log")
        self._reloads = 0

    def set_links(self, links: Mapping[tuple[str, str], LinkParams],
                  timeout: float = 10.0) -> None:
        """Change every link at once (shaping, delay, loss); ``{}``: a plain LAN. Do it
        while the links are idle: frames already held keep their old delay."""
        self.links = dict(links)
        for dc in self.dcs:
            self._shape(dc)
        self._relay_config()
        ready = self.workdir / "relay.ready"
        self._reloads += 1
        self.relay.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + timeout
        while wait_for_file(ready, deadline, self.relay, "relay reload") != str(self._reloads):
            time.sleep(0.01)  # the relay rewrites the file with its reload count

    def popen(self, dc: str | None, cmd: Sequence[str], log: Path | None = None,
              env: Mapping[str, str] | None = None, nice: int = 0, **kw) -> subprocess.Popen:
        """Start ``cmd`` inside ``dc``'s namespace (None: the router's), at niceness
        ``nice``; tracked and stopped by :meth:`close`. Output goes to ``log`` (or is
        captured when ``stdout`` is given in ``kw``)."""
        ns = self.router if dc is None else self.ns(dc)
        full = ["ip", "netns", "exec", ns, *(["nice", "-n", str(nice)] if nice else []), *cmd]
        if log is not None:
            with open(log, "wb") as f:
                proc = subprocess.Popen(full, stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env, **kw)
        else:
            proc = subprocess.Popen(full, stdin=subprocess.DEVNULL, env=env, **kw)
        self.processes.append(proc)
        return proc

    def exec(self, dc: str, cmd: Sequence[str], timeout: float = 120.0,
             env: Mapping[str, str] | None = None, nice: int = 0) -> subprocess.CompletedProcess:
        """Run ``cmd`` inside ``dc``'s namespace to completion; raise on failure."""
        proc = self.popen(dc, cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                          nice=nice)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
        finally:
            self.processes.remove(proc)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(),
                                             err.decode())
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} in {dc} failed ({proc.returncode}):\n"
                               f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def set_congestion_control(self, name: str) -> None:
        """TCP congestion control of every DC namespace (``net.ipv4.tcp_congestion_control``)."""
        for dc in self.dcs:
            run(["ip", "netns", "exec", self.ns(dc), "sysctl", "-q", "-w",
                 f"net.ipv4.tcp_congestion_control={name}"])

    def relay_snapshot(self, timeout: float = 10.0) -> dict:
        """The relay's statistics so far (it writes them on SIGUSR1)."""
        stats = self.workdir / "relay.stats.json"
        stats.unlink(missing_ok=True)
        self.relay.send_signal(signal.SIGUSR1)
        return json.loads(wait_for_file(stats, time.monotonic() + timeout, self.relay,
                                        "relay statistics"))

    def tc_stats(self, dc: str) -> str:
        return run(["tc", "-n", self.ns(dc), "-s", "qdisc", "show", "dev", "wan0"]).stdout

    @staticmethod
    def _stop(proc: subprocess.Popen, timeout: float) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self, proc: subprocess.Popen, timeout: float = 10.0) -> None:
        """Stop one process this topology started (SIGTERM, then SIGKILL)."""
        self._stop(proc, timeout)
        if proc in self.processes:
            self.processes.remove(proc)

    def close(self) -> None:
        """Stop every process started here, the relay last (its statistics are kept in
        ``relay_stats``), then delete the namespaces. Safe to call twice."""
        others = [p for p in self.processes if p is not self.relay]
        for p in others:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
        for p in others:
            self._stop(p, 10.0)
        if self.relay is not None:
            self._stop(self.relay, 10.0)
            stats = self.workdir / "relay.stats.json"
            with contextlib.suppress(OSError, ValueError):
                self.relay_stats = json.loads(stats.read_text())
        self.processes = []
        for ns in reversed(self._namespaces):
            _kill_namespace_pids(ns)
            run(["ip", "netns", "del", ns], check=False)
        self._namespaces = []

    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def __enter__(self) -> WanTopology:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def star_links(home: str, dcs: Sequence[str], deployment, loss: float) -> dict:
    """Directed links home <-> every other DC, rate and RTT from a
    :class:`geodml.planning.deployment.Deployment`, with ``loss`` per frame each way."""
    links = {}
    for dc in dcs:
        if dc == home:
            continue
        for src, dst in ((home, dc), (dc, home)):
            spec = deployment.link(src, dst)
            links[(src, dst)] = LinkParams(spec.bandwidth_mbps, spec.rtt_ms, loss)
    return links


# --- ethtool offloads (ioctl), run inside a namespace ------------------------------------------

SIOCETHTOOL = 0x8946
# legacy ethtool "set" commands (struct ethtool_value {u32 cmd; u32 data;})
ETHTOOL_SET = {"tso": 0x1F, "gso": 0x24, "gro": 0x2C, "tx-csum": 0x17, "sg": 0x19}
ETHTOOL_GET = {"tso": 0x1E, "gso": 0x23, "gro": 0x2B, "tx-csum": 0x16, "sg": 0x18}


def _ethtool(sock: socket.socket, dev: str, cmd: int, value: int = 0) -> int:
    buf = array.array("I", [cmd, value])
    addr, _ = buf.buffer_info()
    ifreq = struct.pack("16sP", dev.encode()[:15], addr) + b"\0" * 16
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return buf[1]


def disable_offloads(devices: Sequence[str]) -> dict[str, dict[str, int]]:
    """GSO, TSO and TX checksumming off on every device (in this namespace); returns
    the features read back."""
    out = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for dev in devices:
            for name in ("tso", "gso", "tx-csum"):
                _ethtool(sock, dev, ETHTOOL_SET[name], 0)
            out[dev] = {name: _ethtool(sock, dev, cmd) for name, cmd in ETHTOOL_GET.items()}
            if out[dev]["tso"] or out[dev]["gso"] or out[dev]["tx-csum"]:
                raise RuntimeError(f"{dev}: offloads still on: {out[dev]}")
    return out


# --- probe server and client ---------------------------------------------------------------

MARK_EVERY = 1 << 16


def _recv_marks(conn: socket.socket) -> tuple[int, list[tuple[int, float]]]:
    """Read until EOF; (bytes, [(bytes so far, monotonic time)] every 64 KB)."""
    total, next_mark, marks = 0, MARK_EVERY, []
    buf = bytearray(1 << 16)
    while True:
        n = conn.recv_into(buf)
        if n == 0:
            break
        total += n
        if total >= next_mark:
            marks.append((total, time.monotonic()))
            next_mark = total + MARK_EVERY
    marks.append((total, time.monotonic()))
    return total, marks


def _goodput_mbps(marks: list[tuple[int, float]], skip: float = 0.3) -> float:
    """Goodput of the steady part: from the mark at ``skip`` of the bytes to the end."""
    total = marks[-1][0]
    start = next(m for m in marks if m[0] >= skip * total)
    end = marks[-1]
    if end[1] <= start[1]:
        return float("nan")
    return (end[0] - start[0]) * 8 / (end[1] - start[1]) / 1e6


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _recv_exact_count(conn: socket.socket, n: int) -> None:
    buf = bytearray(1 << 16)
    while n > 0:
        got = conn.recv_into(buf, min(n, len(buf)))
        if not got:
            raise ConnectionError("connection closed")
        n -= got


def _serve_one(conn: socket.socket) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mode = conn.recv(1)
        if mode == b"E":  # echo one byte at a time
            while data := conn.recv(1):
                conn.sendall(data)
        elif mode == b"S":  # sink: read to EOF, report marks
            total, marks = _recv_marks(conn)
            conn.sendall(json.dumps({"bytes": total, "mbps": _goodput_mbps(marks)}).encode())
        elif mode == b"R":  # request/response: (request bytes, reply bytes) then the request
            while True:
                try:
                    need, reply = struct.unpack("!QQ", _recv_exact(conn, 16))
                except ConnectionError:
                    break
                _recv_exact_count(conn, need)
                conn.sendall(b"r" * reply)
        elif mode == b"G":  # source: send the requested number of bytes
            (n,) = struct.unpack("!Q", _recv_exact(conn, 8))
            block = os.urandom(1 << 16)
            sent = 0
            while sent < n:
                sent += conn.send(block[: min(len(block), n - sent)])
            conn.shutdown(socket.SHUT_WR)
            conn.recv(1)


def serve(listen: str, ready: Path) -> None:
    host, port = listen.rsplit(":", 1)
    server = socket.create_server((host, int(port)))
    tmp = Path(str(ready) + ".tmp")
    tmp.write_text(str(server.getsockname()[1]))
    tmp.rename(ready)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = server.accept()
        threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()


def probe(target: str, connects: int, pings: int, bulk_bytes: int, rpc_bytes: int = 0,
          rpc_count: int = 0, rpc_gap: float = 0.0) -> dict:
    """TCP connect times, 1-byte echo RTTs, bulk goodput both ways, and request/reply
    exchanges of ``rpc_bytes`` each way (``rpc_count`` of them, ``rpc_gap`` s apart),
    through the link to ``target`` (a ``serve`` server)."""
    host, port = target.rsplit(":", 1)
    addr = (host, int(port))
    connect_ms = []
    for _ in range(connects):
        t = time.monotonic()
        with socket.create_connection(addr, timeout=10):
            connect_ms.append((time.monotonic() - t) * 1e3)
    ping_ms = []
    if pings:
        with socket.create_connection(addr, timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"E")
            for _ in range(pings):
                t = time.monotonic()
                s.sendall(b"x")
                _recv_exact(s, 1)
                ping_ms.append((time.monotonic() - t) * 1e3)
    out: dict = {"connect_ms": connect_ms, "ping_ms": ping_ms}
    if rpc_count:
        rpc_ms = []
        with socket.create_connection(addr, timeout=60) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(b"R")
            request = b"q" * rpc_bytes
            for _ in range(rpc_count):
                t = time.monotonic()
                s.sendall(struct.pack("!QQ", rpc_bytes, rpc_bytes) + request)
                _recv_exact_count(s, rpc_bytes)
                rpc_ms.append((time.monotonic() - t) * 1e3)
                if rpc_gap:
                    time.sleep(rpc_gap)  # idle between exchanges, as between rounds
        out["rpc_ms"] = rpc_ms
    if bulk_bytes:
        with socket.create_connection(addr, timeout=60) as s:  # to the target
            s.sendall(b"S")
            block = os.urandom(1 << 16)
            sent = 0
            while sent < bulk_bytes:
                sent += s.send(block[: min(len(block), bulk_bytes - sent)])
            s.shutdown(socket.SHUT_WR)
            out["to_target_mbps"] = json.loads(s.recv(4096).decode())["mbps"]
        with socket.create_connection(addr, timeout=60) as s:  # from the target
            s.sendall(b"G" + struct.pack("!Q", bulk_bytes))
            _, marks = _recv_marks(s)
            s.sendall(b"x")
            out["from_target_mbps"] = _goodput_mbps(marks)
    return out


def probe_many(targets: Sequence[str], **kw) -> dict:
    """:func:`probe` every target at once (one thread each)."""
    results: dict = {}

    def one(target: str) -> None:
        try:
            results[target] = probe(target, **kw)
        except OSError as e:
            results[target] = {"error": str(e)}

    threads = [threading.Thread(target=one, args=(t,)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("offload")
    p.add_argument("devices", nargs="+")
    p = sub.add_parser("serve")
    p.add_argument("--listen", required=True)
    p.add_argument("--ready", required=True, type=Path)
    p = sub.add_parser("probe")
    p.add_argument("--target", required=True, action="append")
    p.add_argument("--connects", type=int, default=5)
    p.add_argument("--pings", type=int, default=10)
    p.add_argument("--bulk-bytes", type=int, default=0)
    p.add_argument("--rpc-bytes", type=int, default=0)
    p.add_argument("--rpc-count", type=int, default=0)
    p.add_argument("--rpc-gap", type=float, default=0.0)
    args = parser.parse_args(argv)
    if args.cmd == "offload":
        print(json.dumps(disable_offloads(args.devices)))
    elif args.cmd == "serve":
        serve(args.listen, args.ready)
    else:
        print(json.dumps(probe_many(args.target, connects=args.connects, pings=args.pings,
                                    bulk_bytes=args.bulk_bytes, rpc_bytes=args.rpc_bytes,
                                    rpc_count=args.rpc_count, rpc_gap=args.rpc_gap)))


if __name__ == "__main__":
    main()

