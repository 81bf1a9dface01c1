r"""The paper's experiment at scale: centralize, or train geo-distributed? (issue 7)

Usage (the full experiment; ``--quick`` for a smoke run of a few seconds)::

    python bench/paper.py --dcs 2,4,8 --rows 1000000,2000000,5000000,10000000 --bits 20 \
        [--methods fadl-subspace,sqm-lbfgs] [--extra-methods oneshot] [--compress float16]
        [--gtol 1e-3] [--test-rows 50000] [--calibration-rows 200000]
        [--max-iterations 1000] [--run-seconds 7200] [--time-budget 86400]
        [--memory-gb GB] [--stream] [--work DIR] [--out DIR] [--resume]

Setup
-----
Synthetic regional CTR data (:mod:`geodml.data.synthetic`, the demo's generator: 26
categorical and 4 numeric fields hashed into ``2^bits`` features, feature- and
label-shifted by region) in ``K`` DCs named after AWS regions, the first ``K`` of
``us-east`` (home), ``eu-west``, ``ap-south``, ``sa-east`` (the demo's four), ``us-west``,
``eu-central``, ``ap-northeast``, ``ca-central`` (``bench/_regional.py``), so every link
gets that pair's bandwidth, RTT and egress price from the region table of
:mod:`geodml.planning.wan`. ``n`` rows per DC for every ``n`` of ``--rows``, plus ``--test-rows``
held-out rows per DC, pooled for the test metrics. Generated data is cached under
``WORK/data``, keyed by the generator's config, and shared by every ``K``.

For every ``(K, n)``, in a child process of its own (so memory is returned between
sizes, its peak RSS is measured, and a crash or a kill costs only that size),
:func:`geodml.planning.compare.run_compare` over in-process sites (the same messages and metered
bytes as gRPC, ``bench/_regional.py``; with ``--stream`` each site reads its rows block
by block from memory-mapped files, the same sums) with ``calibrate="always"`` and a
fresh calibration store:

1. the planner predicts WAN bytes, modeled time and egress dollars of centralizing
   and of every geo plan (each calibrated on ``--calibration-rows`` rows of the
   median site, at most all);
2. the centralized baseline: every DC exports its rows home (metered), L-BFGS there;
3. every geo plan (``--methods`` with each ``--compress``, vectors compressed both
   ways as in the demo), logistic loss, ``lambda = 1/N``, all to
   ``||grad|| <= gtol ||grad_0||``;

each run metered: WAN bytes, modeled seconds over the links, egress dollars, wall
seconds, test AUC and log loss, final objective.

Budgets: nothing runs silently forever
---------------------------------------
* per run: ``--max-iterations`` outer iterations (L-BFGS iterations for the
  centralized baseline) and ``--run-seconds`` of wall time, checked after every
  iteration; a run cut short is marked *stopped before gtol* with the reason, and its
  bytes and dollars are lower bounds of what reaching gtol would have cost (the
  planner's calibration runs are not capped, but the child's hard limit below is);
* per size: the child is killed after ``run-seconds * (1 + 2 * plans) + 600`` seconds
  plus its data generation (marked *killed*);
* in all: sizes run smallest first (every ``K`` at one ``n`` before the next ``n``);
  before each, its time is estimated by scaling the measured time of the largest size
  run so far by total rows (``K n``) and its peak memory by peak RSS per row; a size
  that would exceed ``--time-budget`` or the memory available (``--memory-gb``, default
  MemAvailable) is skipped and said so, in the output and in ``results.json``.

Break-even
----------
Centralizing moves every other DC's export once, so its bytes grow linearly with the
rows per DC ``n``::

    B_c(n) = sum_{s != home} (e_s n + o_s)       e_s: export bytes per row (Arrow IPC, zstd)

A geo run moves ``R(n)`` rounds of about one model-sized vector each way per DC::

    B_g(n) = R(n) b(n),     b(n) <= 2 sum_{s != home} |support_s(n)| * bytes per value

where the support saturates at ``2^bits`` and the rounds to ``gtol`` change slowly with
``n`` (``lambda = 1 / (K n)`` shrinks while the rows per feature grow), so ``B_g`` barely
depends on ``n``. Dollars are per-link bytes times the source region's price, so they have
the same form. Both are fitted as power laws over the sizes the planner predicted
(least squares on logarithms)::

    log B_p(n) = alpha_p + beta_p log n      (beta_c ~ 1, beta_g ~ 0)

and they meet at the predicted break-even

    log n* = (alpha_g - alpha_c) / (beta_c - beta_g),

above which geo is cheaper when ``beta_c > beta_g``. With one size only, ``beta_c = 1``
and ``beta_g = 0`` are assumed: ``n* = n_1 B_g(n_1) / B_c(n_1)``. The *best* geo plan is
the lower envelope ``min_m B_m(n)`` of the exact methods (those that reach the
centralized optimum); its break-even is where the envelope crosses ``B_c``, found on the
fitted curves (a log grid from ``n_min / 1000`` to ``1000 n_max``, then bisection), and
reported as *extrapolated* when it lies outside the sizes run.

The runs check it: at every measured size the ratio ``rho(n) = B_g,best(n) / B_c(n)``
(best over the exact methods that converged; a run stopped before gtol gives a lower
bound, so a stopped run can prove only that centralizing is cheaper) says which side of
break-even the size is on. Where ``log rho`` changes sign between consecutive sizes
``n_i < n_{i+1}``, the measured break-even is interpolated linearly in ``log n``::

    log n* = log n_i - log rho_i (log n_{i+1} - log n_i) / (log rho_{i+1} - log rho_i)

and the same power-law fit is made on the measured points.

Outputs (``--out``, default ``WORK/paper``): ``results.json`` (every size, plan,
prediction, measurement, break-even, skipped size, the command), ``break_even_bytes.png``
and ``break_even_usd.png`` (bytes and dollars per run against rows per DC, one panel per
``K``: the planner's fits as lines, its predictions as open markers, measured runs as
filled markers, break-even marked), and ``paper.md``, the Markdown section for
BENCHMARKS.md with the exact command. Each size's own ``geodml compare`` report
(``report.md``, plots, audit logs, run records) is in ``WORK/runs/kK-nN-SETTINGS``. All
are rewritten after every size, so an
interrupted run keeps what it did; ``--resume`` reuses the sizes a previous run with the
same settings finished.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rich.console import Console

from _regional import (
    DC_NAMES,
    cache_key,
    dc_names,
    deployment_for,
    federation_factory,
    geo_variants,
    in_process_sites,
    is_cached,
    markdown_table,
    regional_config,
    regional_data,
    rich_table,
)
from geodml.algorithms.record import RoundRow

#: methods that reach the centralized optimum (docs/algorithms.md); others are labelled
EXACT_METHODS = frozenset({"sqm-lbfgs", "sqm-gd", "sqm-tron", "fadl", "fadl-subspace",
                           "admm"})
GENERATION_ROWS_PER_SECOND = 600_000  # prior, before a generation was timed (BENCHMARKS.md)
BASE_RSS = 350e6  # the child's imports, the planner's throughput probe, the test set
PRIOR_BYTES_PER_ROW = 2000.0  # peak RSS per training row (2^16, 0.1-0.8M rows: 1,958)
HARD_SLACK_SECONDS = 600.0
FIT_REACH = 100  # a fitted crossing further outside the sizes run is not printed as a number
MEMORY_MARGIN = 1.15  # on the fitted peak RSS
QUICK = {"dcs": "2", "rows": "500,4000", "bits": 10, "test_rows": 1000,
         "max_iterations": 300, "run_seconds": 120.0, "time_budget": 600.0}
DEFAULTS = {"dcs": "2,4,8", "rows": "1000000,2000000,5000000,10000000", "bits": 20,
            "test_rows": 50_000, "max_iterations": 1000, "run_seconds": 7200.0,
            "time_budget": 86400.0}


# -- one size, in a child process ------------------------------------------------------

def _plan_method(plan: str) -> str:
    return plan.split()[0]


def run_size(spec: dict) -> dict:
    """Plan and run every plan for ``spec["dcs"]`` DCs of ``spec["rows"]`` rows each; the
    result as a JSON-ready dict (runs in the child process)."""
    from geodml.planning.compare import run_compare
    from geodml.planning.planner import CalibrationStore, Workload

    t_start = time.perf_counter()
    K, n = spec["dcs"], spec["rows"]
    names = dc_names(K)
    work = Path(spec["work"])
    label = f"K={K}, {n:,} rows/DC"

    def say(msg: str) -> None:
        print(f"  [{time.perf_counter() - t_start:7.0f} s] {label}: {msg}", flush=True)

    sites, test, gen_seconds = regional_data(work / "data", names, n, spec["bits"],
                                             spec["test_rows"], spec["seed"], progress=say,
                                             stream=spec["stream"])
    services = in_process_sites(sites, stream=spec["stream"])
    deployment = deployment_for(names)
    variants = geo_variants(spec["methods"], spec["compress"])
    out = Path(spec["report_dir"])
    shutil.rmtree(out, ignore_errors=True)
    phases: list[tuple[float, str, int | None, int | None]] = []  # t, message, RSS, peak

    def progress(msg: str) -> None:
        rss = _rss()
        phases.append((time.perf_counter() - t_start, msg, rss.get("VmRSS"), rss.get("VmHWM")))
        say(msg + (f" (RSS {rss['VmRSS'] / 1e9:.2f} GB, peak {rss['VmHWM'] / 1e9:.2f} GB)"
                   if rss else ""))

    def on_row_factory(name: str) -> Callable[[RoundRow], None]:
        """A live line every 25 iterations or every minute."""
        last = [time.perf_counter()]

        def on_row(row: RoundRow) -> None:
            now = time.perf_counter()
            if row.iteration % 25 == 0 or now - last[0] > 60:
                last[0] = now
                gn = "" if row.grad_norm is None else f", |g| {row.grad_norm:.3g}"
                say(f"{name}: iteration {row.iteration}, {row.wan_bytes / 1e6:,.2f} MB, "
                    f"objective {row.objective:.7f}{gn}, {row.seconds:.0f} s")
        return on_row

    t_compare = time.perf_counter()
    c = run_compare(federation_factory(services, names[0], not spec.get("concurrent_sites")),
                    deployment, variants, out,
                    Workload(gtol=spec["gtol"]), test=test, calibrate_mode="always",
                    store=CalibrationStore(out / "calibration.json"),
                    calibration_rows=spec["calibration_rows"],
                    calibration_points=spec.get("calibration_points", 2), progress=progress,
                    on_row_factory=on_row_factory, max_iterations=spec["max_iterations"],
                    max_seconds=spec["run_seconds"])
    compare_seconds = time.perf_counter() - t_compare
    first_run = next((t for t, m, *_ in phases if m.startswith("centralized baseline")), None)
    plans = []
    for r in c.runs:
        name = "centralize" if r.kind == "centralized" else r.plan
        est = c.plan.estimate(name)
        method = "centralize" if r.kind == "centralized" else _plan_method(r.plan)
        exact = method == "centralize" or method in EXACT_METHODS
        if r.converged:
            status = "converged"
        elif not exact:
            status = "approximate"
        else:
            status = "stopped before gtol"
        plans.append({
            "plan": r.plan, "kind": r.kind, "method": method, "exact": exact,
            "status": status, "reason": r.reason, "converged": bool(r.converged),
            "predicted": {"wan_bytes": est.wan_bytes, "usd": est.usd, "seconds": est.seconds,
                          "ranges": {q: list(est.range_of(q))
                                     for q in ("wan_bytes", "usd", "seconds")},
                          "basis": est.basis, "rounds": est.rounds,
                          "vector_rounds": est.vector_rounds,
                          "calibration_wan_bytes": est.calibration_wan_bytes},
            "measured": {"wan_bytes": r.wan_bytes, "usd": r.usd,
                         "modeled_seconds": r.modeled_seconds, "wall_seconds": r.wall_seconds,
                         "auc": r.test.get("auc"), "log_loss": r.test.get("log_loss"),
                         "objective": r.objective, "rounds": r.rounds,
                         "vector_rounds": r.vector_rounds,
                         "iterations": r.curve[-1]["iteration"] if r.curve else None},
            "prediction_error": r.prediction_error, "time_error": r.time_error,
            "usd_error": r.usd_error,
            "recommended": c.plan.recommended == est.plan,
        })
    ran = [p for p in plans if p["measured"]["objective"] is not None]
    cheapest = min(ran, key=lambda p: p["measured"]["usd"])["plan"] if ran else None
    return {
        "dcs": K, "rows_per_dc": n, "names": list(names), "status": "ran",
        "sites": c.plan.sites, "test_rows": test.n_rows,
        "features": 2 ** spec["bits"], "plans": plans, "recommended": c.plan.recommended,
        "decided": c.plan.decided,
        "cheapest_measured": cheapest, "f_star": c.f_star, "report": str(out),
        "generation_seconds": gen_seconds,
        "planning_seconds": (first_run or 0.0) - (phases[0][0] if phases else 0.0),
        "compare_seconds": compare_seconds,
        "seconds": time.perf_counter() - t_start,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "phases": [{"at_seconds": t, "message": m, "rss_bytes": r, "peak_rss_bytes_so_far": h}
                   for t, m, r, h in phases],
    }


def _rss() -> dict[str, int]:
    """This process's VmRSS and VmHWM (peak) in bytes, from /proc (empty elsewhere)."""
    out = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    return out


