"""A real geodml run over an emulated WAN, against the WAN model's prediction.

Test and bench tool (root; see :mod:`tests.tools.netns`). :func:`run_experiment`:

1. writes synthetic regional CTR data for the DCs (one site per DC), a CA and
   certificates (every site's names its namespace IP), and a deployment file
   whose ``[[links]]`` give every home <-> DC link's bandwidth and RTT;
2. builds the namespaces from that deployment (:func:`tests.tools.netns.star_links`:
   kernel shaping at the links' rates, the relay's delay at half their RTTs, and
   ``loss`` per frame each way);
3. measures the kernel's shaping alone: bulk goodput each way to one DC with the
   relay's loss off (``probe_bulk_bytes``);
4. starts one ``geodml site serve`` per DC in its namespace (mutual TLS; certificates
   name the namespace IPs) and runs the job once over a plain LAN (no shaping, delay
   or loss): the **calibration**, whose audit log gives the compute time of every
   round (:func:`calibration_compute`);
5. puts the WAN in place and measures it: TCP connect and echo round trips to every
   DC; checks that geodml's own gRPC transport can connect across it;
6. **the run**: ``geodml train --site ... --deployment ... --audit ... --record ...``
   in the home namespace, against the same site processes;
7. compares the run's measured wall time (first call's start to last call's end,
   from the audit log) with :func:`geodml.planning.wan.model_run` over its audit records:
   with the calibration's compute per round (the prediction: :func:`calibration_compute`,
   which also holds the coordinator's work between rounds), with the WAN run's own
   call times (the default, which counts transfer twice over a WAN), and without
   compute; and breaks both down by call.

Every process runs with ``OPENBLAS_NUM_THREADS=1`` (``blas_threads``): the two runs
then follow the same trajectory round for round (checked: same bytes on every link
in every round), and OpenBLAS's spinning threads do not fight over the 2 cores.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from geodml.federation.meter import audit_groups, audit_rounds
from geodml.planning.wan import LOSS_RECOVERY_RTTS, expected_loss_seconds, lossy_probability
from tests.tools.netns import SUBNET, WanTopology, star_links, wait_for_file

DCS = ("us-east", "eu-west", "ap-south", "sa-east")
SITE_PORT = 7001
PROBE_PORT = 9000
# egress $/GB of the AWS regions the DCs are named after (geodml.planning.wan's table)
PRICES = {"us-east": 0.02, "eu-west": 0.02, "ap-south": 0.086, "sa-east": 0.138}


@dataclass
class Settings:
    rows: int = 1500  # training rows per DC
    bits: int = 15  # 2^bits hashed features
    method: str = "fadl-subspace"
    gtol: float = 1e-3  # stop at ||grad|| <= gtol ||grad_0|| (the demo's rule)
    bandwidth_mbps: float = 50.0
    rtt_ms: float = 80.0
    loss: float = 0.005
    seed: int = 1
    share_support: bool = True  # sites send only their support's coordinates
    params: dict = field(default_factory=dict)  # --param KEY=VALUE of the method
    blas_threads: int = 1
    probe_bulk_bytes: int = 4_000_000  # per direction, one link; 0: no bulk probe
    probe_pings: int = 10
    timeout: float = 600.0
    # TCP congestion control in every DC namespace (None: the kernel's default; a
    # namespace may choose from net.ipv4.tcp_allowed_congestion_control)
    congestion_control: str | None = None
    # niceness of every process of the experiment (sites, coordinator, probes; the relay
    # runs at -10): a CPU-heavy neighbour then delays them less
    nice: int = -5


@dataclass
class Result:
    settings: dict
    converged: bool
    reason: str
    objective: float
    iterations: int
    rounds: int
    wan_bytes: int
    measured_seconds: float  # the run: first call's start to last call's end
    modeled_seconds: float  # model_run, compute per round from the LAN calibration
    modeled_default_seconds: float  # model_run with the WAN audit's own call times
    modeled_wan_seconds: float  # model_run without compute
    loss_events: float  # expected messages that lose a frame, worst site, summed (loss_events)
    realized_loss_events: int  # the messages that did (realized_loss), same sum
    modeled_realized_seconds: float  # modeled_seconds with the realized loss for the expected
    modeled_realized_network_seconds: float  # the same without compute
    compute_seconds: float  # the calibration's compute (calibration_compute), summed
    calibration_seconds: float  # the calibration run's wall time (same span)
    same_rounds: bool  # the calibration moved the same bytes, round for round
    coordinator_gap_seconds: float  # measured time outside every round (coordinator work)
    probes: dict
    stock_grpc: dict  # geodml's own GrpcTransport: Describe across the WAN
    relay: dict
    by_call: dict  # call -> rounds, measured / modeled seconds
    files: dict

    @property
    def error(self) -> float:
        """Relative error of geodml's prediction: (measured - modeled) / modeled."""
        return (self.measured_seconds - self.modeled_seconds) / self.modeled_seconds

    @property
    def cost_rtts_fit(self) -> float | None:
        """The loss cost (RTTs per message that lost a frame) that would make the
        prediction exact: geodml.planning.wan's ``LOSS_RECOVERY_RTTS`` plus the error per event."""
        if self.loss_events <= 0:
            return None
        rtt = self.settings["rtt_ms"] / 1e3
        return LOSS_RECOVERY_RTTS + (self.measured_seconds - self.modeled_seconds) / (
            self.loss_events * rtt)

    @property
    def realized_error(self) -> float:
        """Relative error of the model given the losses that happened:
        (measured - modeled_realized) / modeled_realized."""
        return (self.measured_seconds - self.modeled_realized_seconds) / \
            self.modeled_realized_seconds

    def to_dict(self) -> dict:
        return {**asdict(self), "error": self.error, "realized_error": self.realized_error,
                "cost_rtts_fit": self.cost_rtts_fit}


