"""``bench/paper.py --quick``: the paper's experiment end to end on a tiny configuration.

2 DCs, 500 and 4,000 rows per DC, 2^10 hashed features, every size in its own child
process: results.json must hold every (K, rows, plan) row with finite bytes and AUC, a
break-even entry per metric, and the plots must exist.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from .tools.timing import scaled

ROOT = Path(__file__).resolve().parents[1]
PLANS = {"centralize", "fadl-subspace float16", "sqm-lbfgs float16"}


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[dict, Path, str]:
    tmp = tmp_path_factory.mktemp("paper")
    out = tmp / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "paper.py"), "--quick", "--work",
         str(tmp / "work"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=scaled(300), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "results.json").read_text()), out, proc.stdout


def test_every_size_and_plan_ran(results) -> None:
    res, _, _ = results
    configs = {(c["dcs"], c["rows_per_dc"]): c for c in res["configs"]}
    assert set(configs) == {(2, 500), (2, 4000)}
    for c in configs.values():
        assert c["status"] == "ran", c
        assert c["names"] == ["us-east", "eu-west"]
        assert {p["plan"] for p in c["plans"]} == PLANS
        for p in c["plans"]:
            m = p["measured"]
            assert m["wan_bytes"] > 0 and math.isfinite(m["usd"]), p
            assert 0.5 < m["auc"] <= 1.0 and math.isfinite(m["log_loss"]), p
            assert math.isfinite(m["modeled_seconds"]) and m["wall_seconds"] >= 0, p
            assert p["predicted"]["wan_bytes"] > 0, p
            assert p["status"] == "converged", p  # all reach gtol at this size
    # the flat table: one row per (K, rows, plan)
    assert len(res["table"]) == 2 * len(PLANS)


def test_centralizing_grows_with_rows(results) -> None:
    res, _, _ = results
    central = {c["rows_per_dc"]: next(p for p in c["plans"] if p["plan"] == "centralize")
               for c in res["configs"]}
    small, large = central[500]["measured"]["wan_bytes"], central[4000]["measured"]["wan_bytes"]
    assert 6 < large / small < 10  # the export is linear in rows (8x), plus a few calls


def test_break_even_entries(results) -> None:
    res, _, _ = results
    entries = {(e["dcs"], e["metric"]): e for e in res["break_even"]}
    assert set(entries) == {(2, "usd"), (2, "wan_bytes")}
    for e in entries.values():
        fits = e["predicted"]["fits"]
        assert set(fits) == PLANS
        assert fits["centralize"]["beta"] == pytest.approx(1.0, abs=0.1)
        assert e["predicted"]["rows_per_dc"] is None or e["predicted"]["rows_per_dc"] > 0
        assert len(e["measured"]["sides"]) == 2
        for side in e["measured"]["sides"]:
            assert side["side"] in ("geo", "centralize")


def test_outputs(results) -> None:
    res, out, stdout = results
    for name in ("break_even_bytes.png", "break_even_usd.png", "paper.md"):
        assert (out / name).stat().st_size > 1000, name
    md = (out / "paper.md").read_text()
    assert res["command"].startswith("python bench/paper.py --quick")
    assert res["command"] in md and "| DCs | rows/DC | plan |" in md
    assert "break-even" in stdout


def test_sizes_that_do_not_fit_are_skipped_and_said_so(tmp_path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "paper.py"), "--quick", "--memory-gb", "0.01",
         "--work", str(tmp_path / "work"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=scaled(120), check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    assert [c["status"] for c in res["configs"]] == ["skipped", "skipped"]
    assert all("exceeds the 0.0 GB available" in c["why"] for c in res["configs"])
    assert "skipping 2 DCs x 500 rows/DC" in proc.stdout
    assert "Not run:" in (out / "paper.md").read_text()
