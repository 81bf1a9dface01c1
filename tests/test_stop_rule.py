"""The one stop rule (geodml.algorithms.stop): each reason fires, in its order, and
every method's module stops through it rather than its own checks."""

import ast
import math
from pathlib import Path

import pytest

from geodml.algorithms.record import RoundRow
from geodml.algorithms.stop import StopRule, ValidationStop
from geodml.errors import ConfigError

ALGORITHMS = Path(__file__).resolve().parents[1] / "src" / "geodml" / "algorithms"


def row(it, f=1.0, g=None, sub=None, wan=0, val=None):
    metrics = {} if val is None else {"val_log_loss": val}
    return RoundRow(it, f, sub, g, wan, wan, it, float(it), 0.0, metrics)


def test_gtol_is_relative_to_the_first_gradient_or_the_given_reference():
    rule = StopRule(gtol=1e-2)
    assert rule.check(row(0, g=10.0)) is None
    assert rule.check(row(1, g=0.2)) is None
    assert rule.check(row(2, g=0.1)) == "relative gradient norm below gtol"
    warm = StopRule(gtol=1e-2, reference=100.0)  # a warm start measures against zero's
    assert warm.check(row(0, g=1.0)) == "relative gradient norm below gtol"
    assert StopRule(gtol=1e-2).check(row(0, g=0.0)) == "gradient is zero"


def test_methods_without_gradients_ignore_gtol_and_each_other_reason_fires():
    assert StopRule().check(row(0, g=0.0)) is None
    assert StopRule(tol=1e-3).check(row(0, sub=1e-4)) == "relative suboptimality below 0.001"
    assert StopRule(max_wan_bytes=10).check(row(0, wan=10)) == "WAN byte budget of 10 reached"
    assert StopRule(max_rounds=3).check(row(3)) == "max_rounds (3) reached"
    assert StopRule(max_rounds=3).check(row(2)) is None


def test_divergence_is_watched_only_for_runs_that_report_an_objective():
    rule = StopRule()
    assert rule.check(row(0, f=1.0)) is None
    assert rule.check(row(1, f=math.inf)).startswith("diverged")
    assert StopRule().check(row(0, f=2.0)) is None
    exploded = StopRule()
    exploded.check(row(0, f=2.0))
    assert exploded.check(row(1, f=3e6)).startswith("diverged")
    private = StopRule(max_rounds=5)  # dp-gd releases no loss: nan from the start
    assert private.check(row(1, f=math.nan)) is None
    assert private.check(row(5, f=math.nan)) == "max_rounds (5) reached"


def test_validation_stops_after_patience_rows_without_a_relative_gain():
    rule = StopRule(validation=ValidationStop(patience=2, threshold=1e-3))
    losses = [0.70, 0.60, 0.55, 0.5499, 0.56, 0.54]
    reasons = [rule.check(row(i, val=v)) for i, v in enumerate(losses)]
    # 0.5499 is a gain below the threshold (stale 1), 0.56 no gain (stale 2): stop there
    assert reasons[:4] == [None] * 4
    assert reasons[4].startswith("validation loss stopped improving")
    assert "at iteration 3" in reasons[4]
    assert StopRule.converged(reasons[4])
    quiet = StopRule(validation=ValidationStop(patience=1))
    assert quiet.check(row(0)) is None and quiet.check(row(1)) is None  # rows without V


def test_bad_validation_settings_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="patience"):
        ValidationStop(patience=0)
    with pytest.raises(ConfigError, match="threshold"):
        ValidationStop(threshold=1.5)


def test_no_method_writes_its_own_gtol_or_budget_check():
    """The rule's reasons are stated once, in stop.py; methods only call check()."""
    for path in sorted(ALGORITHMS.glob("*.py")):
        if path.name == "stop.py":
            continue
        strings = [n.value for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, ast.Constant) and isinstance(n.value, str)]
        for text in ("relative gradient norm below gtol", "WAN byte budget",
                     "relative suboptimality below"):
            assert not any(text in s for s in strings), f"{path.name} states {text!r}"


def test_outcome_is_the_rules_reason_when_it_stopped_the_solver_else_the_solvers():
    rule = StopRule(gtol=1e-2)
    assert rule.outcome("relative decrease below ftol", True) == (
        "relative decrease below ftol", True)
    rule.check(row(0, g=10.0))
    rule.check(row(1, g=0.05))
    assert rule.outcome("stopped by callback", False) == (
        "relative gradient norm below gtol", True)
    budget = StopRule(max_wan_bytes=5)
    budget.check(row(0, wan=9))
    assert budget.outcome("stopped by callback", False) == ("WAN byte budget of 5 reached",
                                                            False)
