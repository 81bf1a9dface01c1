"""`geodml convert`."""

import click


@click.command()
def convert() -> None:
    """Not written yet."""
    raise click.ClickException("geodml convert: not available yet")
