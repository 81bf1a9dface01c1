"""Use a trained model where the data lives: per-row scores and an evaluation.

``geodml predict`` and ``geodml evaluate`` (``geodml.cli.score_cmds``) run in the DC
that holds the rows; nothing crosses a DC boundary. The rows come from a geodml
dataset directory, a sites directory (``geodml generate`` / ``partition``: every
site's split, each row tagged with its site), or a raw file read with a format
(``--format libsvm|criteo|csv|parquet``, the options of ``geodml convert``). The
data's feature space must be the model's (:meth:`LinearModel.check_space`).

Scores, per row: ``row`` (its position in the input, per site for a sites
directory), ``site``, an optional id column, ``label``, ``margin`` ``z = x.w`` and,
for a logistic model, ``probability = sigmoid(z)``.

Evaluation of a classifier: log loss ``(1/n) sum log(1 + exp(-s z))``, accuracy,
ROC AUC and a calibration table: the rows binned by predicted probability into
``B`` equal-width bins; per bin the count, the mean predicted probability and the
observed positive rate; the expected calibration error is
``ECE = sum_b (n_b / n) |observed_b - predicted_b|``. A squared-loss model gets
the RMSE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.special import expit

from geodml import metrics
from geodml.data.dataset import Dataset
from geodml.errors import ConfigError, DataError
from geodml.model import LinearModel


@dataclass
class ScoringData:
    """Rows to score, and what identifies each: ``columns`` (e.g. ``row``, ``site``,
    an id) aligned with the dataset's rows."""

    data: Dataset
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""


def load_rows(path: str | Path, fmt: str | None = None, split: str = "test",
              id_column: str | None = None, **options) -> ScoringData:
    """The rows at ``path`` (see the module doc); ``split``: which split of a sites
    directory; ``id_column``: a Parquet column kept beside the scores."""
    from geodml.data.partition import MANIFEST_NAME, site_dirs
    from geodml.data.store import load_dataset

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"DATA: {path} does not exist")
    if id_column is not None and fmt != "parquet":
        raise ConfigError("--id-column: only with --format parquet (other inputs are "
                          "identified by their row number, the 'row' column)")
    if fmt is not None:
        from geodml.data.readers import read_dataset

        data = read_dataset(path, fmt, **options)
        columns = {"row": np.arange(data.n_rows, dtype=np.int64)}
        if id_column is not None:
            columns[id_column] = _parquet_column(path, id_column, data.n_rows)
        return ScoringData(data, columns, str(path))
    if options:
        raise ConfigError(f"reader options {sorted(options)} need --format")
    if (path / MANIFEST_NAME).is_file():
        parts, rows, sites = [], [], []
        for name, site_path in site_dirs(path, split).items():
            part = load_dataset(site_path)
            parts.append(part)
            rows.append(np.arange(part.n_rows, dtype=np.int64))
            sites.append(np.full(part.n_rows, name, dtype=object))
        return ScoringData(Dataset.concat(parts),
                           {"row": np.concatenate(rows), "site": np.concatenate(sites)},
                           f"{path} ({split} split of {len(parts)} sites)")
    data = load_dataset(path)
    return ScoringData(data, {"row": np.arange(data.n_rows, dtype=np.int64)}, str(path))


def _parquet_column(path: Path, column: str, n_rows: int) -> np.ndarray:
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    if column not in names:
        raise ConfigError(f"--id-column: {path} has no column {column!r}; it has "
                          f"{', '.join(names)}")
    values = pq.read_table(path, columns=[column]).column(column).to_numpy(
        zero_copy_only=False)
    if len(values) != n_rows:
        raise DataError(f"--id-column: {path} has {len(values)} values of {column!r} "
                        f"but {n_rows} rows were read")
    return values


def scores(model: LinearModel, rows: ScoringData) -> dict[str, np.ndarray]:
    """The per-row columns of ``geodml predict`` (see the module doc)."""
    z = model.decision_function(rows.data)
    out = dict(rows.columns)
    out["label"] = np.asarray(rows.data.y, dtype=np.float64)
    out["margin"] = z
    if model.loss == "logistic":
        out["probability"] = expit(z)
    return out


def write_table(path: str | Path, columns: dict[str, np.ndarray]) -> Path:
    """Write columns as Parquet (``.parquet``) or CSV (``.csv``), atomically."""
    import os

    import pyarrow as pa

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise ConfigError(f"--out: {path}: give a .parquet or .csv file name")
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.write_table(table, tmp)
        else:
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@dataclass(frozen=True)
class CalibrationBin:
    low: float
    high: float
    rows: int
    predicted: float  # mean predicted probability (NaN if empty)
    observed: float  # positive rate (NaN if empty)


def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[CalibrationBin]:
    """``bins`` equal-width bins of ``p`` over [0, 1] (the last closed)."""
    if bins < 1:
        raise ConfigError(f"--bins: must be at least 1, got {bins}")
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins)
    sum_p = np.bincount(index, weights=p, minlength=bins)
    sum_y = np.bincount(index, weights=(y > 0.5).astype(np.float64), minlength=bins)
    out = []
    for b in range(bins):
        n = int(count[b])
        out.append(CalibrationBin(b / bins, (b + 1) / bins, n,
                                  sum_p[b] / n if n else float("nan"),
                                  sum_y[b] / n if n else float("nan")))
    return out


def expected_calibration_error(table: list[CalibrationBin]) -> float:
    """``sum_b (n_b / n) |observed_b - predicted_b|`` over non-empty bins."""
    n = sum(b.rows for b in table)
    return float(sum(b.rows / n * abs(b.observed - b.predicted) for b in table if b.rows))


def evaluate(model: LinearModel, rows: ScoringData, bins: int = 10) -> dict:
    """The metrics of ``geodml evaluate`` (see the module doc) as a JSON-able dict."""
    data = rows.data
    if data.n_rows == 0:
        raise DataError(f"{rows.source}: no rows to evaluate")
    z = model.decision_function(data)
    out: dict = {"rows": data.n_rows, "loss": model.loss, "source": rows.source}
    if not model.binary:
        out["rmse"] = float(np.sqrt(np.mean((z - data.y) ** 2)))
        return out
    out["positives"] = data.positives
    out["accuracy"] = metrics.accuracy(data.y, z)
    auc = metrics.roc_auc(data.y, z)
    out["auc"] = None if np.isnan(auc) else auc
    if model.loss == "logistic":
        table = calibration(data.y, expit(z), bins)
        out["log_loss"] = metrics.log_loss(data.y, z)
        out["expected_calibration_error"] = expected_calibration_error(table)
        out["calibration"] = [
            {"low": b.low, "high": b.high, "rows": b.rows,
             "predicted": None if not b.rows else b.predicted,
             "observed": None if not b.rows else b.observed} for b in table]
    return out
