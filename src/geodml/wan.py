"""Modeled WAN time and egress cost of a run, from the bytes it moved.

The meter (:mod:`geodml.federation.meter`) counts the bytes every call moved on every
directed link ``"src->dst"``. This module turns those bytes into the time and the
dollars the same traffic would take between real data centers, described by a
deployment file (:mod:`geodml.deployment`): bandwidth (Mbit/s), round-trip time
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
caller supplies it, or it is the slowest call's duration from the audit log:
:func:`call_seconds_from_audit`). A link that touches neither
the home DC nor a site of the round is its own path. Traffic between the
coordinator and a site in the home DC (``"home->home (local down|up)"``) takes no
time and costs nothing. A run is the sum of its rounds.

Egress is billed by the source DC per decimal gigabyte (1e9 bytes)::

    $ = sum over links (src->dst) of bytes / 1e9 * price(src -> dst)

Centralized training first copies the data home over the links into it, in
parallel, limited by the home DC's ingress ``I`` Mbit/s when given, then trains::

    T_central = max( max over sites s of t_{s->home}(b_s),  8 sum_s b_s / (I * 1e6) ) + T_train

Default links from the region table
-----------------------------------
:data:`REGIONS` lists named regions of AWS, GCP and Azure with their location and
an *area* (``na-east``, ``na-west``, ``eu``, ``in``, ``jp``, ``br``). A link between two
regions not given explicitly in the deployment file gets

* RTT: :data:`AREA_RTT_MS` for the pair of areas (1 ms inside one region, 20 ms
  between regions of one area);
* bandwidth: 5,000 Mbit/s inside one region, 1,000 Mbit/s inside an area, 500
  Mbit/s between areas less than 100 ms apart and 250 Mbit/s farther (what a few
  tuned TCP streams sustain between clouds' regions; single-stream TCP is
  window-limited and falls with RTT);
* price: the *source* region's inter-region transfer price: AWS charges one price
  per source region whatever the destination; GCP and Azure charge less inside a
  continent than across; traffic from one cloud to another is internet egress,
  billed at the source's internet price (first pricing tier); traffic inside one
  region is free (AWS's $0.01/GB across availability zones is ignored).

**Caveat.** The RTTs are typical medians of public inter-region latency
measurements, and the prices are approximate public list prices (on-demand, first
tier) as published by the clouds around mid-2024. They change, differ by
contract, and are not authoritative: override them in the deployment file
(``[[links]]``, ``[defaults]`` or ``[regions.NAME]``) with your own numbers.

Region names are looked up case-insensitively, bare (``"us-east-1"``) or with their
cloud (``"aws:us-east-1"``); the demo's DC names ``us-east``, ``us-west``,
``eu-west``, ``eu-central``, ``ap-south``, ``ap-northeast`` and ``sa-east`` are
aliases of the AWS regions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from geodml.deployment import Deployment

#: the date the region table's numbers are believed to be from
PRICES_AS_OF = "mid-2024"

#: the continent of every area (GCP and Azure price by continent)
AREAS: dict[str, str] = {
    "na-east": "north-america", "na-west": "north-america", "eu": "europe",
    "in": "asia", "jp": "asia", "br": "south-america",
}

_AREA_RTT: dict[tuple[str, str], float] = {
    ("na-east", "na-west"): 65.0,
    ("na-east", "eu"): 80.0, ("na-west", "eu"): 140.0,
    ("na-east", "in"): 190.0, ("na-west", "in"): 220.0,
    ("na-east", "br"): 120.0, ("na-west", "br"): 175.0,
    ("na-east", "jp"): 150.0, ("na-west", "jp"): 100.0,
    ("eu", "in"): 130.0, ("eu", "br"): 190.0, ("eu", "jp"): 220.0,
    ("in", "br"): 300.0, ("in", "jp"): 120.0, ("br", "jp"): 260.0,
}
#: default RTT (ms) between two different regions, by pair of areas (symmetric)
AREA_RTT_MS: dict[frozenset[str], float] = {
    **{frozenset((a,)): 20.0 for a in AREAS},
    **{frozenset(pair): rtt for pair, rtt in _AREA_RTT.items()},
}

SAME_REGION_RTT_MS = 1.0
SAME_REGION_MBPS = 5000.0
SAME_AREA_MBPS = 1000.0
NEAR_MBPS = 500.0  # different areas, RTT < NEAR_RTT_MS
FAR_MBPS = 250.0
NEAR_RTT_MS = 100.0


@dataclass(frozen=True)
class Region:
    """A cloud region and its egress prices ($/GB, by destination class)."""

    cloud: str
    name: str
    area: str
    location: str
    same_continent_usd_per_gb: float  # to another region of this cloud, same continent
    other_continent_usd_per_gb: float  # to another region of this cloud, other continent
    internet_usd_per_gb: float  # to anywhere else (another cloud, on premises)

    @property
    def key(self) -> str:
        return f"{self.cloud}:{self.name}"

    @property
    def continent(self) -> str:
        return AREAS[self.area]


def _r(cloud: str, name: str, area: str, location: str, same: float, other: float,
       internet: float) -> Region:
    return Region(cloud, name, area, location, same, other, internet)


#: named regions of the big clouds (see the module docstring for sources and caveats)
REGIONS: dict[str, Region] = {r.key: r for r in (
    _r("aws", "us-east-1", "na-east", "N. Virginia", 0.02, 0.02, 0.09),
    _r("aws", "us-west-2", "na-west", "Oregon", 0.02, 0.02, 0.09),
    _r("aws", "eu-west-1", "eu", "Ireland", 0.02, 0.02, 0.09),
    _r("aws", "eu-central-1", "eu", "Frankfurt", 0.02, 0.02, 0.09),
    _r("aws", "ap-south-1", "in", "Mumbai", 0.086, 0.086, 0.1093),
    _r("aws", "ap-northeast-1", "jp", "Tokyo", 0.09, 0.09, 0.114),
    _r("aws", "sa-east-1", "br", "Sao Paulo", 0.138, 0.138, 0.15),
    _r("gcp", "us-east1", "na-east", "South Carolina", 0.02, 0.05, 0.12),
    _r("gcp", "us-west1", "na-west", "Oregon", 0.02, 0.05, 0.12),
    _r("gcp", "europe-west1", "eu", "Belgium", 0.02, 0.05, 0.12),
    _r("gcp", "europe-west3", "eu", "Frankfurt", 0.02, 0.05, 0.12),
    _r("gcp", "asia-south1", "in", "Mumbai", 0.08, 0.08, 0.12),
    _r("gcp", "asia-northeast1", "jp", "Tokyo", 0.08, 0.08, 0.12),
    _r("gcp", "southamerica-east1", "br", "Sao Paulo", 0.08, 0.08, 0.12),
    _r("azure", "eastus", "na-east", "Virginia", 0.02, 0.05, 0.087),
    _r("azure", "westus2", "na-west", "Washington", 0.02, 0.05, 0.087),
    _r("azure", "westeurope", "eu", "Netherlands", 0.02, 0.05, 0.087),
    _r("azure", "germanywestcentral", "eu", "Frankfurt", 0.02, 0.05, 0.087),
    _r("azure", "centralindia", "in", "Pune", 0.08, 0.08, 0.12),
    _r("azure", "japaneast", "jp", "Tokyo", 0.08, 0.08, 0.12),
    _r("azure", "brazilsouth", "br", "Sao Paulo", 0.16, 0.16, 0.181),
)}

#: short DC names (as the demo uses) for AWS regions
ALIASES: dict[str, str] = {
    "us-east": "aws:us-east-1", "us-west": "aws:us-west-2", "eu-west": "aws:eu-west-1",
    "eu-central": "aws:eu-central-1", "ap-south": "aws:ap-south-1",
    "ap-northeast": "aws:ap-northeast-1", "sa-east": "aws:sa-east-1",
}

_BY_NAME: dict[str, Region] = {
    **{r.name.lower(): r for r in REGIONS.values()},
    **{k.lower(): r for k, r in REGIONS.items()},
    **{alias: REGIONS[key] for alias, key in ALIASES.items()},
}


def find_region(name: str) -> Region | None:
    """The table's region called ``name`` (bare, ``cloud:name`` or an alias), or None."""
    return _BY_NAME.get(name.strip().lower())


