"""The global objective evaluated by the sites: the SQM oracle.

Implements :class:`~geodml.models.ObjectiveOracle` over a :class:`Federation`:

    F(w) = (1/N) sum_k L_k(w) + (lambda/2) ||w||^2

Each call is one round to every site: ``value_grad`` sends ``w`` down and brings
gradient sums up; ``set_direction`` only remembers ``p``, which travels with the
first ``line_values`` call (sites cache ``X p``); further step-size batches and
``step`` (moving to ``w + a p`` and returning the gradient) send no vector down.
So an L-BFGS iteration costs one vector down and one vector up per site.
Because the sites see vectors after the wire format and the down compression
(e.g. float32, 8-bit), the coordinator keeps ``p`` as the sites received it and
hands it back from ``set_direction``, so solver and sites step alike.
"""

from __future__ import annotations

import numpy as np

from geodml.federation import Federation, SiteEval


class FederatedObjective:
    def __init__(self, federation: Federation, lam: float):
        self.fed = federation
        self.lam = float(lam)
        self.n_features = federation.n_features
        self.w: np.ndarray | None = None
        self.p: np.ndarray | None = None
        self._p_pending = False
        self._g: np.ndarray | None = None  # the last gradient, as assembled from the sites

    @property
    def n_rows(self) -> int:
        """The rows of the sites still in the run (fewer once a lost site is dropped)."""
        return self.fed.n_rows

    def _as_received(self, v: np.ndarray) -> np.ndarray:
        return self.fed.as_received(v)

    def _assemble(self, evals: list[SiteEval], w: np.ndarray) -> tuple[float, np.ndarray]:
        loss = sum(e.loss_sum for e in evals)
        grad = np.sum([e.grad for e in evals], axis=0) / self.n_rows + self.lam * w
        self.fed.note_gradient(float(np.linalg.norm(grad)))
        self._g = grad
        return loss / self.n_rows + 0.5 * self.lam * float(w @ w), grad

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        self.w = self._as_received(w)
        self.p = None
        return self._assemble(self.fed.evaluate(self.w), self.w)

    def set_direction(self, p: np.ndarray) -> np.ndarray:
        """Remember ``p`` as the sites will receive it; returns that direction."""
        self.p = self._as_received(p)
        self._p_pending = True
        return self.p

    def line_values(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        alphas = np.asarray(alphas, dtype=np.float64)
        probe = self._p_pending and self.fed.compressing and self._g is not None
        asked = np.concatenate([[0.0], alphas]) if probe else alphas
        parts = self.fed.line_search(self.p if self._p_pending else None, asked)
        self._p_pending = False
        if probe:  # the exact slope at 0 checks the compressed gradient's (same round)
            true_slope = float(sum(d[0] for _, d in parts)) / self.n_rows + self.lam * float(
                self.w @ self.p)
            self.fed.note_direction(float(self._g @ self.p), true_slope)
            parts = [(v[1:], d[1:]) for v, d in parts]
        vals = np.sum([v for v, _ in parts], axis=0)
        ders = np.sum([d for _, d in parts], axis=0)
        ww, wp, pp = float(self.w @ self.w), float(self.w @ self.p), float(self.p @ self.p)
        f = vals / self.n_rows + 0.5 * self.lam * (ww + 2 * alphas * wp + alphas**2 * pp)
        return f, ders / self.n_rows + self.lam * (wp + alphas * pp)

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        if self._p_pending:  # the direction never went out: send it with a 0-step batch
            self.line_values(np.array([0.0]))
        w_new = self.w + alpha * self.p
        evals = self.fed.evaluate(step=alpha)
        self.w, self.p = w_new, None
        return self._assemble(evals, w_new)

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        evals = self.fed.evaluate(None, want_grad=False, v=self._as_received(v))
        return np.sum([e.hvp for e in evals], axis=0) / self.n_rows + self.lam * np.asarray(v)
