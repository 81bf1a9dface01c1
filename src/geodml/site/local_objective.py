"""A site's own objective with a proximal and a linear term, for local procedures.

Over one DC's rows (a ``SumsProvider``: loss sum ``L``, gradient sum ``G``,
Hessian-vector sum ``H v``, line sums) this is the oracle

    phi(x) = s L(x) + (lam/2) ||x||^2 + (mu/2) ||x - c||^2 - b.x

    grad phi(x)   = s G(x) + lam x + mu (x - c) - b
    Hess phi(x) v = s H(x) v + (lam + mu) v

Along a direction ``p`` from ``x`` the quadratic part ``Q`` is exact in scalars:
``Q(x + a p) = Q(x) + a grad Q(x).p + (a^2/2)(lam + mu) p.p``, so the L-BFGS line
search costs one ``X p`` and O(n) work per step size, as for the global objective.

Special cases: ``s = 1/n_k, mu = 0, b = 0`` is the site's regularized objective
``F_k``; ``s = 1/N, lam = 0`` is ADMM's x-update; ``s = 1/n_k, c = w,
b = grad F_k(w) - eta g`` is DANE's local problem.
"""

from __future__ import annotations

import numpy as np

from geodml.models.objective import SumsProvider


class LocalObjective:
    """``phi`` above as an :class:`~geodml.models.ObjectiveOracle` (stateful: a current point)."""

    def __init__(self, executor: SumsProvider, n_features: int, scale: float, lam: float = 0.0,
                 mu: float = 0.0, center: np.ndarray | None = None,
                 linear: np.ndarray | None = None):
        self.ex = executor
        self.n_features = n_features
        self.scale = float(scale)
        self.lam = float(lam)
        self.mu = float(mu)
        self.c = np.zeros(n_features) if center is None else np.asarray(center, np.float64)
        self.b = np.zeros(n_features) if linear is None else np.asarray(linear, np.float64)
        self.x: np.ndarray | None = None
        self.p: np.ndarray | None = None
        self.last_loss_sum = float("nan")  # L at the current point

    def _quad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``Q(x)`` and ``grad Q(x)``: everything but the loss term."""
        d = x - self.c
        q = 0.5 * self.lam * float(x @ x) + 0.5 * self.mu * float(d @ d) - float(self.b @ x)
        return q, self.lam * x + self.mu * d - self.b

    def _assemble(self, loss_sum: float, grad_sum: np.ndarray, x: np.ndarray
                  ) -> tuple[float, np.ndarray]:
        self.last_loss_sum = float(loss_sum)
        q, gq = self._quad(x)
        return self.scale * loss_sum + q, self.scale * grad_sum + gq

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        self.x = np.array(w, dtype=np.float64)
        self.p = None
        sums = self.ex.evaluate(self.x)
        return self._assemble(sums.loss, sums.grad, self.x)

    def set_direction(self, p: np.ndarray) -> None:
        self.p = np.array(p, dtype=np.float64)
        self.ex.set_direction(self.p)

    def line_values(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        alphas = np.asarray(alphas, dtype=np.float64)
        vals, ders = self.ex.line_sums(alphas)
        q, gq = self._quad(self.x)
        gp, pp = float(gq @ self.p), float(self.p @ self.p)
        curv = self.lam + self.mu
        f = self.scale * vals + q + alphas * gp + 0.5 * alphas**2 * curv * pp
        return f, self.scale * ders + gp + alphas * curv * pp

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        x_new = self.x + alpha * self.p
        sums = self.ex.step(alpha)
        self.x = x_new  # p stays cached, as the executor's does
        return self._assemble(sums.loss, sums.grad, x_new)

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return self.scale * self.ex.hess_vec(v) + (self.lam + self.mu) * v
