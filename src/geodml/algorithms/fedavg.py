"""FedAvg (McMahan et al. 2017) / local SGD: Flower's default strategy, as the FL peer.

Round ``t`` sends the global ``w_t`` to every site; site ``k`` runs ``E`` epochs of
minibatch SGD on its own regularized objective
``F_k(v) = (1/n_k) L_k(v) + (lambda/2)||v||^2`` from ``w_t`` (the ``local_sgd``
procedure) with the decaying step

    eta = eta0 / (1 + decay * tau),   tau = epochs since the start (t E + local progress),

and the coordinator averages: ``w_{t+1} = sum_k (n_k / N) v_k`` (each site sends
``v_k - shrink_k w_t``, exact under support restriction; see
:mod:`geodml.site.local_sgd`).

Step-size tuning (counted honestly): unless ``eta0`` is given, the first round is
run once per candidate in ``eta0_grid``, every candidate from ``w0``, and each
candidate's average costs one extra Evaluate round to learn its ``F``; the
candidate with the lowest ``F`` is kept as ``w_1`` and its ``eta0`` for the rest
of the run. With ``C`` candidates that is ``2C`` rounds for the first iteration;
the record's row 1 carries all of them. Later rounds need no Evaluate: each site
reports ``L_k(w_t)`` of the point it received, so ``F(w_t)`` is known one round
later (the row for ``w_t`` is recorded then, with that round's bytes), and only
the last iterate costs a final Evaluate round.

What it converges to: not ``w*`` at any fixed step. With a constant step the
local updates drift towards the sites' own optima and the average stalls in a
neighbourhood of ``w*`` whose size grows with the step, the number of local
steps and the sites' heterogeneity (non-IID data); with the ``1/t`` decay it
converges, but only sublinearly (``O(1/t)`` in ``F``, Li et al. 2020), so within a
round budget it typically ends at a visible suboptimality, which the record
reports as it is. On iid data the drift is small and it behaves like SGD over
all rows.

Params: ``epochs`` (1), ``batch_size`` (64), ``decay`` (2), ``eta0`` (tuned when
absent), ``eta0_grid`` (0.25, 1, 4, 16), ``seed`` (0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geodml.algorithms.baseline import (
    evaluate_objective,
    initial_point,
    objective_from_info,
    weighted_average,
)
from geodml.algorithms.record import RunRecorder, RunResult
from geodml.federation import Federation
from geodml.job.procedure_params import LOCAL_SGD, check_sent
from geodml.params import Param, Schema

if TYPE_CHECKING:
    from geodml.algorithms.spec import TrainSpec

DEFAULT_GRID = (0.25, 1.0, 4.0, 16.0)
SEED_STRIDE = 1_000_003  # round t's sites draw from seed * SEED_STRIDE + t
_ETA0 = LOCAL_SGD["eta0"]

#: epochs, batch_size, decay and eta0 go to every site's local_sgd as they are (the
#: procedure's own declarations, under FedAvg's defaults); every eta0_grid candidate
#: is sent as eta0, so it has eta0's bounds
FEDAVG_PARAMS = Schema(
    epochs=LOCAL_SGD["epochs"],
    batch_size=LOCAL_SGD["batch_size"].with_default(64),
    decay=LOCAL_SGD["decay"].with_default(2.0),
    eta0=_ETA0.with_default(None, "initial step size (unset: the best of eta0_grid)"),
    eta0_grid=Param(DEFAULT_GRID, "floats", _ETA0.lo, _ETA0.hi,
                    "eta0 candidates of the first round when eta0 is unset"),
    seed=Param(0, "int", 0, 1 << 40, f"minibatch order (round t: seed * {SEED_STRIDE} + t)"),
)


@dataclass(frozen=True)
class FedAvgOptions:
    """One run's settings, read from ``--param`` by :data:`FEDAVG_PARAMS`."""

    epochs: int
    batch_size: int
    decay: float
    eta0: float | None
    eta0_grid: tuple[float, ...]
    seed: int

    @classmethod
    def from_params(cls, params: dict) -> FedAvgOptions:
        return cls(**FEDAVG_PARAMS.read("fedavg", params))