def _wan_messages(group: list[dict], home: str):
    """``(site, link name, bytes)`` of every WAN message of an audit group that carried
    bytes; the link runs home -> site for a request, site -> home for its reply."""
    for rec in group:
        if rec.get("wan") and int(rec["bytes"]) > 0:
            site = rec["site"]
            src, dst = (home, site) if rec["direction"] == "down" else (site, home)
            yield site, (src, dst), int(rec["bytes"])


def loss_events(records: list[dict], deployment) -> float:
    """Expected number of messages that lose a frame on the worst site's path, summed
    over the rounds: geodml.planning.wan's loss term with a cost of one per event."""
    total = 0.0
    for _, group in audit_groups(records):
        paths: dict[str, tuple[float, list[float]]] = {}
        for site, link, nbytes in _wan_messages(group, deployment.home):
            paths.setdefault(site, (1.0, []))[1].append(
                lossy_probability(nbytes, deployment.link(*link)))
        total += expected_loss_seconds(paths, recovery_rtts=1.0)
    return total


def realized_loss(records: list[dict], drops: dict[str, list], deployment) -> tuple[int, float]:
    """The loss that happened, in the model's terms: per round (an audit group, from its
    first call's start to its last call's end), a site path's count is the number of its
    WAN messages whose link dropped a frame carrying TCP payload within the round
    (``drops``: link name -> the relay's ``[wall time, payload bytes]``); the round
    costs ``LOSS_RECOVERY_RTTS * RTT`` per message on the worst path. Returns the
    counts (worst path, summed over rounds: :func:`loss_events`'s realization) and the
    seconds."""
    times = {name: sorted(t for t, _ in entries) for name, entries in drops.items()}
    events, seconds = 0, 0.0
    for _, group in audit_groups(records):
        start = min(r["time"] - float(r.get("seconds") or 0.0) for r in group)
        end = max(r["time"] for r in group)
        paths: dict[str, list] = {}
        for site, (src, dst), _ in _wan_messages(group, deployment.home):
            ts = times.get(f"{src}->{dst}", [])
            i = bisect.bisect_left(ts, start)  # the first drop at or after the round's start
            hit = i < len(ts) and ts[i] <= end
            rtt = deployment.link(src, dst).rtt_ms / 1e3
            path = paths.setdefault(site, [0, rtt])
            path[0] += hit
        if paths:
            count, rtt = max(paths.values(), key=lambda p: p[0] * p[1])
            events += count
            seconds += LOSS_RECOVERY_RTTS * rtt * count
    return events, seconds


