"""`geodml certs`: create a deployment CA and issue site and coordinator certificates."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from geodml.errors import GeodmlError
from geodml.wire.tls import DEFAULT_HOSTS, ROLES, init_ca, issue


@click.group()
def certs() -> None:
    """Mutual-TLS certificates: one CA per deployment, one certificate per process.

    See docs/security.md for the trust model and a multi-machine walk-through.
    """


@certs.command("init")
@click.argument("ca_dir", type=click.Path(file_okay=False))
@click.option("--name", default="geodml CA", show_default=True,
              help="Common name of the CA certificate.")
@click.option("--days", type=click.IntRange(min=1), default=3650, show_default=True,
              help="Validity of the CA certificate in days.")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing CA (every certificate it issued stops being trusted).")
def init_command(ca_dir: str, name: str, days: int, overwrite: bool) -> None:
    """Create a CA in CA_DIR: ca.pem (copy to every machine) and ca.key (keep private)."""
    try:
        paths = init_ca(ca_dir, name=name, days=days, overwrite=overwrite)
    except GeodmlError as e:
        raise click.ClickException(str(e)) from None
    _print_written(f"CA {name!r}", [("certificate", paths.cert), ("private key", paths.key)])
    Console(soft_wrap=True).print(
        f"Copy [bold]{escape(str(paths.cert))}[/] to every site and coordinator; "
        f"keep [bold]{escape(str(paths.key))}[/] on this machine only."
    )


@certs.command("issue")
@click.argument("ca_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="site (a server: serverAuth) or coordinator (a client: clientAuth).")
@click.option("--host", "hosts", multiple=True, metavar="H",
              help="DNS name or IP address the site is dialed by (subjectAltName). "
                   f"Repeatable. [default: {', '.join(DEFAULT_HOSTS)}]")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Directory for NAME.pem and NAME.key [default: CA_DIR].")
@click.option("--days", type=click.IntRange(min=1), default=825, show_default=True,
              help="Validity in days (never past the CA's own expiry).")
@click.option("--overwrite", is_flag=True, help="Replace an existing NAME.pem / NAME.key.")
def issue_command(
    ca_dir: str,
    name: str,
    role: str,
    hosts: tuple[str, ...],
    out_dir: str | None,
    days: int,
    overwrite: bool,
) -> None:
    """Issue NAME.pem and NAME.key, signed by the CA in CA_DIR.

    NAME becomes the certificate's common name: for a coordinator, the identity
    sites list in their policy. Examples:

        geodml certs issue ca us-east --role site --host us-east.dml.example.com

        geodml certs issue ca coordinator-1 --role coordinator --out coord
    """
    try:
        paths = issue(
            ca_dir, out_dir if out_dir is not None else ca_dir, name,
            role,  # type: ignore[arg-type]
            hosts=list(hosts) if hosts else DEFAULT_HOSTS, days=days, overwrite=overwrite,
        )
    except GeodmlError as e:
        raise click.ClickException(str(e)) from None
    _print_written(
        f"{role} {name!r}",
        [("certificate", paths.cert), ("private key", paths.key), ("CA certificate", paths.ca)],
    )


def _print_written(what: str, rows: list[tuple[str, Path]]) -> None:
    """List the files of ``what``, one per line; paths are never wrapped or cut."""
    console = Console(soft_wrap=True)
    console.print(f"[bold green]{escape(what)}[/]")
    width = max(len(label) for label, _ in rows)
    for label, path in rows:
        console.print(f"  {label:<{width}}  {escape(str(path))}")
