"""The per-feature preconditioner of the federated exact methods, from the sites.

One round: every site returns the per-row mean ``h_k`` of its Hessian diagonal at
the current point (the ``hess_diag`` local procedure, :mod:`geodml.site.procedures`;
one vector up per site, none down), and the coordinator forms

    D = (1/N) sum_k n_k h_k + lambda

(under secure aggregation the sites' vectors arrive already summed). ``D`` lives at
the coordinator: SQM solves in the variables ``D^(1/2) w``
(:func:`geodml.optim.preconditioner.solve`), FADL-subspace scales its gradient
direction by ``D^(-1)`` and hands ``D`` to the sites' local solves once.
"""

from __future__ import annotations

import numpy as np

from geodml.federation import Federation
from geodml.optim.preconditioner import Preconditioner


def global_metric(fed: Federation, preconditioner: Preconditioner, lam: float
                  ) -> np.ndarray | None:
    """``D`` at the sites' current point (zero if none), or None when ``preconditioner``
    is off. Costs one WAN round with one vector up per site."""
    if not preconditioner.active:
        return None
    parts = fed.local_solve("hess_diag", {}, [])
    curvature = np.zeros(fed.n_features)
    for vector, _info, rows in parts:
        curvature += rows * np.asarray(vector, dtype=np.float64)
    return preconditioner.metric(curvature, fed.n_rows, lam)