@dataclass(frozen=True)
class LinkModel:
    """One directed link: bandwidth (Mbit/s), RTT (ms), egress price of its source ($/GB)."""

    bandwidth_mbps: float
    rtt_ms: float
    egress_usd_per_gb: float
    loss: float = 0.0  # probability that a frame is lost (each way)


def default_link(src: Region, dst: Region) -> LinkModel:
    """The table's link from region ``src`` to region ``dst`` (see the module docstring)."""
    if src.key == dst.key:
        return LinkModel(SAME_REGION_MBPS, SAME_REGION_RTT_MS, 0.0)
    rtt = AREA_RTT_MS[frozenset((src.area, dst.area))]
    if src.area == dst.area:
        bandwidth = SAME_AREA_MBPS
    else:
        bandwidth = NEAR_MBPS if rtt < NEAR_RTT_MS else FAR_MBPS
    if src.cloud != dst.cloud:
        price = src.internet_usd_per_gb
    elif src.continent == dst.continent:
        price = src.same_continent_usd_per_gb
    else:
        price = src.other_continent_usd_per_gb
    return LinkModel(bandwidth, rtt, price)


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


def group_audit(records: Iterable[Mapping]) -> list[list[Mapping]]:
    """Audit records grouped into rounds (see :func:`rounds_from_audit`)."""
    groups: list[list[Mapping]] = []
    by_id: dict[object, list[Mapping]] = {}
    run: list[Mapping] | None = None
    run_links: set[str] = set()
    run_call: str | None = None
    for rec in records:
        round_id = rec.get("round")
        if round_id is not None:
            run = None
            current = by_id.get(round_id)
            if current is None:
                current = by_id[round_id] = []
                groups.append(current)
        else:
            call = rec.get("call")
            if run is None or call != run_call or rec["link"] in run_links:
                run, run_call, run_links = [], call, set()
                groups.append(run)
            run_links.add(rec["link"])
            current = run
        current.append(rec)
    return groups


