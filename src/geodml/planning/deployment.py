"""A deployment file (TOML): the DCs, the home DC, and the WAN links between them.

Example (four DCs on AWS, coordinator in us-east)::

    home = "us-east"                  # the coordinator's DC: one of the sites
    home_ingress_mbps = 2000          # optional: the home DC's total ingress
    insecure = false                  # plaintext only on loopback (see geodml.wire.tls)

    [tls]                             # the coordinator's credentials (optional here)
    ca = "certs/ca.pem"
    cert = "certs/coordinator.pem"
    key = "certs/coordinator.key"

    [[sites]]
    name = "us-east"
    region = "aws:us-east-1"          # a region of geodml.planning.regions.REGIONS, or of [regions]
    address = "us-east.example.com:7001"
    data = "data/us-east"             # relative paths are relative to this file

    [[sites]]
    name = "eu-west"
    region = "eu-west-1"
    address = "eu-west.example.com:7001"
    tls_server_name = "eu-west"       # the name in the site's certificate, if not the host

    [[sites]]
    name = "ap-south"
    region = "ap-south"               # alias of aws:ap-south-1
    address = "10.2.0.5:7001"

    [[sites]]
    name = "sa-east"
    region = "my-sao-paulo-dc"        # defined below
    address = "10.3.0.5:7001"

    [regions.my-sao-paulo-dc]         # a region the table does not know
    area = "br"                       # na-east | na-west | eu | in | jp | br
    egress_usd_per_gb = 0.05

    [[links]]                         # an explicit directed link overrides the table
    src = "us-east"
    dst = "ap-south"
    bandwidth_mbps = 300              # Mbit/s, > 0
    rtt_ms = 190                      # ms, >= 0
    egress_usd_per_gb = 0.02          # $ per GB leaving src, >= 0

    [defaults]                        # optional: replaces the table's value on every
    bandwidth_mbps = 400              # link not listed under [[links]]

:func:`load_deployment` validates the file; every error is a
:class:`~geodml.errors.ConfigError` naming the file and the field (``links.0.src:
unknown site ...``). :meth:`Deployment.link` gives the link between two sites: the
explicit one, else one derived from the sites' regions
(:func:`geodml.planning.regions.default_link`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from geodml.errors import ConfigError
from geodml.planning.regions import AREAS, LinkModel, Region, default_link, find_region
from geodml.site.config import FilePath, TlsConfig, field_location, load_toml, resolve_path

_NAME = r"^[A-Za-z0-9_.-]+$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class SiteEntry(_Strict):
    """One DC's site: its name (as links and reports show it), region, address, data."""

    name: str = Field(min_length=1, pattern=_NAME)
    region: str | None = None
    address: str | None = None  # host:port the coordinator dials
    data: FilePath | None = None  # the site's dataset directory, when run from here
    tls_server_name: str | None = None  # the name checked in the site's certificate


class LinkSpec(_Strict):
    """One directed link ``src -> dst`` between two sites."""

    src: str
    dst: str
    bandwidth_mbps: float = Field(gt=0)
    rtt_ms: float = Field(ge=0)
    egress_usd_per_gb: float = Field(ge=0)
    loss: float = Field(default=0.0, ge=0, lt=1)  # per-frame loss probability

    @property
    def name(self) -> str:
        return f"{self.src}->{self.dst}"

    @property
    def model(self) -> LinkModel:
        return LinkModel(self.bandwidth_mbps, self.rtt_ms, self.egress_usd_per_gb, self.loss)


class LinkDefaults(_Strict):
    """Values that replace the region table's on every link not given explicitly."""

    bandwidth_mbps: float | None = Field(default=None, gt=0)
    rtt_ms: float | None = Field(default=None, ge=0)
    egress_usd_per_gb: float | None = Field(default=None, ge=0)
    loss: float | None = Field(default=None, ge=0, lt=1)


class RegionSpec(_Strict):
    """A region the table does not know (an on-premises DC, say), or an override.

    ``egress_usd_per_gb`` is charged on traffic to any other region;
    ``internet_usd_per_gb`` (default: the same) when the other end is in another cloud.
    """

    area: str
    cloud: str = "custom"
    location: str = ""
    egress_usd_per_gb: float = Field(ge=0)
    internet_usd_per_gb: float | None = Field(default=None, ge=0)

    @field_validator("area")
    @classmethod
    def _known_area(cls, area: str) -> str:
        if area not in AREAS:
            raise ValueError(f"unknown area {area!r}; areas are {', '.join(AREAS)}")
        return area

    def region(self, name: str) -> Region:
        internet = self.egress_usd_per_gb if self.internet_usd_per_gb is None \
            else self.internet_usd_per_gb
        return Region(self.cloud, name, self.area, self.location, self.egress_usd_per_gb,
                      self.egress_usd_per_gb, internet)


