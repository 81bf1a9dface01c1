"""Run defaults shared by ``geodml train``, ``plan``, ``compare`` and the Python API.

Stated once here; :class:`geodml.algorithms.registry.TrainSpec`, the planner's
``Workload`` and every CLI option import them.

* ``DEFAULT_GTOL``: stop once ``||grad F(w_k)|| <= gtol * ||grad F(w_0)||`` (relative
  gradient norm; a warm start measures it against the starting model's reference).
  Methods that see exact gradients honour it (sqm-*, fadl, fadl-subspace, dane and
  the centralized solvers); oneshot, fedavg, admm and dp-gd stop by their rounds.
* ``DEFAULT_MAX_ROUNDS``: outer iterations, at most.
"""

from __future__ import annotations

DEFAULT_GTOL: float = 1e-3
DEFAULT_MAX_ROUNDS: int = 2000