class _Run:
    """The FedAvg loop's state: the federation, the record and the stop rule."""

    def __init__(self, fed: Federation, spec: TrainSpec, recorder: RunRecorder,
                 opt: FedAvgOptions):
        self.fed, self.spec, self.recorder, self.opt = fed, spec, recorder, opt
        self.lam = spec.lam_for(fed)
        self.rule = spec.stop_rule(gtol=False)
        self.tuning: dict[str, float] = {}  # eta0 candidate -> F of its first-round average

    def sgd_round(self, w: np.ndarray, eta0: float, t: int) -> tuple[np.ndarray, float, bool]:
        """One round from ``w_t``: returns the average, ``F(w_t)`` and whether a site diverged."""
        o = self.opt
        params = {"epochs": o.epochs, "batch_size": o.batch_size, "eta0": eta0,
                  "decay": o.decay, "t0": float(t * o.epochs), "seed": o.seed * SEED_STRIDE + t}
        results = self.fed.local_solve("local_sgd", check_sent("local_sgd", params), [w])
        f_w = objective_from_info(results, self.fed.n_rows, self.lam, w)
        diverged = any(info.get("diverged") for _, info, _ in results)
        # site k returned d_k = v_k - shrink_k w (0 off its support): add the shrunk w back
        shrink = sum(rows * info["shrink"] for _, info, rows in results) / self.fed.n_rows
        return weighted_average(results) + shrink * w, f_w, diverged

    def record(self, t: int, f: float, w: np.ndarray) -> str | None:
        return self.rule.check(self.recorder.add(t, f, w))

    def result(self, w: np.ndarray, f: float, reason: str, eta0: float | None) -> RunResult:
        o = self.opt
        return RunResult(
            "fedavg", w, f, self.rule.converged(reason), reason, self.recorder.rows,
            self.fed.meter.snapshot(),
            {"lam": self.lam, "loss": self.spec.loss, "eta0": eta0, "decay": o.decay,
             "epochs": o.epochs, "batch_size": o.batch_size, "tuning": dict(self.tuning)})


def train_fedavg(fed: Federation, spec: TrainSpec, recorder: RunRecorder) -> RunResult:
    """Run FedAvg with the tuned decaying step (see the module docstring)."""
    if spec.max_rounds < 1:
        raise ValueError(f"max_rounds must be >= 1 for fedavg, got {spec.max_rounds}")
    opt = FedAvgOptions.from_params(spec.params)
    run = _Run(fed, spec, recorder, opt)
    fed.prepare(spec.loss, run.lam)
    w0 = initial_point(fed, spec)

    # round 1, once per step-size candidate, all from w0
    candidates = (opt.eta0,) if opt.eta0 is not None else opt.eta0_grid
    best: tuple[float, np.ndarray, float | None] | None = None
    for i, eta0 in enumerate(candidates):
        v, f0, diverged = run.sgd_round(w0, eta0, 0)
        if i == 0 and (reason := run.record(0, f0, w0)):
            return run.result(w0, f0, reason, None)
        if len(candidates) == 1:
            if diverged:
                return run.result(w0, f0, "diverged: local SGD produced non-finite values", eta0)
            best = (eta0, v, None)
            break
        f_v = math.inf if diverged else evaluate_objective(fed, run.lam, v)
        run.tuning[repr(eta0)] = f_v
        if f_v < math.inf and (best is None or f_v < best[2]):
            best = (eta0, v, f_v)
    if best is None:
        return run.result(w0, f0, "diverged: every eta0 candidate diverged", None)
    eta0, w, f_w = best
    if f_w is not None and (reason := run.record(1, f_w, w)):
        return run.result(w, f_w, reason, eta0)

    t = 1
    while t < spec.max_rounds:
        v, f_prev, diverged = run.sgd_round(w, eta0, t)
        if f_w is None:
            f_w = f_prev
            if reason := run.record(t, f_w, w):
                return run.result(w, f_w, reason, eta0)
        if diverged:
            return run.result(w, f_w, "diverged: local SGD produced non-finite values", eta0)
        w, f_w, t = v, None, t + 1
    reason = None
    if f_w is None:
        f_w = evaluate_objective(fed, run.lam, w)
        reason = run.record(t, f_w, w)
    return run.result(w, f_w, reason or f"max_rounds ({spec.max_rounds}) reached", eta0)
