"""FADL, and FADL with scalar-only subspace steps: few WAN rounds, exact optimum.

Both minimize ``F(w) = (1/N) sum_i l(y_i, x_i.w) + (lambda/2)||w||^2``.

**Local directions (FADL, Mahajan et al., JMLR 2018).** At ``w`` with the exact
global gradient ``g``, every site solves its functional approximation
``G_p(v) = F_p(v) + (g - grad F_p(w)).v + (mu/2)||v - w||^2`` for a few inner
iterations (:mod:`geodml.site.local_fadl`) and returns ``d_p = v_p - w``. The
coordinator combines them per coordinate, weighting each site by its rows among
the sites whose rows touch that coordinate: ``d_j = sum_p n_p d_pj / sum_{p: j in
S_p} n_p`` (the nonzero pattern of ``d_p`` stands for ``S_p`` when supports are
not exchanged).

**Subspace step (scalars only).** Sites cache each direction ``D_j`` with its
margins ``X D_j``; the coordinator minimizes ``phi(c) = F(w + D c)`` over the
coefficients by damped Newton, each round asking every site for
``(psi(c), grad psi(c), hess psi(c))`` — ``1 + m + m^2`` numbers — and adding the
regularizer ``(lambda/2)||w + D c||^2`` itself. The move ``s = D c`` is then made
at the sites from cached margins, and ``s`` joins a memory of past steps, which
stay in later subspaces at no cost in bytes (their margins are cached).

Methods:

- ``fadl``: local solves every iteration; the subspace is ``{d, -g, s_prev}``: the
  global line search along the combined direction, safeguarded by the exact
  gradient and the previous step. Containing ``-g``, every step decreases ``F`` at
  least as much as an exact gradient step with exact line search, so it converges
  to the exact optimum even where the local directions are poor (skewed
  partitions), only more slowly there.
- ``fadl-subspace``: the subspace is ``{d, -g, s_1 .. s_M}`` (M = 10 remembered
  steps), converging for the same reason. It is *adaptive*: an iteration with local
  solves moves two vectors each way (``g`` down and ``d_p`` up, then ``d`` down and
  the gradient up), one without moves one (``g`` down, the gradient up). From the
  first Newton round's model it measures what ``d`` adds over the rest of the
  subspace; when the model decrease with ``d`` is below ``pay_ratio`` times the
  decrease without it twice in a row, local solves pause for 2, 4, 8... iterations
  and are tried again (IID data keeps them, skewed data drops them).

**Metric.** With the per-feature preconditioner on (the default;
:mod:`geodml.optim.preconditioner`) the gradient direction is ``u = D^(-1) g``
instead of ``g`` (``D`` the Hessian's diagonal at the best constant model,
:mod:`geodml.algorithms.metric`; one round with one vector up per site), the sites
get ``u`` and recover ``g = D u`` from ``D``, sent to them once with the first local
solve, and solve their local problems by TRON in their own diagonal metric; the
gradient-norm stop is measured as the preconditioner's ``stop`` says. At 2^20 hashed
features this is what keeps the rounds from growing with the rows (BENCHMARKS.md).

Vector rounds per outer iteration: 2 with local solves, 1 without; scalar rounds:
typically 3-8 for the subspace Newton method.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geodml.algorithms.baseline import objective_from_evals
from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.warm_start import start
from geodml.errors import ParamError
from geodml.federation import Federation
from geodml.job.procedure_params import FADL_LOCAL, check_sent
from geodml.params import Param, Schema

#: fadl-subspace's parameters; inner_iterations, inner_gtol and mu go to every site's
#: fadl_local as they are, so they are that procedure's own declarations
FADL_SUBSPACE_PARAMS = Schema(
    memory=Param(10, "int", 0, 32, "past steps kept in the subspace"),
    adaptive=Param(True, "bool", doc="pause local solves while they do not pay for their "
                   "vector round"),
    pay_ratio=Param(2.0, "float", 0.0, None, "local solves pay while d's model decrease is "
                    "this many times the rest's"),
    inner_iterations=FADL_LOCAL["inner_iterations"],
    inner_gtol=FADL_LOCAL["inner_gtol"],
    mu=FADL_LOCAL["mu"],
    newton_rounds=Param(0, "int", 0, 200, "subspace Newton rounds per outer iteration, "
                        "at most (0: commit the Newton step of the model at 0 untried, "
                        "backing off only if the new loss says so; needs memory >= 1)"),
    newton_tol=Param(0.1, "float", 0.0, 1.0, "stop subspace Newton when its predicted gain "
                     "is below this share of the gain so far"),
)
#: fadl's: the subspace {d, -g, previous step}, local solves every iteration
FADL_PARAMS = FADL_SUBSPACE_PARAMS.with_defaults(memory=1, adaptive=False)
SCHEMAS = {"fadl": FADL_PARAMS, "fadl-subspace": FADL_SUBSPACE_PARAMS}


@dataclass(frozen=True)
class FadlOptions:
    """One run's settings, read from ``--param`` by the method's schema."""

    memory: int
    adaptive: bool
    pay_ratio: float
    inner_iterations: int
    inner_gtol: float
    mu: float
    newton_rounds: int
    newton_tol: float

    @classmethod
    def from_params(cls, params: dict, method: str = "fadl-subspace") -> FadlOptions:
        """``params`` read by ``method``'s schema (:data:`SCHEMAS`); a ParamError names
        the method and the field."""
        options = cls(**SCHEMAS[method].read(method, params))
        if options.newton_rounds == 0 and options.memory < 1:
            raise ParamError(f"{method} parameter newton_rounds 0 backs off along the "
                             "remembered step: it needs memory >= 1")
        return options


FADL = FadlOptions(**FADL_PARAMS.defaults())  # the defaults of the two methods
FADL_SUBSPACE = FadlOptions(**FADL_SUBSPACE_PARAMS.defaults())


class _SubspaceModel:
    """The coordinator's half of ``phi(c) = F(w + D c)``: the regularizer."""

    def __init__(self, fed: Federation, lam: float, w: np.ndarray, D: np.ndarray):
        self.fed, self.lam, self.N = fed, lam, fed.n_rows
        self.G = D.T @ D
        self.wD = D.T @ w
        self.ww = float(w @ w)

    def assemble(self, parts, c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        loss = sum(p[0] for p in parts)
        grad = np.sum([p[1] for p in parts], axis=0)
        hess = np.sum([p[2] for p in parts], axis=0)
        Gc = self.G @ c
        f = loss / self.N + 0.5 * self.lam * (self.ww + 2 * c @ self.wD + c @ Gc)
        return f, grad / self.N + self.lam * (self.wD + Gc), hess / self.N + self.lam * self.G


F_RESOLUTION = 1e-15  # relative: gains in F below this are lost in its float64 rounding
NOISE_REASON = "no further decrease in the subspace at the noise level of F"


def _newton(fed: Federation, model: _SubspaceModel, first, m: int, max_rounds: int,
            tol: float = 0.1) -> tuple[np.ndarray, float, float, tuple]:
    """Damped Newton over the coefficients; ``first`` is the replies at ``c = 0``.

    Returns the coefficients, ``phi`` there, ``phi(0)`` and the model at ``c = 0``.
    """
    c = np.zeros(m)
    f, gr, H = model.assemble(first, c)
    f0, at_zero = f, (gr, H)
    noise = 2 * fed.sum_resolution / model.N  # phi's values are known to within this
    if max_rounds == 0:  # untried: the caller commits it and backs off if it fails
        step = np.linalg.lstsq(H, -gr, rcond=None)[0]
        if not float(gr @ step) < 0:
            step = -gr
        if -0.5 * float(gr @ step) <= F_RESOLUTION * abs(f):
            step = np.zeros(m)
        return step, float("nan"), f0, at_zero
    for _ in range(max_rounds):
        step = np.linalg.lstsq(H, -gr, rcond=None)[0]
        slope = float(gr @ step)
        if not slope < 0:
            step, slope = -gr, -float(gr @ gr)
        # stop once the predicted further gain is a small share of the gain so far (it
        # does not pay for its round: the next outer iteration continues from here), or
        # below F's resolution (no round could see it)
        if -0.5 * slope <= max(F_RESOLUTION * abs(f), tol * (f0 - f)):
            break
        t = 1.0
        while True:
            trial = c + t * step
            parts = fed.subspace(coefficients=trial)
            f_t, gr_t, H_t = model.assemble(parts, trial)
            if f_t <= f + 1e-4 * t * slope + noise:  # the gradient and Hessian are exact
                # enough to trust a Newton step whose gain is below the noise in phi
                c, f, gr, H = trial, f_t, gr_t, H_t
                break
            t *= 0.5
            if t < 1e-10:
                return c, f, f0, at_zero
    return c, f, f0, at_zero


def _back_off(fed: Federation, keep: int, lam: float, w: np.ndarray, f0: float, f: float,
              evals, slope: float, memory: list[np.ndarray]):
    """After an untried Newton step ``s`` (``newton_rounds = 0``; ``memory[0] = s``,
    ``w = w0 + s``): while ``F(w0 + t s) > F(w0) + 1e-4 t slope`` (Armijo, plus the
    sums' noise), halve ``t``, moving by ``-t/2 s`` with the next Evaluate: a commit
    along the last remembered move (a multiple of ``s``). Returns the accepted point,
    its ``F``, the sites' sums there and the coordinator's copy of their memory."""
    step, t, last = memory[0], 1.0, 1.0  # memory[0] = last * step
    noise = 2 * fed.sum_resolution / fed.n_rows
    while f > f0 + 1e-4 * t * slope + noise and t > 1e-10:
        move = -0.5 * t  # from t s to t s / 2
        coefficients = np.zeros(len(memory))
        coefficients[0] = move / last
        evals = fed.evaluate(commit=coefficients, memory=keep)
        t, last = t + move, move
        w = w + move * step
        memory = [move * step, *memory][:keep]
        f = objective_from_evals(evals, fed.n_rows, lam, w)
    return w, f, evals, memory


def _model_decrease(gr: np.ndarray, H: np.ndarray) -> float:
    """``-min_c (gr.c + c.H c / 2)`` for a positive semidefinite ``H``."""
    if len(gr) == 0:
        return 0.0
    step = np.linalg.lstsq(H, -gr, rcond=None)[0]
    return max(0.0, -0.5 * float(gr @ step))


def _combine(fed: Federation, results, g: np.ndarray, lam: float) -> np.ndarray:
    """Per-coordinate weighted average of the sites' local directions (under secure
    aggregation, the one result is already the row-weighted average)."""
    if fed.secure is not None:
        return results[0][0]
    d = np.zeros(fed.n_features)
    weight = np.zeros(fed.n_features)
    for site, (vec, _info, rows) in zip(fed.names, results, strict=True):
        support = fed.support(site)
        d += rows * vec
        if support is None:
            weight += rows * (vec != 0)  # a site without a shared support zeroes the rest
        else:
            weight[support] += rows
    covered = weight > 0
    d[covered] /= weight[covered]
    # coordinates no site's rows touch: only the regularizer acts there
    d[~covered] = -g[~covered] / lam if lam > 0 else 0.0
    return d


def train_fadl(fed: Federation, spec, recorder: RunRecorder, options: FadlOptions,
               name: str = "fadl-subspace") -> RunResult:
    """Run FADL-style training with ``options`` (``FADL`` or ``FADL_SUBSPACE``)."""
    lam = spec.lam_for(fed)
    fed.prepare(spec.loss, lam)
    N = fed.n_rows
    # D at the best constant model (not at the sites' point), so a resumed run gets the
    # same metric
    preconditioner, w0, metric, grad_at_zero = start(
        fed, spec.preconditioner, lam, spec.w0, spec.warm_start)  # metric None: the identity
    if metric is not None:  # as the sites will hold it (fed.metric_format)
        metric = fed.as_received_metric(metric)
    w = np.zeros(fed.n_features) if w0 is None else fed.as_received(w0)
    evals = fed.evaluate(w)
    f = objective_from_evals(evals, N, lam, w)
    g = np.sum([e.grad for e in evals], axis=0) / N + lam * w
    fed.note_gradient(float(np.linalg.norm(g)))
    inverse = np.ones(fed.n_features) if metric is None else 1.0 / metric
    norm = preconditioner.grad_norm(metric)  # gtol's norm
    rule = spec.stop_rule()
    if rule.reference is None and grad_at_zero is not None:
        rule.reference = norm(grad_at_zero)  # warm: gtol as in a run from zero
    reason = rule.check(recorder.add(0, f, w, norm(g)))
    memory: list[np.ndarray] = []
    params = {"inner_iterations": options.inner_iterations, "inner_gtol": options.inner_gtol,
              "mu": options.mu}
    metric_sent = False
    skip_until, backoff, weak = 0, 2, 0
    it = 0
    while reason is None:
        it += 1
        local = not options.adaptive or it >= skip_until
        g_sent = fed.as_received(g)  # what the sites receive (after down compression)
        if local:  # g goes down with the local solves; the sites keep u = D^(-1) g_sent
            # (u = g_sent without a metric) as the subspace's gradient direction
            inputs, extra = [g_sent], {}
            if metric is not None:  # D travels once, in fed.metric_format, and stays there
                extra = {"metric": "stored" if metric_sent else "send"}
                if not metric_sent:
                    inputs.append(metric)
                metric_sent = True
            sent = check_sent("fadl_local", {**params, **extra})
            d = fed.as_received(_combine(fed, fed.local_solve(
                "fadl_local", sent, inputs, formats={1: fed.metric_format}), g, lam))
            u = g_sent * inverse if metric is not None else g_sent
            send, new = [d], [d, u]
        else:  # the direction -D^(-1) g itself goes down
            u = g_sent if metric is None else fed.as_received(inverse * g)
            send, new = [u], [u]
        D = np.column_stack(new + memory)
        model = _SubspaceModel(fed, lam, w, D)
        first = fed.subspace(send, add_last_local_input=local, coefficients=np.zeros(D.shape[1]))
        c, _f_new, _f0, (gr0, H0) = _newton(fed, model, first, D.shape[1],
                                            options.newton_rounds, options.newton_tol)
        # along -u the compressed sums promise slope -g.u; the sites' exact subspace
        # sums give the true one, -gr0[j]: when they disagree, compression noise
        # dominates the gradient and the precision policy switches to exact
        j = 1 if local else 0
        fed.note_direction(-float(g @ u), -float(gr0[j]))
        if options.adaptive and local:
            with_d = _model_decrease(gr0, H0)
            without_d = _model_decrease(gr0[1:], H0[1:, 1:])
            if with_d < options.pay_ratio * without_d:
                weak += 1
                if weak >= 2:
                    skip_until, backoff, weak = it + 1 + backoff, backoff * 2, 0
            else:
                weak, backoff = 0, 2
        step = D @ c
        w = w + step
        memory = [step, *memory][: options.memory]
        # the move and the gradient at the new point (from cached margins), one round
        evals = fed.evaluate(commit=c, memory=options.memory)
        f_before, f = f, objective_from_evals(evals, N, lam, w)
        if options.newton_rounds == 0:  # the step was not tried: back off if it failed
            w, f, evals, memory = _back_off(fed, options.memory, lam, w, f_before, f, evals,
                                            float(gr0 @ c), memory)
        g = np.sum([e.grad for e in evals], axis=0) / N + lam * w
        fed.note_gradient(float(np.linalg.norm(g)))
        reason = rule.check(recorder.add(it, f, w, norm(g)))
        if reason is None and not np.any(c):
            # the full Newton step's predicted gain below F's rounding: converged as far
            # as F can tell (as TRON's trust region collapsing at the noise level)
            floor = _model_decrease(gr0, H0) <= F_RESOLUTION * abs(f)
            reason = NOISE_REASON if floor else "no further decrease in the subspace"
    return RunResult(name, w, f, rule.converged(reason) or reason == NOISE_REASON, reason,
                     recorder.rows,
                     fed.meter.snapshot(),
                     {"lam": lam, "loss": spec.loss, "reference_grad_norm": rule.reference,
                      "preconditioner": preconditioner.describe(),
                      "warm_start": spec.warm_start and spec.w0 is None})
