"""`geodml methods`: every geo-distributed training method with its ``--param``
parameters, printed from the :class:`~geodml.params.Schema` each method reads them
with (so the list cannot drift from what ``train`` accepts); ``--procedures``: the
sites' local procedures and theirs."""

from __future__ import annotations

import click


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option("--procedures", is_flag=True,
              help="List the sites' local procedures (LocalSolve) and their parameters "
                   "instead; a method's forwarded parameters share their bounds.")
def methods(names: tuple[str, ...], procedures: bool) -> None:
    """List the training methods (or the named ones) and their --param KEY=VALUE
    parameters, one line each: name = default (what it must be): what it does.
    The centralized methods (centralized, centralized-export) take none."""
    from geodml.algorithms.registry import PARAMS
    from geodml.job.procedure_params import PROCEDURE_PARAMS

    table = PROCEDURE_PARAMS if procedures else PARAMS
    unknown = [n for n in names if n not in table]
    if unknown:
        kind = "procedure" if procedures else "method"
        raise click.BadParameter(f"unknown {kind} {', '.join(map(repr, unknown))}; known: "
                                 f"{', '.join(table)}", param_hint="NAME")
    for i, name in enumerate(names or table):
        if i:
            click.echo()
        click.echo(name)
        for line in table[name].describe():
            click.echo(f"  {line}")
