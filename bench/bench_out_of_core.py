"""Out-of-core training: a site streaming a dataset larger than its memory budget.

Usage: python bench/bench_out_of_core.py [--rows 10000000] [--bits 20] [--threads 2]
           [--shards 1] [--block-nnz 4194304] [--iterations 4] [--passes 3]
           [--cap-mb 0] [--modes stream,memory] [--work DIR] [--json FILE]

1. **Data**: ``--rows`` rows of the synthetic regional CTR generator (30 nonzeros per
   row, float32 values, 2^``--bits`` hashed features), written once to ``--work`` as
   one site's dataset directory (about 256 bytes per row).
2. **Training**, each mode on its own site process (``geodml site serve`` with a
   site.toml, ``--shards`` shards on ``--threads`` threads): the coordinator, in this
   process, runs SQM L-BFGS for ``--iterations`` iterations over gRPC, then times
   ``--passes`` value+gradient passes (Evaluate at a point sent down; the best is
   reported). Modes: ``stream`` (``[data] stream = true``, ``block_nnz =
   --block-nnz``: memory-mapped, read block by block, each block's pages released
   after use) and ``memory`` (the default site: the arrays read into memory).
3. **Memory**: the site process's ``/proc/PID/status`` sampled every 20 ms:
   ``VmHWM`` (the kernel's peak resident set), ``RssAnon`` and ``RssFile``.
4. **A memory cap**: the streamed site's process starts in a new cgroup v2 group with
   ``memory.max`` = ``--cap-mb`` (default: half the data's size), when the machine's
   cgroup v2 hierarchy offers the memory controller and lets this process create a
   group; otherwise the output says why not and the RSS numbers stand alone.

Prints a table and the exact command; ``--json FILE`` writes the numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

STATUS_KEYS = ("VmHWM", "RssAnon", "RssFile")


def _status_kb(pid: int | str = "self") -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_KEYS:
                out[key] = int(value.split()[0])
    return out


# -- cgroup v2 -------------------------------------------------------------------------
def _cgroup2_mount() -> Path | None:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return Path(left.split()[4])
    return None


def cgroup_v2_group(limit_bytes: int) -> tuple[Path | None, str]:
    """A new cgroup v2 group under this process's own, with ``memory.max`` set, or
    None and the reason it cannot be had. Nothing is changed when it cannot."""
    mount = _cgroup2_mount()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    own = "/"
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                own = line.strip()[3:] or "/"
    parent = mount / own.lstrip("/")
    controllers = (parent / "cgroup.controllers").read_text().split()
    if "memory" not in controllers:
        return None, (f"cgroup v2 at {mount} offers no memory controller here "
                      f"(cgroup.controllers: {' '.join(controllers) or 'none'})")
    if "memory" not in (parent / "cgroup.subtree_control").read_text().split():
        return None, (f"{parent}: memory is not enabled for child groups "
                      "(cgroup.subtree_control), and enabling it is the system's business")
    group = parent / f"geodml-ooc-{os.getpid()}"
    try:
        group.mkdir()
        (group / "memory.max").write_text(str(limit_bytes))
        if (group / "memory.swap.max").exists():  # no swapping around the cap
            (group / "memory.swap.max").write_text("0")
    except OSError as e:
        if group.exists():
            group.rmdir()
        return None, f"cannot create {group}: {e.strerror or e}"
    return group, f"cgroup v2 group {group} with memory.max = {limit_bytes >> 20} MiB"


def _oom_kills(group: Path) -> int:
    events = group / "memory.events"
    if not events.exists():
        return 0
    for line in events.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill":
            return int(value)
    return 0


# -- the parent ------------------------------------------------------------------------
@dataclass
class Run:
    mode: str
    capped: str = "no"
    peak_kb: dict[str, int] = field(default_factory=dict)
    train_s: float = 0.0
    iterations: int = 0
    objective: float = float("nan")
    pass_s: list[float] = field(default_factory=list)
    error: str = ""
    oom_kills: int = 0


class Sampler:
    """Peaks of a process's VmHWM, RssAnon, RssFile and RssAnon + RssFile, sampled
    every 20 ms on a thread until :meth:`stop`."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, {k: 0 for k in (*STATUS_KEYS, "RssAnon+RssFile")}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                s = _status_kb(self.pid)
            except (OSError, ValueError):
                return  # the process is gone
            for k, v in s.items():
                self.peak[k] = max(self.peak[k], v)
            both = s.get("RssAnon", 0) + s.get("RssFile", 0)
            self.peak["RssAnon+RssFile"] = max(self.peak["RssAnon+RssFile"], both)
            self._done.wait(0.02)

    def stop(self) -> dict[str, int]:
        self._done.set()
        self._thread.join()
        return dict(self.peak)


def site_config(mode: str, args: argparse.Namespace, data: Path) -> Path:
    """The site.toml of one mode."""
    stream = f"stream = true\nblock_nnz = {args.block_nnz}\n" if mode == "stream" else ""
    path = args.work / f"site-{mode}.toml"
    path.write_text(f"""name = "site"
listen = "127.0.0.1:0"
insecure = true

[data]
path = "{data}"
{stream}
[executor]
shards = {args.shards}
threads = {args.threads}
""")
    return path


