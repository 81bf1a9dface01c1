"""One plan's prediction from its bytes per link: geo plans (calibrated, recorded or
their lower bound), centralizing, and the policies that refuse a plan
(see :mod:`geodml.planning.planner`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from geodml.compression import wire_format_for
from geodml.federation import SiteInfo
from geodml.planning.deployment import Deployment
from geodml.planning.plans import PRIVATE_METHODS, Estimate, GeoVariant, Workload
from geodml.planning.wan import egress_usd, model_centralized, round_seconds
from geodml.wire.codec import WireFormat

MIN_VECTOR_ROUNDS = 5  # no method reached gtol 1e-3 in fewer on any benchmark (BENCHMARKS.md)
EXPORT_SPREAD = 0.05  # sampled export sizes were within 0.5% of the export everywhere run
SESSION_BYTES = 400  # Prepare (down and up), Export's request and Close of one site


#: zstd's share of a compressed vector's raw bytes is at least this (lossless; measured
#: 0.67 on float8 and 0.73 on bfloat16 vectors of FADL-subspace at 2^20 features)
ZSTD_FLOOR = 0.5


def _value_bytes(spec: str | None, zstd_share: float = ZSTD_FLOOR) -> float:
    """Bytes per value on the wire of a compression spec (the codec's own format for it,
    whose payloads zstd compresses to ``zstd_share`` of their bytes: at least
    :data:`ZSTD_FLOOR`, at most 1; float64 without one)."""
    if not spec:
        return WireFormat().itemsize
    fmt = wire_format_for(spec)
    return fmt.itemsize * (zstd_share if fmt.compression == "zstd" else 1.0)


def bound_links(sites: Sequence[SiteInfo], home: str, variant: GeoVariant,
                zstd_share: float = ZSTD_FLOOR) -> dict[str, int]:
    """Bytes per link of :data:`MIN_VECTOR_ROUNDS` rounds moving one model-sized vector
    (or the site's support) each way to and from every site outside the home DC, zstd'd
    payloads at ``zstd_share`` of their bytes (at least :data:`ZSTD_FLOOR`: a bound
    from below; 1: as many bytes as such vectors can take)."""
    down = _value_bytes(variant.compress_down, zstd_share)
    up = _value_bytes(variant.compress_up, zstd_share)
    if variant.secure:  # masked sums: 8-byte ring elements
        up = 8
    links: dict[str, int] = {}
    for s in sites:
        if s.name == home:
            continue
        restrict = (variant.restrict_to_support is not False and s.support_size > 0
                    and not variant.secure and variant.method not in PRIVATE_METHODS)
        dim = s.support_size if restrict else s.features
        links[f"{home}->{s.name}"] = round(MIN_VECTOR_ROUNDS * dim * down)
        links[f"{s.name}->{home}"] = round(MIN_VECTOR_ROUNDS * dim * up)
    return links


def lower_bound_bytes(sites: Sequence[SiteInfo], home: str, variant: GeoVariant) -> int:
    """WAN bytes of :data:`MIN_VECTOR_ROUNDS` rounds moving one model-sized vector each way
    to and from every site outside the home DC: no method needs fewer."""
    return sum(bound_links(sites, home, variant).values())


def site_rows(sites: Sequence[SiteInfo]) -> dict[str, dict]:
    return [{"site": s.name, "region": s.region, "rows": s.rows, "nnz": s.nnz,
             "features": s.features, "support": s.support_size,
             "raw_export_allowed": s.raw_export_allowed,
             "export_bytes_estimate": s.export_bytes_estimate} for s in sites]


def geo_estimate(variant: GeoVariant, record: dict, basis: str, deployment: Deployment,
                  workload: Workload, calibration_bytes: int = 0,
                  refusals: Sequence[str] = ()) -> Estimate:
    """A geo plan's estimate from a run's record (recorded, or predicted from
    calibrations with its ``range``: (low, point, high) multiples of its rounds, and
    ``seconds_range``: the modeled time's own (low, high))."""
    links = {k: int(v) for k, v in record["links"].items()}
    wan = sum(links.values())
    usd = egress_usd(links, deployment)
    seconds = float(record["seconds"])
    estimate = Estimate(
        variant.name, "geo", not refusals, wan, seconds, usd, wan * workload.runs,
        seconds * workload.runs, usd * workload.runs, basis, why_not="; ".join(refusals),
        rounds=int(record.get("rounds", 0)),
        vector_rounds=float(record.get("vector_rounds", 0.0)),
        calibration_wan_bytes=calibration_bytes,
        calibration_seconds=float(record.get("calibration_seconds", 0.0))
        if calibration_bytes else 0.0,
        per_link=links, variant=variant.key())
    if "range" in record:
        low, point, high = record["range"]
        estimate.with_ranges((low / point, high / point))
    if "bytes_range" in record:  # links at the dense floor: their own high end
        low, high = (b / max(wan, 1) for b in record["bytes_range"])
        estimate.with_ranges((low, high), ("wan_bytes", "usd", "workload_bytes",
                                           "workload_usd"))
    if "seconds_range" in record:  # compute that may grow faster than the rounds
        low, high = (float(x) for x in record["seconds_range"])
        estimate.ranges["seconds"] = (low, high)
        estimate.ranges["workload_seconds"] = (low * workload.runs, high * workload.runs)
    return estimate


def lower_bound_estimate(variant: GeoVariant, sites: Sequence[SiteInfo],
                          deployment: Deployment, workload: Workload,
                          refusals: Sequence[str] = ()) -> Estimate:
    """The bound of :func:`lower_bound_bytes` as an estimate: its links' bytes, and the
    slowest site's path, one round at a time."""
    home = deployment.home
    links = bound_links(sites, home, variant)
    per_round = {name: nbytes // MIN_VECTOR_ROUNDS for name, nbytes in links.items()}
    record = {"links": links, "rounds": MIN_VECTOR_ROUNDS, "vector_rounds": MIN_VECTOR_ROUNDS,
              "seconds": MIN_VECTOR_ROUNDS * round_seconds(per_round, deployment)}
    why = "not calibrated: refused by policy" if refusals else "cannot beat centralizing"
    return geo_estimate(variant, record, f"lower bound ({MIN_VECTOR_ROUNDS} vector rounds): "
                         f"{why}", deployment, workload, refusals=refusals
                         ).with_ranges((1.0, math.inf))


def policy_refusals(variant: GeoVariant, sites: Sequence[SiteInfo],
                    workload: Workload) -> list[str]:
    """Why the sites' policies (or budgets) refuse ``variant``; empty: it may run."""
    private = variant.method in PRIVATE_METHODS
    out = []
    for s in sites:
        if s.requires_secure_aggregation and not variant.secure:
            out.append(f"site {s.name} sends only masked sums "
                       "(require_secure_aggregation = true)")
        if s.privacy is not None and not private:
            out.append(f"site {s.name} sends only differentially private sums "
                       f"(dp_epsilon = {s.privacy.epsilon:g}): plan dp-gd")
        if s.privacy is None and private:
            out.append(f"site {s.name} has no privacy budget (dp_epsilon, dp_delta): "
                       f"{variant.method} needs one at every site")
    if private and workload.runs > 1:
        out.append(f"{variant.method} spends what every site's budget has left in one run; "
                   f"a workload of {workload.runs} runs cannot be trained privately")
    return out


def central_estimate(sites: Sequence[SiteInfo], deployment: Deployment, workload: Workload,
                      train_seconds: tuple[float, float, float], basis: str,
                      describe: dict[str, int]) -> Estimate:
    """Export bytes plus the calls around them: Describe (as measured), Prepare and Close
    (:data:`SESSION_BYTES` per site), within :data:`EXPORT_SPREAD`; the copy's modeled
    seconds plus ``train_seconds`` (low, point, high) at home."""
    exports = {s.name: s.export_bytes_estimate + describe.get(f"{s.name}->{deployment.home}", 0)
               + SESSION_BYTES for s in sites if s.name != deployment.home}
    low, train, high = train_seconds
    modeled = model_centralized(exports, deployment, train)
    refusing = [s.name for s in sites if not s.raw_export_allowed and s.name != deployment.home]
    masked = [s.name for s in sites if s.requires_secure_aggregation]
    reasons = []
    if refusing:
        reasons.append(f"the policy of site {', '.join(refusing)} forbids raw export "
                       "(allow_raw_export = false)")
    if masked:  # such a site refuses every unmasked session, the export's too
        reasons.append(f"site {', '.join(masked)} sends only masked sums "
                       "(require_secure_aggregation = true)")
        refusing += masked
    why = "; ".join(reasons) + "; priced as if granted an exception" if reasons else ""
    copy = modeled.seconds - train
    factor = workload.copy_factor
    # later days copy only their new rows, and every run trains on the day's data
    mean_rows = 1.0 + workload.growth_per_day * (workload.days - 1) / 2
    estimate = Estimate(
        "centralize", "centralized", not refusing, modeled.wan_bytes, modeled.seconds,
        modeled.usd, int(modeled.wan_bytes * factor),
        copy * factor + train * mean_rows * workload.runs, modeled.usd * factor,
        basis, why,
        rounds=1, per_link={k: int(v["bytes"]) for k, v in modeled.per_link.items()})
    spread = (1 - EXPORT_SPREAD, 1 + EXPORT_SPREAD)
    estimate.with_ranges(spread, ("wan_bytes", "usd", "workload_bytes", "workload_usd"))
    for quantity, copies, trains in (("seconds", copy, train),
                                     ("workload_seconds", copy * factor,
                                      train * mean_rows * workload.runs)):
        estimate.ranges[quantity] = (copies * spread[0] + trains * low / max(train, 1e-12),
                                     copies * spread[1] + trains * high / max(train, 1e-12))
    return estimate