def rounds_from_audit(records: Iterable[Mapping]) -> list[dict[str, int]]:
    """Bytes per link of every round, in order, from audit-log records.

    Records with the same ``round`` id are one round. Records with ``round`` None
    (Describe, Prepare, Export, Close) form their own rounds: a run of consecutive
    such records of one call is one round (the federation calls its sites
    concurrently), and a new round starts when the call changes or a link repeats
    (a second, sequential call such as exporting one site after another).
    """
    rounds = []
    for group in group_audit(records):
        per_link: dict[str, int] = {}
        for rec in group:
            per_link[rec["link"]] = per_link.get(rec["link"], 0) + int(rec["bytes"])
        rounds.append(per_link)
    return rounds


def call_seconds_from_audit(records: Iterable[Mapping]) -> list[float]:
    """The slowest site's measured call duration in every round (the ``seconds`` the
    federation writes on each reply's record; 0 for records without it).

    On loopback this is the site's compute (plus local serialization); over a real
    WAN it also holds the transfer, which the model then counts twice: use it as the
    compute term only for runs on one machine or a fast LAN.
    """
    return [max((float(r.get("seconds") or 0.0) for r in group), default=0.0)
            for group in group_audit(records)]


def _is_audit(items: Sequence) -> bool:
    return bool(items) and isinstance(items[0], Mapping) and "link" in items[0] \
        and "bytes" in items[0]


def model_run(source: Sequence[Mapping], deployment: Deployment,
              compute_seconds_per_round: float | Sequence[float] | None = None) -> ModeledRun:
    """Modeled time and egress of a run, summed round by round.

    ``source`` is either audit-log records (:func:`geodml.federation.meter.read_audit`,
    grouped by :func:`rounds_from_audit`) or a list of rounds, each a mapping from
    link name to the bytes it moved in that round. ``compute_seconds_per_round`` is
    the slowest site's measured compute time: one number for every round or one per
    round; None takes it from the audit log (:func:`call_seconds_from_audit`), or 0
    for a list of rounds. ``seconds = sum over rounds r of round_seconds(r) + compute(r)``.
    """
    items = list(source)
    audit = _is_audit(items)
    rounds = rounds_from_audit(items) if audit else [dict(r) for r in items]
    if compute_seconds_per_round is None:
        compute_seconds_per_round = call_seconds_from_audit(items) if audit else 0.0
    if isinstance(compute_seconds_per_round, int | float):
        compute = [float(compute_seconds_per_round)] * len(rounds)
    else:
        compute = [float(c) for c in compute_seconds_per_round]
        if len(compute) != len(rounds):
            raise ValueError(f"{len(compute)} compute times for {len(rounds)} rounds")
    per_link: dict[str, dict[str, float]] = {}
    times: list[float] = []
    usd = 0.0
    wan = 0
    for per_round, c in zip(rounds, compute, strict=True):
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
    return ModeledRun(sum(times), usd, wan, len(rounds), per_link, times)


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
