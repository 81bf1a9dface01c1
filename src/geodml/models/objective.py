"""The regularized objective assembled from per-DC sums.

    F(w) = (1/N) sum_k L_k(w) + (lambda/2) ||w||^2,        N = sum_k n_k

where ``L_k`` is DC k's loss sum (:mod:`geodml.models.site_sums`). Its gradient is
``(1/N) sum_k G_k(w) + lambda w`` and its Hessian-vector product
``(1/N) sum_k H_k(w) v + lambda v``. Along a direction ``p`` from ``w``:

    F(w + a p)  = (1/N) sum_k phi_k(a) + (lambda/2)(w.w + 2a w.p + a^2 p.p)
    dF/da       = (1/N) sum_k phi_k'(a) + lambda (w.p + a p.p)

so a line search needs only scalars from the DCs. With ``lambda = 1/N`` and
logistic loss this is scikit-learn's ``LogisticRegression(C=1, fit_intercept=False)``
objective divided by N.

:class:`ObjectiveOracle` is the small interface the solvers are written against;
:class:`RegularizedObjective` is the one implementation, over a :class:`SumsSource`:
in-process parts (:class:`PartSums`) or a federation's sites
(:class:`geodml.federation.objective.FederationSums`).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from geodml.models.site_sums import Sums


class SumsProvider(Protocol):
    """What one DC (or one shard) computes: see :class:`geodml.models.SiteSums`."""

    n_rows: int

    def evaluate(self, w: np.ndarray, need_grad: bool = True) -> Sums: ...
    def hess_vec(self, v: np.ndarray) -> np.ndarray: ...
    def hess_diag(self, curvature: float | None = None) -> np.ndarray: ...
    def label_sum(self) -> float: ...
    def set_direction(self, p: np.ndarray) -> None: ...
    def line_sums(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def step(self, alpha: float, need_grad: bool = True) -> Sums: ...


class ObjectiveOracle(Protocol):
    """The objective as the solvers see it; stateful: it has a current point."""

    n_features: int

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        """Move to ``w``; return ``F(w)`` and its gradient."""

    def set_direction(self, p: np.ndarray) -> np.ndarray | None:
        """Cache a search direction ``p`` at the current point. An oracle that changes
        ``p`` on its way (a compressed wire) returns the direction it actually uses."""

    def line_values(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``F(w + a p)`` and ``dF/da`` for each ``a`` (scalars only)."""

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        """Move to ``w + alpha p``; return ``F`` and its gradient there. ``p`` stays
        cached: ``line_values`` and ``step`` go on along it from the new point. An
        oracle whose gradient arrives inexact (compressed) may set ``step_slope``,
        the exact ``dF(w + a p)/da`` there (optional; None or absent: ``grad.p``)."""

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        """Hessian of ``F`` at the current point times ``v``."""