def without_loss(deployment):
    """``deployment`` with no loss on any link (explicit or by default)."""
    return deployment.model_copy(update={
        "links": [link.model_copy(update={"loss": 0.0}) for link in deployment.links],
        "defaults": deployment.defaults.model_copy(update={"loss": 0.0})})


def _geodml() -> list[str]:
    script = Path(sys.executable).with_name("geodml")
    return [str(script)] if script.exists() else [sys.executable, "-m", "geodml"]


def write_deployment(path: Path, home: str, addresses: dict[str, str], settings: Settings,
                     tls_dir: Path) -> None:
    """A deployment file: the DCs, their addresses, explicit home <-> DC links."""
    lines = [f'home = "{home}"', "", "[tls]", f'ca = "{tls_dir / "ca.pem"}"',
             f'cert = "{tls_dir / "coordinator.pem"}"', f'key = "{tls_dir / "coordinator.key"}"']
    for dc, address in addresses.items():
        lines += ["", "[[sites]]", f'name = "{dc}"', f'region = "{dc}"',
                  f'address = "{address}"']
    for dc in addresses:
        if dc == home:
            continue
        for src, dst in ((home, dc), (dc, home)):
            lines += ["", "[[links]]", f'src = "{src}"', f'dst = "{dst}"',
                      f"bandwidth_mbps = {settings.bandwidth_mbps}",
                      f"rtt_ms = {settings.rtt_ms}",
                      f"egress_usd_per_gb = {PRICES.get(src, 0.02)}",
                      f"loss = {settings.loss}"]
    path.write_text("\n".join(lines) + "\n")


def audit_span(records: list[dict]) -> float:
    """Wall time of an audited run: the first call's start to the last call's end
    (a call's records are written when it ends; ``seconds`` is its duration)."""
    starts = [r["time"] - float(r.get("seconds") or 0.0) for r in records]
    return max(r["time"] for r in records) - min(starts)


def calibration_compute(records: list[dict]) -> list[float]:
    """Per round of a run without WAN (the calibration): from its start to the next
    round's start (the slowest call, then the coordinator's own work before its next
    call); the last round, its own duration. Their sum is the run's wall time (:func:`audit_span`).
    geodml's default compute term (``RoundTraffic.seconds``) is the
    slowest call alone and leaves out the coordinator's work between rounds."""
    bounds = []
    for _, group in audit_groups(records):
        starts = [r["time"] - float(r.get("seconds") or 0.0) for r in group]
        bounds.append((min(starts), max(r["time"] for r in group)))
    out = [nxt[0] - cur[0] for cur, nxt in itertools.pairwise(bounds)]
    return [*out, bounds[-1][1] - bounds[-1][0]] if bounds else []


def _round_spans(records: list[dict]) -> list[tuple[str, float]]:
    """(call, measured duration) of every round, grouped as the model groups them."""
    out = []
    for _, group in audit_groups(records):
        starts = [r["time"] - float(r.get("seconds") or 0.0) for r in group]
        out.append((group[0]["call"], max(r["time"] for r in group) - min(starts)))
    return out


def _by_call(records: list[dict], modeled_rounds: list[float]) -> dict:
    spans = _round_spans(records)
    table: dict[str, dict] = defaultdict(lambda: {"rounds": 0, "measured": 0.0,
                                                  "modeled": 0.0})
    for (call, measured), modeled in zip(spans, modeled_rounds, strict=True):
        row = table[call]
        row["rounds"] += 1
        row["measured"] += measured
        row["modeled"] += modeled
    return dict(table)


def _site_config(name: str, listen: str, data: Path, tls_dir: Path | None,
                 share_support: bool) -> str:
    from geodml.site.config import DataConfig, SiteConfig, TlsConfig, dump_site_config
    from geodml.site.policy import Policy

    tls = None if tls_dir is None else TlsConfig(
        ca=tls_dir / "ca.pem", cert=tls_dir / f"{name}.pem", key=tls_dir / f"{name}.key")
    config = SiteConfig(name=name, region=name, listen=listen, insecure=tls is None,
                        data=DataConfig(path=data), tls=tls,
                        policy=Policy(share_support=share_support))
    return dump_site_config(config)


