"""Resource counts of live processes from /proc, and a load workload for a Federation.

Test and benchmark tool (Linux only): resident memory, threads and open file
descriptors of this process and of the site processes, the children of a process,
the processes whose command line mentions a path, and polling with a deadline.
``drive`` runs an exact number of rounds against a Federation, cycling through
every kind of round the algorithms use.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from geodml.federation import Federation

SELF = "self"


def _status(pid: int | str, key: str) -> int:
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def rss_kb(pid: int | str = SELF) -> int:
    """Resident set size (VmRSS) in KiB."""
    return _status(pid, "VmRSS")


def os_threads(pid: int | str = SELF) -> int:
    """Threads of the process as the kernel sees them (Python's and native ones)."""
    return len(os.listdir(f"/proc/{pid}/task"))


GRPC_THREADS = ("event_engine", "lifeguard", "grpc", "default-exec", "resolver-exec", "timer")


def thread_counts(pid: int | str = SELF) -> tuple[int, int]:
    """``(threads, gRPC's threads)`` from one listing. gRPC's core threads are told by
    name: its event engine sizes its own pool, adding helper threads when busy and
    reclaiming them after a while idle."""
    total = grpc = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/comm") as f:
            grpc += f.read().strip().startswith(GRPC_THREADS)
            total += 1  # a thread gone since the listing is not counted
    return total, grpc


def open_fds(pid: int | str = SELF) -> int:
    """Open file descriptors (listing /proc/self/fd opens one more, not counted)."""
    n = len(os.listdir(f"/proc/{pid}/fd"))
    return n - 1 if pid == SELF else n


def fd_targets(pid: int | str = SELF) -> list[str]:
    """What every open descriptor points at (sorted), for leak reports."""
    out = []
    base = f"/proc/{pid}/fd"
    for fd in os.listdir(base):
        with contextlib.suppress(OSError):  # the one that listed the directory is closed
            out.append(os.readlink(f"{base}/{fd}"))
    return sorted(out)


def _pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None  # gone meanwhile
    return text[text.rindex(")") + 2:].split()  # state, ppid, ... (comm may hold spaces)


def children(pid: int | None = None) -> list[int]:
    """Live (not zombie) direct children of ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    out = []
    for p in _pids():
        fields = _stat_fields(p)
        if fields is not None and int(fields[1]) == pid and fields[0] != "Z":
            out.append(p)
    return out


def zombie_children(pid: int | None = None) -> list[int]:
    pid = os.getpid() if pid is None else pid
    return [p for p in _pids()
            if (f := _stat_fields(p)) is not None and int(f[1]) == pid and f[0] == "Z"]


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (e.g. a cluster's work directory)."""
    out = []
    for p in _pids():
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and p != os.getpid():
            out.append(p)
    return out


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)  # polling the kernel's counters, bounded by the deadline


@dataclass(frozen=True)
class Counts:
    """This process's threads and descriptors at one moment. ``os_threads`` leaves out
    gRPC's core threads: its event engine sizes its own pool, process-wide, and keeps
    helper threads a while after busy periods of any earlier test."""

    py_threads: int
    os_threads: int
    fds: int

    @classmethod
    def now(cls) -> Counts:
        total, grpc = thread_counts()
        return cls(threading.active_count(), total - grpc, open_fds())

    def at_most(self, other: Counts) -> bool:
        return (self.py_threads <= other.py_threads and self.os_threads <= other.os_threads
                and self.fds <= other.fds)


@dataclass
class Sample:
    round: int
    seconds: float
    rss_kb: int
    py_threads: int
    os_threads: int
    grpc_threads: int  # of os_threads
    fds: int
    children: int
    sites_rss_kb: dict[str, int]
    sites_threads: dict[str, int]
    sites_grpc_threads: dict[str, int]
    sites_fds: dict[str, int]

    @property
    def own_threads(self) -> int:
        """This process's threads other than gRPC's (Python's, BLAS, allocator)."""
        return self.os_threads - self.grpc_threads

    def site_own_threads(self, name: str) -> int:
        return self.sites_threads[name] - self.sites_grpc_threads[name]


