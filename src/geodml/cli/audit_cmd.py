"""`geodml audit verify`."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

console = Console()


@click.group()
def audit() -> None:
    """Check audit logs."""


@audit.command()
@click.argument("site_log", type=click.Path(exists=True, dir_okay=False))
@click.option("--cert", "cert_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The site's certificate (its key signed the log).")
@click.option("--ca", "ca_path", type=click.Path(exists=True, dir_okay=False),
              help="Also check that the certificate is issued by this CA.")
@click.option("--coordinator-audit", type=click.Path(exists=True, dir_okay=False),
              help="The coordinator's audit log: every reply it lists from this site must "
                   "be signed in SITE_LOG.")
def verify(site_log, cert_path, ca_path, coordinator_audit) -> None:
    """Verify a site's signed, hash-chained audit log (the [audit] path of its config):
    no record edited, removed or reordered, every record signed by the site's key; and
    say what left the DC."""
    from geodml.audit import verify_site_log

    s = verify_site_log(site_log, cert_path, ca_path, coordinator_audit)
    console.print(f"[bold green]verified[/]: {site_log}: {s.records} records of site "
                  f"{s.site}, hash chain intact, every record signed by {cert_path}"
                  + (f"; {s.restarts} restart(s)" if s.restarts else ""))
    table = Table(title="what left the DC")
    for col in ("kind", "messages", "bytes"):
        table.add_column(col, justify="right" if col != "kind" else "left")
    for kind in ("metadata", "aggregate", "raw-rows"):
        if s.by_kind.get(kind):
            table.add_row(kind, f"{s.by_kind[kind]:,}", f"{s.bytes_by_kind[kind]:,}")
    console.print(table)
    console.print("calls: " + ", ".join(f"{c} {n}" for c, n in sorted(s.calls.items())))
    if s.smallest_aggregate is not None:
        console.print(f"smallest aggregate: over {s.smallest_aggregate:,} rows")
    if s.raw_exports:
        console.print(f"[bold red]raw rows left this DC[/] in {len(s.raw_exports)} "
                      f"message(s), e.g. line {s.raw_exports[0]['line']} to "
                      f"{s.raw_exports[0]['peer']}")
    else:
        console.print("no raw rows left this DC")
    if s.matched is not None:
        console.print(f"all {s.matched:,} replies in {coordinator_audit} from {s.site} are "
                      "signed in the site's log")