class _Sites:
    """One ``geodml site serve`` per DC, each in a namespace of the topology."""

    def __init__(self, topo: WanTopology, where: dict[str, str], listen: dict[str, str],
                 data: dict[str, Path], tls_dir: Path | None, workdir: Path,
                 share_support: bool, env: dict, nice: int = 0):
        self.topo, self.procs, self.ports = topo, {}, {}
        workdir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + 60
        for name, ns_dc in where.items():
            cfg = workdir / f"{name}.toml"
            cfg.write_text(_site_config(name, listen[name], data[name], tls_dir,
                                        share_support))
            port_file = workdir / f"{name}.port"
            port_file.unlink(missing_ok=True)
            cmd = [*_geodml(), "site", "serve", "--config", str(cfg), "--port-file",
                   str(port_file)]
            if tls_dir is None:
                cmd.append("--insecure")
            self.procs[name] = (topo.popen(ns_dc, cmd, workdir / f"{name}.log", env=env,
                                           nice=nice),
                                port_file, workdir / f"{name}.log")
        for name, (proc, port_file, log) in self.procs.items():
            self.ports[name] = int(wait_for_file(port_file, deadline, proc, f"site {name}", log))

    def stop(self) -> None:
        for proc, _, _ in self.procs.values():
            self.topo.stop(proc)


def _train(topo: WanTopology, home: str, sites: dict[str, str], out: Path, settings: Settings,
           env: dict, tls_dir: Path | None, deployment: Path | None) -> tuple[list, dict, str]:
    cmd = [*_geodml(), "train", "--method", settings.method, "--home", home,
           "--gtol", repr(settings.gtol),
           "--audit", str(out / "audit.jsonl"), "--record", str(out / "run.jsonl"),
           "--out", str(out / "model.npz")]
    for name, address in sites.items():
        cmd += ["--site", f"{name}={address}"]
    cmd += ["--insecure"] if tls_dir is None else ["--tls-dir", str(tls_dir)]
    if deployment is not None:
        cmd += ["--deployment", str(deployment)]
    for key, value in settings.params.items():
        cmd += ["--param", f"{key}={json.dumps(value)}"]
    for f in ("audit.jsonl", "run.jsonl", "model.npz"):
        (out / f).unlink(missing_ok=True)
    proc = topo.exec(home, cmd, timeout=settings.timeout, env=env, nice=settings.nice)
    (out / "train.log").write_text(proc.stdout + proc.stderr)
    from geodml.federation.meter import read_audit
    from geodml.model import LinearModel

    return read_audit(out / "audit.jsonl"), LinearModel.load(out / "model.npz").info, \
        proc.stdout


class _ProbeServers:
    """A probe server (``netns.py serve``) in every DC but home, started at once."""

    def __init__(self, topo: WanTopology, home: str, workdir: Path, nice: int = 0):
        self.topo, self.tool = topo, str(Path(__file__).with_name("netns.py"))
        self.nice = nice
        self.targets, procs = {}, []
        deadline = time.monotonic() + 30
        for dc in topo.dcs:
            if dc == home:
                continue
            ready = workdir / f"probe-{dc}.ready"
            ready.unlink(missing_ok=True)
            procs.append((dc, ready, topo.popen(
                dc, [sys.executable, self.tool, "serve", "--listen",
                     f"{topo.ip(dc)}:{PROBE_PORT}", "--ready", str(ready)],
                workdir / f"probe-{dc}.log", nice=nice)))
        for dc, ready, proc in procs:
            wait_for_file(ready, deadline, proc, f"probe server in {dc}")
            self.targets[dc] = f"{topo.ip(dc)}:{PROBE_PORT}"
        self.procs = [proc for _, _, proc in procs]

    def probe(self, home: str, dcs: list[str], **kw) -> dict:
        """``netns.py probe`` from ``home`` to every DC of ``dcs`` at once."""
        cmd = [sys.executable, self.tool, "probe"]
        for dc in dcs:
            cmd += ["--target", self.targets[dc]]
        for key, value in kw.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        out = json.loads(self.topo.exec(home, cmd, nice=self.nice).stdout)
        return {dc: out[self.targets[dc]] for dc in dcs}

    def stop(self) -> None:
        for proc in self.procs:
            self.topo.stop(proc)


