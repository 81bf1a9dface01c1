"""The parameters of every site procedure (LocalSolve), declared once for both halves.

A site reads a call's parameters with its procedure's :class:`~geodml.params.Schema`
(:mod:`geodml.site.procedures` and the ``site/local_*`` modules); the coordinator
checks what it is about to send with the same schema (:func:`check_sent`), and a
method whose ``--param`` is forwarded to a procedure declares that parameter with the
procedure's own :class:`~geodml.params.Param` (maybe under its own default), so a bad
value is refused at the coordinator, naming the method, before any round, and at
the site by the same bounds. The defaults here are the sites' own, used when a call
leaves a parameter out.
"""

from __future__ import annotations

from collections.abc import Mapping

from geodml.params import Param, Schema

MAX_SEED = (1 << 63) - 1  # local_sgd's seed: a 64-bit generator seed
METRIC_MODES = ("send", "stored")  # fadl_local's metric: D comes with this call, or came

_MAX_ITER_DOC = "L-BFGS iterations of the local solve, at most"
_GTOL_DOC = "relative gradient-norm tolerance of the local solve"

LOCAL_MINIMIZE = Schema(
    max_iter=Param(100, "int", 1, 100_000, _MAX_ITER_DOC),
    gtol=Param(1e-6, "float", 0.0, 1.0, _GTOL_DOC),
    precondition=Param("none", "choice", doc="the metric of the local L-BFGS: the identity, "
                       "or the Hessian's diagonal at the best constant model (diag), as the "
                       "centralized solver takes it", choices=("none", "diag")),
    time_pairs=Param(False, "bool", doc="also report what the curvature pairs cost an "
                     "iteration: the two-loop recursion's seconds per pair timed at the "
                     "site, the solver's memory and the median pairs the timed iterations "
                     "held (a run of a few iterations holds few of them: at 2^20 features "
                     "the 16 pairs double an iteration over 20,000 rows)"),
)
WARM_START = Schema(
    max_iter=Param(50, "int", 1, 10_000, _MAX_ITER_DOC),
    gtol=Param(1e-2, "float", 0.0, 1.0, _GTOL_DOC),
)
HESS_DIAG = Schema(
    at=Param("point", "choice", doc="the curvature l'' of the session's current point, or of "
             "the best constant model of the site's labels (constant)",
             choices=("point", "constant")),
)
LOCAL_SGD = Schema(
    epochs=Param(1, "int", 1, 10_000, "local passes over the site's rows per round"),
    batch_size=Param(32, "int", 1, 1 << 30, "rows per minibatch"),
    eta0=Param(0.1, "float", 1e-12, 1e6, "initial step size"),
    decay=Param(0.0, "float", 0.0, 1e6, "step eta0 / (1 + decay * epochs so far)"),
    t0=Param(0.0, "float", 0.0, 1e12, "epochs already done (continues the schedule)"),
    seed=Param(0, "int", 0, MAX_SEED, "minibatch order seed"),
)
ADMM_LOCAL = Schema(
    iteration=Param(0, "int", 0, 10_000_000, "ADMM iteration t"),
    rho=Param(1.0, "float", 1e-300, 1e300, "the penalty rho of the x-update"),
    n_total=Param(None, "int", 1, 1 << 62, "rows over all sites, N (unset: the site's)"),
    max_iter=Param(50, "int", 1, 100_000, _MAX_ITER_DOC),
    gtol=Param(1e-6, "float", 0.0, 1.0, _GTOL_DOC),
)
DANE_LOCAL = Schema(
    eta=Param(1.0, "float", 1e-12, 1e6, "weight of the global gradient"),
    mu=Param(0.0, "float", 0.0, 1e12, "proximal weight (> 0 needed when lambda is 0)"),
    max_iter=Param(100, "int", 1, 100_000, _MAX_ITER_DOC),
    gtol=Param(1e-8, "float", 0.0, 1.0, _GTOL_DOC),
)
FADL_LOCAL = Schema(
    inner_iterations=Param(10, "int", 1, 1000, "TRON iterations of each site's local solve"),
    inner_gtol=Param(1e-3, "float", 0.0, 1.0, "relative gradient tolerance of the local solve"),
    mu=Param(0.0, "float", 0.0, 1e12, "proximal weight of the local problem"),
    metric=Param(None, "choice", doc="the metric D comes with this call (send), came "
                 "before (stored), or none (unset)", choices=METRIC_MODES),
)

#: every site procedure's parameters, by procedure name
PROCEDURE_PARAMS: dict[str, Schema] = {
    "local_minimize": LOCAL_MINIMIZE, "warm_start": WARM_START, "hess_diag": HESS_DIAG,
    "local_sgd": LOCAL_SGD, "admm_local": ADMM_LOCAL, "dane_local": DANE_LOCAL,
    "fadl_local": FADL_LOCAL,
}


def check_sent(procedure: str, params: Mapping[str, object]) -> Mapping[str, object]:
    """``params`` unchanged, once the procedure's schema accepts them (the coordinator's
    check of what it sends: a ParamError naming the procedure and the field)."""
    schema = PROCEDURE_PARAMS.get(procedure)
    if schema is None:
        raise ValueError(f"unknown procedure {procedure!r}; known: "
                         f"{', '.join(sorted(PROCEDURE_PARAMS))}")
    schema.read(procedure, params)
    return params
