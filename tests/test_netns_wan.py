"""Real WAN emulation: a 4-DC FADL run over kernel-shaped links with delay and loss.

Every DC runs in its own Linux network namespace (created and deleted here): us-east
is home (coordinator and its own site), eu-west, ap-south and sa-east each run
``geodml site serve`` with mutual TLS. Every home <-> DC link is 50 Mbit/s each way,
shaped by the kernel (tbf/htb on the sending veth), with 80 ms RTT and 0.5% frame
loss each way added by a packet-level relay (``tests/tools/wan_relay.py``), exactly as
the deployment file the run uses says (``tests/tools/wan_experiment.py``). The
measured wall time is compared with ``geodml.planning.wan.model_run`` over the run's audit log,
its compute per round taken from the same job run first over a plain LAN.

Needs root, ``ip netns`` and ``tc`` with tbf and htb; skipped with the reason
otherwise.
"""

from __future__ import annotations

import statistics

import pytest

from tests.tools.netns import unavailable_reason
from tests.tools.timing import time_scale
from tests.tools.wan_experiment import Settings, run_experiment

pytestmark = pytest.mark.slow

SETTINGS = Settings(rows=1500, bits=15, method="fadl-subspace", gtol=1e-3, bandwidth_mbps=50.0,
                    rtt_ms=80.0, loss=0.005, seed=1, probe_bulk_bytes=3_000_000,
                    probe_pings=8)
GOODPUT = 50.0 * 1448 / 1514  # TCP payload rate of a 50 Mbit/s Ethernet link


@pytest.fixture(scope="module")
def wan(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    return run_experiment(tmp_path_factory.mktemp("netns-wan"), SETTINGS, log=lambda _: None)


def test_a_4_dc_fadl_run_completes_and_converges_over_the_emulated_wan(wan):
    assert wan.converged, wan.reason
    assert wan.same_rounds  # the LAN calibration followed the same trajectory
    assert wan.rounds > 30 and wan.wan_bytes > 1_000_000
    links = {k: v for k, v in wan.relay.items() if not k.startswith("_")}
    assert set(links) == {f"{a}->{b}" for dc in ("eu-west", "ap-south", "sa-east")
                          for a, b in (("us-east", dc), (dc, "us-east"))}
    assert wan.relay["_relay"]["oversize_frames"] == 0  # offloads off: wire-sized frames
    assert all(v["send_errors"] == 0 for v in links.values())


def test_the_links_are_really_shaped_delayed_and_lossy(wan):
    # 80 ms + relay + stack; the stack's share grows on a busy machine, but stays far
    # below a second 80 ms (a delay applied twice)
    ping_max, connect_max = (min(80.0 + m * time_scale(), 120.0) for m in (10.0, 15.0))
    for dc, probe in wan.probes.items():
        assert 79.0 <= probe["ping_ms"] <= ping_max, (dc, probe)
        assert 79.0 <= probe["connect_ms"] <= connect_max, (dc, probe)
    (bulk,) = [p for p in wan.probes.values() if "lossless_to_target_mbps" in p]
    # never above the kernel's 50 Mbit/s; below it when the probe's processes wait for a
    # core (38 of 47.8 Mbit/s beside four CPU-bound jobs), never as low as half
    low = max(0.85 / time_scale(), 0.5) * GOODPUT
    for key in ("lossless_to_target_mbps", "lossless_from_target_mbps"):
        assert low <= bulk[key] <= 1.02 * GOODPUT, bulk
    links = [v for k, v in wan.relay.items() if not k.startswith("_")]
    frames = sum(v["frames"] for v in links)
    dropped = sum(v["dropped"] for v in links)
    # binomial: 0.5% of tens of thousands of frames, within ~5 standard deviations
    sd = (SETTINGS.loss * (1 - SETTINGS.loss) / frames) ** 0.5
    assert abs(dropped / frames - SETTINGS.loss) <= 5 * sd, (dropped, frames)
    assert statistics.median(v["late_mean_ms"] for v in links) < 2.0  # the relay keeps up


def test_wall_time_lies_within_the_wan_models_terms_given_the_losses_that_happened(wan):
    """The model's time with the run's own lossy messages (the relay's drop log) in place
    of their expected number: what its transfer, round trip, loss cost and compute terms
    get right. The unconditioned prediction adds the luck of the draw: each lossy message
    costs ~2.5 RTT, so one standard deviation of ~20 expected events is ~0.9 s of ~8 s
    here (its error is in the message; BENCHMARKS.md has it over repeated runs).

    The compute term comes from a separate run over a LAN, which on a loaded machine
    waits for a core more than the WAN run (whose processes mostly wait for the network):
    beside two CPU-bound jobs and a second test suite the model came out 16% high. When
    the load changes between the two runs it goes the other way: in CI the WAN run's
    compute took 2.1x the calibration's (10.0 s measured against 6.8 s of network and
    1.5 s of compute). So the bound is two-sided in what each part can explain: no
    faster than the network terms alone (less 10%), no slower than the network terms
    (plus 15%) and the compute stretched by the machine's load (``time_scale``, as every
    deadline in the suite, at least 1.15); idle, the error given the losses was within
    3% either way."""
    network = wan.modeled_realized_network_seconds
    compute = wan.modeled_realized_seconds - network
    low = 0.9 * network
    high = 1.15 * network + max(1.15, time_scale()) * compute
    assert low <= wan.measured_seconds <= high, (
        f"measured {wan.measured_seconds:.2f} s, not in [{low:.2f}, {high:.2f}]; "
        f"modeled {wan.modeled_realized_seconds:.2f} s "
        f"({wan.modeled_realized_network_seconds:.2f} s of network) given "
        f"{wan.realized_loss_events} lossy messages ({wan.modeled_seconds:.2f} s given the "
        f"expected {wan.loss_events:.1f}: {wan.error:+.1%})")


def test_the_lossy_messages_are_as_many_as_the_model_expects(wan):
    """The loss term's probability part: the messages that lost a data frame (worst site
    per round, summed) against the model's expectation, within three Poisson standard
    deviations (a sum of per-round maxima of Bernoulli counts varies less)."""
    expected = wan.loss_events
    assert abs(wan.realized_loss_events - expected) <= 3 * expected ** 0.5 + 1, (
        wan.realized_loss_events, expected)


def test_the_stock_grpc_transport_connects_across_the_wan(wan):
    """geodml's own transport reaches a site 80 ms away over mutual TLS: its connect
    timeout allows the TCP + TLS + HTTP/2 handshake (~4 RTT; gRPC takes
    grpc.min_reconnect_backoff_ms as the minimum connect timeout, so geodml leaves it)."""
    assert wan.stock_grpc["ok"], wan.stock_grpc
