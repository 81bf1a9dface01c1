"""DANE: Distributed Approximate NEwton (Shamir, Srebro & Zhang, ICML 2014).

Iteration ``t`` at the global point ``w_t``:

1. one Evaluate round: ``F(w_t)`` and the exact global gradient ``g_t = grad F(w_t)``;
2. one LocalSolve round (``dane_local``, inputs ``w_t`` and ``g_t``): every site solves

       v_k = argmin_v F_k(v) - (grad F_k(w_t) - eta g_t).v + (mu/2) ||v - w_t||^2,
       F_k(v) = (1/n_k) L_k(v) + (lambda/2) ||v||^2;

3. the coordinator averages ``w_{t+1} = sum_k (n_k / N) v_k`` (sites send ``v_k`` minus
   its closed form off their support, so support-restricted replies are exact; see
   :mod:`geodml.site.local_dane`).

For a quadratic ``F`` with ``mu = 0, eta = 1`` the step is
``w_{t+1} = w_t - (sum_k (n_k/N) H_k^{-1}) g_t``: a Newton step preconditioned by
the average of local inverse Hessians. Per iteration: two rounds, three vectors
down (``w`` twice, ``g``) and two up (the gradient sums and ``v_k``) per site.

What it converges to: the exact minimizer ``w*`` (a fixed point has ``g = 0``)
*when it converges*: linearly, with a rate that improves with the similarity of
the local Hessians — fast on iid data (where ``H_k ~ H``) and for large ``n_k``.
On non-IID data the local Hessians differ and with ``mu = 0`` the iteration can
stall or diverge (it is not guaranteed to converge for non-quadratic losses);
``mu > 0`` damps the step at the price of speed. The run reports what happens.
Stops also at ``spec.gtol`` relative gradient norm (it sees exact gradients).

Params: ``eta`` (1), ``mu`` (0), ``inner_max_iter`` (200), ``inner_gtol`` (1e-8).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from geodml.algorithms.baseline import initial_point, weighted_average
from geodml.algorithms.record import RunRecorder, RunResult
from geodml.errors import ConfigError
from geodml.federation import Federation
from geodml.federation.objective import FederatedObjective
from geodml.job.procedure_params import DANE_LOCAL, check_sent
from geodml.params import Schema

if TYPE_CHECKING:
    from geodml.algorithms.spec import TrainSpec

#: eta and mu go to every site's dane_local as they are; the inner solve's settings
#: as its max_iter and gtol
DANE_PARAMS = Schema(
    eta=DANE_LOCAL["eta"], mu=DANE_LOCAL["mu"],
    inner_max_iter=DANE_LOCAL["max_iter"].with_default(200),
    inner_gtol=DANE_LOCAL["gtol"],
)


def train_dane(fed: Federation, spec: TrainSpec, recorder: RunRecorder) -> RunResult:
    """Run DANE (see the module docstring); one record row per iteration."""
    p = DANE_PARAMS.read("dane", spec.params)
    params = check_sent("dane_local", {"eta": p["eta"], "mu": p["mu"],
                                       "max_iter": p["inner_max_iter"],
                                       "gtol": p["inner_gtol"]})
    lam = spec.lam_for(fed)
    if lam + params["mu"] <= 0:
        raise ConfigError("dane parameter mu: must be > 0 when lambda is 0")
    fed.prepare(spec.loss, lam)
    objective = FederatedObjective(fed, lam)
    rule = spec.stop_rule()
    w = initial_point(fed, spec)
    inner: list[list[int]] = []
    t = 0
    while True:
        f, g = objective.value_grad(w)
        w = objective.w  # the point as the sites received it
        if reason := rule.check(recorder.add(t, f, w, float(np.linalg.norm(g)))):
            break
        results = fed.local_solve("dane_local", params, [w, g])
        inner.append([info.get("iterations") for _, info, _ in results])
        # site k returned v_k - shift with shift = w - eta g / (lambda + mu) (0 off its support)
        w = weighted_average(results) + w - (params["eta"] / (lam + params["mu"])) * g
        t += 1
    return RunResult("dane", w, f, rule.converged(reason), reason, recorder.rows,
                     fed.meter.snapshot(),
                     {"lam": lam, "loss": spec.loss, **params, "inner_iterations": inner})
