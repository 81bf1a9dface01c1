"""The live lines of `geodml compare` and the demo: a refused run's line goes away,
a finished run's line stops spinning."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from geodml.cli import report_output


def test_a_refused_runs_spinner_does_not_stay_on_screen(monkeypatch):
    screen = Console(record=True, force_terminal=False, width=120)
    monkeypatch.setattr(report_output, "console", screen)
    row = SimpleNamespace(iteration=3, rounds=7, wan_bytes=2048, objective=0.5)
    with report_output.run_progress() as factory:
        factory("centralize")  # refused: never reports a row
        factory("centralize (exception for eu-west)")(row)
        factory("fadl-subspace")(row)
    final = screen.export_text()
    assert "centralize: starting" not in final
    assert "centralize (exception for eu-west): iteration 3, rounds 7" in final
    assert "fadl-subspace: iteration 3, rounds 7, WAN 2.05 KB" in final or \
        "fadl-subspace: iteration 3, rounds 7" in final
