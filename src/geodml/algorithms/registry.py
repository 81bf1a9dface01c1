"""Every training method behind one signature, by name.

A method is ``fn(fed, spec, recorder) -> RunResult``: it prepares the federation
with ``spec.loss`` and ``spec.lam``, records one row per outer iteration, and stops
at ``spec.tol`` relative suboptimality (when the recorder knows ``F*``), at
``spec.gtol`` relative gradient norm (methods that see exact gradients), after
``spec.max_rounds`` outer iterations, once ``spec.max_wan_bytes`` have crossed
the WAN, or (``spec.validation``) when the sites' held-out loss stops improving: all
through one :class:`~geodml.algorithms.stop.StopRule`. A run stopped by validation
returns the model of its best held-out row. ``spec.params`` holds method-specific
settings, which the method reads with its :class:`~geodml.params.Schema`
(:data:`PARAMS`, listed by ``geodml methods``).
"""

from __future__ import annotations

from collections.abc import Callable

from geodml.algorithms.admm import ADMM_PARAMS, train_admm
from geodml.algorithms.dane import DANE_PARAMS, train_dane
from geodml.algorithms.dpgd import DP_GD_PARAMS, train_dp_gd
from geodml.algorithms.fadl import FADL_PARAMS, FADL_SUBSPACE_PARAMS
from geodml.algorithms.fedavg import FEDAVG_PARAMS, train_fedavg
from geodml.algorithms.oneshot import ONESHOT_PARAMS, train_oneshot
from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.spec import TrainSpec
from geodml.algorithms.sqm import SQM_PARAMS
from geodml.algorithms.stop import VALIDATION_REASON
from geodml.errors import ConfigError
from geodml.federation import Federation
from geodml.params import Schema

Method = Callable[[Federation, TrainSpec, RunRecorder], RunResult]


def _sqm(name: str) -> Method:
    def run(fed: Federation, spec: TrainSpec, recorder: RunRecorder) -> RunResult:
        from geodml.algorithms.sqm import train_sqm

        return train_sqm(fed, spec, recorder, name)
    run.__doc__ = f"SQM {name} (see geodml.algorithms.sqm)."
    return run


def _fadl(name: str) -> Method:
    def run(fed: Federation, spec: TrainSpec, recorder: RunRecorder) -> RunResult:
        from geodml.algorithms import fadl

        options = fadl.FadlOptions.from_params(spec.params, name)
        return fadl.train_fadl(fed, spec, recorder, options, name)
    run.__doc__ = f"{name} (see geodml.algorithms.fadl)."
    return run


METHODS: dict[str, Method] = {f"sqm-{m}": _sqm(m) for m in ("lbfgs", "gd", "tron")}
METHODS["fadl"] = _fadl("fadl")
METHODS["fadl-subspace"] = _fadl("fadl-subspace")
METHODS["oneshot"] = train_oneshot
METHODS["fedavg"] = train_fedavg
METHODS["admm"] = train_admm
METHODS["dane"] = train_dane
METHODS["dp-gd"] = train_dp_gd
#: every method's parameters (``spec.params``, ``--param KEY=VALUE``), by method
PARAMS: dict[str, Schema] = {**{f"sqm-{m}": SQM_PARAMS for m in ("lbfgs", "gd", "tron")},
                             "fadl": FADL_PARAMS, "fadl-subspace": FADL_SUBSPACE_PARAMS,
                             "oneshot": ONESHOT_PARAMS, "fedavg": FEDAVG_PARAMS,
                             "admm": ADMM_PARAMS, "dane": DANE_PARAMS, "dp-gd": DP_GD_PARAMS}
# methods that use only sums over the sites, so they run under secure aggregation
# (the others need each site's own local solution or its info)
SECURE_METHODS = frozenset({"sqm-lbfgs", "sqm-gd", "sqm-tron", "fadl", "fadl-subspace",
                            "dp-gd"})


def train(fed: Federation, method: str, spec: TrainSpec | None = None,
          recorder: RunRecorder | None = None) -> RunResult:
    """Run the method named ``method`` (see :data:`METHODS`)."""
    fn = METHODS.get(method)
    if fn is None:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    if fed.secure is not None and method not in SECURE_METHODS:
        raise ConfigError(f"{method} needs each site's own local solution, which secure "
                          "aggregation hides; methods that run with it: "
                          f"{', '.join(sorted(SECURE_METHODS))}")
    spec, recorder = spec or TrainSpec(), recorder or RunRecorder(fed)
    if spec.validation is not None and fed.validation is None:
        raise ConfigError("stopping by validation needs held-out rows: open the federation "
                          "with a validation share (geodml train --validation-share)")
    result = fn(fed, spec, recorder)
    loss, iteration, objective, w = recorder.best_validation
    if w is not None:
        result.info["validation"] = {"best_log_loss": loss, "best_iteration": iteration,
                                     "held_out_share": fed.validation.share}
        if result.reason.startswith(VALIDATION_REASON):  # the model of the best row
            result.w, result.objective = w, objective
    return result