@dataclass
class Sampler:
    """Samples this process (the coordinator) and every site process by pid."""

    site_pids: dict[str, int]
    samples: list[Sample] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def sample(self, round_no: int) -> Sample:
        sites = {n: thread_counts(p) for n, p in self.site_pids.items()}
        s = Sample(
            round_no, time.perf_counter() - self.start, rss_kb(), threading.active_count(),
            *thread_counts(), open_fds(), len(children()),
            {n: rss_kb(p) for n, p in self.site_pids.items()},
            {n: c[0] for n, c in sites.items()}, {n: c[1] for n, c in sites.items()},
            {n: open_fds(p) for n, p in self.site_pids.items()},
        )
        self.samples.append(s)
        return s

    def after(self, round_no: int) -> list[Sample]:
        """Samples at or after ``round_no`` (the first one is the reference)."""
        return [s for s in self.samples if s.round >= round_no]


def growth(values: list[int]) -> float:
    """Largest rise over the first value, as a fraction of it (0 when none)."""
    return max(0.0, (max(values) - values[0]) / values[0])


def bounded(values: list[int], slack: int = 0) -> bool:
    """No sample exceeds the first by more than ``slack`` (gRPC's event engine starts
    short-lived helper threads when it is busy; a leak grows with the rounds)."""
    return max(values) <= values[0] + slack


def dir_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under ``path`` (0 when it is gone)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(root, name)).st_size
    return total


def drive(fed: Federation, rounds: int, lam: float,
          on_round: Callable[[int], None] | None = None) -> float:
    """Run rounds until ``fed.rounds == rounds``; returns the last objective seen.

    Cycles through every kind of round: Evaluate at a point sent down, LineSearch
    with a new direction and again along the cached one, Evaluate at a cached step
    (the sites move, nothing is sent), then in turn Evaluate with a Hessian-vector
    product, LocalSolve (``local_minimize``, two iterations), a Subspace evaluation
    with a new direction, and a Subspace commit that keeps three past steps. The
    model moves by steepest descent, so the numbers stay finite however many rounds.
    ``on_round(fed.rounds)`` is called after every round.
    """
    n, d = fed.n_rows, fed.n_features
    w = np.zeros(d)
    g = np.zeros(d)
    state = {"f": float("nan"), "alpha": 0.0, "dirs": 0}
    alphas = np.array([0.25, 0.5, 1.0, 2.0, 4.0, 8.0])

    def evaluate_point() -> None:
        evals = fed.evaluate(w)
        g[:] = np.sum([e.grad for e in evals], axis=0) / n + lam * w
        state["f"] = sum(e.loss_sum for e in evals) / n + 0.5 * lam * float(w @ w)

    def line_search_new() -> None:
        parts = fed.line_search(-g, alphas)
        vals = np.sum([v for v, _ in parts], axis=0) / n
        vals += 0.5 * lam * np.array([float((w - a * g) @ (w - a * g)) for a in alphas])
        state["alpha"] = float(alphas[int(np.argmin(vals))])

    def line_search_cached() -> None:
        fed.line_search(None, alphas / 3)

    def step() -> None:
        a = state["alpha"]
        fed.evaluate(step=a, want_grad=False)
        w[:] = w - a * g

    def hvp() -> None:
        fed.evaluate(w, v=g)

    def local_solve() -> None:
        fed.local_solve("local_minimize", {"max_iter": 2}, [w])

    def subspace_new() -> None:
        state["dirs"] = len(fed.subspace([g], coefficients=np.zeros(state["dirs"] + 1))[0][1])

    def subspace_commit() -> None:
        fed.subspace(coefficients=np.zeros(state["dirs"]), commit=True, memory=3)
        state["dirs"] = min(3, state["dirs"])

    core = [evaluate_point, line_search_new, line_search_cached, step]
    extras = [hvp, local_solve, subspace_new, subspace_commit]
    cycle = 0
    while fed.rounds < rounds:
        for call in [*core, extras[cycle % len(extras)]]:
            if fed.rounds >= rounds:
                break
            call()
            if on_round is not None:
                on_round(fed.rounds)
        cycle += 1
    return state["f"]
