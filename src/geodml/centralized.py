"""Centralized training: all rows in one place.

Minimizes ``F(w) = (1/N) sum_i l(y_i, x_i.w) + (lambda/2)||w||^2`` (no
intercept; add a constant feature for one) with L-BFGS (default) or TRON, by default
in the metric of the Hessian's diagonal (:mod:`geodml.optim.preconditioner`): the
baseline is as strong as the geo-distributed methods, never handicapped. The
default ``lambda = 1/N`` matches scikit-learn's
``LogisticRegression(C=1, fit_intercept=False)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from geodml.data.dataset import Dataset
from geodml.errors import DataError
from geodml.model import LinearModel
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions, SolveResult
from geodml.optim.lbfgs import IterationRecord
from geodml.optim.preconditioner import DIAG, Preconditioner, probe_on, solve

SOLVERS = ("lbfgs", "tron")


def check_trainable(data: Dataset, loss_name: str, name: str = "dataset") -> None:
    """Refuse data a loss cannot train on, naming the dataset and the problem."""
    loss = get_loss(loss_name)
    if data.n_rows == 0:
        raise DataError(f"{name}: no rows")
    if not np.all(np.isfinite(data.X.data)):
        bad = int(np.count_nonzero(~np.isfinite(data.X.data)))
        raise DataError(f"{name}: {bad} feature values are NaN or infinite")
    if not np.all(np.isfinite(data.y)):
        raise DataError(f"{name}: labels contain NaN or infinite values")
    if loss.binary:
        odd = np.setdiff1d(np.unique(data.y), [0.0, 1.0])
        if odd.size:
            raise DataError(
                f"{name}: loss {loss_name!r} needs labels 0/1, found {odd[:5].tolist()}"
            )


def train_centralized(
    data: Dataset,
    loss: str = "logistic",
    lam: float | None = None,
    options: LbfgsOptions | None = None,
    w0: np.ndarray | None = None,
    n_threads: int | None = None,
    callback: Callable[[IterationRecord, np.ndarray], None] | None = None,
    solver: str = "lbfgs",
    preconditioner: Preconditioner = DIAG,
    sources: Sequence[int] | None = None,
) -> tuple[LinearModel, SolveResult]:
    """Train on one dataset with ``solver`` (lbfgs | tron) in the metric of
    ``preconditioner`` (default: the Hessian's diagonal at the best constant model);
    returns model and record. Gradient norms and ``gtol`` are in that metric's dual norm.

    ``sources``: the row counts of the datasets ``data`` concatenates, in order (the
    DCs of a copy). Each source's rows then take the curvature of its own base rate,
    ``l''`` at ``ybar_k``, as the sites do in the federated methods, instead of the pooled
    base rate's: the metric the geo methods solve in, and a stronger baseline where base
    rates differ by DC (regional CTR data, 2^20 x 2 x 100k rows: 21 iterations against 31
    at the pooled rate)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; known: {', '.join(SOLVERS)}")
    check_trainable(data, loss)
    lam = 1.0 / data.n_rows if lam is None else float(lam)
    sums = SiteSums(data.X, data.y, get_loss(loss), n_threads=n_threads)
    try:
        objective = RegularizedObjective([sums], lam, data.n_features)
        if preconditioner.kind == "auto":
            preconditioner = _probe_first_source(data, get_loss(loss), lam, sources,
                                                 preconditioner, n_threads)
        metric = None
        if preconditioner.active:  # D at the best constant model, as the sites take it
            curvature = _base_rate_curvature(data.y, get_loss(loss), sources)
            metric = preconditioner.metric(objective.source.hess_diag(curvature),
                                           data.n_rows, lam)
        result = solve(objective, solver, metric, w0, options, callback,
                       preconditioner.stop)
    finally:
        sums.close()
    info = {
        "method": f"centralized-{solver}",
        "rows": data.n_rows,
        "objective": result.f,
        "grad_norm": result.grad_norm,
        "iterations": result.iterations,
        "converged": result.converged,
        "reason": result.reason,
        "preconditioner": preconditioner.describe(),
    }
    return LinearModel(result.w, loss, lam, data.space, info), result


def _probe_first_source(data: Dataset, loss, lam: float, sources: Sequence[int] | None,
                        preconditioner: Preconditioner, n_threads: int | None
                        ) -> Preconditioner:
    """``auto`` settled as the federated methods settle it: by the probe on the first
    source's rows (the home DC's, whose probe the geo run makes), else on all rows."""
    n = sources[0] if sources else data.n_rows
    X, y = data.X[:n], data.y[:n]
    sums = SiteSums(X, y, loss, n_threads=n_threads)
    try:
        objective = RegularizedObjective([sums], lam, data.n_features)
        # unmixed, as the site's local_minimize takes it: the same choice as the geo run's
        metric = DIAG.metric(sums.hess_diag(_base_rate_curvature(y, loss, None)), n, lam)
        probe = probe_on(objective, metric)
    finally:
        sums.close()
    where = "the first source's rows" if sources and len(sources) > 1 else "all rows"
    return preconditioner.resolved(probe.kind, probe.describe(where))


def _base_rate_curvature(y: np.ndarray, loss, sources: Sequence[int] | None
                         ) -> float | np.ndarray:
    """Every row's ``l''`` at the best constant model of its source's labels (one number
    for all rows when there is one source)."""
    if not sources or len(sources) == 1:
        return loss.constant_curvature(float(y.mean()))
    if sum(sources) != len(y) or min(sources) < 0:
        raise ValueError(f"sources {list(sources)} do not add up to the {len(y)} rows")
    bounds = np.cumsum([0, *sources])
    rates = [loss.constant_curvature(float(y[a:b].mean())) if b > a else 0.0
             for a, b in itertools.pairwise(bounds)]
    return np.repeat(rates, sources)
