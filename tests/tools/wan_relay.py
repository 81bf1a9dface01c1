"""A packet-level WAN relay: an L2 switch that delays and drops frames per link.

Test tool, run inside the router namespace of :class:`tests.tools.netns.WanTopology`
(``python wan_relay.py CONFIG.json``). Each port is a veth end whose peer is one
DC's ``wan0``; the relay reads whole Ethernet frames from every port with an
AF_PACKET raw socket and forwards them by destination MAC (static entries from the
config, then learned; broadcast, multicast and unknown destinations are flooded).
A frame from DC ``a`` to DC ``b`` is

* dropped with probability ``loss`` of the directed link ``a->b`` if it carries
  IPv4 or IPv6 (one seeded :class:`random.Random` per directed link; ARP is never
  dropped), else
* held for ``delay_ms`` (half the link's RTT) and then written to ``b``'s port.

TCP therefore sees real delay, real loss and real retransmissions. Bandwidth is
not limited here: the kernel shapes it on the sending side (tbf/htb).

One thread: an epoll loop that drains every readable socket in batches and sends
what is due. Frames of one link share one delay, so a FIFO per link is already in
due-time order; the loop sleeps until the earliest head (epoll's 1 ms granularity:
a frame is at most ~1 ms late, measured and reported).

Config (JSON)::

    {"ports": [{"dev": "p0", "dc": "us-east", "mac": "02:77:00:00:00:01"}, ...],
     "links": [{"src": "us-east", "dst": "eu-west", "delay_ms": 40, "loss": 0.005}, ...],
     "seed": 0, "ready": "/path/ready", "stats": "/path/stats.json", "nice": -10}

Pairs without a link entry are forwarded at once and never dropped. The relay
writes ``ready`` once its sockets are bound, and its statistics (per directed link:
frames, bytes, dropped, sent, send errors, lateness, longest queue) to ``stats`` on
SIGUSR1 and when it exits (SIGTERM or SIGINT); ``drops`` lists every dropped frame
that carried TCP payload as ``[wall time, payload bytes]`` (pure ACKs are left out).
On SIGUSR2 it reads the config file again and takes its ``links`` (delay and loss;
counters and queued frames are kept), then writes the number of reloads to ``ready``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
IP_TYPES = (b"\x08\x00", b"\x86\xdd")
MAX_FRAME = 1514 + 4  # Ethernet frame at MTU 1500 (+ a VLAN tag)
BATCH = 256


class Link:
    """One directed path between two ports: delay, loss, its FIFO and counters."""

    __slots__ = ("bytes", "delay", "dropped", "drops", "frames", "late_max", "late_sum",
                 "loss", "name", "out", "queue", "queue_max", "rng", "send_errors", "sent")

    def __init__(self, name: str, out: socket.socket, delay: float, loss: float, seed: int):
        self.name, self.out, self.delay, self.loss = name, out, delay, loss
        self.rng = random.Random(f"{seed}:{name}")
        self.queue: deque[tuple[float, bytes]] = deque()
        self.frames = self.bytes = self.dropped = self.sent = self.send_errors = 0
        self.drops: list[tuple[float, int]] = []  # (wall time, TCP payload bytes) of data drops
        self.late_max = self.late_sum = 0.0
        self.queue_max = 0

    def send(self, frame: bytes) -> None:
        try:
            self.out.send(frame)
            self.sent += 1
        except OSError:  # ENOBUFS / EAGAIN: the port's queue is full
            self.send_errors += 1

    def stats(self) -> dict:
        return {"frames": self.frames, "bytes": self.bytes, "dropped": self.dropped,
                "drops": self.drops,
                "sent": self.sent, "send_errors": self.send_errors,
                "delay_ms": self.delay * 1e3, "loss": self.loss,
                "late_max_ms": self.late_max * 1e3,
                "late_mean_ms": self.late_sum / self.sent * 1e3 if self.sent else 0.0,
                "queue_max": self.queue_max}


def tcp_payload_bytes(frame: bytes) -> int:
    """Bytes of TCP payload an Ethernet frame carries (0 for a pure ACK, a non-TCP or a
    truncated frame): IPv4 total length minus both headers, or IPv6 payload length
    minus the TCP header (extension headers are not followed: 0)."""
    ether = frame[12:14]
    if ether == b"\x08\x00" and len(frame) >= 34 and frame[23] == 6:  # IPv4, TCP
        ihl = (frame[14] & 0x0F) * 4
        total = int.from_bytes(frame[16:18], "big")
        tcp = 14 + ihl
    elif ether == b"\x86\xdd" and len(frame) >= 54 and frame[20] == 6:  # IPv6, TCP
        total = 40 + int.from_bytes(frame[18:20], "big")
        ihl, tcp = 40, 54
    else:
        return 0
    if len(frame) < tcp + 13:
        return 0
    return max(total - ihl - (frame[tcp + 12] >> 4) * 4, 0)


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":"))


def _open_port(dev: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((dev, ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
        sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    sock.setblocking(False)
    return sock


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.rename(path)


class Relay:
    def __init__(self, config: dict):
        self.config = config
        ports = config["ports"]
        self.dcs = [p["dc"] for p in ports]
        self.socks = [_open_port(p["dev"]) for p in ports]
        self.macs: dict[bytes, int] = {_mac(p["mac"]): i for i, p in enumerate(ports)
                                       if p.get("mac")}
        seed = int(config.get("seed", 0))
        self.links: list[list[Link | None]] = [
            [None if i == j else Link(f"{a}->{b}", self.socks[j], 0.0, 0.0, seed)
             for j, b in enumerate(self.dcs)] for i, a in enumerate(self.dcs)]
        self.set_links(config.get("links", []))
        self.active: set[Link] = set()
        self.oversize = 0
        self.reloads = 0
        self.started = time.monotonic()
        self.stop = False
        self.dump = False
        self.reload = False

    def set_links(self, links: list[dict]) -> None:
        """Delay and loss of every directed link (pairs not listed: none)."""
        spec = {(lk["src"], lk["dst"]): lk for lk in links}
        for i, a in enumerate(self.dcs):
            for j, b in enumerate(self.dcs):
                link = self.links[i][j]
                if link is not None:
                    lk = spec.get((a, b), {})
                    link.delay = float(lk.get("delay_ms", 0.0)) / 1e3
                    link.loss = float(lk.get("loss", 0.0))

    def handle(self, i: int, frame: bytes, now: float) -> None:
        if len(frame) > MAX_FRAME:
            self.oversize += 1  # offloads left on: a super-frame no wire would carry
        src, dst = frame[6:12], frame[:6]
        if src not in self.macs:
            self.macs[src] = i
        o = None if dst[0] & 1 else self.macs.get(dst)
        outs = range(len(self.socks)) if o is None else (o,)
        is_ip = frame[12:14] in IP_TYPES
        for j in outs:
            link = self.links[i][j]
            if link is None:
                continue
            link.frames += 1
            link.bytes += len(frame)
            if link.loss and is_ip and link.rng.random() < link.loss:
                link.dropped += 1
                payload = tcp_payload_bytes(frame)
                if payload:
                    link.drops.append((time.time(), payload))
                continue
            if link.delay <= 0 and not link.queue:
                link.send(frame)
                continue
            link.queue.append((now + link.delay, frame))
            if len(link.queue) > link.queue_max:
                link.queue_max = len(link.queue)
            self.active.add(link)

    def send_due(self) -> float | None:
        """Send every frame that is due; the earliest remaining due time."""
        now = time.monotonic()
        earliest = None
        for link in list(self.active):
            q = link.queue
            while q and q[0][0] <= now:
                due, frame = q.popleft()
                late = now - due
                link.late_sum += late
                if late > link.late_max:
                    link.late_max = late
                link.send(frame)
            if q:
                if earliest is None or q[0][0] < earliest:
                    earliest = q[0][0]
            else:
                self.active.discard(link)
        return earliest

    def stats(self) -> dict:
        cpu = os.times()
        return {"links": {lk.name: lk.stats() for row in self.links for lk in row if lk},
                "oversize_frames": self.oversize,
                "seconds": time.monotonic() - self.started,
                "cpu_seconds": cpu.user + cpu.system}

    def write_stats(self) -> None:
        if self.config.get("stats"):
            _write_atomic(Path(self.config["stats"]), json.dumps(self.stats(), indent=1))

    def run(self) -> None:
        poller = select.epoll()
        by_fd = {}
        for i, sock in enumerate(self.socks):
            poller.register(sock.fileno(), select.EPOLLIN)
            by_fd[sock.fileno()] = (i, sock)
        if self.config.get("ready"):
            _write_atomic(Path(self.config["ready"]), "0")
        while not self.stop:
            earliest = self.send_due()
            timeout = 0.2 if earliest is None else min(0.2, max(0.0,
                                                                 earliest - time.monotonic()))
            events = poller.poll(timeout)
            now = time.monotonic()
            for fd, _ in events:
                i, sock = by_fd[fd]
                for _ in range(BATCH):
                    try:
                        frame = sock.recv(65536)
                    except BlockingIOError:
                        break
                    self.handle(i, frame, now)
            if self.dump:
                self.dump = False
                self.write_stats()
            if self.reload:
                self.reload = False
                self.set_links(json.loads(Path(self.config["path"]).read_text())["links"])
                self.reloads += 1
                if self.config.get("ready"):
                    _write_atomic(Path(self.config["ready"]), str(self.reloads))
        self.write_stats()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit("usage: wan_relay.py CONFIG.json")
    config = {**json.loads(Path(argv[0]).read_text()), "path": argv[0]}
    if config.get("nice"):
        with contextlib.suppress(OSError):
            os.nice(int(config["nice"]))
    relay = Relay(config)

    def on_stop(*_):
        relay.stop = True

    def on_dump(*_):
        relay.dump = True

    def on_reload(*_):
        relay.reload = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_dump)
    signal.signal(signal.SIGUSR2, on_reload)
    relay.run()


if __name__ == "__main__":
    main()
