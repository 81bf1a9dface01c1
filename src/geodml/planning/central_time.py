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
   (:func:`~geodml.planning.extrapolate.fit_rounds`), plus
   :data:`CENTRAL_EXTRA_PASSES`;
3. an sqm-lbfgs calibration (the same L-BFGS over exact sums), if one ran;
4. :data:`DEFAULT_CENTRAL_EVALUATIONS`, with its range.

A pass costs ``P = P_t nnz / nnz_t``: the timed site's measured pass over its rows
(:func:`~geodml.planning.calibration.full_pass`) scaled by nonzeros; where none could
be timed, ``nnz / r`` at this machine's random-CSR throughput ``r``. An L-BFGS
iteration also costs what does not grow with the rows: its vector arithmetic over all
``d`` features (the two-loop recursion reads ``4 m`` vectors of ``d``; at ``2^20``
features this outweighs a pass over 200,000 rows). The solver's calibration measures
it: an iteration there took ``T_s / I_s`` (its wall time over its iterations), of
which ``tau = T_s / I_s - f P_t`` is not the sample's pass (``f`` of the timed site's
rows), so

    T_train = E P + I tau,    E = I + CENTRAL_EXTRA_PASSES,

``I`` the extrapolated iterations and :data:`CENTRAL_EXTRA_PASSES` the passes' worth
beyond one per iteration (the first evaluation, the metric, and the copy's
concatenation and the solver's setup).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from geodml.federation import SiteInfo
from geodml.planning.calibration import CalibrationStore, central_iterations
from geodml.planning.extrapolate import fit_rounds
from geodml.planning.plans import Workload

# the centralized L-BFGS in the diagonal metric to gtol 1e-3: 18-33 iterations on the
# regional CTR data at 2^12 and 2^20 (BENCHMARKS.md); assumed when nothing better is known
DEFAULT_CENTRAL_EVALUATIONS = (18.0, 30.0, 45.0)
# beyond one pass per L-BFGS iteration: the first evaluation and the metric (2), and the
# concatenation of the exported rows and the solver's setup (about 4: 0.33 s against
# passes of 0.03-0.13 s over 200,000 rows at 2^20 features on the loaded 2-core machine)
CENTRAL_EXTRA_PASSES = 6
SMALL_SHARE = 0.25  # a second calibration samples this share of the first's rows
SINGLE_SHARE = 0.5  # a calibration on at least this share of the rows is not extrapolated

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
    spent, per_iteration, iterations = 0, 0.0, (0.0, 0.0, 0.0)
    lbfgs = next((r for v, (r, _, _) in records.items() if v.split()[0] == "sqm-lbfgs"), None)
    if timing.full_pass is not None and calibration.mode != "never":
        say(f"calibrating the centralized solver on site {timing.site}'s rows "
            "(they stay there)")
        iterations, per_iteration, basis, spent = _solver_iterations(
            open_federation, workload, lam, calibration, timing)
        counts = tuple(i + CENTRAL_EXTRA_PASSES for i in iterations)
    elif lbfgs is not None:
        low, point, high = lbfgs.get("range", (1.0, 1.0, 1.0))
        evaluations = float(lbfgs["evaluations"])
        counts = (evaluations * low / point, evaluations, evaluations * high / point)
        basis = f"{evaluations:.0f} L-BFGS evaluations (sqm-lbfgs calibration)"
    else:
        counts = DEFAULT_CENTRAL_EVALUATIONS
        basis = f"{counts[1]:.0f} L-BFGS evaluations assumed ({counts[0]:.0f}-{counts[2]:.0f})"
    nnz = sum(s.nnz for s in sites)
    if timing.full_pass is not None:
        timed = next(s.nnz for s in sites if s.name == timing.site)
        per_pass = timing.full_pass * nnz / max(1, timed)
        basis += f" + a pass each, measured at {timing.site}"
    else:
        per_pass = nnz / throughput
        basis += ", each at this machine's random-CSR rate"
    low, point, high = (c * per_pass + i * per_iteration
                        for c, i in zip(counts, iterations, strict=True))
    return (low, point, high), basis, spent


def _solver_iterations(open_federation, workload: Workload, lam: float,
                       calibration: CalibrationPlan, timing: Timing
                       ) -> tuple[Range, float, str, int]:
    """The centralized solver on samples of the timed site's rows: its iterations at full
    size (low, point, high), the seconds of one of its iterations on the larger sample
    beyond that sample's pass (``tau``), the basis, and the WAN bytes it took."""
    site = timing.site
    runs = [central_iterations(open_federation, workload, lam, f, site)
            for f in calibration.fractions()]
    large, small = runs[0], runs[1] if len(runs) > 1 else None
    fit = fit_rounds(large["iterations"], large["share"],
                     small["iterations"] if small else None, small["share"] if small else None)
    sample_pass = calibration.fraction * (timing.full_pass or 0.0)
    tau = max(0.0, large["seconds"] / max(1, large["iterations"]) - sample_pass)
    return ((fit.low, fit.point, fit.high), tau,
            f"{fit.point:.0f} L-BFGS iterations (the solver on {site}'s sample, {fit.how}) "
            f"of {tau * 1e3:.0f} ms",
            sum(r["wan_bytes"] for r in runs))
