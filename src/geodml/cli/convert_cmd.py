"""`geodml convert`: stream a raw data file into the compact on-disk format."""

from __future__ import annotations

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
def convert(
    src: str,
    out_dir: str,
    fmt: str,
    n_features: int | None,
    index_base: str,
    labels: str,
    preset: str | None,
    schema_path: str | None,
    skip_rows: int | None,
    header: bool | None,
    hash_bits: int | None,
    hash_seed: int | None,
    dtype: str,
    chunk_rows: int,
) -> None:
    """Convert SRC into a geodml dataset directory OUT_DIR, streaming chunk by chunk.

    \b
    Examples:
      geodml convert a9a out/a9a --format libsvm --n-features 123
      geodml convert adult.test out/adult_test --format csv --preset adult --skip-rows 1
      geodml convert train.tsv out/criteo --format criteo --hash-bits 20
    """
    try:
        source = _open(src, fmt, n_features, index_base, labels, preset, schema_path,
                       skip_rows, header, hash_bits, hash_seed)
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


def _open(
    src: str, fmt: str, n_features: int | None, index_base: str, labels: str,
    preset: str | None, schema_path: str | None, skip_rows: int | None, header: bool | None,
    hash_bits: int | None, hash_seed: int | None,
) -> Source:
    """The reader for the options, refusing options that do not apply to the format."""
    from geodml.data.readers import CsvSource, LibsvmSource, ParquetSource, criteo_source
    from geodml.data.readers.tabular import load_schema, resolve_schema

    def refuse(names: dict[str, object]) -> None:
        given = [n for n, v in names.items() if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} do(es) not apply to --format {fmt}")

    if fmt == "libsvm":
        refuse({"--preset": preset, "--schema": schema_path, "--skip-rows": skip_rows,
                "--header": header, "--hash-bits": hash_bits, "--hash-seed": hash_seed})
        zero_based = {"0": True, "1": False, "auto": "auto"}[index_base]
        return LibsvmSource(src, n_features=n_features, zero_based=zero_based, labels=labels)
    refuse({"--n-features": n_features,
            "--index-base": None if index_base == "1" else index_base,
            "--labels": None if labels == "binary" else labels})
    if fmt == "criteo":
        refuse({"--preset": preset, "--schema": schema_path, "--skip-rows": skip_rows,
                "--header": header})
        return criteo_source(src, hash_bits=18 if hash_bits is None else hash_bits,
                             hash_seed=hash_seed or 0)
    if preset is None and schema_path is None:
        raise ConfigError(f"--format {fmt} needs --preset or --schema")
    overrides = {"hash_bits": hash_bits, "hash_seed": hash_seed}
    if fmt == "csv":
        overrides.update(skip_rows=skip_rows, header=header)
    else:
        refuse({"--skip-rows": skip_rows, "--header": header})
    if schema_path is not None:
        schema = load_schema(schema_path, preset=preset, **overrides)
    else:
        schema = resolve_schema(preset=preset, **overrides)
    return CsvSource(src, schema) if fmt == "csv" else ParquetSource(src, schema)
