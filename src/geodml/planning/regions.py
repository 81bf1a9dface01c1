"""The region table: named cloud regions, and the default link between two.

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

from dataclasses import dataclass

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
