"""Solvers written against :class:`geodml.models.ObjectiveOracle`."""

from geodml.optim.lbfgs import LbfgsOptions, SolveResult, lbfgs
from geodml.optim.linesearch import LineSearchResult, wolfe_line_search
from geodml.optim.tron import tron

__all__ = ["LbfgsOptions", "LineSearchResult", "SolveResult", "lbfgs", "tron", "wolfe_line_search"]
