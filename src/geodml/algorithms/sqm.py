"""Statistical-query-model (SQM) methods: exact global sums every round.

Each round every DC returns sums over its rows (loss, gradient, Hessian-vector
product, or losses along a cached direction), and the coordinator adds them; the
iterates are exactly those of the same solver run centrally on the pooled rows.
Methods: ``lbfgs`` (line search in scalars, one vector each way per iteration; once
curvature pairs exist, a trial step to ``w + p`` brings the gradient there in the same
round, so an iteration whose unit step is accepted is one round,
:mod:`geodml.optim.lbfgs`),
``gd`` (steepest descent with the same line search), ``tron`` (trust-region
Newton-CG: one Hessian-vector round per CG step). All converge to the exact
optimum of ``F(w) = (1/N) sum_i l(y_i, x_i.w) + (lambda/2)||w||^2``.
"""

from __future__ import annotations

from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.spec import TrainSpec
from geodml.algorithms.warm_start import start
from geodml.errors import ConfigError
from geodml.federation import Federation
from geodml.federation.objective import FederatedObjective
from geodml.optim import LbfgsOptions
from geodml.optim.preconditioner import solve
from geodml.params import Param, Schema

SQM_METHODS = ("lbfgs", "gd", "tron")
#: the parameters of every sqm-* method (a site answers up to 1024 step sizes a round)
SQM_PARAMS = Schema(
    line_search_batch=Param(1, "int", 1, 1024, "trial step sizes per line-search round"),
    trial_step=Param(True, "bool", doc="lbfgs, batch 1: every line-search candidate is a "
                     "move that brings its gradient, so a taken unit step costs one round"),
    memory=Param(0, "int", 0, 1000, "lbfgs: curvature pairs kept (two vectors of the "
                 "model's size each, at the coordinator; no WAN bytes); 0: as many as 256 MB "
                 "hold, 10 to 40 (geodml.optim.lbfgs.default_memory)"),
)


def train_sqm(fed: Federation, spec: TrainSpec, recorder: RunRecorder,
              method: str = "lbfgs") -> RunResult:
    """Train by an SQM method in the metric of ``spec.preconditioner`` (default: the
    Hessian's diagonal, one extra round with one vector up per site; see
    :mod:`geodml.algorithms.metric`), stopping by the spec's :class:`StopRule`
    (``gtol`` is measured in the norm the preconditioner's ``stop`` names).
    ``spec.warm_start``: start from the sites' curvature-weighted solutions
    (:mod:`geodml.algorithms.warm_start`) unless ``spec.w0`` is given.
    Params: ``line_search_batch`` (1): trial steps per line-search round;
    ``trial_step`` (True): the unit step and its gradient in one round first."""
    if method not in SQM_METHODS:
        raise ConfigError(f"unknown SQM method {method!r}; known: {', '.join(SQM_METHODS)}")
    params = SQM_PARAMS.read(f"sqm-{method}", spec.params)
    batch = params["line_search_batch"]
    lam = spec.lam_for(fed)
    fed.prepare(spec.loss, lam)
    objective = FederatedObjective(fed, lam)
    warm = spec.warm_start and spec.w0 is None
    preconditioner, w0, metric, grad_at_zero = start(fed, spec.preconditioner, lam, spec.w0,
                                                     warm)
    rule = spec.stop_rule()
    if rule.reference is None and grad_at_zero is not None:  # warm: gtol as from zero
        rule.reference = preconditioner.grad_norm(metric)(grad_at_zero)
    done = [0]  # iterations of earlier solves (a site dropped: the solve restarted)

    def callback(rec, w) -> bool:
        row = recorder.add(done[0] + rec.iteration, rec.f, w, rec.grad_norm)
        return rule.check(row) is not None

    while True:
        sites = len(fed.names)
        # gtol 0: the rule stops at gtol (the solver still stops at a zero gradient, a
        # failed line search or noise-level progress)
        options = LbfgsOptions(gtol=0.0, max_iter=spec.max_rounds - done[0],
                               line_search_batch=batch, trial_step=params["trial_step"],
                               memory=params["memory"] or None,
                               reference_grad_norm=rule.reference,
                               f_noise=fed.sum_resolution / fed.n_rows)
        result = solve(objective, method, metric, w0, options, callback,
                       preconditioner.stop)
        done[0] += len(result.history) - 1
        # a site dropped mid-solve changed the objective under the solver's feet (its
        # curvature pairs and last value are the old objective's): solve again from here
        if len(fed.names) == sites or rule.fired or done[0] >= spec.max_rounds:
            break
        w0 = result.w
    reason, converged = rule.outcome(result.reason, result.converged)
    if reason.startswith("max_iter ("):  # the solver's iterations are this run's rounds
        reason = f"max_rounds ({spec.max_rounds}) reached"
    return RunResult(f"sqm-{method}", result.w, result.f, converged, reason,
                     recorder.rows, fed.meter.snapshot(),
                     {"lam": lam, "loss": spec.loss, "reference_grad_norm": rule.reference,
                      "preconditioner": preconditioner.describe(), "warm_start": warm})