# -- break-even --------------------------------------------------------------------------

def power_fit(ns: Sequence[float], ys: Sequence[float], default_beta: float
              ) -> tuple[float, float]:
    """``(alpha, beta)`` of ``log y = alpha + beta log n`` by least squares; with one
    point (or one distinct ``n``), ``beta = default_beta`` through it."""
    x, y = np.log(np.asarray(ns, float)), np.log(np.asarray(ys, float))
    if len(set(x.tolist())) < 2:
        return float(np.mean(y - default_beta * x)), float(default_beta)
    beta, alpha = np.polyfit(x, y, 1)
    return float(alpha), float(beta)


def _crossings(f, lo: float, hi: float, points: int = 400) -> list[float]:
    """Roots of ``f`` (a function of ``log n``) on ``[lo, hi]``: sign changes on a grid,
    refined by bisection."""
    grid = np.linspace(lo, hi, points)
    vals = np.array([f(x) for x in grid])
    roots = []
    for i in range(points - 1):
        a, b = grid[i], grid[i + 1]
        fa, fb = vals[i], vals[i + 1]
        if fa == 0:
            roots.append(float(a))
        elif fa * fb < 0:
            for _ in range(60):
                m = 0.5 * (a + b)
                if f(a) * f(m) <= 0:
                    b = m
                else:
                    a = m
            roots.append(0.5 * (a + b))
    return roots


