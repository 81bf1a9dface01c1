"""The ``geodml`` command line. Each command lives in its own module."""

from __future__ import annotations

import click

from geodml import __version__
from geodml.cli.audit_cmd import audit
from geodml.cli.certs_cmd import certs
from geodml.cli.compare_cmd import compare
from geodml.cli.convert_cmd import convert
from geodml.cli.demo_cmd import demo
from geodml.cli.generate_cmd import generate
from geodml.cli.methods_cmd import methods
from geodml.cli.partition_cmd import partition
from geodml.cli.plan_cmd import plan
from geodml.cli.score_cmds import evaluate, predict
from geodml.cli.site_cmd import site
from geodml.cli.train_cmd import train
from geodml.errors import GeodmlError


class _Group(click.Group):
    """Turns geodml's own errors into one clear line (exit code 1), not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeodmlError as e:
            raise click.ClickException(str(e)) from None


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="geodml")
def main() -> None:
    """geodml: train one model on data born in many data centers."""


for command in (demo, plan, compare, train, methods, predict, evaluate, convert, partition,
                generate, certs, site, audit):
    main.add_command(command)
