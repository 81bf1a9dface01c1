"""A short regularization path, chosen by the sites' held-out loss.

For ``lambda_1 > lambda_2 > ... > lambda_m`` the method trains once per ``lambda``,
each run warm-started from the previous run's model (the optimum moves little between
neighbouring ``lambda``, so later runs need few rounds), and keeps the ``lambda``
whose best held-out log loss ``V(lambda) = sum_k V_k / sum_k m_k``
(:mod:`geodml.job.validation`) is lowest. Every run stops by the spec's rule
(``gtol`` or ``--stop validation``); ``gtol`` stays relative to ``||grad F(0)||``,
which does not depend on ``lambda`` (the regularizer's gradient vanishes at 0), so a
warm-started run stops where a cold one would. Every run's rounds and bytes cross
the same metered federation; the path reports each run's share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.registry import train
from geodml.algorithms.spec import TrainSpec
from geodml.errors import ConfigError
from geodml.federation import Federation


@dataclass(frozen=True)
class PathStep:
    """One ``lambda`` of the path: its run, held-out loss and the WAN it cost."""

    lam: float
    result: RunResult
    best_log_loss: float
    wan_bytes: int
    vector_rounds: float


def check_path(lams: Sequence[float]) -> tuple[float, ...]:
    """``lams`` sorted from the largest down; refuses non-positive or repeated values."""
    if not lams:
        raise ConfigError("--lam-path: give at least one lambda")
    if any(not (lam > 0) for lam in lams):
        raise ConfigError(f"--lam-path: every lambda must be > 0, got {list(lams)}")
    ordered = tuple(sorted({float(lam) for lam in lams}, reverse=True))
    if len(ordered) != len(lams):
        raise ConfigError(f"--lam-path: a lambda is repeated in {list(lams)}")
    return ordered


def train_path(fed: Federation, method: str, spec: TrainSpec, lams: Sequence[float],
               recorder_for: Callable[[float], RunRecorder]) -> tuple[PathStep, list[PathStep]]:
    """Train ``method`` at every ``lambda`` of ``lams`` (largest first, each from the
    previous model); returns the step of least held-out loss and every step.
    ``recorder_for(lam)``: the run's recorder."""
    if fed.validation is None:
        raise ConfigError("--lam-path chooses lambda by held-out loss: the sites must hold "
                          "rows out (--validation-share or --stop validation)")
    steps: list[PathStep] = []
    w0, reference = spec.w0, spec.grad_reference
    for lam in check_path(lams):
        before = fed.meter.snapshot()["wan_bytes"], fed.vector_rounds
        run_spec = dataclasses.replace(spec, lam=lam, w0=w0, grad_reference=reference,
                                       warm_start=spec.warm_start and w0 is None)
        result = train(fed, method, run_spec, recorder_for(lam))
        best = result.info.get("validation", {}).get("best_log_loss", float("inf"))
        steps.append(PathStep(lam, result, best, fed.meter.snapshot()["wan_bytes"] - before[0],
                              fed.vector_rounds - before[1]))
        w0 = result.w
        reference = reference or result.info.get("reference_grad_norm")
    return min(steps, key=lambda s: s.best_log_loss), steps


__all__ = ["PathStep", "check_path", "train_path"]
