"""Named local procedures a site runs on its own rows for ``LocalSolve``.

A procedure gets the session's executor (the site's sums), the loss, lambda and
its input vectors, and returns one vector plus a JSON-able info dict. Only the
vector and the info leave the DC. Every procedure reads its parameters with its
:class:`~geodml.params.Schema` in :mod:`geodml.job.procedure_params` (the one the
coordinator checks what it sends with): an unknown name, a wrong kind or a value out
of bounds is a ``ParamError`` (a ``ValueError``), which the service answers as
INVALID_ARGUMENT naming the site and the procedure.

``local_minimize`` (inputs: ``w0``; params: ``max_iter``, ``gtol``, ``precondition``)
returns the minimizer of the site's own regularized objective

    F_k(v) = (1/n_k) L_k(v) + (lambda/2) ||v||^2,

started from ``w0`` — the building block of one-shot parameter averaging — its
L-BFGS iterations, and the median seconds of an iteration at the site (from the second
on: the first may search its line longer; None under two iterations); with
``precondition = "diag"`` in the centralized solver's metric
(:func:`geodml.centralized.train_centralized`), which is how the planner learns that
solver's iterations and their cost from the home DC's rows without moving them.

``warm_start`` (no inputs; params ``max_iter``, ``gtol``) solves the site's own
problem and returns four blocks for the curvature-weighted warm start
(:mod:`geodml.site.local_warm`).

``hess_diag`` (no inputs; param ``at``) returns the per-row mean of the loss's
Hessian diagonal at the session's current point (zero when it has none),

    h_k = (1/n_k) sum_{i in DC k} l''(z_i) x_ij^2,

or, with ``at = "constant"``, at the best constant model of the site's labels, every
row's ``l''`` being ``c_k = l''(c*)`` with ``c* = argmin_c sum_i l(y_i, c)`` (logistic:
``c_k = ybar_k (1 - ybar_k)``, the site's base rate ``ybar_k``):

    h_k = (c_k / n_k) sum_{i in DC k} x_ij^2,

from which the coordinator builds the per-feature preconditioner
``D = sum_k n_k h_k / N + lambda`` (:mod:`geodml.optim.preconditioner`). A mean, not a
sum, so that it fits a compressed wire format (float16 tops out at 65504).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from geodml.job.procedure_params import HESS_DIAG, LOCAL_MINIMIZE
from geodml.models.losses import Loss
from geodml.models.objective import RegularizedObjective
from geodml.optim.lbfgs import LbfgsOptions, default_memory, two_loop_seconds
from geodml.optim.preconditioner import Preconditioner, solve
from geodml.site.local_admm import run_admm_local
from geodml.site.local_dane import run_dane_local
from geodml.site.local_fadl import fadl_local_slots, run_fadl_local
from geodml.site.local_sgd import run_local_sgd
from geodml.site.local_warm import WARM_START_OUTPUTS, run_warm_start
from geodml.wire.codec import WireFormat
from geodml.wire.dtypes import metric_format


@dataclass
class ProcedureContext:
    executor: object  # a scratch SumsProvider over the site's rows (maybe support-restricted)
    loss: Loss
    lam: float
    n_rows: int
    point: np.ndarray | None = None  # the session's current point, if it has one
    touched: np.ndarray | None = None  # bool mask of features the rows touch (None: all or
    # not to be revealed)
    state: dict = field(default_factory=dict)  # the session's, kept between calls

    @property
    def dim(self) -> int:
        return int(self.executor.n_features)


@dataclass(frozen=True)
class Procedure:
    name: str
    input_slots: int | Callable[[dict], int]  # fixed, or from the call's parameters
    run: Callable[[ProcedureContext, dict, list[np.ndarray]], tuple[np.ndarray, dict]]
    # how the output may travel when the job compresses: "exact" (the job's wire
    # format), "cast" (the up-compression's float type if it is a float cast, else
    # bfloat16 (metric_format): for statistics such as a metric, which a fixed-scale
    # quantizer would flatten and which need three significant digits, not sixteen),
    # "direction" (for directions the coordinator uses as received, such as FADL's
    # local directions: as the coordinator's own directions travel, in the down
    # compression's format; without one, in the up compression's)
    up_format: str = "exact"

    def reply_format(self, exact: WireFormat, up: WireFormat | None,
                     directions: WireFormat | None = None) -> WireFormat:
        """The format of this procedure's reply, given the job's formats: ``exact``, the
        up compression's and the down compression's (None: not compressed)."""
        if self.up_format == "direction" and (directions or up) is not None:
            return directions or up
        if up is None or self.up_format != "cast":
            return exact
        return up if up.dtype in FLOAT_CASTS else metric_format(exact)
    outputs: int = 1  # the reply is this many model-sized blocks, one after the other

    def slots(self, params: dict) -> int:
        """How many input vectors a call with ``params`` carries."""
        return self.input_slots if isinstance(self.input_slots, int) else self.input_slots(
            params)


def _local_minimize(ctx: ProcedureContext, params: dict, inputs: list[np.ndarray]):
    p = LOCAL_MINIMIZE.read("local_minimize", params)
    options = LbfgsOptions(max_iter=p["max_iter"], gtol=p["gtol"])
    objective = RegularizedObjective([ctx.executor], ctx.lam, ctx.dim)
    metric = None
    if p["precondition"] == "diag":
        n = max(1, ctx.n_rows)
        curvature = ctx.loss.constant_curvature(ctx.executor.label_sum() / n)
        metric = Preconditioner().metric(ctx.executor.hess_diag(curvature), n, ctx.lam)
    times: list[float] = []  # at the start point and after every iteration
    result = solve(objective, "lbfgs", metric, inputs[0], options,
                   lambda _rec, _w: times.append(time.perf_counter()))
    # an iteration's seconds from the second on (the first may search its line longer),
    # the median: on a machine whose page faults are slow one iteration can take 4x
    steady = float(np.median(np.diff(times[1:]))) if len(times) > 2 else None
    info = {"iterations": result.iterations, "objective": result.f,
            "converged": result.converged, "iteration_seconds": steady}
    if steady is not None and p["time_pairs"]:
        info |= _pair_timing(ctx.dim, len(times) - 2)
    return result.w, info


#: the two-loop recursion is timed over at most this many bytes of pairs (4 pairs at 2^20
#: features); its time is linear in the pairs, 2 products and 2 updates over ``d`` each
PAIR_TIMING_BYTES = 64 * 2**20


def _pair_timing(n_features: int, timed: int) -> dict:
    """What the solver's curvature pairs cost an iteration: ``pair_seconds``, the two-loop
    recursion's seconds per pair (timed here over ``p`` pairs within
    :data:`PAIR_TIMING_BYTES`, :func:`~geodml.optim.lbfgs.two_loop_seconds`), the
    solver's ``memory`` ``m``, and ``held_pairs``, the median pairs held by iterations
    ``2..timed+1`` (iteration ``k`` holds ``min(k - 1, m)``)."""
    memory = default_memory(n_features)
    pairs = max(1, min(memory, PAIR_TIMING_BYTES // (16 * max(1, n_features))))
    held = float(np.median([min(k - 1, memory) for k in range(2, timed + 2)]))
    return {"pair_seconds": two_loop_seconds(n_features, pairs) / pairs,
            "memory": memory, "held_pairs": held}


def _hess_diag(ctx: ProcedureContext, params: dict, inputs: list[np.ndarray]):
    n = max(1, ctx.n_rows)
    if HESS_DIAG.read("hess_diag", params)["at"] == "constant":
        curvature = ctx.loss.constant_curvature(ctx.executor.label_sum() / n)
        return ctx.executor.hess_diag(curvature) / n, {}
    point = np.zeros(ctx.dim) if ctx.point is None else ctx.point
    ctx.executor.evaluate(point, need_grad=False)
    return ctx.executor.hess_diag() / n, {}


FLOAT_CASTS = ("float32", "float16", "bfloat16")

PROCEDURES: dict[str, Procedure] = {
    p.name: p for p in (
        Procedure("local_minimize", 1, _local_minimize),
        Procedure("hess_diag", 0, _hess_diag, up_format="cast"),
        Procedure("warm_start", 0, run_warm_start, up_format="cast",
                  outputs=WARM_START_OUTPUTS),
        Procedure("local_sgd", 1, run_local_sgd),
        Procedure("admm_local", 1, run_admm_local),
        Procedure("dane_local", 2, run_dane_local),
        Procedure("fadl_local", fadl_local_slots, run_fadl_local,
                  up_format="direction"),
    )
}