@contextlib.contextmanager
def site_process(config: Path, workdir: Path, group: Path | None
                 ) -> Iterator[tuple[subprocess.Popen, int]]:
    """``geodml site serve --config config`` as a subprocess (joining ``group`` before
    it runs, when given): the process and its port, once it listens; SIGTERM after."""
    port_file, log = workdir / "site.port", workdir / "site.log"
    port_file.unlink(missing_ok=True)

    def enter_group() -> None:  # in the child, before exec
        with open(group / "cgroup.procs", "w") as f:
            f.write(str(os.getpid()))

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "geodml", "site", "serve", "--config", str(config),
             "--port-file", str(port_file), "--insecure"], stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, preexec_fn=enter_group if group else None)
    try:
        deadline = time.monotonic() + 600
        while not port_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the site did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)  # polling the port file the site writes, with a deadline
        yield proc, int(port_file.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_mode(mode: str, args: argparse.Namespace, data: Path, group: Path | None) -> Run:
    """Start the mode's site process, train over gRPC and time passes, sampling the
    site's memory throughout (the site in ``group`` when given)."""
    from geodml.algorithms.registry import TrainSpec, train
    from geodml.federation import Federation
    from geodml.wire.transport import GrpcTransport

    run = Run(mode, capped=str(group) if group else "no")
    workdir = args.work / f"run-{mode}"
    workdir.mkdir(exist_ok=True)
    with site_process(site_config(mode, args, data), workdir, group) as (proc, port):
        sampler = Sampler(proc.pid)
        try:
            transport = GrpcTransport("site", f"127.0.0.1:{port}", timeout=3600)
            with Federation([transport], home="site") as fed:
                t0 = time.perf_counter()
                result = train(fed, "sqm-lbfgs", TrainSpec(gtol=1e-7, max_rounds=args.iterations))
                run.train_s = time.perf_counter() - t0
                run.iterations, run.objective = len(result.rows), result.objective
                for _ in range(args.passes):
                    t0 = time.perf_counter()
                    fed.evaluate(result.w)
                    run.pass_s.append(time.perf_counter() - t0)
        except Exception as e:  # a site killed under the cap: report it, go on
            run.error = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
        finally:
            run.peak_kb = sampler.stop()
    if group is not None:
        run.oom_kills = _oom_kills(group)
    return run


def write_data(args: argparse.Namespace, console: Console) -> Path:
    from geodml.data.partition import site_dirs
    from geodml.data.synthetic import RegionalCTRConfig, write_regional

    out = args.work / f"site-{args.rows}-{args.bits}"
    if not (out / "manifest.json").is_file():
        console.print(f"generating {args.rows:,} rows into {out}")
        t0 = time.perf_counter()
        write_regional(RegionalCTRConfig(regions=("site",), rows_per_region=args.rows,
                                         test_rows_per_region=1, hash_bits=args.bits),
                       out, overwrite=True, workers=args.threads)
        console.print(f"  {time.perf_counter() - t0:.0f} s")
    return site_dirs(out)["site"]


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def _mib(kb: int) -> str:
    return f"{kb / 1024:,.0f} MiB"


def table(runs: list[Run], data_bytes: int) -> Table:
    t = Table(title=f"an out-of-core site: {data_bytes / 2**20:,.0f} MiB of data, "
                    "SQM L-BFGS over gRPC; memory of the site process")
    for col in ("mode", "cap", "peak RSS (VmHWM)", "peak / data", "peak RssAnon",
                "peak RssFile", "value+grad pass", "vs memory", "L-BFGS", "objective"):
        t.add_column(col, justify="left" if col in ("mode", "cap") else "right")
    memory = next((r for r in runs if r.mode == "memory" and r.pass_s), None)
    base = min(memory.pass_s) if memory else None
    for r in runs:
        peak = r.peak_kb.get("VmHWM", 0)
        cells = [r.mode, "no" if r.capped == "no" else "yes", _mib(peak),
                 f"{peak * 1024 / data_bytes:.3f}", _mib(r.peak_kb.get("RssAnon", 0)),
                 _mib(r.peak_kb.get("RssFile", 0))]
        if r.error:
            t.add_row(*cells, r.error, "-", "-", f"OOM kills: {r.oom_kills}")
            continue
        best = min(r.pass_s)
        t.add_row(*cells, f"{best:.2f} s", f"{best / base:.2f}x" if base else "-",
                  f"{r.iterations} it, {r.train_s:.0f} s", f"{r.objective:.7f}")
    return t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--bits", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--block-nnz", type=int, default=1 << 22)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--cap-mb", type=int, default=0, help="0: half the data's size")
    ap.add_argument("--modes", default="stream,memory")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    console = Console(width=160)
    args.work = (args.work or Path(tempfile.gettempdir()) / "geodml-out-of-core").resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    data = write_data(args, console)
    data_bytes = dir_bytes(data)
    cap = (args.cap_mb << 20) or data_bytes // 2
    group, why = cgroup_v2_group(cap)
    console.print(f"memory cap: {why}")
    runs = []
    try:
        for mode in args.modes.split(","):
            console.print(f"running {mode} ...")
            runs.append(run_mode(mode, args, data, group if mode == "stream" else None))
    finally:
        if group is not None:
            group.rmdir()
    console.print(table(runs, data_bytes))
    stream = next((r for r in runs if r.mode == "stream" and not r.error), None)
    if stream is not None:
        peak = stream.peak_kb["VmHWM"]
        console.print(f"stream: the site's peak resident set was {_mib(peak)} for "
                      f"{data_bytes / 2**20:,.0f} MiB of data ({peak * 1024 / data_bytes:.1%})"
                      + ("; it trained under the cap" if group is not None else
                         "; no cap was applied (see above): the RSS numbers are the evidence"))
    console.print("command: " + " ".join(shlex.quote(a) for a in ["python", *sys.argv]))
    if args.json is not None:
        args.json.write_text(json.dumps({"data_bytes": data_bytes, "cap": why,
                                         "runs": [asdict(r) for r in runs]}, indent=2))


if __name__ == "__main__":
    main()
