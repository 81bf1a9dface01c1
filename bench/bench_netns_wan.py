"""A real geodml run over an emulated WAN: measured wall time against the WAN model.

Usage (root; Linux network namespaces, ``ip`` and ``tc``):

    python bench/bench_netns_wan.py [--bandwidth 50] [--rtt 80] [--loss 0.005 ...]
        [--rows 3000] [--bits 16] [--method fadl-subspace] [--gtol 1e-3] [--dense]
        [--cc reno|bbr] [--repeat 1]
        [--param KEY=VALUE] [--json out.json] [--keep DIR]

Four DCs (us-east home with the coordinator and its own site; eu-west, ap-south,
sa-east), each in its own network namespace; every home <-> DC link shaped in the
kernel at ``--bandwidth`` Mbit/s each way (tbf/htb on the sending veth), with
``--rtt`` ms round trip and ``--loss`` per-frame loss each way added by a
packet-level relay (``tests/tools/wan_relay.py``). Synthetic regional CTR data,
``--rows`` rows per DC at 2^``--bits`` hashed features (``--dense``: sites send
full vectors, not only their support). Every value of ``--loss`` (and every
``--rtt``, ``--bandwidth``) is one run, ``--repeat`` times.

Each run (``tests/tools/wan_experiment.py``): measures the kernel's shaping (bulk
goodput each way to one DC, relay loss off), starts ``geodml site serve`` in every
namespace (mutual TLS), runs the job once over a plain LAN (no shaping, delay or
loss) for the compute time of every round, puts the WAN in place, measures it (TCP
connect and echo RTT to every DC), runs the job for real (``geodml train
--deployment`` in the home namespace), and prints

* measured: the run's wall time (first call's start to last call's end);
* modeled: ``geodml.planning.wan.model_run`` over its audit log and the deployment, with the
  LAN run's compute per round (error = measured / modeled - 1);
* lossy msgs: messages that lost a frame carrying data (worst site per round, summed:
  the relay's drop log against the audit's rounds) / the model's expected number;
* given them: the modeled time's error with those messages for the expected ones
  (what the loss term's cost per message gets right, apart from the luck of the draw);
* default: ``model_run`` with the WAN run's own call times as compute, as
  ``geodml train --deployment`` reports it (transfer counted twice);
* c fit: the loss cost, in RTTs per message that loses a frame, that would make the
  model exact (``geodml.planning.wan.LOSS_RECOVERY_RTTS`` is 2.5, fitted from these runs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.tools.netns import unavailable_reason
from tests.tools.wan_experiment import Settings, run_experiment


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bandwidth", type=float, nargs="+", default=[50.0],
                        help="Mbit/s of every home <-> DC link, each way")
    parser.add_argument("--rtt", type=float, nargs="+", default=[80.0], help="ms")
    parser.add_argument("--loss", type=float, nargs="+", default=[0.005],
                        help="per-frame loss probability, each way")
    parser.add_argument("--rows", type=int, default=3000, help="training rows per DC")
    parser.add_argument("--bits", type=int, default=16, help="2^bits hashed features")
    parser.add_argument("--method", default="fadl-subspace")
    parser.add_argument("--gtol", type=float, default=1e-3,
                        help="stop at ||grad|| <= gtol ||grad_0||")
    parser.add_argument("--dense", action="store_true",
                        help="sites send whole vectors (share_support = false)")
    parser.add_argument("--param", action="append", type=_param, default=[],
                        help="a method parameter KEY=VALUE (repeat)")
    parser.add_argument("--cc", help="TCP congestion control in the namespaces (default: the "
                        "kernel's; see net.ipv4.tcp_allowed_congestion_control)")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    parser.add_argument("--keep", type=Path, help="keep the runs' files under this folder")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(reason)

    console = Console(width=max(Console().width, 160))
    root = args.keep or Path(tempfile.mkdtemp(prefix="geodml-netns-wan-"))
    results = []
    import subprocess

    cc = args.cc or subprocess.run(["sysctl", "-n", "net.ipv4.tcp_congestion_control"],
                                   capture_output=True, text=True).stdout.strip()
    table = Table(title=f"{args.method} over an emulated WAN: 4 DCs, {args.rows:,} rows per "
                        f"DC, 2^{args.bits} features{' (dense vectors)' if args.dense else ''}, "
                        f"gtol {args.gtol:g}, TCP {cc}")
    for col in ("Mbit/s", "RTT ms", "loss", "rounds", "WAN bytes", "probe RTT ms",
                "probe Mbit/s", "relay loss", "measured s", "modeled s", "error",
                "lossy msgs", "given them", "default s", "c fit", "conv"):
        table.add_column(col, justify="right")
    runs = [(b, r, loss, i) for b in args.bandwidth for r in args.rtt for loss in args.loss
            for i in range(args.repeat)]
    for k, (bandwidth, rtt, loss, i) in enumerate(runs):
        settings = Settings(rows=args.rows, bits=args.bits, method=args.method, gtol=args.gtol,
                            bandwidth_mbps=bandwidth, rtt_ms=rtt, loss=loss,
                            seed=args.seed, share_support=not args.dense,
                            params=dict(args.param),
                            congestion_control=args.cc)
        console.print(f"[bold]run {k + 1}/{len(runs)}[/]: {bandwidth} Mbit/s, {rtt} ms, "
                      f"loss {loss}, repeat {i + 1}")
        r = run_experiment(root / f"run{k}", settings, log=lambda m: console.print("  " + m))
        results.append(r.to_dict())
        probes = r.probes
        rtts = [p["ping_ms"] for p in probes.values()]
        rates = [v for p in probes.values() for key, v in p.items() if key.endswith("mbps")]
        links = [v for name, v in r.relay.items() if not name.startswith("_")]
        frames = sum(v["frames"] for v in links)
        dropped = sum(v["dropped"] for v in links)
        table.add_row(f"{bandwidth:g}", f"{rtt:g}", f"{loss:.2%}", str(r.rounds),
                      f"{r.wan_bytes / 1e6:.1f} MB",
                      f"{min(rtts):.1f}-{max(rtts):.1f}",
                      "/".join(f"{x:.1f}" for x in rates),
                      f"{dropped / frames:.2%}" if frames else "-",
                      f"{r.measured_seconds:.1f}", f"{r.modeled_seconds:.1f}",
                      f"{r.error:+.1%}",
                      f"{r.realized_loss_events} / {r.loss_events:.1f}",
                      f"{r.realized_error:+.1%}", f"{r.modeled_default_seconds:.1f}",
                      "-" if r.cost_rtts_fit is None else f"{r.cost_rtts_fit:.2f}",
                      "yes" if r.converged else "NO")
        console.print(f"  measured {r.measured_seconds:.1f} s, modeled {r.modeled_seconds:.1f} s "
                      f"({r.error:+.1%}); compute {r.compute_seconds:.1f} s")
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    console.print(table)
    console.print("modeled: geodml.planning.wan.model_run over the run's audit log, compute "
                  "per round from the same job over a LAN; default: model_run with the WAN run's "
                  "call times (transfer counted twice); c fit: the RTTs per message that lost a "
                  "frame that would make modeled exact (geodml.planning.wan uses 2.5); lossy "
                  "msgs: messages that lost a data frame / the model's expectation; given them: "
                  "the error with those for the expectation. probe "
                  "Mbit/s: bulk goodput to/from one DC.")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    else:
        console.print(f"files kept in {root}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
