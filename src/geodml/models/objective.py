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
:class:`RegularizedObjective` implements it over in-process parts, and the
federation implements it over remote DCs.
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
    def hess_diag(self) -> np.ndarray: ...
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
        """Move to ``w + alpha p``; return ``F`` and its gradient there."""

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        """Hessian of ``F`` at the current point times ``v``."""


class RegularizedObjective:
    """``F(w)`` over in-process parts (one part: centralized; K parts: K DCs)."""

    def __init__(self, parts: list[SumsProvider], lam: float, n_features: int):
        if lam < 0:
            raise ValueError(f"lambda must be >= 0, got {lam}")
        self.parts = parts
        self.lam = float(lam)
        self.n_features = n_features
        self.n_rows = sum(p.n_rows for p in parts)
        if self.n_rows == 0:
            raise ValueError("the objective has no rows")
        self.w: np.ndarray | None = None
        self.p: np.ndarray | None = None
        self.evaluations = 0

    def _assemble(self, sums: list[Sums], w: np.ndarray) -> tuple[float, np.ndarray]:
        loss = sum(s.loss for s in sums)
        grad = sums[0].grad.copy()
        for s in sums[1:]:
            grad += s.grad
        f = loss / self.n_rows + 0.5 * self.lam * float(w @ w)
        grad /= self.n_rows
        grad += self.lam * w
        return f, grad

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        self.w = np.array(w, dtype=np.float64)
        self.p = None
        self.evaluations += 1
        return self._assemble([part.evaluate(self.w) for part in self.parts], self.w)

    def value(self, w: np.ndarray) -> float:
        """``F(w)`` alone (moves the current point to ``w``)."""
        self.w = np.array(w, dtype=np.float64)
        self.p = None
        loss = sum(part.evaluate(self.w, need_grad=False).loss for part in self.parts)
        return loss / self.n_rows + 0.5 * self.lam * float(self.w @ self.w)

    def set_direction(self, p: np.ndarray) -> None:
        self.p = np.array(p, dtype=np.float64)
        for part in self.parts:
            part.set_direction(self.p)

    def line_values(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        alphas = np.asarray(alphas, dtype=np.float64)
        vals = np.zeros(len(alphas))
        ders = np.zeros(len(alphas))
        for part in self.parts:
            v, d = part.line_sums(alphas)
            vals += v
            ders += d
        ww, wp, pp = float(self.w @ self.w), float(self.w @ self.p), float(self.p @ self.p)
        f = vals / self.n_rows + 0.5 * self.lam * (ww + 2 * alphas * wp + alphas**2 * pp)
        df = ders / self.n_rows + self.lam * (wp + alphas * pp)
        return f, df

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        w_new = self.w + alpha * self.p
        sums = [part.step(alpha) for part in self.parts]
        self.w, self.p = w_new, None
        self.evaluations += 1
        return self._assemble(sums, w_new)

    def hess_diag_sum(self) -> np.ndarray:
        """``sum_i l''(z_i) x_ij^2`` over every part's rows at the current point."""
        return np.sum([part.hess_diag() for part in self.parts], axis=0)

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        hv = sum(part.hess_vec(v) for part in self.parts)
        return hv / self.n_rows + self.lam * np.asarray(v, dtype=np.float64)

