"""Click options shared by `geodml train`, `plan` and `compare`, stated once.

Every command spells loss, gtol, rounds, method parameters and compression the same
way: ``--loss`` is a fixed choice, ``--compress SPEC`` compresses both directions
and ``--compress-up`` / ``--compress-down`` override one direction. An invalid
compression name lists the valid ones.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import click

from geodml.algorithms.defaults import DEFAULT_GTOL, DEFAULT_MAX_ROUNDS
from geodml.models import LOSSES

#: compression names accepted besides a JSON spec (geodml.compression.SHORT_SPECS, and
#: "none" to switch one direction off); checked against SHORT_SPECS when used
COMPRESSION_NAMES = ("none", "float32", "float16", "bfloat16", "float8", "int8")
LOSS = click.Choice(sorted(LOSSES))


class CompressionSpec(click.ParamType):
    """A compression short name (:data:`COMPRESSION_NAMES`) or a JSON spec
    (docs/compression.md), validated; the value is the text as given."""

    name = "SPEC"

    def convert(self, value, param, ctx):
        if value is None:
            return None
        text = str(value).strip()
        from geodml.compression import SHORT_SPECS, CompressionError, spec_text

        if text == "none" or text in SHORT_SPECS:
            return text
        if text.startswith(("{", "[")):
            try:
                spec_text(text)
            except CompressionError as e:
                self.fail(str(e), param, ctx)
            return text
        names = ", ".join(["none", *SHORT_SPECS])
        self.fail(f"{value!r} is not one of {names}, nor a JSON spec starting with '{{' "
                  "(docs/compression.md)", param, ctx)


COMPRESSION = CompressionSpec()


def _apply(fn: Callable, options: list[Callable]) -> Callable:
    for option in reversed(options):
        fn = option(fn)
    return fn


def compression_options(repeat: bool) -> Callable[[Callable], Callable]:
    """``--compress`` (both directions; with ``repeat``, once per plan to compare),
    ``--compress-up`` and ``--compress-down`` (one direction, overriding --compress)."""
    both_help = ("Compress the vectors both ways: none, float32, float16, bfloat16, float8 "
                 "(1 byte per entry, small entries keep their relative precision), int8, or a "
                 "JSON spec (docs/compression.md); gradient sums travel as their changes, "
                 "zstd on every compressed vector")
    if repeat:
        both_help += "; repeat to plan each method with each."
    options = [
        click.option("--compress", "compress", type=COMPRESSION, multiple=repeat,
                     metavar="SPEC", help=both_help + ("" if repeat else ".")),
        click.option("--compress-up", type=COMPRESSION, metavar="SPEC",
                     help="Compress the gradient sums sites send (overrides --compress)."),
        click.option("--compress-down", type=COMPRESSION, metavar="SPEC",
                     help="Compress the vectors sent to the sites (overrides --compress)."),
    ]
    return lambda fn: _apply(fn, options)


def objective_options(fn: Callable) -> Callable:
    """``--loss``, ``--lam``, ``--gtol``, ``--param``: the job every command trains."""
    return _apply(fn, [
        click.option("--loss", type=LOSS, default="logistic", show_default=True),
        click.option("--lam", type=float, default=None, help="L2 weight lambda (default 1/N)."),
        click.option("--gtol", type=float, default=DEFAULT_GTOL, show_default=True,
                     help="Stop when ||grad|| <= gtol * ||grad at start|| (centralized, "
                          "sqm-*, fadl, fadl-subspace, dane; oneshot, fedavg, admm and dp-gd "
                          "stop by rounds)."),
        click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="A method parameter (repeat), e.g. --param memory=5; "
                          "`geodml methods` lists them."),
    ])


def max_rounds_option(fn: Callable) -> Callable:
    return click.option("--max-iter", "--max-rounds", "max_iter", type=click.IntRange(min=1),
                        default=DEFAULT_MAX_ROUNDS, show_default=True,
                        help="Outer iterations, at most.")(fn)


def parse_key_values(items: tuple[str, ...], option: str) -> dict[str, object]:
    """``KEY=VALUE`` items of ``option``, the value JSON when it parses as JSON, else text."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def parse_params(items: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    """``--param KEY=VALUE`` items (:func:`parse_key_values`)."""
    return tuple(parse_key_values(items, "--param").items())


def parse_addresses(items: tuple[str, ...], option: str) -> tuple[tuple[str, str], ...]:
    """``NAME=HOST:PORT`` items as ``(name, address)`` pairs, in order."""
    pairs = []
    for item in items:
        name, sep, address = item.partition("=")
        if not sep or not name or not address:
            raise click.BadParameter(f"{item!r} is not NAME=HOST:PORT", param_hint=option)
        pairs.append((name, address))
    names = [n for n, _ in pairs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise click.BadParameter(f"site {', '.join(twice)} given twice", param_hint=option)
    return tuple(pairs)
