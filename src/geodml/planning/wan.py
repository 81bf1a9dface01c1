"""Modeled WAN time and egress cost of a run, from the bytes it moved.

The meter (:mod:`geodml.federation.meter`) counts the bytes every call moved on every
directed link ``"src->dst"``. This module turns those bytes into the time and the
dollars the same traffic would take between real data centers, described by a
deployment file (:mod:`geodml.planning.deployment`): bandwidth (Mbit/s), round-trip time
(RTT, ms) and egress price ($/GB) per directed link.

The model
---------
Transfer of ``b`` bytes over one link with bandwidth ``B`` Mbit/s and round-trip
time ``R`` ms (one direction: half an RTT of latency, then serialization)::

    t(b) = R / 2000 + 8 b / (B * 1e6)   seconds,   and t(0) = 0

A direction that carried no bytes costs nothing (nothing was sent on it). A
*round* sends a request down to every site and gets a reply back up. On one site
the reply needs the request, so its path is sequential; the sites are reached in
parallel, so the round lasts as long as its slowest path::

    T_round = max over sites s of [ t_down(s) + t_up(s) ] + C

where ``C`` is the measured compute time of the slowest site in that round (the
caller supplies it, or it is the slowest call's measured duration in that round,
as the federation's meter recorded it). A link that touches neither
the home DC nor a site of the round is its own path. Traffic between the
coordinator and a site in the home DC (``"home->home (local down|up)"``) takes no
time and costs nothing. A run is the sum of its rounds.

Egress is billed by the source DC per decimal gigabyte (1e9 bytes)::

    $ = sum over links (src->dst) of bytes / 1e9 * price(src -> dst)

Centralized training first copies the data home over the links into it, in
parallel, limited by the home DC's ingress ``I`` Mbit/s when given, then trains::

    T_central = max( max over sites s of t_{s->home}(b_s),  8 sum_s b_s / (I * 1e6) ) + T_train

The links' default bandwidth, RTT and prices come from the region table in
:mod:`geodml.planning.regions`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

from geodml.federation.meter import RoundTraffic

if TYPE_CHECKING:
    from geodml.planning.deployment import Deployment


class _Link(Protocol):
    bandwidth_mbps: float
    rtt_ms: float


#: TCP payload of one frame at MTU 1500 (with timestamps)
MSS_BYTES = 1448
#: how late a message that lost a frame arrives, in RTTs: loss detection (SACK/RACK
#: or a tail-loss probe), the retransmission, and the HTTP/2 window stalled behind the
#: hole; measured 1.8-4.2 (median ~2.5) with BBR over emulated links
#: (bench/bench_netns_wan.py)
LOSS_RECOVERY_RTTS = 2.5


def lossy_probability(nbytes: float, link) -> float:
    """Probability that a message of ``nbytes`` loses at least one of its
    ``ceil(nbytes / MSS_BYTES)`` frames on ``link``."""
    loss = getattr(link, "loss", 0.0) or 0.0
    if nbytes <= 0 or loss <= 0:
        return 0.0
    return 1.0 - (1.0 - loss) ** math.ceil(nbytes / MSS_BYTES)


def _count_distribution(probabilities: Sequence[float]) -> list[float]:
    """P(k of the independent events happen), k = 0..len(probabilities)."""
    dist = [1.0]
    for q in probabilities:
        nxt = [0.0] * (len(dist) + 1)
        for k, pk in enumerate(dist):
            nxt[k] += pk * (1 - q)
            nxt[k + 1] += pk * q
        dist = nxt
    return dist


def expected_loss_seconds(paths: Mapping[str, tuple[float, Sequence[float]]],
                          recovery_rtts: float = LOSS_RECOVERY_RTTS) -> float:
    """``E[max over paths s of recovery_rtts * RTT_s * N_s]``: ``paths[s]`` is
    ``(RTT_s seconds, [probability that each of its messages loses a frame])``,
    ``N_s`` the number of its messages that do (they are sequential on a path; paths
    run in parallel and the round waits for the worst)."""
    dists = [(recovery_rtts * rtt, _count_distribution(qs)) for rtt, qs in paths.values()
             if any(qs)]
    if not dists:
        return 0.0
    levels = sorted({unit * k for unit, dist in dists for k in range(len(dist))})

    def below(x: float) -> float:  # P(max <= x)
        out = 1.0
        for unit, dist in dists:
            out *= sum(p for k, p in enumerate(dist) if unit * k <= x + 1e-12)
        return out

    total, prev = 0.0, 0.0
    for level in levels[1:]:
        total += (level - prev) * (1.0 - below(prev))
        prev = level
    return total


def transfer_seconds(nbytes: float, link: _Link) -> float:
    """``t(b) = RTT/2 + 8 b / bandwidth`` (seconds; RTT in ms, bandwidth in Mbit/s);
    ``t(0) = 0``: a direction that carried nothing costs nothing."""
    if nbytes <= 0:
        return 0.0
    return link.rtt_ms / 2000.0 + nbytes * 8.0 / (link.bandwidth_mbps * 1e6)


def parse_link_name(name: str) -> tuple[str, str, bool]:
    """``"src->dst"`` -> ``(src, dst, local)``; ``"a->a (local down)"`` is local."""
    local = name.endswith(")") and " (local " in name
    core = name.split(" (local ", 1)[0] if local else name
    src, sep, dst = core.partition("->")
    if not sep or not src or not dst:
        raise ValueError(f"not a link name (src->dst): {name!r}")
    return src, dst, local or src == dst


def _wan_links(per_link_bytes: Mapping[str, float]) -> Iterable[tuple[str, str, str, float]]:
    for name, nbytes in per_link_bytes.items():
        src, dst, local = parse_link_name(name)
        if not local:
            yield name, src, dst, nbytes


def round_seconds(per_link_bytes: Mapping[str, float], deployment: Deployment,
                  compute_seconds: float = 0.0) -> float:
    """One round: ``max over sites s of [t_down(s) + t_up(s)] + compute_seconds``.

    A link touching the home DC belongs to the path of its other end (request and
    reply on one site are sequential); sites' paths run in parallel; local links
    take no time.
    """
    paths: dict[str, float] = {}
    lossy: dict[str, tuple[float, list[float]]] = {}
    for _, src, dst, nbytes in _wan_links(per_link_bytes):
        link = deployment.link(src, dst)
        t = transfer_seconds(nbytes, link)
        if src == deployment.home:
            key = dst
        elif dst == deployment.home:
            key = src
        else:
            key = f"{src}->{dst}"
        paths[key] = paths.get(key, 0.0) + t
        lossy.setdefault(key, (link.rtt_ms / 1000.0, []))[1].append(
            lossy_probability(nbytes, link))
    return max(paths.values(), default=0.0) + expected_loss_seconds(lossy) + compute_seconds


def egress_usd(per_link_bytes: Mapping[str, float], deployment: Deployment) -> float:
    """``sum over links of bytes / 1e9 * price(src -> dst)``; local links are free."""
    return sum(nbytes / 1e9 * deployment.link(src, dst).egress_usd_per_gb
               for _, src, dst, nbytes in _wan_links(per_link_bytes))


@dataclass
class ModeledRun:
    """Modeled seconds and dollars of a run, in total and per link.

    ``per_link[name]`` holds the link's total ``bytes``, its busy ``seconds`` (the sum
    of its transfer times, which overlap with other links') and its ``usd``.
    ``round_seconds`` lists the modeled time of every round, in order.
    """

    seconds: float
    usd: float
    wan_bytes: int
    rounds: int
    per_link: dict[str, dict[str, float]] = field(default_factory=dict)
    round_seconds: list[float] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def model_run(rounds: Sequence[RoundTraffic] | Sequence[Mapping[str, float]],
              deployment: Deployment,
              compute_seconds_per_round: float | Sequence[float] | None = None) -> ModeledRun:
    """Modeled time and egress of a run, summed round by round.

    ``rounds`` is the run's traffic as its federation metered it
    (``Federation.meter.rounds``, or :func:`geodml.federation.meter.audit_rounds` of
    another process's audit log), or a list of rounds, each a mapping from link name to
    the bytes it moved in that round. ``compute_seconds_per_round`` is the slowest
    site's measured compute time: one number for every round or one per round; None
    takes each metered round's slowest call (see the caveat below), or 0 for a list of
    mappings. ``seconds = sum over rounds r of round_seconds(r) + compute(r)``.

    On loopback a call's duration is the site's compute (plus local serialization);
    over a real WAN it also holds the transfer, which the model then counts twice: use
    the default compute term only for runs on one machine or a fast LAN.
    """
    items = list(rounds)
    metered = bool(items) and isinstance(items[0], RoundTraffic)
    per_rounds = [dict(r.links) for r in items] if metered else [dict(r) for r in items]
    if compute_seconds_per_round is None:
        compute_seconds_per_round = [r.seconds for r in items] if metered else 0.0
    if isinstance(compute_seconds_per_round, int | float):
        compute = [float(compute_seconds_per_round)] * len(per_rounds)
    else:
        compute = [float(c) for c in compute_seconds_per_round]
        if len(compute) != len(per_rounds):
            raise ValueError(f"{len(compute)} compute times for {len(per_rounds)} rounds")
    per_link: dict[str, dict[str, float]] = {}
    times: list[float] = []
    usd = 0.0
    wan = 0
    for per_round, c in zip(per_rounds, compute, strict=True):
        times.append(round_seconds(per_round, deployment, c))
        for name, src, dst, nbytes in _wan_links(per_round):
            link = deployment.link(src, dst)
            cost = nbytes / 1e9 * link.egress_usd_per_gb
            entry = per_link.setdefault(name, {"bytes": 0, "seconds": 0.0, "usd": 0.0})
            entry["bytes"] += nbytes
            entry["seconds"] += transfer_seconds(nbytes, link)
            entry["usd"] += cost
            usd += cost
            wan += int(nbytes)
    return ModeledRun(sum(times), usd, wan, len(per_rounds), per_link, times)


def model_centralized(export_bytes_by_site: Mapping[str, float], deployment: Deployment,
                      train_seconds: float = 0.0) -> ModeledRun:
    """Copy every site's data home in parallel, then train there.

    ``seconds = max(max_s t_{s->home}(b_s), 8 sum_s b_s / (ingress * 1e6)) + train_seconds``
    (the ingress term only when the deployment gives ``home_ingress_mbps``);
    ``usd = sum_s b_s / 1e9 * price(s -> home)``. A site in the home DC is free.
    """
    home = deployment.home
    per_link: dict[str, dict[str, float]] = {}
    slowest = 0.0
    total = 0.0
    usd = 0.0
    for site, nbytes in export_bytes_by_site.items():
        if site == home:
            continue
        link = deployment.link(site, home)
        t = transfer_seconds(nbytes, link)
        cost = nbytes / 1e9 * link.egress_usd_per_gb
        per_link[f"{site}->{home}"] = {"bytes": int(nbytes), "seconds": t, "usd": cost}
        slowest = max(slowest, t)
        total += nbytes
        usd += cost
    transfer = slowest
    if deployment.home_ingress_mbps is not None and total > 0:
        transfer = max(transfer, total * 8.0 / (deployment.home_ingress_mbps * 1e6))
    return ModeledRun(transfer + train_seconds, usd, int(total), 1, per_link,
                      [transfer + train_seconds])
