"""Centralized L-BFGS against scikit-learn's lbfgs, and value+gradient throughput.

Usage: python bench/bench_centralized.py [--datasets a9a,w8a,ipinyou] [--repeat 3]

For each dataset (lambda = 1/N, logistic, no intercept) it times, in this process,
scikit-learn ``LogisticRegression(C=1, fit_intercept=False, tol=1e-10,
max_iter=10000)`` and geodml's ``train_centralized`` (default tolerance), and
prints the wall-time ratio (geodml / sklearn, best of ``--repeat``) and the
relative objective gap. Then it measures value+gradient throughput in nonzeros
per second (each evaluation reads every nonzero twice: ``X w`` and ``X^T r``)
against a single-threaded scipy ``X @ w`` + ``X.T @ g`` on the same matrix.
Needs ``pip install -e '.[test]'`` (scikit-learn) and ../shared/datasets.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table
from sklearn.linear_model import LogisticRegression

from geodml.centralized import train_centralized
from geodml.data import Dataset
from geodml.data.readers import read_dataset
from geodml.models import RegularizedObjective, SiteSums, get_loss

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = {
    "a9a": ("libsvm/a9a", 123),
    "w8a": ("libsvm/w8a", 300),
    "ipinyou": ("ipinyou_deepctr/train.fm.txt", 133465),
}


def load(name: str) -> Dataset:
    rel, d = DATASETS[name]
    return read_dataset(SHARED / rel, "libsvm", n_features=d, dtype=np.float64)


def best_time(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def objective(data: Dataset, lam: float, w: np.ndarray) -> float:
    sums = SiteSums(data.X, data.y, get_loss("logistic"))
    return RegularizedObjective([sums], lam, data.n_features).value(w)


def solver_row(name: str, data: Dataset, repeat: int) -> list[str]:
    lam = 1.0 / data.n_rows
    sk = LogisticRegression(C=1.0, fit_intercept=False, tol=1e-10, max_iter=10000)
    t_sk, fitted = best_time(lambda: sk.fit(data.X, data.y), repeat)
    t_ours, (model, result) = best_time(lambda: train_centralized(data, "logistic", lam), repeat)
    f_sk, f_ours = objective(data, lam, fitted.coef_.ravel()), objective(data, lam, model.w)
    return [name, f"{data.n_rows:,}", f"{data.n_features:,}", f"{data.nnz:,}",
            f"{t_sk:.3f}", str(int(fitted.n_iter_[0])), f"{t_ours:.3f}", str(result.iterations),
            f"{t_ours / t_sk:.2f}", f"{(f_ours - f_sk) / abs(f_sk):+.1e}"]


def throughput_row(name: str, X: sp.csr_matrix, y: np.ndarray, repeat: int) -> list[str]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(X.shape[1]) * 0.01
    g = rng.standard_normal(X.shape[0])
    XT = X.T
    t_base, _ = best_time(lambda: (X @ w, XT @ g), repeat * 3)
    sums = SiteSums(X, y, get_loss("logistic"))
    t_ours, _ = best_time(lambda: sums.evaluate(w), repeat * 3)
    sums.close()
    nnz2 = 2 * X.nnz
    return [name, f"{X.nnz:,}", f"{nnz2 / t_base / 1e6:.0f}", f"{nnz2 / t_ours / 1e6:.0f}",
            f"{t_base / t_ours:.2f}"]


def synthetic_matrix(rows: int, d: int, per_row: int) -> tuple[sp.csr_matrix, np.ndarray]:
    rng = np.random.default_rng(1)
    indices = rng.integers(0, d, rows * per_row).astype(np.int32)
    indptr = np.arange(0, rows * per_row + 1, per_row, dtype=np.int64)
    X = sp.csr_matrix((np.ones(rows * per_row), indices, indptr), shape=(rows, d))
    return X, (rng.random(rows) < 0.2).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="a9a,w8a,ipinyou")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    console = Console(width=160)
    solver = Table(title="centralized L-BFGS vs scikit-learn lbfgs (lambda = 1/N, best of "
                   f"{args.repeat})")
    for col in ("data", "rows", "features", "nnz", "sklearn s", "sklearn it", "geodml s",
                "geodml it", "time ratio", "rel. objective gap"):
        solver.add_column(col, justify="right")
    tput = Table(title="value+gradient throughput, Mnnz/s (2 x nnz per evaluation)")
    for col in ("data", "nnz", "scipy 1-thread X@w + X.T@g", "geodml evaluate", "ratio"):
        tput.add_column(col, justify="right")
    for name in args.datasets.split(","):
        data = load(name)
        solver.add_row(*solver_row(name, data, args.repeat))
        tput.add_row(*throughput_row(name, data.X, data.y, args.repeat))
    X, y = synthetic_matrix(2_000_000, 1 << 18, 20)
    tput.add_row(*throughput_row("synthetic 2M x 2^18, 20/row", X, y, args.repeat))
    console.print(solver)
    console.print(tput)


if __name__ == "__main__":
    main()
