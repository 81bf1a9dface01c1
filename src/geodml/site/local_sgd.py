"""``local_sgd``: minibatch SGD on a site's own regularized objective (FedAvg's client step).

From the input ``w`` the site runs ``epochs`` passes of minibatch SGD on

    F_k(v) = (1/n_k) L_k(v) + (lambda/2) ||v||^2,

each step on a minibatch ``B`` of its rows:

    v <- (1 - eta_t lambda) v - (eta_t / |B|) X_B^T l'(y_B, X_B v),
    eta_t = eta0 / (1 + decay * t),

where ``t`` counts epochs (fractionally: ``t = t0 + steps / steps_per_epoch``), so
that sites of different sizes follow the same schedule and the coordinator can
continue it across rounds by passing ``t0``. Each step is a CSR row slice and two
sparse products (``X_B v`` and ``X_B^T d``) — no per-row Python work.

Rows are drawn without replacement within an epoch: each shard of the site's
executor is permuted and cut into minibatches, and the minibatches of all shards
are visited in a random order (with one shard: plain shuffled minibatch SGD).

On a coordinate no row of the site touches, only the regularizer acts, so there
``v = shrink * w`` with ``shrink = prod_t (1 - eta_t lambda)``. The site therefore
returns ``d = v - shrink * w``, which is exactly 0 on those coordinates — a
support-restricted reply (zeros off the support) loses nothing — and the
coordinator takes ``v = d + shrink * w``.

Params (:data:`geodml.job.procedure_params.LOCAL_SGD`): ``epochs`` (>= 1),
``batch_size`` (>= 1), ``eta0`` (> 0), ``decay`` (>= 0), ``t0`` (>= 0), ``seed``.
Input: ``w``. Returns ``d`` and info with ``shrink``,
``loss_sum = L_k(w)`` at the *input* point (so the coordinator gets
``F(w) = (1/N) sum_k loss_sum_k + (lambda/2)||w||^2`` without another round),
``steps`` and ``diverged`` (the iterate became non-finite: ``v = w``, ``d = 0``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from geodml.job.procedure_params import LOCAL_SGD

if TYPE_CHECKING:
    from geodml.site.procedures import ProcedureContext


def _shard_rows(executor: object) -> list[tuple[sp.csr_matrix, np.ndarray]]:
    """The (rows, labels) of every shard of the site's executor."""
    shards = getattr(executor, "shards", None)
    if not shards:
        raise ValueError("local_sgd (FedAvg) needs the thread executor: its minibatches "
                         "visit the shards' rows in this process")
    return [(s.X, s.y) for s in shards]


def _minibatches(sizes: list[int], batch: int, rng: np.random.Generator
                 ) -> list[tuple[int, np.ndarray]]:
    """One epoch's minibatches ``(shard, sorted row indices)`` in a random order."""
    out = []
    for s, n in enumerate(sizes):
        perm = rng.permutation(n)
        out.extend((s, np.sort(perm[a : a + batch])) for a in range(0, n, batch))
    order = rng.permutation(len(out))
    return [out[i] for i in order]


def sgd_epochs(shards: list[tuple[sp.csr_matrix, np.ndarray]], loss, lam: float,
               w: np.ndarray, epochs: int, batch: int, eta0: float, decay: float, t0: float,
               rng: np.random.Generator) -> tuple[np.ndarray, float, int, bool]:
    """Run the SGD above from ``w``; returns ``(v, shrink, steps, diverged)``."""
    v = np.array(w, dtype=np.float64)
    sizes = [X.shape[0] for X, _ in shards]
    steps_per_epoch = sum(-(-n // batch) for n in sizes)
    step, shrink = 0, 1.0
    for _ in range(epochs):
        for s, idx in _minibatches(sizes, batch, rng):
            X, y = shards[s]
            Xb = X[idx]
            d = loss.deriv(y[idx], Xb @ v)
            eta = eta0 / (1.0 + decay * (t0 + step / steps_per_epoch))
            v *= 1.0 - eta * lam
            v -= (eta / len(idx)) * (Xb.T @ d)
            shrink *= 1.0 - eta * lam
            step += 1
        if not np.all(np.isfinite(v)):
            return np.array(w, dtype=np.float64), 1.0, step, True
    return v, shrink, step, False


def run_local_sgd(ctx: ProcedureContext, params: dict, inputs: list[np.ndarray]
                  ) -> tuple[np.ndarray, dict]:
    p = LOCAL_SGD.read("local_sgd", params)
    w = inputs[0]
    loss_sum = ctx.executor.evaluate(w, need_grad=False).loss
    rng = np.random.default_rng([p["seed"], ctx.n_rows])
    v, shrink, steps, diverged = sgd_epochs(_shard_rows(ctx.executor), ctx.loss, ctx.lam, w,
                                            p["epochs"], p["batch_size"], p["eta0"],
                                            p["decay"], p["t0"], rng)
    return v - shrink * w, {"shrink": shrink, "loss_sum": float(loss_sum), "steps": steps,
                            "diverged": diverged}
