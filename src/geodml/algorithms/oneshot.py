"""One-shot parameter averaging: one round of local solves, then an average.

Every site returns the minimizer of its own regularized objective

    v_k = argmin_v F_k(v),   F_k(v) = (1/n_k) L_k(v) + (lambda/2) ||v||^2

(the ``local_minimize`` procedure, L-BFGS from ``w0``), and the coordinator takes

    w = sum_k (n_k / N) v_k.

What it converges to: nothing — it is a single step, *approximate*. Since
``F = sum_k (n_k/N) F_k``, ``w`` is exact only when all ``F_k`` share a minimizer.
With iid rows the local minimizers scatter around ``w*`` by sampling noise and
their average keeps only a second-order bias (Zhang, Duchi & Wainwright 2013), so
``F(w) - F*`` is small and shrinks as the sites grow, but does not vanish for fixed
``n_k`` (a9a, 4 iid sites of ~8,100 rows: 3e-4 relative). On non-IID rows the local
optima differ and the average can be far from ``w*`` (covtype split by wilderness
area: 0.31 relative) with no way to improve. The run reports that final
suboptimality as it is.

Cost: one LocalSolve round (``w0`` down, ``v_k`` up), plus one Evaluate round
(``w`` down, a scalar up) to learn ``F(w)`` — counted in the record like any
other round. Params: ``local_max_iter`` (1000), ``local_gtol`` (1e-10, relative).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geodml.algorithms.baseline import evaluate_objective, initial_point, weighted_average
from geodml.algorithms.record import RunRecorder, RunResult
from geodml.federation import Federation
from geodml.job.procedure_params import LOCAL_MINIMIZE, check_sent
from geodml.params import Schema

if TYPE_CHECKING:
    from geodml.algorithms.spec import TrainSpec

#: sent to every site's local_minimize as its max_iter and gtol
ONESHOT_PARAMS = Schema(
    local_max_iter=LOCAL_MINIMIZE["max_iter"].with_default(1000),
    local_gtol=LOCAL_MINIMIZE["gtol"].with_default(1e-10),
)


def train_oneshot(fed: Federation, spec: TrainSpec, recorder: RunRecorder) -> RunResult:
    """Run one-shot averaging (see the module docstring); one record row."""
    lam = spec.lam_for(fed)
    p = ONESHOT_PARAMS.read("oneshot", spec.params)
    params = check_sent("local_minimize",
                        {"max_iter": p["local_max_iter"], "gtol": p["local_gtol"]})
    fed.prepare(spec.loss, lam)
    results = fed.local_solve("local_minimize", params, [initial_point(fed, spec)])
    w = weighted_average(results)
    f = evaluate_objective(fed, lam, w)
    rule = spec.stop_rule(gtol=False)
    reason = rule.check(recorder.add(1, f, w))
    return RunResult(
        "oneshot", w, f, rule.converged(reason), reason or "one round (approximate method)",
        recorder.rows, fed.meter.snapshot(),
        {"lam": lam, "loss": spec.loss,
         "local_iterations": [info.get("iterations") for _, info, _ in results],
         "local_converged": [info.get("converged") for _, info, _ in results]})