class SumsSource(Protocol):
    """The sums over all DCs at the current point, as :class:`RegularizedObjective`
    needs them: in-process parts (:class:`PartSums`) or the sites of a federation
    (:class:`geodml.federation.objective.FederationSums`). Totals, not per-DC."""

    n_rows: int
    compressing: bool  # vectors travel compressed: probe the exact slope along each p
    pending_direction: bool  # set_direction deferred p: it travels with a line search
    # after step: the exact sums of l'(z_i) (X p)_i where the gradient sums do not give
    # them exactly (a compressed wire): at the point before the step when p went with
    # it, then at the new point; else ()
    step_derivatives: tuple[float, ...]

    def point(self, w: np.ndarray) -> np.ndarray: ...
    def evaluate(self, w: np.ndarray, need_grad: bool = True) -> tuple[float, np.ndarray]: ...
    def set_direction(self, p: np.ndarray) -> np.ndarray | None: ...
    def line_sums(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
    def step(self, alpha: float) -> tuple[float, np.ndarray]: ...
    def hess_vec(self, v: np.ndarray) -> np.ndarray: ...
    def note_gradient(self, grad_norm: float) -> None: ...
    def note_direction(self, believed_slope: float, true_slope: float) -> None: ...


class PartSums:
    """The sums over in-process parts (one part: centralized; K parts: K DCs)."""

    compressing = False
    pending_direction = False
    step_derivatives = ()  # in process the gradient is exact

    def __init__(self, parts: list[SumsProvider]):
        self.parts = parts
        self.n_rows = sum(p.n_rows for p in parts)
        if self.n_rows == 0:
            raise ValueError("the objective has no rows")

    def point(self, w: np.ndarray) -> np.ndarray:
        return np.array(w, dtype=np.float64)

    @staticmethod
    def _total(sums: list[Sums]) -> tuple[float, np.ndarray]:
        grad = sums[0].grad.copy()
        for s in sums[1:]:
            grad += s.grad
        return sum(s.loss for s in sums), grad

    def evaluate(self, w: np.ndarray, need_grad: bool = True) -> tuple[float, np.ndarray | None]:
        if not need_grad:
            return sum(part.evaluate(w, need_grad=False).loss for part in self.parts), None
        return self._total([part.evaluate(w) for part in self.parts])

    def set_direction(self, p: np.ndarray) -> None:
        for part in self.parts:
            part.set_direction(p)

    def line_sums(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vals = np.zeros(len(alphas))
        ders = np.zeros(len(alphas))
        for part in self.parts:
            v, d = part.line_sums(alphas)
            vals += v
            ders += d
        return vals, ders

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        return self._total([part.step(alpha) for part in self.parts])

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        return sum(part.hess_vec(v) for part in self.parts)

    def hess_diag(self, curvature: float | None = None) -> np.ndarray:
        return np.sum([part.hess_diag(curvature) for part in self.parts], axis=0)

    def label_sum(self) -> float:
        return float(sum(part.label_sum() for part in self.parts))

    def note_gradient(self, grad_norm: float) -> None:
        """In process nothing is compressed: nothing to watch."""

    def note_direction(self, believed_slope: float, true_slope: float) -> None:
        """In process nothing is compressed: nothing to watch."""


class RegularizedObjective:
    """``F(w)`` over the sums of all DCs: in-process parts (a list of
    :class:`SumsProvider`) or any :class:`SumsSource`, such as a federation's sites
    (:class:`geodml.federation.objective.FederationSums`: each call one round).

    Over a source that sends vectors compressed, ``w`` and ``p`` are kept as the
    sites received them (``set_direction`` returns that direction, so solver and
    sites step alike), every assembled gradient's norm goes to the source's
    precision policy, and the first line search along a new direction also asks for
    the slope at step 0: the exact ``phi'(0)`` checks the compressed gradient's
    ``g~.p`` (one more scalar in the same round).
    """

    def __init__(self, parts: list[SumsProvider] | SumsSource, lam: float, n_features: int):
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        self.source: SumsSource = PartSums(parts) if isinstance(parts, list | tuple) else parts
        self.lam = float(lam)
        self.n_features = n_features
        self.w: np.ndarray | None = None
        self.p: np.ndarray | None = None
        self.evaluations = 0
        self._g: np.ndarray | None = None  # the last gradient assembled
        self._new_direction = False  # p set, no line search along it yet
        self.step_slope: float | None = None  # phi'(alpha) at the last step, when exact

    @property
    def parts(self) -> list[SumsProvider]:
        """The in-process parts (a :class:`PartSums` source only)."""
        return self.source.parts

    @property
    def n_rows(self) -> int:
        """Rows summed over (a federation's: fewer once a lost site is dropped)."""
        return self.source.n_rows

    def _assemble(self, loss: float, grad: np.ndarray, w: np.ndarray
                  ) -> tuple[float, np.ndarray]:
        """``F`` and its gradient from the loss and gradient sums at ``w``."""
        n = self.n_rows
        f = loss / n + 0.5 * self.lam * float(w @ w)
        grad = grad / n
        grad += self.lam * w
        self.source.note_gradient(float(np.linalg.norm(grad)))
        self._g = grad
        return f, grad

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        self.w = self.source.point(w)
        self.p = None
        self.evaluations += 1
        return self._assemble(*self.source.evaluate(self.w), self.w)

    def value(self, w: np.ndarray) -> float:
        """``F(w)`` alone (moves the current point to ``w``)."""
        self.w = self.source.point(w)
        self.p = None
        loss, _ = self.source.evaluate(self.w, need_grad=False)
        return loss / self.n_rows + 0.5 * self.lam * float(self.w @ self.w)

    def set_direction(self, p: np.ndarray) -> np.ndarray | None:
        """Cache ``p`` at the current point; returns the direction as the sites
        received it when the source changes vectors on their way (else None)."""
        self.p = np.array(p, dtype=np.float64)
        applied = self.source.set_direction(self.p)
        if applied is not None:
            self.p = applied
        self._new_direction = True
        return applied

    def line_values(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        alphas = np.asarray(alphas, dtype=np.float64)
        probe = self._new_direction and self.source.compressing and self._g is not None
        self._new_direction = False
        vals, ders = self.source.line_sums(np.concatenate([[0.0], alphas]) if probe
                                           else alphas)
        ww, wp, pp = float(self.w @ self.w), float(self.w @ self.p), float(self.p @ self.p)
        if probe:  # the exact slope at 0 checks the compressed gradient's (same round)
            self.source.note_direction(float(self._g @ self.p),
                                       float(ders[0]) / self.n_rows + self.lam * wp)
            vals, ders = vals[1:], ders[1:]
        f = vals / self.n_rows + 0.5 * self.lam * (ww + 2 * alphas * wp + alphas**2 * pp)
        df = ders / self.n_rows + self.lam * (wp + alphas * pp)
        return f, df

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        """Move to ``w + alpha p`` (a direction not yet sent travels with the step); ``p``
        stays cached, so step sizes along it can still be tried from the new point."""
        w_new = self.w + alpha * self.p
        loss, grad = self.source.step(alpha)
        slopes = self.source.step_derivatives
        if len(slopes) == 2 and self._new_direction and self.source.compressing \
                and self._g is not None:
            # p went with the step: its exact slope at 0 checks the compressed g~.p
            self.source.note_direction(float(self._g @ self.p), slopes[0] / self.n_rows
                                       + self.lam * float(self.w @ self.p))
        self.step_slope = slopes[-1] / self.n_rows + self.lam * float(w_new @ self.p) \
            if slopes else None
        self.w, self._new_direction = w_new, False
        self.evaluations += 1
        return self._assemble(loss, grad, w_new)

    def hess_diag_sum(self) -> np.ndarray:
        """``sum_i l''(z_i) x_ij^2`` over every part's rows at the current point."""
        return self.source.hess_diag()

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        hv = self.source.hess_vec(v)
        return hv / self.n_rows + self.lam * np.asarray(v, dtype=np.float64)
