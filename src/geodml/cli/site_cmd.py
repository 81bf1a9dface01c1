"""`geodml site serve`: run one DC's site server."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from geodml.site.config import load_site_config


@click.group()
def site() -> None:
    """Run a site: one per data center, serving aggregates over its rows."""


@site.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False),
              help="The site's TOML configuration.")
@click.option("--insecure", is_flag=True,
              help="Allow plaintext (needs insecure = true in the config; loopback only).")
@click.option("--port-file", type=click.Path(dir_okay=False),
              help="Write the bound port here once serving (for listen ports of 0).")
def serve(config_path: str, insecure: bool, port_file: str | None) -> None:
    """Serve the site described by --config until SIGTERM or Ctrl-C."""
    from geodml.site.server import serve as run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = load_site_config(config_path)
    run(config, insecure_ok=insecure, port_file=Path(port_file) if port_file else None)