def summarize_probes(probes: dict) -> dict:
    """Median connect and echo RTT per DC, bulk goodput where measured."""
    import statistics

    out = {}
    for dc, p in probes.items():
        if "error" in p:
            raise RuntimeError(f"probing {dc} failed: {p['error']}")
        row = {}
        for key in ("connect_ms", "ping_ms"):
            if p.get(key):
                row[key] = statistics.median(p[key])
        for key in p:
            if key.endswith("_mbps"):
                row[key] = p[key]
        out[dc] = row
    return out


def run_experiment(workdir: Path, settings: Settings, home: str = DCS[0],
                   dcs: tuple[str, ...] = DCS, log=print) -> Result:
    """Everything in the module docstring; namespaces and processes are gone on return
    (or on any error)."""
    from geodml.data.partition import site_dirs
    from geodml.data.synthetic import RegionalCTRConfig, write_regional
    from geodml.planning.deployment import load_deployment
    from geodml.planning.wan import model_run
    from geodml.wire.tls import init_ca, issue

    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    t0 = time.monotonic()
    data_root = workdir / "data"
    write_regional(RegionalCTRConfig(regions=dcs, rows_per_region=settings.rows,
                                     test_rows_per_region=100, hash_bits=settings.bits,
                                     seed=settings.seed), data_root)
    data = site_dirs(data_root)

    ips = {dc: f"{SUBNET}{i + 1}" for i, dc in enumerate(dcs)}  # as WanTopology.ip
    certs = workdir / "certs"
    init_ca(certs)
    for dc in dcs:
        issue(certs, certs, dc, "site", hosts=[ips[dc]])
    issue(certs, certs, "coordinator", "coordinator")
    deployment = workdir / "deployment.toml"
    addresses = {dc: f"{ips[dc]}:{SITE_PORT}" for dc in dcs}
    write_deployment(deployment, home, addresses, settings, certs)
    dep = load_deployment(deployment)
    links = star_links(home, dcs, dep, settings.loss)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(settings.blas_threads),
           "PYTHONUNBUFFERED": "1"}
    log(f"data and certificates in {time.monotonic() - t0:.1f} s")

    lossless = {k: dataclasses.replace(v, loss=0.0) for k, v in links.items()}
    with WanTopology(list(dcs), lossless, workdir / "net", seed=settings.seed) as topo:
        log(f"namespaces up ({', '.join(topo.namespaces())})")
        if settings.congestion_control:
            topo.set_congestion_control(settings.congestion_control)
        others = [dc for dc in dcs if dc != home]
        servers = _ProbeServers(topo, home, workdir / "net", settings.nice)
        probes: dict = {dc: {} for dc in others}
        if settings.probe_bulk_bytes:  # the kernel's shaping alone: no loss yet
            for key, value in servers.probe(home, others[:1], connects=0, pings=0,
                                            bulk_bytes=settings.probe_bulk_bytes
                                            )[others[0]].items():
                if key.endswith("_mbps"):
                    probes[others[0]][f"lossless_{key}"] = value

        # calibration: the same job, the same site processes, over a plain LAN
        run_dir = workdir / "run"
        calib = workdir / "calibration"
        calib.mkdir()
        topo.set_links({})
        sites = _Sites(topo, {dc: dc for dc in dcs}, addresses, data, certs, run_dir,
                       settings.share_support, env, settings.nice)
        try:
            calib_records, _, _ = _train(topo, home, addresses, calib, settings, env, certs,
                                         None)
            log(f"calibration on a LAN (no shaping, delay or loss): "
                f"{audit_span(calib_records):.1f} s")
            topo.set_links(links)
            for dc, result in servers.probe(home, others, connects=settings.probe_pings,
                                            pings=settings.probe_pings).items():
                probes[dc].update(result)
            log(f"links probed: {json.dumps(summarize_probes(probes))}")
            servers.stop()
            stock = json.loads(topo.exec(home, [sys.executable, "-c", _STOCK_DESCRIBE,
                                                str(certs), addresses[others[0]], others[0]],
                                         env=env, nice=settings.nice).stdout)
            before = topo.relay_snapshot()
            records, info, stdout = _train(topo, home, addresses, run_dir, settings, env,
                                           certs, deployment)
            after = topo.relay_snapshot()
        finally:
            sites.stop()
        log(f"run over the emulated WAN: {audit_span(records):.1f} s")

    rounds = audit_rounds(records)
    same = _wan_rounds(rounds) == _wan_rounds(audit_rounds(calib_records))
    compute = calibration_compute(calib_records)
    if not same:  # fall back to the calibration's median compute per call
        compute = _compute_by_call(calib_records, records)
    modeled = model_run(rounds, dep, compute)
    measured = audit_span(records)
    spans = _round_spans(records)
    relay = _relay_delta(before, after)
    realized_events, realized_seconds = realized_loss(
        records, {name: a.get("drops", []) for name, a in after["links"].items()}, dep)
    return Result(
        settings=asdict(settings), converged=bool(info.get("converged")),
        reason=str(info.get("reason")), objective=float(info.get("objective", float("nan"))),
        iterations=int(info.get("iterations", 0)), rounds=modeled.rounds,
        wan_bytes=modeled.wan_bytes, measured_seconds=measured,
        modeled_seconds=modeled.seconds,
        modeled_default_seconds=model_run(rounds, dep).seconds,
        modeled_wan_seconds=model_run(rounds, dep, 0.0).seconds,
        loss_events=loss_events(records, dep), realized_loss_events=realized_events,
        modeled_realized_seconds=model_run(rounds, without_loss(dep), compute).seconds
        + realized_seconds,
        modeled_realized_network_seconds=model_run(rounds, without_loss(dep), 0.0).seconds
        + realized_seconds,
        compute_seconds=sum(compute), calibration_seconds=audit_span(calib_records),
        same_rounds=same, coordinator_gap_seconds=measured - sum(s for _, s in spans),
        probes=summarize_probes(probes), relay=relay,
        stock_grpc=stock,
        by_call=_by_call(records, modeled.round_seconds),
        files={"workdir": str(workdir), "deployment": str(deployment),
               "audit": str(run_dir / "audit.jsonl"), "record": str(run_dir / "run.jsonl"),
               "train_output": stdout[-2000:]})


