"""Which per-feature metric helps where: centralized L-BFGS iterations to a tolerance.

Usage:
    python bench/bench_metric.py [--datasets a9a,w8a,covtype,ipinyou,ctr12,ctr20]
        [--ctr-rows 50000] [--work bench-work]

For every dataset (all rows pooled; ``ctr12`` / ``ctr20``: the regional CTR generator,
2 regions, 2^12 / 2^20 hashed features, ``--ctr-rows`` rows each), the reference
optimum F* is TRON's to gtol 1e-10 and L-BFGS runs (lambda = 1/N, logistic) in the
variables ``v = M^(1/2) w`` for the metrics ``M``:

- ``identity``;
- ``zero``: the Hessian diagonal at ``w = 0`` (every row's ``l''`` is 1/4);
- ``base``: at the best constant model (``l'' = ybar (1 - ybar)``; the default);
- ``optimum``: at ``w*`` (an oracle: what a later refresh could at best reach);
- ``sqrt-zero``: ``D^(1/2)`` of ``zero`` (half way to the identity).

It prints the iterations to 1e-3 and 1e-6 relative suboptimality (the centralized
analogue of SQM L-BFGS's vector rounds) and the share of positives.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from rich.console import Console
from rich.table import Table

from _regional import regional_data
from bench_algorithms import source
from geodml.data.source import read_all
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions, tron
from geodml.optim.preconditioner import DIAG, solve

TOLERANCES = (1e-3, 1e-6)
METRICS = ("identity", "zero", "base", "optimum", "sqrt-zero")


def pooled(name: str, ctr_rows: int, work: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    if name in ("ctr12", "ctr20"):
        bits = 12 if name == "ctr12" else 20
        train, _test, _ = regional_data(work / "data", ["us-east", "eu-west"], ctr_rows, bits,
                                        1000)
        parts = list(train.values())
        return (sp.vstack([p.X for p in parts]).tocsr().astype(np.float64),
                np.concatenate([p.y for p in parts]))
    data, _ = read_all(source(name))
    return data.X.astype(np.float64), data.y


def iterations(objective, metric, f_star: float) -> list[str]:
    """Iterations to each tolerance in ``metric`` (None: the identity)."""
    hit: dict[float, int] = {}

    def callback(record, _w) -> bool:
        gap = (record.f - f_star) / abs(f_star)
        for tol in TOLERANCES:
            if gap <= tol:
                hit.setdefault(tol, record.iteration)
        return gap <= TOLERANCES[-1]

    solve(objective, "lbfgs", metric, None, LbfgsOptions(gtol=0.0, max_iter=3000), callback)
    return [str(hit.get(tol, "-")) for tol in TOLERANCES]


def metrics(objective, X: sp.csr_matrix, y: np.ndarray, lam: float,
            w_star: np.ndarray) -> dict[str, np.ndarray | None]:
    n = X.shape[0]
    squares = np.asarray(X.power(2).sum(axis=0)).ravel()
    zero = DIAG.metric(0.25 * squares, n, lam)
    base = DIAG.metric(get_loss("logistic").constant_curvature(float(y.mean())) * squares,
                       n, lam)
    objective.value(w_star)
    optimum = DIAG.metric(objective.hess_diag_sum(), n, lam)
    return {"identity": None, "zero": zero, "base": base, "optimum": optimum,
            "sqrt-zero": np.sqrt(zero)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="a9a,w8a,covtype,ipinyou,ctr12,ctr20")
    ap.add_argument("--ctr-rows", type=int, default=50_000)
    ap.add_argument("--work", type=Path, default=Path("bench-work"))
    args = ap.parse_args()
    table = Table("data", "N", "positives", *METRICS,
                  title="centralized L-BFGS iterations to 1e-3 / 1e-6 by metric")
    for name in args.datasets.split(","):
        X, y = pooled(name, args.ctr_rows, args.work)
        lam = 1.0 / X.shape[0]
        objective = RegularizedObjective([SiteSums(X, y, get_loss("logistic"))], lam,
                                         X.shape[1])
        reference = tron(objective, gtol=1e-10, max_iter=2000)
        cells = [" / ".join(iterations(objective, m, reference.f))
                 for m in metrics(objective, X, y, lam, reference.w).values()]
        table.add_row(name, f"{X.shape[0]:,}", f"{y.mean():.1%}", *cells)
    Console().print(table)


if __name__ == "__main__":
    main()
