"""Solvers written against :class:`geodml.models.ObjectiveOracle`."""

from geodml.optim.lbfgs import LbfgsOptions, SolveResult, lbfgs
from geodml.optim.linesearch import LineSearchResult, wolfe_line_search

__all__ = ["LbfgsOptions", "LineSearchResult", "SolveResult", "lbfgs", "wolfe_line_search"]