_STOCK_DESCRIBE = """
import json, sys, time
from pathlib import Path
from geodml.wire.errors import SiteCallError
from geodml.wire.transport import GrpcTransport
from geodml.wire.protocol import pb
from geodml.wire.tls import TlsFiles, channel_credentials
d = Path(sys.argv[1])
creds = channel_credentials(TlsFiles(d / "ca.pem", d / "coordinator.pem", d / "coordinator.key"))
t = GrpcTransport(sys.argv[3], sys.argv[2], creds, timeout=20)
start = time.monotonic()
try:
    list(t.call("Describe", pb.DescribeRequest()))
    out = {"ok": True}
except SiteCallError as e:
    out = {"ok": False, "error": str(e)}
out["seconds"] = time.monotonic() - start
t.close()
print(json.dumps(out))
"""


def _wan_rounds(rounds) -> list[dict[str, int]]:
    return [{k: v for k, v in r.links.items() if "(local" not in k} for r in rounds]


def _compute_by_call(calib: list[dict], records: list[dict]) -> list[float]:
    """Per round of ``records``: the calibration's median compute of that call."""
    import statistics

    per_call: dict[str, list[float]] = defaultdict(list)
    for r, c in zip(audit_rounds(calib), calibration_compute(calib), strict=True):
        per_call[r.call].append(c)
    return [statistics.median(per_call.get(r.call, [0.0])) for r in audit_rounds(records)]


def _relay_delta(before: dict, after: dict) -> dict:
    """The relay's counters over the run (after minus before), WAN links only."""
    out = {}
    for name, a in after["links"].items():
        b = before["links"].get(name, {})
        frames = a["frames"] - b.get("frames", 0)
        if frames == 0:
            continue
        dropped = a["dropped"] - b.get("dropped", 0)
        out[name] = {"frames": frames, "bytes": a["bytes"] - b.get("bytes", 0),
                     "dropped": dropped, "loss": dropped / frames,
                     "send_errors": a["send_errors"] - b.get("send_errors", 0),
                     "late_max_ms": a["late_max_ms"], "late_mean_ms": a["late_mean_ms"]}
    out["_relay"] = {"cpu_seconds": after["cpu_seconds"] - before["cpu_seconds"],
                     "oversize_frames": after["oversize_frames"]}
    return out