class _FieldError(ValueError):
    """A cross-field error, located by its field path (``links.0.src``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Deployment(_Strict):
    """The DCs of a deployment, the home DC and the WAN links between them."""

    home: str
    sites: list[SiteEntry] = Field(min_length=1)
    links: list[LinkSpec] = Field(default_factory=list)
    home_ingress_mbps: float | None = Field(default=None, gt=0)
    defaults: LinkDefaults = Field(default_factory=LinkDefaults)
    regions: dict[str, RegionSpec] = Field(default_factory=dict)
    insecure: bool = False
    tls: TlsConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> Deployment:
        seen: dict[str, int] = {}
        for i, site in enumerate(self.sites):
            if site.name in seen:
                raise _FieldError(f"sites.{i}.name", f"duplicate site name {site.name!r} "
                               f"(also sites.{seen[site.name]}.name)")
            seen[site.name] = i
        known = ", ".join(seen)
        if self.home not in seen:
            raise _FieldError("home", f"unknown site {self.home!r}; sites are {known}")
        pairs: dict[tuple[str, str], int] = {}
        for i, link in enumerate(self.links):
            for end in ("src", "dst"):
                if getattr(link, end) not in seen:
                    raise _FieldError(f"links.{i}.{end}", f"unknown site {getattr(link, end)!r}; "
                                   f"sites are {known}")
            if link.src == link.dst:
                raise _FieldError(f"links.{i}.dst",
                               f"a link from site {link.src!r} to itself")
            if (link.src, link.dst) in pairs:
                raise _FieldError(f"links.{i}", f"duplicate link {link.name} "
                               f"(also links.{pairs[(link.src, link.dst)]})")
            pairs[(link.src, link.dst)] = i
        for site in self.sites:  # the coordinator's links must be known
            if site.name == self.home:
                continue
            for src, dst in ((self.home, site.name), (site.name, self.home)):
                if (src, dst) in pairs:
                    continue
                for end in (src, dst):
                    entry = self.sites[seen[end]]
                    if self._region(entry) is None:
                        raise _FieldError(f"sites.{seen[end]}.region",
                                       self._no_region(entry, src, dst))
        return self

    def site(self, name: str) -> SiteEntry:
        for s in self.sites:
            if s.name == name:
                return s
        raise ConfigError(f"deployment: unknown site {name!r}; sites are "
                          f"{', '.join(s.name for s in self.sites)}")

    def _region(self, site: SiteEntry) -> Region | None:
        if site.region is None:
            return None
        if site.region in self.regions:
            return self.regions[site.region].region(site.region)
        return find_region(site.region)

    @staticmethod
    def _no_region(site: SiteEntry, src: str, dst: str) -> str:
        what = "no region" if site.region is None else f"unknown region {site.region!r}"
        return (f"site {site.name!r} has {what} and there is no explicit link {src}->{dst}: "
                f"name a region of geodml.planning.regions.REGIONS, define it under [regions], "
                f"or add the link under [[links]]")

    def link(self, src: str, dst: str) -> LinkSpec:
        """The link ``src -> dst``: the explicit one, else derived from the regions
        (:func:`geodml.planning.regions.default_link`) with ``[defaults]`` applied."""
        for link in self.links:
            if link.src == src and link.dst == dst:
                return link
        a, b = self.site(src), self.site(dst)
        if src == dst:
            raise ConfigError(f"deployment: no link from site {src!r} to itself")
        ra, rb = self._region(a), self._region(b)
        if ra is None or rb is None:
            missing = a if ra is None else b
            raise ConfigError(f"deployment: {self._no_region(missing, src, dst)}")
        derived = default_link(ra, rb)
        d = self.defaults
        return LinkSpec(
            src=src, dst=dst,
            bandwidth_mbps=derived.bandwidth_mbps if d.bandwidth_mbps is None
            else d.bandwidth_mbps,
            rtt_ms=derived.rtt_ms if d.rtt_ms is None else d.rtt_ms,
            egress_usd_per_gb=derived.egress_usd_per_gb if d.egress_usd_per_gb is None
            else d.egress_usd_per_gb,
            loss=0.0 if d.loss is None else d.loss)

    def resolve(self, base: Path) -> Deployment:
        """Paths made absolute relative to ``base`` (the deployment file's folder)."""
        out = self.model_copy(deep=True)
        for site in out.sites:
            if site.data is not None:
                site.data = resolve_path(site.data, base)
        if out.tls is not None:
            out.tls = out.tls.resolve(base)
        return out


def _format(source: str, e: ValidationError) -> str:
    lines = [f"{source}: invalid deployment"]
    for err in e.errors():
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, _FieldError):
            lines.append(f"  {problem.field}: {problem.message}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {field_location(err['loc'])}: {msg}")
    return "\n".join(lines)


def parse_deployment(data: dict, source: str = "deployment") -> Deployment:
    """Validate an already-parsed deployment; errors name ``source`` and the field."""
    try:
        return Deployment.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(source, e)) from None


def load_deployment(path: str | os.PathLike) -> Deployment:
    """Read and validate a deployment file; relative paths are relative to the file."""
    path = Path(path)
    return parse_deployment(load_toml(path), str(path)).resolve(path.parent)
