"""The global objective evaluated by the sites: the federation as a :class:`SumsSource`.

``FederatedObjective(fed, lam)`` is :class:`~geodml.models.objective.RegularizedObjective`
over :class:`FederationSums`:

    F(w) = (1/N) sum_k L_k(w) + (lambda/2) ||w||^2

Each call is one round to every site: ``value_grad`` sends ``w`` down and brings
gradient sums up; ``set_direction`` only remembers ``p``, which travels with the
first ``line_values`` or ``step`` call (sites cache ``X p``); further step-size
batches and steps (moving to ``w + a p`` and returning the gradient) send no vector
down. So an L-BFGS iteration costs one vector down and one vector up per site, and
one round when its trial step ``a = 1`` is taken (:func:`geodml.optim.lbfgs.lbfgs`).
Because the sites see vectors after the wire format and the down compression
(e.g. float32, 8-bit), the objective keeps ``w`` and ``p`` as the sites received them
and hands ``p`` back from ``set_direction``, so solver and sites step alike.
"""

from __future__ import annotations

import numpy as np

from geodml.federation.federation import Federation
from geodml.models.objective import RegularizedObjective


class FederationSums:
    """The sums over a federation's sites (a :class:`~geodml.models.objective.SumsSource`)."""

    def __init__(self, federation: Federation):
        self.fed = federation
        self._p: np.ndarray | None = None
        self.pending_direction = False
        self.step_derivatives: tuple[float, ...] = ()

    @property
    def n_rows(self) -> int:
        """The rows of the sites still in the run (fewer once a lost site is dropped)."""
        return self.fed.n_rows

    @property
    def compressing(self) -> bool:
        return self.fed.compressing

    def point(self, w: np.ndarray) -> np.ndarray:
        return self.fed.as_received(w)

    def evaluate(self, w: np.ndarray, need_grad: bool = True
                 ) -> tuple[float, np.ndarray | None]:
        evals = self.fed.evaluate(w, want_grad=need_grad)
        grad = np.sum([e.grad for e in evals], axis=0) if need_grad else None
        return sum(e.loss_sum for e in evals), grad

    def set_direction(self, p: np.ndarray) -> np.ndarray:
        """Remember ``p`` as the sites will receive it; returns that direction."""
        self._p = self.fed.as_received(p)
        self.pending_direction = True
        return self._p

    def line_sums(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        parts = self.fed.line_search(self._p if self.pending_direction else None, alphas)
        self.pending_direction = False
        return np.sum([v for v, _ in parts], axis=0), np.sum([d for _, d in parts], axis=0)

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        p = self._p if self.pending_direction else None
        self.pending_direction = False
        evals = self.fed.evaluate(step=alpha, direction=p)
        wanted = 1 + (p is not None)  # none under secure aggregation
        slopes = [e.derivatives for e in evals]
        self.step_derivatives = tuple(np.sum(slopes, axis=0).tolist()) if all(
            len(d) == wanted for d in slopes) else ()
        return sum(e.loss_sum for e in evals), np.sum([e.grad for e in evals], axis=0)

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        evals = self.fed.evaluate(None, want_grad=False, v=self.fed.as_received(v))
        return np.sum([e.hvp for e in evals], axis=0)

    def note_gradient(self, grad_norm: float) -> None:
        self.fed.note_gradient(grad_norm)

    def note_direction(self, believed_slope: float, true_slope: float) -> None:
        self.fed.note_direction(believed_slope, true_slope)


class FederatedObjective(RegularizedObjective):
    """:class:`RegularizedObjective` over a federation's sites."""

    def __init__(self, federation: Federation, lam: float):
        super().__init__(FederationSums(federation), lam, federation.n_features)
        self.fed = federation


__all__ = ["FederatedObjective", "FederationSums"]
