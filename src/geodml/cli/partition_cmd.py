"""`geodml partition`: split one dataset into K site directories plus a manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from geodml.data.partition import SCHEMES, PartitionSpec, partition_source
from geodml.data.source import DEFAULT_CHUNK_ROWS, DatasetSource, KeySpec, Source
from geodml.data.store import load_dataset
from geodml.errors import ConfigError, GeodmlError

FORMATS = ("libsvm", "csv", "criteo", "parquet", "geodml")


@dataclass(frozen=True)
class PartitionOptions:
    """`geodml partition`'s options besides SRC, OUT_DIR and --scheme."""

    k: int | None = None
    seed: int = 0
    alpha: float = 0.5
    column: str | None = None
    onehot: str | None = None
    feature_prefix: str | None = None
    featindex: str | None = None
    mapping: tuple[str, ...] = ()
    other: str | None = None
    fmt: str | None = None
    preset: str | None = None
    n_features: int | None = None
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    force: bool = False


@click.command()
@click.argument("src", type=click.Path(exists=True))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--scheme", type=click.Choice(SCHEMES), required=True,
              help="iid (seeded), by-column (natural key) or dirichlet (label skew).")
@click.option("-k", "k", type=click.IntRange(min=1), default=None,
              help="Number of sites (by-column without --map/-k: one site per value).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--alpha", type=float, default=0.5, show_default=True,
              help="Dirichlet concentration (smaller = more label skew).")
@click.option("--column", default=None, help="by-column key: a tabular column (Origin).")
@click.option("--onehot", default=None,
              help="by-column key: comma-separated one-hot columns; the active one is the key.")
@click.option("--feature-prefix", default=None,
              help="by-column key: the active feature with this name prefix (region:).")
