"""`geodml convert`: stream a raw data file into the compact on-disk format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from geodml.data.source import DEFAULT_CHUNK_ROWS, Source
from geodml.data.store import DatasetWriter, read_meta
from geodml.errors import ConfigError, GeodmlError

_FORMATS = ("libsvm", "criteo", "csv", "parquet")
_PRESETS = ("adult", "airline", "taxi", "avazu", "covtype", "higgs")


@click.command()
@click.argument("src", type=click.Path(exists=True, dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(_FORMATS), required=True,
              help="Input format.")
@click.option("--n-features", type=click.IntRange(min=1), default=None,
              help="libsvm: number of features (default: largest index in the file).")
@click.option("--index-base", type=click.Choice(["0", "1", "auto"]), default="1",
              show_default=True, help="libsvm: are indices 0- or 1-based ('auto': 0 if any "
              "index 0 occurs)?")
@click.option("--labels", type=click.Choice(["binary", "real"]), default="binary",
              show_default=True, help="libsvm: binary (+1/-1 or 1/0) or real-valued labels.")
@click.option("--preset", type=click.Choice(_PRESETS), default=None,
              help="csv/parquet: a ready-made schema for a known dataset.")
@click.option("--schema", "schema_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="csv/parquet: a TOML schema (overrides the preset's keys).")
@click.option("--skip-rows", type=click.IntRange(min=0), default=None,
              help="csv: lines to skip before the header/data (adult.test: 1).")
@click.option("--header/--no-header", default=None,
              help="csv: whether the first line is a header (default: the schema's).")
@click.option("--hash-bits", type=click.IntRange(1, 31), default=None,
              help="criteo/csv/parquet: categorical values hash into 2**B buckets.")
@click.option("--hash-seed", type=click.IntRange(0, 2**32 - 1), default=None,
              help="criteo/csv/parquet: hashing seed (every DC must use the same).")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="Stored value type.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=DEFAULT_CHUNK_ROWS,
              show_default=True, help="Rows per streamed chunk (bounds memory).")
def convert(src: str, out_dir: str, fmt: str, dtype: str, chunk_rows: int,
            **reader) -> None:
    """Convert SRC into a geodml dataset directory OUT_DIR, streaming chunk by chunk.

    \b
    Examples:
      geodml convert a9a out/a9a --format libsvm --n-features 123
      geodml convert adult.test out/adult_test --format csv --preset adult --skip-rows 1
      geodml convert train.tsv out/criteo --format criteo --hash-bits 20
    """
    try:
        source = _open(src, fmt, ReaderOptions(**reader))
        with DatasetWriter(out_dir, source.space, np.dtype(dtype)) as writer:
            for chunk in source.chunks(chunk_rows=chunk_rows):
                writer.append(chunk.X, chunk.y)
        meta = read_meta(out_dir)
    except GeodmlError as e:
        raise click.ClickException(str(e)) from None
    size = sum(p.stat().st_size for p in Path(out_dir).iterdir() if p.is_file())
    rate = meta["positives"] / meta["n_rows"] if meta["n_rows"] else 0.0
    click.echo(
        f"{out_dir}: rows={meta['n_rows']} features={meta['n_features']} nnz={meta['nnz']} "
        f"positives={meta['positives']} ({rate:.2%}) bytes={size} "
        f"space={source.space.fingerprint()}"
    )


@dataclass(frozen=True)
class ReaderOptions:
    """The reader options of `geodml convert` (each applies to some formats only)."""

    n_features: int | None = None
    index_base: str = "1"
    labels: str = "binary"
    preset: str | None = None
    schema_path: str | None = None
    skip_rows: int | None = None
    header: bool | None = None
    hash_bits: int | None = None
    hash_seed: int | None = None


def _open(src: str, fmt: str, o: ReaderOptions) -> Source:
    """The reader for the options, refusing options that do not apply to the format."""
    from geodml.data.readers import CsvSource, LibsvmSource, ParquetSource, criteo_source
    from geodml.data.readers.table_presets import load_schema, resolve_schema

    def refuse(names: dict[str, object]) -> None:
        given = [n for n, v in names.items() if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} do(es) not apply to --format {fmt}")

    if fmt == "libsvm":
        refuse({"--preset": o.preset, "--schema": o.schema_path, "--skip-rows": o.skip_rows,
                "--header": o.header, "--hash-bits": o.hash_bits, "--hash-seed": o.hash_seed})
        zero_based = {"0": True, "1": False, "auto": "auto"}[o.index_base]
        return LibsvmSource(src, n_features=o.n_features, zero_based=zero_based, labels=o.labels)
    refuse({"--n-features": o.n_features,
            "--index-base": None if o.index_base == "1" else o.index_base,
            "--labels": None if o.labels == "binary" else o.labels})
    if fmt == "criteo":
        refuse({"--preset": o.preset, "--schema": o.schema_path, "--skip-rows": o.skip_rows,
                "--header": o.header})
        return criteo_source(src, hash_bits=18 if o.hash_bits is None else o.hash_bits,
                             hash_seed=o.hash_seed or 0)
    if o.preset is None and o.schema_path is None:
        raise ConfigError(f"--format {fmt} needs --preset or --schema")
    overrides = {"hash_bits": o.hash_bits, "hash_seed": o.hash_seed}
    if fmt == "csv":
        overrides.update(skip_rows=o.skip_rows, header=o.header)
    else:
        refuse({"--skip-rows": o.skip_rows, "--header": o.header})
    if o.schema_path is not None:
        schema = load_schema(o.schema_path, preset=o.preset, **overrides)
    else:
        schema = resolve_schema(preset=o.preset, **overrides)
    return CsvSource(src, schema) if fmt == "csv" else ParquetSource(src, schema)
