"""`geodml predict` and `geodml evaluate`: use a trained model where the data lives."""

from __future__ import annotations

import json
from pathlib import Path

import click

from geodml.cli.options import parse_key_values

_FORMATS = ("libsvm", "criteo", "csv", "parquet")


def _data_options(f):
    f = click.option("--option", "reader_options", multiple=True, metavar="KEY=VALUE",
                     help="A reader option of --format (repeat), e.g. n_features=123, "
                     "hash_bits=20 (docs/data.md).")(f)
    f = click.option("--preset", default=None,
                     help="csv/parquet: a ready-made schema (adult, airline, ...).")(f)
    f = click.option("--split", default="test", show_default=True,
                     help="Of a sites directory: which split to score.")(f)
    f = click.option("--format", "fmt", type=click.Choice(_FORMATS), default=None,
                     help="DATA is a raw file in this format (default: a geodml dataset "
                     "directory or a sites directory).")(f)
    f = click.argument("data", type=click.Path(exists=True))(f)
    f = click.argument("model", type=click.Path(exists=True, dir_okay=False))(f)
    return f


def _load(model: str, data: str, fmt: str | None, split: str, preset: str | None,
          reader_options: tuple[str, ...], id_column: str | None = None):
    from geodml.model import LinearModel
    from geodml.scoring import load_rows

    options = parse_key_values(reader_options, "--option")
    if preset is not None:
        options["preset"] = preset
    return LinearModel.load(model), load_rows(data, fmt, split, id_column, **options)


@click.command()
@_data_options
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the scores: a .parquet or .csv file.")
@click.option("--id-column", default=None,
              help="--format parquet: a column copied beside each row's scores.")
def predict(model: str, data: str, fmt: str | None, split: str, preset: str | None,
            reader_options: tuple[str, ...], out: str, id_column: str | None) -> None:
    """Score every row of DATA with MODEL: margin z = x.w and, for a logistic model,
    probability sigmoid(z); rows keep their number (and site, and --id-column).

    \b
    Examples:
      geodml predict model.npz data/eu-west --out scores.parquet
      geodml predict model.npz sites --split test --out scores.csv
      geodml predict model.npz day.parquet --format parquet --preset taxi \\
          --id-column trip_id --out scores.parquet
    """
    from geodml.scoring import scores, write_table

    trained, rows = _load(model, data, fmt, split, preset, reader_options, id_column)
    path = write_table(out, scores(trained, rows))
    click.echo(f"scored {rows.data.n_rows:,} rows of {rows.source}: {path}")


@click.command()
@_data_options
@click.option("--bins", type=click.IntRange(min=1), default=10, show_default=True,
              help="Bins of the calibration table.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None,
              help="Also write the metrics and the calibration table here as JSON.")
def evaluate(model: str, data: str, fmt: str | None, split: str, preset: str | None,
             reader_options: tuple[str, ...], bins: int, json_out: str | None) -> None:
    """Evaluate MODEL on the labeled rows of DATA: log loss, ROC AUC, accuracy and a
    calibration table (RMSE for a squared-loss model).

    \b
    Examples:
      geodml evaluate model.npz data/eu-west-test
      geodml evaluate model.npz sites --json metrics.json
    """
    from rich.console import Console
    from rich.table import Table

    from geodml.scoring import evaluate as run

    trained, rows = _load(model, data, fmt, split, preset, reader_options)
    result = run(trained, rows, bins)
    console = Console()
    summary = Table(title=f"{model} on {result['source']} ({result['rows']:,} rows)")
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    for key in ("log_loss", "auc", "accuracy", "expected_calibration_error", "rmse"):
        if key in result:
            value = result[key]
            summary.add_row(key.replace("_", " "), "-" if value is None else f"{value:.5f}")
    console.print(summary)
    if "calibration" in result:
        table = Table(title="calibration: predicted probability against observed rate")
        for col in ("predicted in", "rows", "mean predicted", "observed"):
            table.add_column(col, justify="right")
        for b in result["calibration"]:
            table.add_row(f"[{b['low']:.2f}, {b['high']:.2f}{']' if b['high'] == 1 else ')'}",
                          f"{b['rows']:,}",
                          "-" if b["predicted"] is None else f"{b['predicted']:.4f}",
                          "-" if b["observed"] is None else f"{b['observed']:.4f}")
        console.print(table)
    if json_out is not None:
        Path(json_out).write_text(json.dumps(result, indent=2) + "\n")