def interpolated_crossing(ns: Sequence[float], ratios: Sequence[float]) -> list[float]:
    """Where ``log ratio`` changes sign between consecutive sizes, ``n`` interpolated
    linearly in ``(log n, log ratio)``."""
    out = []
    for i in range(len(ns) - 1):
        r0, r1 = math.log(ratios[i]), math.log(ratios[i + 1])
        if r0 == 0:
            out.append(float(ns[i]))
        elif r0 * r1 < 0:
            x0, x1 = math.log(ns[i]), math.log(ns[i + 1])
            out.append(math.exp(x0 - r0 * (x1 - x0) / (r1 - r0)))
    return out


def _side(value: float, central: float) -> str:
    return "geo" if value < central else "centralize"


def break_even(configs: list[dict], metric: str) -> list[dict]:
    """Per ``K``: the predicted and the measured break-even of ``metric`` (``wan_bytes``
    or ``usd``) between centralizing and the best exact geo plan (module docstring)."""
    out = []
    for K in sorted({c["dcs"] for c in configs if c["status"] == "ran"}):
        ran = sorted((c for c in configs if c["dcs"] == K and c["status"] == "ran"),
                     key=lambda c: c["rows_per_dc"])
        ns = [c["rows_per_dc"] for c in ran]
        lo, hi = min(ns), max(ns)
        entry: dict = {"dcs": K, "metric": metric, "sizes": ns}
        # -- predicted: power laws over the planner's predictions ------------------------
        by_plan: dict[str, tuple[list[float], list[float]]] = {}
        for c in ran:
            for p in c["plans"]:
                if not p["exact"] or p["predicted"][metric] <= 0:
                    continue
                xs, ys = by_plan.setdefault(p["plan"], ([], []))
                xs.append(c["rows_per_dc"])
                ys.append(p["predicted"][metric])
        fits = {plan: power_fit(xs, ys, 1.0 if plan == "centralize" else 0.0)
                for plan, (xs, ys) in by_plan.items()}
        geo = [p for p in fits if p != "centralize"]
        predicted: dict = {"fits": {p: {"alpha": a, "beta": b} for p, (a, b) in fits.items()},
                           "per_plan": {}, "rows_per_dc": None}
        if "centralize" in fits and geo:
            ac, bc = fits["centralize"]
            for p in geo:
                a, b = fits[p]
                if b == bc:
                    predicted["per_plan"][p] = {"rows_per_dc": None,
                                                "geo_cheaper": "always" if a < ac else "never"}
                    continue
                n_star = math.exp((a - ac) / (bc - b))
                predicted["per_plan"][p] = {"rows_per_dc": n_star,
                                            "geo_cheaper": "above" if bc > b else "below"}

            def gap(x: float, fits=fits, geo=geo, ac=ac, bc=bc) -> float:
                """log(best geo) - log(centralize) at log n = x, on the fits."""
                return min(fits[p][0] + fits[p][1] * x for p in geo) - (ac + bc * x)

            roots = _crossings(gap, math.log(lo / 1000), math.log(hi * 1000))
            if roots:
                n_star = math.exp(roots[0])
                predicted["rows_per_dc"] = n_star
                predicted["geo_cheaper"] = "above" if gap(roots[0] + 1e-3) < 0 else "below"
                predicted["extrapolated"] = not lo <= n_star <= hi
                predicted["best_at_break_even"] = min(
                    geo, key=lambda p: fits[p][0] + fits[p][1] * roots[0])
            else:
                predicted["geo_cheaper"] = "always" if gap(math.log(lo)) < 0 else "never"
                predicted["note"] = ("no crossing within [n_min/1000, 1000 n_max]: geo is "
                                     f"{'always' if gap(math.log(lo)) < 0 else 'never'} "
                                     "cheaper on the fitted curves")
        entry["predicted"] = predicted
        # -- measured: which side each size is on, interpolated break-even ---------------
        sides = []
        for c in ran:
            central = next(p for p in c["plans"] if p["kind"] == "centralized")
            geo_runs = [p for p in c["plans"] if p["kind"] == "geo" and p["exact"]
                        and p["measured"]["objective"] is not None]
            conv = [p for p in geo_runs if p["converged"]]
            best = min(conv or geo_runs, key=lambda p: p["measured"][metric], default=None)
            if best is None or central["measured"][metric] <= 0:
                continue
            value, cval = best["measured"][metric], central["measured"][metric]
            side = _side(value, cval)
            lower_bound = not conv
            if lower_bound and side == "geo":
                side = "undetermined"
            sides.append({"rows_per_dc": c["rows_per_dc"], "best_geo": best["plan"],
                          "geo": value, "centralize": cval, "ratio": value / cval,
                          "side": side, "geo_is_lower_bound": lower_bound})
        measured: dict = {"sides": sides, "rows_per_dc": None}
        usable = [s for s in sides if not s["side"].startswith("undetermined")]
        if usable:
            crossings = interpolated_crossing([s["rows_per_dc"] for s in usable],
                                              [max(s["ratio"], 1e-300) for s in usable])
            measured["crossings"] = crossings
            if crossings:
                measured["rows_per_dc"] = crossings[0]
            elif len({s["side"] for s in usable}) == 1:
                measured["note"] = f"{usable[0]['side']} cheaper at every measured size"
            ag, bg = power_fit([s["rows_per_dc"] for s in usable],
                               [s["geo"] for s in usable], 0.0)
            ac2, bc2 = power_fit([s["rows_per_dc"] for s in usable],
                                 [s["centralize"] for s in usable], 1.0)
            measured["fit"] = {"geo": {"alpha": ag, "beta": bg},
                               "centralize": {"alpha": ac2, "beta": bc2}}
            if bc2 != bg:
                n_fit = math.exp((ag - ac2) / (bc2 - bg))
                measured["rows_per_dc_fit"] = n_fit
                measured["fit_extrapolated"] = not lo <= n_fit <= hi
        entry["measured"] = measured
        out.append(entry)
    return out