@click.option("--featindex", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Feature-name map of indexed data (iPinYou featindex.fm.txt).")
@click.option("--map", "mapping", multiple=True, metavar="VALUE=SITE",
              help="Send key VALUE to SITE (a name, or an index i meaning site<i>). Repeatable.")
@click.option("--other", default=None, metavar="SITE",
              help="Site for key values --map does not list (default: an error).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Input format [default: geodml for a dataset directory, else from the "
                   "preset or the file name].")
@click.option("--preset", default=None, help="Reader schema preset (covtype, airline, taxi, ...).")
@click.option("--n-features", type=click.IntRange(min=1), default=None,
              help="Number of columns of indexed (LIBSVM) input.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=DEFAULT_CHUNK_ROWS,
              show_default=True)
@click.option("--force", is_flag=True, help="Replace an earlier partition in OUT_DIR.")
def partition(src: str, out_dir: str, scheme: str, **params) -> None:
    """Split SRC into sites OUT_DIR/<site>/ and write OUT_DIR/manifest.json.

    SRC is a geodml dataset directory or a raw file (LIBSVM, CSV, Criteo TSV,
    Parquet). Covtype by wilderness area (see docs/partition.md for more):

    \b
        geodml partition covtype.20k.data sites --preset covtype \\
            --scheme by-column --onehot c10,c11,c12,c13 \\
            --map c10=WA1 --map c11=WA2 --map c12=WA3 --map c13=WA4
    """
    o = PartitionOptions(**params)
    try:
        key = _key_spec(scheme, o.column, o.onehot, o.feature_prefix)
        spec = PartitionSpec(
            scheme=scheme,  # type: ignore[arg-type]
            k=o.k,
            seed=o.seed,
            alpha=o.alpha,
            key=key,
            mapping=_parse_mapping(o.mapping) if o.mapping else None,
            other=_parse_site(o.other) if o.other is not None else None,
        )
        source = open_input(src, o.fmt, preset=o.preset, n_features=o.n_features,
                            featindex=o.featindex, needs_keys=key is not None)
        manifest = partition_source(source, out_dir, spec, chunk_rows=o.chunk_rows,
                                    overwrite=o.force)
    except GeodmlError as e:
        raise click.ClickException(str(e)) from None
    print_manifest(manifest, out_dir)


def open_input(
    src: str,
    fmt: str | None,
    *,
    preset: str | None = None,
    n_features: int | None = None,
    featindex: str | None = None,
    needs_keys: bool = False,
) -> Source:
    """A Source over SRC: a geodml dataset directory, or a raw file via the readers."""
    path = Path(src)
    if fmt == "geodml" or (fmt is None and path.is_dir()):
        if needs_keys:
            raise ConfigError(
                f"{src}: a geodml dataset directory stores no per-row partition keys, so "
                "by-column cannot split it; partition the raw file instead (--format "
                "csv/libsvm/criteo/parquet with --column/--onehot/--feature-prefix)"
            )
        return DatasetSource(load_dataset(path, mmap=True), path=str(path))
    if path.is_dir():
        raise ConfigError(f"{src}: is a directory, but --format {fmt} reads a file")
    from geodml.data.readers import open_source

    if fmt is None:
        fmt = _guess_format(path, preset)
    options: dict[str, object] = {}
    if preset is not None:
        options["preset"] = preset
    if n_features is not None:
        options["n_features"] = n_features
    if featindex is not None:
        options["featindex"] = featindex
    return open_source(str(path), fmt, **options)


def _guess_format(path: Path, preset: str | None) -> str:
    """The input format from the file name (or a tabular preset), else an error."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if preset is not None or suffix == ".csv":
        return "csv"
    if suffix in (".svm", ".libsvm", ".svmlight"):
        return "libsvm"
    raise ConfigError(f"{path}: cannot tell the input format from the name; give --format "
                      f"({', '.join(FORMATS)})")


def _key_spec(
    scheme: str, column: str | None, onehot: str | None, feature_prefix: str | None
) -> KeySpec | None:
    given = [o for o, v in (("--column", column), ("--onehot", onehot),
                            ("--feature-prefix", feature_prefix)) if v is not None]
    if scheme != "by-column":
        if given:
            raise ConfigError(f"{given[0]} is for --scheme by-column, not {scheme}")
        return None
    if len(given) != 1:
        raise ConfigError(
            "by-column needs exactly one key: --column NAME, --onehot C1,C2,... or "
            f"--feature-prefix PREFIX (got {', '.join(given) or 'none'})"
        )
    if onehot is not None:
        cols = tuple(c.strip() for c in onehot.split(",") if c.strip())
        if not cols:
            raise ConfigError("--onehot: give the one-hot column names, comma-separated")
        return KeySpec(onehot=cols)
    return KeySpec(column=column, feature_prefix=feature_prefix)


def _parse_mapping(items: tuple[str, ...]) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for item in items:
        value, sep, site = item.rpartition("=")
        if not sep or not site:
            raise ConfigError(f"--map {item!r}: expected VALUE=SITE")
        if value in out:
            raise ConfigError(f"--map: key value {value!r} is mapped twice")
        out[value] = _parse_site(site)
    return out


def _parse_site(site: str) -> str | int:
    return int(site) if site.isdigit() else site


def print_manifest(manifest: dict, out_dir: str) -> None:
    """A rich table of the sites of a manifest."""
    params = ", ".join(
        f"{k}={v}" for k, v in manifest["parameters"].items()
        if k in ("k", "seed", "alpha") and v is not None
    )
    table = Table(title=f"{manifest['scheme']} partition of {manifest['source']} -> {out_dir}"
                  + (f" ({params})" if params else ""))
    for col in ("site", "rows", "positives", "pos. rate", "nnz", "MB", "keys"):
        table.add_column(col, justify="left" if col in ("site", "keys") else "right")
    for s in manifest["sites"]:
        keys = [k if k else '""' for k in s.get("keys", [])]
        shown = ", ".join(keys[:6]) + (f" (+{len(keys) - 6})" if len(keys) > 6 else "")
        table.add_row(
            s["name"], f"{s['rows']:,}", f"{s['positives']:,}",
            f"{s['positives'] / s['rows']:.4f}" if s["rows"] else "-",
            f"{s['nnz']:,}", f"{s['bytes'] / 1e6:.2f}", shown,
        )
    table.add_section()
    table.add_row("total", f"{manifest['rows']:,}", f"{manifest['positives']:,}",
                  f"{manifest['positives'] / manifest['rows']:.4f}" if manifest["rows"] else "-",
                  f"{sum(s['nnz'] for s in manifest['sites']):,}",
                  f"{sum(s['bytes'] for s in manifest['sites']) / 1e6:.2f}", "")
    Console().print(table)
