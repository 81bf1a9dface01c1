"""DP-GD: gradient descent on noisy, clipped gradient sums, within every site's budget.

Each round sends ``w_t`` to every site; site ``k`` returns ``s_k + N(0, (sigma_k C)^2 I)``,
its per-row clipped gradient sum plus Gaussian noise (:mod:`geodml.privacy.dp`), and

    g_t = (1/N) sum_k (s_k + noise_k) + lambda w_t,      w_{t+1} = w_t - eta g_t.

The noise multiplier ``sigma_k`` is calibrated per site before the run: the smallest one
for which ``rounds`` more releases, after what the site's ledger already holds, fit its
``(epsilon, delta)`` budget (RDP accountant). A site with less budget left adds more
noise; a site with none left makes the run refuse to start. The sites check every
release themselves and refuse the one that would overspend.

The model returned is the average of the last half of the iterates (tail averaging
damps the noise at no privacy cost: it is post-processing). The sites release no loss
sums, so the record has no objective values (``nan``); a held-out test set (``--test``)
gives the accuracy. ``result.info["privacy"]`` holds every site's budget, noise
multiplier and the epsilon its ledger has spent after the run.

Params: ``rounds`` (100), ``clip`` (1.0, the per-row gradient norm bound ``C``),
``step`` (``1 / (C^2 / 4 + lambda)``: the logistic loss's smoothness were the rows scaled
to norm ``C``; a heuristic for clipped gradients, which bench/bench_privacy.py found to
work better on a9a than smaller steps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from geodml.algorithms.record import RunRecorder, RunResult
from geodml.errors import ConfigError
from geodml.federation import Federation, PrivacyJob
from geodml.params import Param, Schema
from geodml.privacy.dp import calibrate_noise

if TYPE_CHECKING:
    from geodml.algorithms.spec import TrainSpec

DP_GD_PARAMS = Schema(
    rounds=Param(100, "int", 1, 1_000_000, "private rounds (at most max_rounds)"),
    clip=Param(1.0, "float", 0.0, None, "per-row gradient norm bound C", lo_open=True),
    step=Param(None, "float", 0.0, None, "step size (unset: 1 / (C^2 / 4 + lambda))",
               lo_open=True),
)


def noise_multipliers(fed: Federation, rounds: int) -> dict[str, float]:
    """Each site's noise multiplier for ``rounds`` releases within its remaining budget."""
    out = {}
    for name in fed.names:
        b = fed.describe_site(name).privacy  # asked now: earlier jobs may have spent some
        if b is None:
            raise ConfigError(f"site {name} has no privacy budget (policy dp_epsilon and "
                              "dp_delta): dp-gd needs one at every site")
        out[name] = calibrate_noise(b.epsilon, b.delta, rounds, b.noise_multipliers)
    return out


def dp_gd_settings(params: dict, lam: float, max_rounds: int) -> tuple[int, float, float]:
    """``(rounds, clip, step)`` of a dp-gd job from its params (defaults in the module
    docstring); the planner prices a private plan with the same numbers."""
    p = DP_GD_PARAMS.read("dp-gd", params)
    rounds, clip = min(p["rounds"], max_rounds), p["clip"]
    if rounds < 1:
        raise ConfigError(f"dp-gd needs max_rounds >= 1, got {max_rounds}")
    return rounds, clip, p["step"] or 1.0 / (0.25 * clip * clip + lam)


def train_dp_gd(fed: Federation, spec: TrainSpec, recorder: RunRecorder) -> RunResult:
    lam = spec.lam_for(fed)
    rounds, clip, step = dp_gd_settings(spec.params, lam, spec.max_rounds)
    sigma = noise_multipliers(fed, rounds)
    fed.prepare(spec.loss, lam, privacy=PrivacyJob(clip, sigma))
    N = fed.n_rows
    w = np.zeros(fed.n_features) if spec.w0 is None else np.asarray(spec.w0, dtype=float)
    tail, kept = np.zeros_like(w), 0
    rule = spec.stop_rule(gtol=False, max_rounds=rounds)  # no objective: nan
    reason = None
    for t in range(1, rounds + 1):
        g = np.sum([e.grad for e in fed.evaluate(w)], axis=0) / N + lam * w
        w = w - step * g
        if t > rounds // 2:
            tail += w
            kept += 1
        reason = rule.check(recorder.add(t, float("nan"), tail / kept if kept else w,
                                         float(np.linalg.norm(g))))
        if reason:
            break
    w_out = tail / kept if kept else w
    spent = {name: fed.describe_site(name).privacy for name in fed.names}
    privacy = {name: {"epsilon": b.epsilon, "delta": b.delta, "epsilon_spent": b.epsilon_spent,
                      "noise_multiplier": sigma[name], "releases": len(b.noise_multipliers)}
               for name, b in spent.items()}
    return RunResult("dp-gd", w_out, float("nan"), False,
                     f"{rounds} private rounds done" if reason.startswith("max_rounds") else reason,
                     recorder.rows, fed.meter.snapshot(),
                     {"lam": lam, "loss": spec.loss, "clip": clip, "step": step,
                      "privacy": privacy})
