"""`geodml generate`."""

import click


@click.command()
def generate() -> None:
    """Not written yet."""
    raise click.ClickException("geodml generate: not available yet")
