"""Pointwise losses ``l(y, z)`` of a linear model's margin ``z = x.w``.

Binary labels are ``y in {0, 1}``; write ``s = 2y - 1 in {-1, +1}``. Each loss gives
its value, first derivative ``l'(z) = dl/dz`` and second derivative ``l''(z)``
(a generalized one where ``l`` is only once differentiable):

=============  =========================  ======================  ====================
loss           l(y, z)                    l'(z)                   l''(z)
=============  =========================  ======================  ====================
logistic       log(1 + exp(-s z))         sigmoid(z) - y          sigmoid(z)(1-sigmoid(z))
squared_hinge  max(0, 1 - s z)^2          -2 s max(0, 1 - s z)    2 [1 - s z > 0]
squared        (z - y)^2 / 2              z - y                   1
=============  =========================  ======================  ====================

All three are convex in ``z``; ``l'`` is bounded by 1 for logistic, which later
bounds a row's gradient for clipping. Computations run in float64.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit


class Loss:
    """A pointwise loss. Subclasses implement the three vectorized functions."""

    name: str = ""
    binary: bool = True  # labels must be 0/1

    def value(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def deriv(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def curvature(self, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def value_and_deriv(self, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.value(y, z), self.deriv(y, z)

    def constant_curvature(self, label_mean: float) -> float:
        """``l''`` of every row at the best constant margin ``c* = argmin_c sum_i l(y_i, c)``
        of rows whose labels average ``label_mean``: the curvature a model that has
        learned only the base rate sees (the per-feature preconditioner's statistic)."""
        raise NotImplementedError


class Logistic(Loss):
    """Logistic loss ``log(1 + exp(-s z))``, computed without overflow or NaN.

    With ``m = -s z`` and ``e = exp(-|z|) = exp(-|m|)``:
    ``l = log(1 + exp(m)) = max(m, 0) + log1p(e)``, and ``sigmoid(z) = 1/(1+e)`` for
    ``z >= 0``, ``e/(1+e)`` otherwise. No term is ever ``0 * inf`` or ``inf - inf``,
    so an infinite margin (a line search's trial step far out) gives the exact limits
    ``l = 0`` (right side) or ``l = +inf`` (wrong side), never NaN; the textbook form
    ``log(1 + exp(z)) - y z`` gives NaN there. One ``exp`` and one ``log1p`` per row.
    """

    name = "logistic"

    @staticmethod
    def _softplus_of_minus_sz(y, z, e):
        """``max(-s z, 0) + log1p(e)`` with ``e = exp(-|z|)``, reusing ``e``'s buffer."""
        out = np.log1p(e, out=e)
        out += np.maximum((1.0 - 2.0 * y) * z, 0.0)
        return out

    def value(self, y, z):
        return self._softplus_of_minus_sz(y, z, np.exp(-np.abs(z)))

    def deriv(self, y, z):
        return expit(z) - y

    def curvature(self, y, z):
        p = expit(z)
        return p * (1.0 - p)

    def constant_curvature(self, label_mean):
        # c* = logit(mean y), where sigmoid(c*) = mean y
        return float(label_mean * (1.0 - label_mean))

    def value_and_deriv(self, y, z):
        e = np.exp(-np.abs(z))
        r = 1.0 / (1.0 + e)
        sig = np.where(z >= 0.0, r, e * r)
        sig -= y
        return self._softplus_of_minus_sz(y, z, e), sig


class SquaredHinge(Loss):
    """Squared hinge ``max(0, 1 - s z)^2`` (L2-SVM)."""

    name = "squared_hinge"

    def value(self, y, z):
        m = np.maximum(0.0, 1.0 - (2.0 * y - 1.0) * z)
        return m * m

    def deriv(self, y, z):
        s = 2.0 * y - 1.0
        return -2.0 * s * np.maximum(0.0, 1.0 - s * z)

    def curvature(self, y, z):
        return 2.0 * ((1.0 - (2.0 * y - 1.0) * z) > 0.0)

    def constant_curvature(self, label_mean):
        # c* = 2 mean(y) - 1 lies in [-1, 1]: every row's hinge is active there
        return 2.0

    def value_and_deriv(self, y, z):
        s = 2.0 * y - 1.0
        m = np.maximum(0.0, 1.0 - s * z)
        return m * m, -2.0 * s * m


class Squared(Loss):
    """Squared loss ``(z - y)^2 / 2`` (ridge regression); labels are real."""

    name = "squared"
    binary = False

    def value(self, y, z):
        r = z - y
        return 0.5 * r * r

    def deriv(self, y, z):
        return z - y

    def curvature(self, y, z):
        return np.ones_like(z)

    def constant_curvature(self, label_mean):
        return 1.0


LOSSES: dict[str, Loss] = {cls.name: cls() for cls in (Logistic, SquaredHinge, Squared)}


def get_loss(name: str) -> Loss:
    """The loss named ``name``, with an error listing the known ones."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(sorted(LOSSES))}") from None