# -- reporting ---------------------------------------------------------------------------

def _mb(b: float | None) -> str:
    return "-" if b is None else f"{b / 1e6:,.2f}"


def _usd(x: float) -> str:
    return f"{x:.4f}" if x >= 0.01 or x == 0 else f"{x:.2e}"


def _tick(n: float) -> str:
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}"


def _rows(n: float | None) -> str:
    if n is None:
        return "-"
    if n >= 1e6:
        return f"{n / 1e6:,.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:,.1f}k"
    return f"{n:,.0f}"


def table_rows(configs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The paper-style table: one row per (K, rows per DC, plan)."""
    cols = ["DCs", "rows/DC", "plan", "status", "predicted MB", "WAN MB", "err bytes",
            "predicted $", "egress $", "predicted s", "modeled s", "err time", "wall s",
            "test AUC", "log loss", "objective", "iterations", "recommended", "cheapest"]
    rows = []
    for c in configs:
        if c["status"] != "ran":
            continue
        for p in c["plans"]:
            m, e = p["measured"], p["predicted"]
            status = p["status"] + ("" if p["exact"] else " (not the optimum)")
            if p["status"] == "stopped before gtol":
                status += f": {p['reason']}"
            ranges = e.get("ranges", {})
            rows.append([
                str(c["dcs"]), f"{c['rows_per_dc']:,}", p["plan"], status,
                _ranged(e["wan_bytes"], ranges.get("wan_bytes"), _mb), _mb(m["wan_bytes"]),
                _pct(p["prediction_error"]),
                _usd(e["usd"]), _usd(m["usd"]),
                _ranged(e["seconds"], ranges.get("seconds"), "{:,.1f}".format),
                f"{m['modeled_seconds']:,.1f}", _pct(p.get("time_error")),
                f"{m['wall_seconds']:,.0f}",
                "-" if m["auc"] is None else f"{m['auc']:.5f}",
                "-" if m["log_loss"] is None else f"{m['log_loss']:.5f}",
                "-" if m["objective"] is None else f"{m['objective']:.7f}",
                "-" if m["iterations"] is None else str(m["iterations"]),
                ("yes" if c.get("decided", True) else "leaning") if p["recommended"] else "",
                "yes" if c["cheapest_measured"] == p["plan"] else ""])
    return cols, rows


def _pct(err: float | None) -> str:
    return "-" if err is None else f"{100 * err:+.1f}%"


def _ranged(point: float, span: list | None, fmt) -> str:
    """``point (low-high)``; an unbounded high end (a lower bound) as ``>= low``."""
    if not span or span[0] == span[1]:
        return fmt(point)
    low, high = span
    if high is None or math.isinf(high):
        return f">= {fmt(low)}"
    return f"{fmt(point)} ({fmt(low)}-{fmt(high)})"


def range_misses(plan: dict) -> list[str]:
    """The quantities (``bytes``, ``time``) whose predicted range did not hold ``plan``'s
    measured value (a plan predicted without a range holds nothing to miss)."""
    ranges, measured = plan["predicted"].get("ranges") or {}, plan["measured"]
    out = []
    for what, key, value in (("bytes", "wan_bytes", measured["wan_bytes"]),
                             ("time", "seconds", measured.get("modeled_seconds"))):
        span = ranges.get(key)
        if span and value is not None and not (
                span[0] <= value <= (math.inf if span[1] is None else span[1])):
            out.append(what)
    return out


def planner_check(configs: list[dict]) -> list[str]:
    """Issue 17's must-show, per size: the recommended plan's measured dollars within
    1.1x of the cheapest measured plan; bytes within 25% and modeled time within 30% for
    every converged plan. One line per size, and a verdict; and how many converged
    plans' predicted ranges held their measured bytes and modeled time, with the
    misses named (the ranges are not part of the verdict)."""
    lines, failed, held, checked, missed = [], 0, 0, 0, []
    for c in configs:
        if c["status"] != "ran":
            continue
        ran = {p["plan"]: p for p in c["plans"] if p["measured"]["objective"] is not None}
        rec = next((p for p in c["plans"] if p["recommended"]), None)
        cheapest = ran.get(c["cheapest_measured"])
        problems = []
        if rec is None or cheapest is None:
            problems.append("no recommendation")
        else:
            ratio = rec["measured"]["usd"] / max(cheapest["measured"]["usd"], 1e-15)
            if ratio > 1.1:
                problems.append(f"recommended {rec['plan']} costs {ratio:.2f}x the cheapest")
        for p in ran.values():
            if not p["converged"]:
                continue
            for what, err, bound in (("bytes", p["prediction_error"], 0.25),
                                     ("time", p.get("time_error"), 0.30)):
                if err is not None and abs(err) > bound:
                    problems.append(f"{p['plan']} {what} {100 * err:+.0f}%")
            misses = range_misses(p)
            checked, held = checked + 1, held + (not misses)
            missed += [f"{c['dcs']} x {_rows(c['rows_per_dc'])} {p['plan']} {what}"
                       for what in misses]
        failed += bool(problems)
        verdict = "; ".join(problems) if problems else "ok"
        lines.append(f"* {c['dcs']} DCs x {_rows(c['rows_per_dc'])}: {verdict}"
                     + ("" if c.get("decided", True) else " (ranges overlapped: leaning)"))
    total = len(lines)
    ranges = (f"The predicted ranges held {held} of {checked} converged plans' bytes and "
              "modeled time"
              + (f"; missed: {', '.join(missed)}." if missed else "."))
    return [f"Planner check (issue 17): {total - failed} of {total} sizes pass.", "", *lines,
            "", ranges]


def _measured_fit(m: dict) -> str:
    """The crossing of the power laws fitted to the measured runs, as text; one further
    than :data:`FIT_REACH` times outside the sizes run is named as such, with the
    fitted exponents, not as a number."""
    n_fit, sizes = m["rows_per_dc_fit"], [s["rows_per_dc"] for s in m["sides"]]
    exps = (f"measured bytes grow as n^{m['fit']['geo']['beta']:.2f} (geo) and "
            f"n^{m['fit']['centralize']['beta']:.2f} (centralize)")
    if n_fit > FIT_REACH * max(sizes):
        return f"fit: beyond {FIT_REACH}x the largest size ({exps})"
    if n_fit < min(sizes) / FIT_REACH:
        return f"fit: below 1/{FIT_REACH} of the smallest size ({exps})"
    return f"fit: {_rows(n_fit)}" + (" (extrapolated)" if m.get("fit_extrapolated") else "")


def break_even_rows(entries: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = ["DCs", "metric", "predicted break-even (rows/DC)", "fit exponents",
            "measured: side per size (best geo / centralize)",
            "measured break-even (rows/DC)"]
    rows = []
    for e in entries:
        p, m = e["predicted"], e["measured"]
        if p.get("rows_per_dc") is not None:
            pred = f"{_rows(p['rows_per_dc'])} (geo cheaper {p['geo_cheaper']}" + (
                ", extrapolated)" if p.get("extrapolated") else ")")
        else:
            pred = p.get("note", "-")
        exps = ", ".join(f"{plan}: {f['beta']:+.2f}" for plan, f in p["fits"].items())
        sides = "; ".join(f"{_rows(s['rows_per_dc'])}: {s['side']} ({s['ratio']:.2f}x"
                          + (", geo stopped" if s["geo_is_lower_bound"] else "") + ")"
                          for s in m["sides"])
        if m.get("rows_per_dc") is not None:
            meas = f"{_rows(m['rows_per_dc'])} (interpolated)"
        elif m.get("rows_per_dc_fit") is not None:
            meas = "; ".join(x for x in (m.get("note"), _measured_fit(m)) if x)
        else:
            meas = m.get("note", "-") or "-"
        rows.append([str(e["dcs"]), "WAN bytes" if e["metric"] == "wan_bytes" else "$",
                     pred, exps, sides or "-", meas])
    return cols, rows


def plot(configs: list[dict], entries: list[dict], metric: str, path: Path) -> None:
    """Bytes (or dollars) per run against rows per DC, one panel per K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ks = sorted({c["dcs"] for c in configs if c["status"] == "ran"})
    if not ks:
        return
    fig, axes = plt.subplots(1, len(ks), figsize=(5.6 * len(ks), 4.6), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, K in zip(axes[0], ks, strict=True):
        ran = sorted((c for c in configs if c["dcs"] == K and c["status"] == "ran"),
                     key=lambda c: c["rows_per_dc"])
        entry = next(e for e in entries if e["dcs"] == K and e["metric"] == metric)
        ns = [c["rows_per_dc"] for c in ran]
        lo, hi = min(ns) / 2, max(ns) * 2
        pred_star = entry["predicted"].get("rows_per_dc")
        meas_star = entry["measured"].get("rows_per_dc")
        for star in (pred_star, meas_star):
            if star is not None and min(ns) / 100 <= star <= max(ns) * 100:
                lo, hi = min(lo, star / 2), max(hi, star * 2)
        grid = np.geomspace(lo, hi, 200)
        plans = [p["plan"] for p in ran[0]["plans"]]
        for i, plan in enumerate(plans):
            colour = "black" if plan == "centralize" else colours[i % len(colours)]
            fit = entry["predicted"]["fits"].get(plan)
            if fit is not None:
                ax.plot(grid, np.exp(fit["alpha"]) * grid ** fit["beta"], "--", color=colour,
                        lw=1.2, label=f"{plan}: planner (fit)")
            pts = [(c["rows_per_dc"], p) for c in ran for p in c["plans"] if p["plan"] == plan]
            xs = [x for x, p in pts if p["predicted"][metric] > 0]
            ax.plot(xs, [p["predicted"][metric] for _, p in pts if p["predicted"][metric] > 0],
                    "o", mfc="none", color=colour, ms=11)
            for x, p in pts:
                if p["measured"]["objective"] is None or p["measured"][metric] <= 0:
                    continue
                stopped = p["status"] == "stopped before gtol"
                ax.plot([x], [p["measured"][metric]], "^" if stopped else "s", color=colour,
                        ms=6)
            ax.plot([], [], "s", color=colour, label=f"{plan}: measured"
                    + ("" if next((p for _, p in pts), {}).get("exact", True)
                       else " (not the optimum)"))
        if pred_star is not None:
            ax.axvline(pred_star, color="grey", ls="--", lw=1)
            ax.annotate(f"predicted\n{_rows(pred_star)}", (pred_star, 0.97),
                        xycoords=("data", "axes fraction"), ha="left", va="top", fontsize=7)
        if meas_star is not None:
            ax.axvline(meas_star, color="red", ls=":", lw=1.2)
            ax.annotate(f"measured\n{_rows(meas_star)}", (meas_star, 0.80),
                        xycoords=("data", "axes fraction"), ha="left", va="top", fontsize=7,
                        color="red")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: _tick(x)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("rows per DC")
        ax.set_ylabel("WAN bytes per run" if metric == "wan_bytes" else "egress $ per run")
        ax.set_title(f"{K} DCs (home {ran[0]['names'][0]})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("per run, centralize vs geo-distributed\nopen circles: the planner; "
                 "filled: measured (triangles: stopped before gtol)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict) -> str:
    s = results["settings"]
    cols, rows = table_rows(results["configs"])
    bcols, brows = break_even_rows(results["break_even"])
    out = results["out"]
    lines = [
        "## The paper's experiment at scale (issue 7)", "",
        "```", results["command"], "```", "",
        f"Synthetic regional CTR data (2^{s['bits']} hashed features, 26 categorical + 4 "
        f"numeric fields), {', '.join(map(str, s['dcs']))} DCs named after AWS regions "
        f"(home {results['names'][0]}; the first K of {', '.join(results['names'])}), "
        f"{s['test_rows']:,} test rows per DC; logistic loss, lambda = 1/N, every run to "
        f"`||grad|| <= {s['gtol']:g} ||grad_0||` (at most {s['max_iterations']} iterations "
        f"and {s['run_seconds']:,.0f} s); geo plans {', '.join(s['methods'])}, vectors "
        f"{'/'.join(s['compress'])} both ways; planner calibrated on "
        f"{s['calibration_rows']:,} rows of the median site (at most all). In-process "
        "sites (the same messages and metered bytes as gRPC"
        + ("; streaming their rows from memory-mapped files" if s.get("stream") else "")
        + ") on the 2-core machine; "
        "modeled time and dollars over the region table's links.", "",
        markdown_table(cols, rows), "", *planner_check(results["configs"]), "",
        "Break-even (rows per DC at which the best exact geo plan costs as much as "
        "centralizing; the planner's power-law fits across sizes, checked by the runs):", "",
        markdown_table(bcols, brows), "",
        f"![WAN bytes against rows per DC]({out}/break_even_bytes.png)", "",
        f"![egress dollars against rows per DC]({out}/break_even_usd.png)", ""]
    skipped = [c for c in results["configs"] if c["status"] != "ran"]
    if skipped:
        lines += ["Not run:", ""]
        lines += [f"* {c['dcs']} DCs x {c['rows_per_dc']:,} rows/DC: {c['status']} "
                  f"({c['why']})" for c in skipped]
        lines.append("")
    timing = [f"{c['dcs']} DCs x {_rows(c['rows_per_dc'])}: {c['seconds']:,.0f} s"
              f" (generation {c['generation_seconds']:,.0f} s, planning "
              f"{c['planning_seconds']:,.0f} s, peak RSS {c['peak_rss_bytes'] / 1e9:.1f} GB)"
              for c in results["configs"] if c["status"] == "ran"]
    ran = sum(c["seconds"] for c in results["configs"] if c["status"] == "ran")
    lines += [f"Wall time {ran:,.0f} s over the sizes run (reused ones as first run): "
              + "; ".join(timing) + ".", ""]
    return "\n".join(lines)


# -- the sweep ---------------------------------------------------------------------------

def _mem_available() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _settings_key(spec: dict) -> str:
    keep = {k: v for k, v in spec.items() if k not in ("work", "dcs", "rows")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def _estimate(done: list[dict], K: int, n: int, data_cached: bool, test_rows: int
              ) -> tuple[float | None, float, str]:
    """Estimated seconds (None before any size ran), peak RSS bytes, and the basis."""
    ran = [c for c in done if c["status"] == "ran"]
    gen = 0.0 if data_cached else K * (n + test_rows) / GENERATION_ROWS_PER_SECOND
    timed = [c for c in ran if c["generation_seconds"] > 0]
    if timed:
        rate = max(c["dcs"] * (c["rows_per_dc"] + test_rows) / c["generation_seconds"]
                   for c in timed)
        gen = 0.0 if data_cached else K * (n + test_rows) / rate
    totals = [c["dcs"] * c["rows_per_dc"] for c in ran]
    peaks = [c["peak_rss_bytes"] for c in ran]
    if len(set(totals)) >= 2:  # peak RSS = a + b * (all training rows), least squares
        b, a = np.polyfit(totals, peaks, 1)
        base, per_row = max(0.0, float(a)), max(100.0, float(b))
    elif ran:
        base, per_row = BASE_RSS, max(100.0, (peaks[0] - BASE_RSS) / totals[0])
    else:
        base, per_row = BASE_RSS, PRIOR_BYTES_PER_ROW
    memory = MEMORY_MARGIN * (base + per_row * K * n)
    if not ran:
        return None, memory, "no size has run yet"
    same_k = [c for c in ran if c["dcs"] == K]  # rounds depend on K: prefer the same K
    ref = max(same_k or ran, key=lambda c: c["dcs"] * c["rows_per_dc"])
    scale = K * n / (ref["dcs"] * ref["rows_per_dc"])
    took = ref.get("child_seconds", ref["seconds"]) - ref["generation_seconds"]
    return took * scale + gen, memory, (f"{ref['dcs']} DCs x {ref['rows_per_dc']:,} rows/DC "
                                        f"took {took:,.0f} s, scaled by rows x{scale:.2f}")


def _data_cached(work: Path, K: int, n: int, bits: int, test_rows: int, seed: int) -> bool:
    config = regional_config(n, bits, test_rows, seed)
    root = work / "data" / cache_key(config)
    return all(is_cached(root / name, config) for name in dc_names(K))


def _parse_list(text: str, kind=int) -> list:
    return [kind(x) for x in str(text).replace(" ", "").split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dcs", help=f"comma list of DC counts (default {DEFAULTS['dcs']})")
    ap.add_argument("--rows", help="comma list of rows per DC (default "
                    f"{DEFAULTS['rows']})")
    ap.add_argument("--bits", type=int, help="hashed features 2^BITS (default 20)")
    ap.add_argument("--methods", default="fadl-subspace,sqm-lbfgs",
                    help="geo methods (they should reach the centralized optimum)")
    ap.add_argument("--extra-methods", default="",
                    help="more geo methods as extra rows, e.g. oneshot (approximate ones are "
                         "labelled and left out of the break-even)")
    ap.add_argument("--compress", default="float16", help="comma list: float16, none, ...")
    ap.add_argument("--gtol", type=float, default=1e-3)
    ap.add_argument("--test-rows", type=int, help="held-out rows per DC (default 50,000)")
    ap.add_argument("--calibration-rows", type=int, default=200_000,
                    help="rows of the median site in the planner's calibration runs")
    ap.add_argument("--calibration-points", type=int, choices=(1, 2), default=2,
                    help="calibrations per geo plan (2: also a quarter of the rows, to "
                         "extrapolate the rounds' growth)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--concurrent-sites", action="store_true",
                    help="call the in-process sites at once (they then share this "
                         "machine's cores, and each call's time holds the others' work); "
                         "default: one at a time, each call's time its site's alone")
    ap.add_argument("--stream", action="store_true",
                    help="sites read their rows block by block from memory-mapped files "
                         "(resident memory O(rows), not O(nonzeros); the same sums)")
    ap.add_argument("--max-iterations", type=int,
                    help="per run: outer iterations (default 1000)")
    ap.add_argument("--run-seconds", type=float,
                    help="per run: wall seconds, checked every iteration (default 7200)")
    ap.add_argument("--time-budget", type=float,
                    help="in all: skip sizes estimated to exceed it (default 86400; 0: none)")
    ap.add_argument("--memory-gb", type=float,
                    help="memory a size may use (default: MemAvailable)")
    ap.add_argument("--work", type=Path, help="data cache and per-size reports")
    ap.add_argument("--out", type=Path, help="results.json, plots, paper.md (WORK/paper)")
    ap.add_argument("--resume", action="store_true",
                    help="reuse sizes a previous run with the same settings finished")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    ap.add_argument("--run-one", type=Path, help=argparse.SUPPRESS)  # the child's spec
    args = ap.parse_args()
    if args.run_one:
        spec = json.loads(args.run_one.read_text())
        result = run_size(spec)
        Path(spec["result"]).write_text(json.dumps(result, indent=1, default=float))
        return
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    dcs, sizes = sorted(set(_parse_list(args.dcs))), sorted(set(_parse_list(args.rows)))
    for K in dcs:
        dc_names(K)
    methods = _parse_list(args.methods, str) + _parse_list(args.extra_methods, str)
    compress = _parse_list(args.compress, str)
    work = (args.work or Path(tempfile.gettempdir()) / "geodml-paper").resolve()
    out = (args.out or work / "paper").resolve()
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(width=220)
    command = "python bench/paper.py " + shlex.join(sys.argv[1:])
    budget = args.time_budget or math.inf
    memory_limit = args.memory_gb * 1e9 if args.memory_gb else None
    settings = {"dcs": dcs, "rows": sizes, "bits": args.bits, "methods": methods,
                "compress": compress, "gtol": args.gtol, "test_rows": args.test_rows,
                "calibration_rows": args.calibration_rows,
                "calibration_points": args.calibration_points, "seed": args.seed,
                "max_iterations": args.max_iterations, "run_seconds": args.run_seconds,
                "time_budget": args.time_budget, "memory_gb": args.memory_gb,
                "stream": args.stream, "concurrent_sites": args.concurrent_sites}
    n_plans = 1 + len(methods) * len(compress)
    console.print(f"[bold]paper experiment[/]: {len(dcs)} DC counts x {len(sizes)} sizes, "
                  f"2^{args.bits} features, {n_plans} plans per size; work {work}, out {out}")
    t0 = time.perf_counter()
    configs: list[dict] = []
    order = [(n, K) for n in sizes for K in dcs]
    for n, K in order:
        spec = {"dcs": K, "rows": n, "bits": args.bits, "methods": methods,
                "compress": compress, "gtol": args.gtol, "test_rows": args.test_rows,
                "calibration_rows": args.calibration_rows,
                "calibration_points": args.calibration_points, "seed": args.seed,
                "max_iterations": args.max_iterations, "run_seconds": args.run_seconds,
                "stream": args.stream, "concurrent_sites": args.concurrent_sites,
                "work": str(work)}
        key = _settings_key(spec)
        # keyed by the settings too: other settings in the same WORK keep their results
        size_dir = work / "runs" / f"k{K}-n{n}-{key}"
        result_path = work / "results" / f"k{K}-n{n}-{key}.json"
        result_path.parent.mkdir(parents=True, exist_ok=True)
        label = f"{K} DCs x {n:,} rows/DC"
        if args.resume and result_path.is_file():
            with contextlib.suppress(json.JSONDecodeError, OSError):
                previous = json.loads(result_path.read_text())
                if previous.get("settings_key") == key and previous.get("status") == "ran":
                    console.print(f"[bold]{label}[/]: reusing the result of a previous run "
                                  f"({result_path})")
                    configs.append(previous)
                    continue
        cached = _data_cached(work, K, n, args.bits, args.test_rows, args.seed)
        est_seconds, est_memory, basis = _estimate(configs, K, n, cached, args.test_rows)
        elapsed = time.perf_counter() - t0
        available = memory_limit or _mem_available()
        why = None
        if est_memory > available:
            why = (f"estimated peak memory {est_memory / 1e9:.1f} GB exceeds the "
                   f"{available / 1e9:.1f} GB available")
        elif elapsed >= budget:
            why = f"the time budget of {budget:,.0f} s is spent ({elapsed:,.0f} s so far)"
        elif est_seconds is not None and elapsed + est_seconds > budget:
            why = (f"estimated {est_seconds:,.0f} s ({basis}) would exceed the time budget "
                   f"({budget - elapsed:,.0f} s of {budget:,.0f} s left)")
        if why:
            console.print(f"[yellow]skipping {label}:[/] {why}")
            configs.append({"dcs": K, "rows_per_dc": n, "status": "skipped", "why": why})
        else:
            gen = 0.0 if cached else K * (n + args.test_rows) / GENERATION_ROWS_PER_SECOND
            hard = args.run_seconds * (1 + 2 * n_plans) + HARD_SLACK_SECONDS + 2 * gen
            est = "" if est_seconds is None else f", estimated {est_seconds:,.0f} s ({basis})"
            console.print(f"[bold]{label}[/]: data {'cached' if cached else 'to generate'}"
                          f"{est}; estimated peak memory {est_memory / 1e9:.1f} GB; "
                          f"killed after {hard:,.0f} s")
            spec_path = result_path.with_suffix(".spec.json")
            spec_path.write_text(json.dumps({**spec, "result": str(result_path),
                                             "report_dir": str(size_dir)}))
            result_path.unlink(missing_ok=True)
            started = time.perf_counter()
            try:
                proc = subprocess.run([sys.executable, str(Path(__file__).resolve()),
                                       "--run-one", str(spec_path)], timeout=hard, check=False)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
            took = time.perf_counter() - started
            if result_path.is_file():
                config = json.loads(result_path.read_text())
                config["settings_key"] = key
                config["child_seconds"] = took  # with the child's start-up
                result_path.write_text(json.dumps(config, indent=1))
                console.print(f"[bold]{label}[/]: done in {took:,.0f} s, peak RSS "
                              f"{config['peak_rss_bytes'] / 1e9:.2f} GB")
            else:
                status = "killed" if code is None else "failed"
                why = (f"killed after {took:,.0f} s (hard limit {hard:,.0f} s); partial "
                       f"records in {size_dir}" if code is None else
                       f"child exited with code {code} after {took:,.0f} s (see its output "
                       "above; -9 is usually the kernel's out-of-memory killer)")
                console.print(f"[red]{label}: {status}:[/] {why}")
                config = {"dcs": K, "rows_per_dc": n, "status": status, "why": why}
            configs.append(config)
        _write(configs, settings, command, out, t0, console, final=False)
    _write(configs, settings, command, out, t0, console, final=True)


def _write(configs: list[dict], settings: dict, command: str, out: Path, t0: float,
           console: Console, final: bool) -> dict:
    """results.json, the plots and paper.md from what has run; printed when ``final``."""
    ordered = sorted(configs, key=lambda c: (c["dcs"], c["rows_per_dc"]))
    entries = break_even(ordered, "usd") + break_even(ordered, "wan_bytes")
    entries.sort(key=lambda e: (e["dcs"], e["metric"] != "usd"))
    cols, rows = table_rows(ordered)
    results = {"command": command, "settings": settings, "names": list(DC_NAMES),
               "out": os.path.relpath(out), "seconds": time.perf_counter() - t0,
               "machine": {"cpus": os.cpu_count(),
                           "memory_bytes": os.sysconf("SC_PAGE_SIZE")
                           * os.sysconf("SC_PHYS_PAGES")},
               "configs": ordered, "break_even": entries,
               "table": [dict(zip(cols, r, strict=True)) for r in rows]}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    for metric, name in (("wan_bytes", "break_even_bytes.png"), ("usd", "break_even_usd.png")):
        plot(ordered, [e for e in entries if e["metric"] == metric], metric, out / name)
    text = markdown(results)
    (out / "paper.md").write_text(text)
    if final:
        console.print(rich_table("the paper's experiment: every size and plan", cols, rows,
                                 left=("plan", "status")))
        bcols, brows = break_even_rows(entries)
        console.print(rich_table("break-even", bcols, brows,
                                 left=("metric", "predicted break-even (rows/DC)",
                                       "fit exponents",
                                       "measured: side per size (best geo / centralize)",
                                       "measured break-even (rows/DC)")))
        for c in ordered:
            if c["status"] != "ran":
                console.print(f"[yellow]not run: {c['dcs']} DCs x {c['rows_per_dc']:,} "
                              f"rows/DC ({c['status']}):[/] {c['why']}")
        console.print("\n--- paper.md (paste into BENCHMARKS.md) ---")
        console.print(text, soft_wrap=True, markup=False, highlight=False)
        console.print(f"results: {out / 'results.json'}; plots: {out}/break_even_*.png; "
                      f"{results['seconds']:,.0f} s in all")
    return results


if __name__ == "__main__":
    main()
