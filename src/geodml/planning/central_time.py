"""How long the home DC trains when every row is copied there (see
:mod:`geodml.planning.planner`).

The centralized baseline runs L-BFGS in the Hessian-diagonal metric over all rows;
its time is about ``E`` evaluations of value and gradient, each a pass over all
nonzeros. ``E`` comes, in order of preference, from

1. a recorded run of the baseline on the same data (``geodml compare`` stores it):
   its training seconds as measured, no estimate at all;
2. the solver itself, run at the timed site (the home DC's, whose rows never leave
   it) on one or two samples of its rows with lambda scaled as for a calibration
   (:func:`~geodml.planning.calibration.central_iterations`), its iterations
   extrapolated to full size as geo plans' rounds are
   (:func:`~geodml.planning.extrapolate.fit_rounds`), each iteration timed (below);
3. an sqm-lbfgs calibration (the same L-BFGS over exact sums), if one ran;
4. :data:`DEFAULT_CENTRAL_EVALUATIONS`, with its range.

A pass costs ``P = P_t nnz / nnz_t``: the timed site's measured pass over its rows
(:func:`~geodml.planning.calibration.full_pass`) scaled by nonzeros; where none could
be timed, ``nnz / r`` at this machine's random-CSR throughput ``r``. An L-BFGS
iteration costs more than a pass: the gradient, the new direction's margins ``X p``
(in float64, over a kept float64 copy of float32 values), the line search; and its
vector arithmetic over all ``d`` features, which does not grow with the rows (the
two-loop recursion reads ``4 m`` vectors of ``d``; at ``2^20`` features this outweighs
a pass over 200,000 rows). The solver's iterations are timed at the site on a
sixteenth of its rows and on all of them (a few iterations each, each share up to
three times, the quickest kept). Their iterations hold few of the solver's ``m``
curvature pairs, whose two-loop recursion does not grow with the rows and at 2^20
features (16 pairs) is half of an iteration over 40,000 rows, so the site also times
the recursion per pair, ``t_pair``: ``t(n) = r n + tau`` is drawn through the two
timings less the pairs they held (measured on the 2^12 grid: 2-4 passes per iteration,
where one pass per iteration under-predicted the training by up to 60%), and a run of
``I`` iterations reads ``H(I) = sum_{k<=I} min(k - 1, m)`` pairs, so

    T_train = I t(nnz) + t_pair H(I) + CENTRAL_EXTRA_PASSES P + S,

``I`` the extrapolated iterations, :data:`CENTRAL_EXTRA_PASSES` the passes beyond the
iterations (the first evaluation, the metric) and ``S`` the setup: the home DC writes
the concatenated copy of the rows and the solver's transposed blocks into memory it
never had, :data:`SETUP_BYTES_PER_NONZERO` bytes per nonzero at this machine's rate of
fresh memory (:func:`~geodml.planning.memory_probe.memory_rates`, past any memory
freed in the last seconds, which the copy, made later, will not find; on the
development VM this was a third of the training at 2^12 features, where 4 passes had
priced it at a sixth); the range's low end prices it at the rate of memory already
backed, which a copy right after the export may find (:func:`setup_seconds`). Without
the solver's calibration, ``T_train = E P + S``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from geodml.federation import SiteInfo
from geodml.planning.calibration import CalibrationStore, central_iterations
from geodml.planning.extrapolate import fit_rounds
from geodml.planning.memory_probe import MemoryRates, memory_rates
from geodml.planning.plans import Workload

# the centralized L-BFGS in the diagonal metric to gtol 1e-3: 18-33 iterations on the
# regional CTR data at 2^12 and 2^20 (BENCHMARKS.md); assumed when nothing better is known
DEFAULT_CENTRAL_EVALUATIONS = (18.0, 30.0, 45.0)
# beyond the L-BFGS iterations: the first evaluation and the metric
CENTRAL_EXTRA_PASSES = 2
# fresh memory the home DC writes per nonzero before the first iteration: the
# concatenated copy of the exported rows and the solver's transposed blocks, float32
# values and int32 indices each (measured on the 2^12 grid: 29-36 ns per nonzero of
# setup at 300-530 MB/s of memory growth, 15 bytes). The float64 copy of the values
# its directions' margins are computed over (site_sums._Block.widened, 8 bytes) is not
# counted: priced at the probe's rate it over-priced the 2^12 grid (8 x 320k rows: 6.4 s
# of setup where the whole run took 8.1 s); whether its pages come fresh or from what
# the export freed was not measured
SETUP_BYTES_PER_NONZERO = 16
# where memory growth could not be timed: the setup's cost in passes (4.6 measured at
# 2^20, 1M rows per DC)
SETUP_PASSES = 4
SMALL_SHARE = 0.25  # a second calibration samples this share of the first's rows
SINGLE_SHARE = 0.5  # a calibration on at least this share of the rows is not extrapolated
# the solver's iterations timed on all of the timed site's rows and on COST_SHARE of them
# (4 x 100k rows at 2^20: six iterations timed twice on all of one site's rows took 65
# and 123 ms per iteration, twelve 77 and 85 ms: the early iterations search their lines
# longer and the VM's first touches of memory fall on them)
COST_ITERATIONS = 12
COST_SHARE = 1 / 16  # t(n) = r n + tau through the two
COST_REPEATS = 3  # each timed this many times, the quickest kept,
COST_BUDGET = 2.0  # while its timings took under this many seconds

# how far the solver's iterations on all the DCs' rows fell from the home DC's sample's
# (log, below and above): 0.74-1.64x over both grids of bench/paper.py. At 2^20 the
# relative gradient norm crosses gtol off a plateau (4 x 100k rows: 1.2e-3 to 2.6e-3
# from iteration 21 to 35, while the objective fell smoothly), so where it crosses moves by a
# third with the curvature pairs kept and the sample drawn (BENCHMARKS.md, "How many
# iterations the centralized L-BFGS takes is itself noisy")
POOLED_SPREAD = (0.3, 0.5)

Range = tuple[float, float, float]  # (low, point, high)


@dataclass(frozen=True)
class Timing:
    """The site whose passes were timed, and its full pass in seconds (None: untimed)."""

    site: str
    full_pass: float | None


@dataclass(frozen=True)
class CalibrationPlan:
    """What calibrating may do: ``mode`` (auto | always | never), the share of rows of the
    first sample, and how many samples (1 or 2)."""

    mode: str
    fraction: float
    points: int

    def fractions(self) -> list[float]:
        second = self.points > 1 and self.fraction < SINGLE_SHARE
        return [self.fraction] + ([self.fraction * SMALL_SHARE] if second else [])


def central_training(open_federation, sites: Sequence[SiteInfo], workload: Workload,
                     lam: float, store: CalibrationStore, records: dict, timing: Timing,
                     throughput: float, calibration: CalibrationPlan,
                     say: Callable[[str], None]) -> tuple[Range, str, int]:
    """The home DC's training seconds (low, point, high), the basis, and the WAN bytes
    learning them took."""
    recorded = store.get(CalibrationStore.key(sites, workload, lam, None))
    if recorded is not None:
        train = float(recorded["train_seconds"])
        return ((train, train, train), f"recorded run ({recorded.get('recorded')}): "
                f"{recorded['iterations']} L-BFGS iterations", 0)
    nnz = sum(s.nnz for s in sites)
    per_pass = nnz / throughput
    if timing.full_pass is not None:
        timed = next(s.nnz for s in sites if s.name == timing.site)
        per_pass = timing.full_pass * nnz / max(1, timed)
    setup, setup_basis = setup_seconds(nnz, per_pass, memory_rates())
    if timing.full_pass is not None and calibration.mode != "never":
        say(f"calibrating the centralized solver on site {timing.site}'s rows "
            "(they stay there)")
        iterations, training, basis, spent = _solver_iterations(
            open_federation, workload, lam, calibration, timing.site, timed)
        per_iteration = training(iterations[1], nnz) / max(1.0, iterations[1])
        seconds = tuple(training(i, nnz) + CENTRAL_EXTRA_PASSES * per_pass + s
                        for i, s in zip(iterations, setup, strict=True))
        return seconds, (f"{basis} of {per_iteration * 1e3:,.0f} ms each (the solver's "
                         f"iterations timed at {timing.site}, scaled to all nonzeros) + "
                         f"{CENTRAL_EXTRA_PASSES} passes + {setup_basis}"), spent
    lbfgs = next((r for v, (r, _, _) in records.items() if v.split()[0] == "sqm-lbfgs"), None)
    if lbfgs is not None:
        low, point, high = lbfgs.get("range", (1.0, 1.0, 1.0))
        evaluations = float(lbfgs["evaluations"])
        counts = (evaluations * low / point, evaluations, evaluations * high / point)
        basis = f"{evaluations:.0f} L-BFGS evaluations (sqm-lbfgs calibration)"
    else:
        counts = DEFAULT_CENTRAL_EVALUATIONS
        basis = f"{counts[1]:.0f} L-BFGS evaluations assumed ({counts[0]:.0f}-{counts[2]:.0f})"
    basis += (f" + a pass each, measured at {timing.site}" if timing.full_pass is not None
              else ", each at this machine's random-CSR rate") + f" + {setup_basis}"
    low, point, high = (c * per_pass + s for c, s in zip(counts, setup, strict=True))
    return (low, point, high), basis, 0


def setup_seconds(nnz: int, per_pass: float, rates: MemoryRates | None
                  ) -> tuple[Range, str]:
    """The home DC's setup (low, point, high) and its basis: :data:`SETUP_BYTES_PER_NONZERO`
    bytes per nonzero at the rate of fresh memory, down to the rate of memory already
    backed at the low end (a copy right after the export may find the memory it freed
    still backed: on the development VM 0.18 s against 0.31-0.45 s 10 s later at 4 x
    80k rows, 0.67 against 1.36-1.43 s at 4 x 320k, 2^12 features); where the rates could
    not be timed, :data:`SETUP_PASSES` passes."""
    if rates is None:
        passes = SETUP_PASSES * per_pass
        return (passes, passes, passes), f"{SETUP_PASSES} passes of setup"
    size = SETUP_BYTES_PER_NONZERO * nnz
    fresh = size / rates.fresh
    return ((min(fresh, size / rates.backed), fresh, fresh),
            f"{fresh:,.1f} s of setup ({rates.fresh / 1e6:,.0f} MB/s of fresh memory, "
            f"{rates.backed / 1e6:,.0f} MB/s backed)")


def _solver_iterations(open_federation, workload: Workload, lam: float,
                       calibration: CalibrationPlan, site: str, site_nnz: int
                       ) -> tuple[Range, Callable[[float, float], float], str, int]:
    """The centralized solver at ``site`` (whose rows never leave it): its iterations at
    full size (low, point, high) from runs on samples of the site's rows, extrapolated as
    geo plans' rounds are, the range at least :data:`POOLED_SPREAD`; the seconds of
    ``I`` iterations over ``n`` nonzeros, ``I t(n) + t_pair H(I)``, ``t(n) = r n + tau``
    through the per-iteration times of :data:`COST_ITERATIONS` iterations over
    :data:`COST_SHARE` of the site's rows and over all of them less their pairs' two-loop
    (an iteration is a few passes: the gradient, the direction's margins ``X p``, the
    line search; ``tau`` the vector arithmetic over all ``d`` features, which does not
    grow with the rows), ``t_pair`` the two-loop's seconds per pair and ``H(I)`` the
    pairs a run of ``I`` iterations reads (:func:`pairs_held`); the basis; and the WAN
    bytes it took."""
    runs = [central_iterations(open_federation, workload, lam, f, site)
            for f in calibration.fractions()]
    large, small = runs[0], runs[1] if len(runs) > 1 else None
    fit = fit_rounds(large["iterations"], large["share"],
                     small["iterations"] if small else None, small["share"] if small else None)
    # each share timed up to COST_REPEATS times (while its timings took under
    # COST_BUDGET seconds), the quickest kept: the first call pays for the memory its 2m
    # curvature vectors touch for the first time (4 x 100k rows, 2^20 features: 90 ms per
    # iteration on 1/16 of the rows in the first call, 40 ms in the next), which the
    # baseline pays once; and at 10k rows per site the two shares differ by less than
    # one timing's noise (45 against 45-75 ms), which the line multiplies by K
    timed = {share: _quickest(open_federation, workload, lam, share, site)
             for share in (COST_SHARE, 1.0)}
    # a timing of a few iterations holds few of the solver's m curvature pairs, whose
    # two-loop recursion does not grow with the rows (4 x 10k rows at 2^20, 16 pairs:
    # 63 ms per iteration over the first six, 126 ms from the 17th): the line is drawn
    # through the timings without their pairs, and a run of I iterations adds its own,
    # sum_k min(k - 1, m) of them, at the quicker timing's seconds per pair
    pair = min(run["pair_seconds"] for run in timed.values())
    line = _iteration_cost(
        *((share * site_nnz, max(0.0, run["iteration_seconds"] - run["held_pairs"] * pair))
          for share, run in timed.items()))
    memory = timed[1.0]["memory"]

    def training(iterations: float, n: float) -> float:
        return iterations * line(n) + pair * pairs_held(iterations, memory)

    low = min(fit.low, fit.point * math.exp(-POOLED_SPREAD[0]))
    high = max(fit.high, fit.point * math.exp(POOLED_SPREAD[1]))
    return ((low, fit.point, high), training,
            f"{fit.point:.0f} L-BFGS iterations (the solver on {site}'s sample, {fit.how})",
            sum(r["wan_bytes"] for r in [*runs, *timed.values()]))


def _quickest(open_federation, workload: Workload, lam: float, share: float, site: str
              ) -> dict:
    """The solver's :data:`COST_ITERATIONS` iterations on ``share`` of ``site``'s rows,
    timed up to :data:`COST_REPEATS` times while the timings took under
    :data:`COST_BUDGET` seconds: the quickest (as
    :func:`~geodml.planning.calibration.central_iterations` gives it), with the
    quickest two-loop's ``pair_seconds`` and the WAN bytes of all of them."""
    runs: list[dict] = []
    start = time.perf_counter()
    while len(runs) < COST_REPEATS and (not runs or time.perf_counter() - start < COST_BUDGET):
        runs.append(central_iterations(open_federation, workload, lam, share, site,
                                       max_iter=COST_ITERATIONS))
    return min(runs, key=lambda r: r["iteration_seconds"]) | {
        "pair_seconds": min(r["pair_seconds"] for r in runs),
        "wan_bytes": sum(r["wan_bytes"] for r in runs)}


def pairs_held(iterations: float, memory: float) -> float:
    """Curvature pairs the two-loop recursion reads over a run of ``I`` iterations of an
    L-BFGS with memory ``m``: ``sum_{k=1..I} min(k - 1, m)``, that is ``I (I - 1) / 2``
    up to ``I = m + 1`` and ``m`` more per iteration after."""
    i, m = max(0.0, iterations), max(0.0, memory)
    if i <= m + 1:
        return i * (i - 1) / 2 if i > 1 else 0.0
    return m * (m + 1) / 2 + m * (i - m - 1)


def _iteration_cost(small: tuple[float, float], large: tuple[float, float]
                    ) -> Callable[[float], float]:
    """``t(n) = r n + tau`` through two (nonzeros, seconds) points, ``r, tau >= 0``;
    where the larger took no longer (noise), all of its time grows with the rows."""
    (n1, t1), (n2, t2) = small, large
    if not (n2 > n1 and t2 > t1):
        return lambda n: t2 * n / max(1.0, n2)
    rate = (t2 - t1) / (n2 - n1)
    tau = max(0.0, t1 - rate * n1)
    return lambda n: rate * n + tau
