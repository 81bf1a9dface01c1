"""Shared pieces of the benchmarks that run the planner and real plans over in-process
sites: region-named DCs and their deployment, cached synthetic regional CTR data, the
federation factory, geo variants, tables.

DCs are named after AWS regions (the demo's names, aliases of
:data:`geodml.planning.regions.ALIASES`) so every link gets that pair's bandwidth, RTT
and egress price from the region table;
the first name is the home DC. The first four are the demo's (``geodml.demo.REGIONS``).
The table has seven AWS regions; the eighth DC, ``ca-central`` (AWS ca-central-1,
Montreal), is declared in the deployment's ``[regions]``: area ``na-east``, $0.02/GB
to other AWS regions, $0.09/GB to the internet (AWS's list prices, as for the other
North American regions of the table).

Data: :func:`regional_data` generates every DC's rows with the regional CTR generator
(:mod:`geodml.data.synthetic`) from one config over all of :data:`DC_NAMES`, one
directory per DC, and reuses a DC's directory when its manifest records the same
config. A region's rows depend only on the config and the region's index (the
generator's seeds are ``[seed, stream, region index, block]``), so the first ``K`` DCs
of an 8-DC config are the same rows whatever ``K``, and runs with 2, 4 and 8 DCs share
their data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.table import Table

from geodml.data import load_dataset
from geodml.data.dataset import Dataset
from geodml.data.partition import read_manifest, site_dirs
from geodml.data.store import map_dataset
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.demo import demo_variant
from geodml.errors import GeodmlError
from geodml.federation import AuditLog, Federation
from geodml.planning.deployment import Deployment, parse_deployment
from geodml.planning.planner import GeoVariant
from geodml.site.inprocess import InProcessTransport
from geodml.site.policy import Policy
from geodml.site.service import SiteService

#: region-named DCs, home first; the first four are the demo's
DC_NAMES = ("us-east", "eu-west", "ap-south", "sa-east", "us-west", "eu-central",
            "ap-northeast", "ca-central")
#: regions the table of geodml.planning.wan does not list, as the deployment's [regions]
EXTRA_REGIONS = {"ca-central": {"area": "na-east", "cloud": "aws",
                                "location": "Montreal (ca-central-1)",
                                "egress_usd_per_gb": 0.02, "internet_usd_per_gb": 0.09}}


def dc_names(k: int) -> tuple[str, ...]:
    """The first ``k`` DCs of :data:`DC_NAMES` (the first is home)."""
    if not 1 <= k <= len(DC_NAMES):
        raise SystemExit(f"--dcs: between 1 and {len(DC_NAMES)} DCs, got {k}")
    return DC_NAMES[:k]


def deployment_for(names: Sequence[str]) -> Deployment:
    """In-process sites named ``names`` in their regions, home ``names[0]``; links and
    prices from the region table (plus :data:`EXTRA_REGIONS`)."""
    regions = {n: EXTRA_REGIONS[n] for n in names if n in EXTRA_REGIONS}
    return parse_deployment({"home": names[0], "insecure": True, "regions": regions,
                             "sites": [{"name": n, "region": n} for n in names]})


def in_process_sites(sites: dict[str, Dataset], stream: bool = False) -> list[SiteService]:
    """One site service per DC, each in its own region, every policy allowing export (so
    the centralized baseline can run). ``stream``: each site reads its rows block by
    block from memory-mapped files (the datasets must come from
    :func:`geodml.data.store.map_dataset`, as :func:`regional_data` gives them with
    ``stream=True``): resident memory O(rows), not O(nonzeros), the same sums."""
    return [SiteService(n, n, d, Policy(allow_raw_export=True), stream=stream)
            for n, d in sites.items()]


def federation_factory(services: Sequence[SiteService], home: str, serial: bool = True
                       ) -> Callable[..., Federation]:
    """The in-process twin of :func:`geodml.planning.connect.federation_factory`: the same messages
    and metered bytes as gRPC, without sockets. ``serial`` (default): one site's call at a
    time, so that each call's duration is that site's compute alone, as on a machine of
    its own (the sites share this process and its cores); the modeled time is then a
    deployment's, the wall time the sum over the sites."""
    def open_federation(compression=None, sample_fraction: float = 1.0,
                        audit: str | None = None, secure=None, validation=None) -> Federation:
        return Federation([InProcessTransport(s) for s in services], home,
                          audit=AuditLog(audit) if audit else None, compression=compression,
                          sample_fraction=sample_fraction, secure=secure,
                          validation=validation, serial=serial)
    return open_federation


def geo_variants(methods: Sequence[str], compress: Sequence[str]) -> list[GeoVariant]:
    """Every method with every compression (``none``: uncompressed), vectors compressed
    both ways as in the demo (:func:`geodml.demo.demo_variant`)."""
    return [demo_variant(m, None if c == "none" else c) for m in methods for c in compress]


def regional_config(rows: int, bits: int, test_rows: int, seed: int = 0) -> RegionalCTRConfig:
    """The generator's config over all of :data:`DC_NAMES`."""
    return RegionalCTRConfig(regions=DC_NAMES, rows_per_region=rows,
                             test_rows_per_region=test_rows, hash_bits=bits, seed=seed)


def cache_key(config: RegionalCTRConfig) -> str:
    """A readable, unique directory name for a config's data."""
    blob = json.dumps(config.to_dict(), sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return (f"ctr-{config.rows_per_region}r-{config.test_rows_per_region}t-"
            f"{config.hash_bits}b-s{config.seed}-{digest}")


def is_cached(out: Path, config: RegionalCTRConfig) -> bool:
    """Whether ``out`` holds a complete generated directory of exactly ``config``."""
    with contextlib.suppress(GeodmlError, OSError, ValueError):
        return read_manifest(out).get("parameters") == json.loads(json.dumps(config.to_dict()))
    return False


def regional_data(cache: Path, names: Sequence[str], rows: int, bits: int, test_rows: int,
                  seed: int = 0, workers: int = 2,
                  progress: Callable[[str], None] = lambda _m: None, stream: bool = False,
                  ) -> tuple[dict[str, Dataset], Dataset, float]:
    """Every DC's training rows (memory-mapped for a streaming site when ``stream``), the
    pooled test rows of these DCs, and the seconds spent generating (0 when everything
    came from the cache under ``cache``)."""
    config = regional_config(rows, bits, test_rows, seed)
    root = cache / cache_key(config)
    spent = 0.0
    train: dict[str, Dataset] = {}
    tests: list[Dataset] = []
    for name in names:
        out = root / name
        if not is_cached(out, config):
            progress(f"generating {name}: {rows:,} rows + {test_rows:,} test rows, "
                     f"2^{bits} features")
            t0 = time.perf_counter()
            write_regional(config, out, regions=[name], overwrite=True, workers=workers)
            spent += time.perf_counter() - t0
        path = site_dirs(out)[name]
        train[name] = map_dataset(path) if stream else load_dataset(path)
        tests.append(load_dataset(site_dirs(out, "test")[name]))
    return train, Dataset.concat(tests), spent


def rich_table(title: str, cols: Sequence[str], rows: Sequence[Sequence[str]],
               left: Sequence[str] = ("regime", "plan", "basis", "status")) -> Table:
    """A terminal table; columns named in ``left`` are left-aligned, the rest right."""
    table = Table(title=title)
    for col in cols:
        table.add_column(col, justify="left" if col in left else "right")
    for r in rows:
        table.add_row(*r)
    return table


def markdown_table(cols: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(r) + " |" for r in rows])
