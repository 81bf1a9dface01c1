"""`geodml partition`."""

import click


@click.command()
def partition() -> None:
    """Not written yet."""
    raise click.ClickException("geodml partition: not available yet")
