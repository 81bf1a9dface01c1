r"""A full run predicted from its calibrations: rounds extrapolated across sample
sizes, compute from the sites' measured passes, and a range around every quantity
(see :mod:`geodml.planning.planner`).

Rounds
------
Calibrations on shares :math:`f_a < f_b` of every site's rows (each with :math:`\lambda
/ f`, so that :math:`\lambda` times the rows is the full problem's: each sample is the
same problem at a smaller size) took :math:`R_a` and :math:`R_b` vector rounds. Where
the problem's conditioning degrades with the rows, rounds to a tolerance grow as a power
of them (2^20 hashed features in the identity metric: 41, 91, 217 vector rounds at 10k,
100k, 1M rows per DC, about :math:`n^{0.36}`); where it does not they are flat (2^12
features; 2^20 with the Hessian-diagonal metric). The fit

.. math::

    \beta = \frac{\ln(R_b / R_a)}{\ln(f_b / f_a)}, \qquad R(1) = R_b\, f_b^{-\beta}

is used when the two calibrations disagree by more than :data:`FLAT`
(:math:`|\ln(R_b/R_a)| > \ln(1 + \mathrm{FLAT})`), with :math:`\beta` clamped to
:math:`[0, \mathrm{MAX\_EXPONENT}]` (fewer rounds on more rows is sampling noise, not a
trend to extrapolate); otherwise the rounds are *measured flat* and :math:`R(1) = R_b`,
the single-sample prediction. (The geometric mean :math:`\sqrt{R_a R_b}`, the two as
draws of one count, was tried: over both grids' 26 sampled calibrations it missed the
runs' vector rounds by 10.5% on average where :math:`R_b` missed by 12.2%, but FADL's
smaller samples take fewer rounds than its larger ones and SQM L-BFGS's do not, so it
lowered one method's prediction against the other's and the recommendation fell to
1.16x the cheapest at 2 x 80k, 2^12, and 1.14x at 4 x 100k, 2^20; BENCHMARKS.md.)

Range
-----
One calibration's rounds miss the full run's by sampling and quantization noise; the
two calibrations' disagreement measures it: :math:`s = \max(\mathrm{NOISE},
|\ln(R_b/R_a)|)`, and the full run's rounds are predicted in

.. math::

    [\min(R_b, R(1))\, e^{-s},\ \max(R_b, R(1))\, e^{s}].

Bytes and dollars scale with the rounds, each link at no less than dense vectors over
the site's support per vector round (calibrations keep the full data's support, but a
sample's vectors are zero off its rows' features and travel sparse: :func:`predict_geo`).
Modeled time is the calibration's rounds over the links plus its compute at full size,
both scaled the same way.

Compute at full size
--------------------
A calibration round's call time is a fixed overhead :math:`o` (its quickest call) plus
passes over the sample. One site's value+gradient pass (site :math:`t`: the home
DC's, whose traffic is local, else the largest) is timed alone on the sample
(:math:`P^{\mathrm{sample}}_t`) and on all its rows (:math:`P^{\mathrm{full}}_t`); a
round's compute at full size is

.. math::

    c^{\mathrm{full}} = o + (c - o)\,\rho, \qquad
    \rho = P^{\mathrm{full}}_t / P^{\mathrm{sample}}_t,

the measured growth of a pass (cache effects included), not the share :math:`1/f`
(the fallback where a pass cannot be timed: masked or private sites).

Evaluate rounds (most of an L-BFGS run's) grow by what the timer site's step along a
direction added, timed alone on the sample and on all its rows
(:func:`geodml.planning.calibration.time_steps`):

.. math::

    c^{\mathrm{full}} = c + S^{\mathrm{full}}_t - S^{\mathrm{sample}}_t.

On a sample, such a round is mostly a cost that does not grow with the rows (the
coding of its model-sized vectors, the call itself), which :math:`\rho` multiplied
with the rest: at 2^20 features, 2 DCs x 1M rows, a 2% sample's Evaluate rounds took
57 ms, its step 41 ms and the full run's step 241 ms, so :math:`\rho = 5.9` priced a
round at 323 ms where the run's took about 260.

An iterative local procedure (``LocalSolve``: FADL's TRON, DANE's and ADMM's solvers)
does a number of passes that itself grows with the rows: at 2^20 features, 2 DCs x 1M
rows, FADL-subspace's local solves took 0.8 s on the 2% sample and 16.8 s on all rows
(21x) while a pass grew 7.6x, and samples of 0.5% and 2% grew alike (1.21x and 1.22x),
so no pair of small samples shows it; at 2^12 features, 2 DCs x 1.28M rows, they grew
50x from a 1.6% sample where a pass grew 25.6x (``bench/bench_planner_noise.py
calls``). Such rounds' compute grows by the geometric mean of the pass and the share,

.. math::

    \rho_{\mathrm{local}} = \sqrt{\rho / f},

which predicted 40x and 19.5x for the two (-20% and -7%; the pass alone -49% and
-64%); the modeled time's range grows them by the pass at its low end and by the
share, :math:`1/f`, at its high end (their work is passes times an inner iteration
count; neither grew faster than the rows on any benchmark). How many local solves a
run makes is the calibration's count scaled with the rounds, and that can miss too:
at 2^20 x 2 x 1M the 2% calibration made 10 where the run made 7. Other rounds
(Evaluate, LineSearch, Subspace: a fixed number of passes) grow by :math:`\rho` at
every end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# calibrations within 50% of each other: rounds are flat in the rows. In the diagonal
# metric the full runs' rounds are flat (26, 25, 20 vector rounds at 10k, 100k, 1M rows
# per DC, 2^20) while samples 4x apart differed by up to 1.39x; in the identity metric
# rounds grew as n^0.36-0.41, 1.65-1.76x over 4x (BENCHMARKS.md)
# (0.2 was tried: airline's fadl-subspace bytes -43% -> -24%, but 2^20 x 100k rows per
# DC then extrapolated rows^0.24 from samples 1.3x apart, bytes +14% -> +69%)
FLAT = 0.5
MAX_EXPONENT = 1.0  # rounds never grew faster than the rows on any benchmark
NOISE = 0.25  # a single calibration's rounds miss the full run's by up to ~25-30%
# (the 2^12 grid's worst: +30% bytes; BENCHMARKS.md, "The paper's experiment")


@dataclass(frozen=True)
class RoundsFit:
    """Predicted vector rounds at full size: the point, its range, and how; ``calibrated``
    is the larger calibration's rounds, which its bytes and seconds were metered over."""

    point: float
    low: float
    high: float
    exponent: float  # beta; 0 for flat or a single calibration
    how: str
    calibrated: float

    def factors(self) -> tuple[float, float, float]:
        """(low, point, high) as multiples of the calibrated rounds."""
        return (self.low / self.calibrated, self.point / self.calibrated,
                self.high / self.calibrated)


def fit_rounds(large: float, large_share: float, small: float | None = None,
               small_share: float | None = None) -> RoundsFit:
    """Rounds at full size from a calibration on ``large_share`` of the rows (``large``
    rounds) and, when given, one on ``small_share`` (``small`` rounds)."""
    large = max(float(large), 1e-9)
    if small is None or small_share is None or large_share >= 1.0:
        how = "all rows" if large_share >= 1.0 else "one sample"
        return RoundsFit(large, large * math.exp(-NOISE), large * math.exp(NOISE), 0.0, how, large)
    small = max(float(small), 1e-9)
    gap = math.log(large / small)
    spread = max(NOISE, abs(gap))
    if abs(gap) <= math.log1p(FLAT):
        point, beta, how = large, 0.0, "flat across samples"
    else:
        beta = min(MAX_EXPONENT, max(0.0, gap / math.log(large_share / small_share)))
        point = large * large_share ** -beta
        how = f"extrapolated as rows^{beta:.2f}"
    return RoundsFit(point, min(large, point) * math.exp(-spread),
                     max(large, point) * math.exp(spread), beta, how, large)


def pass_growth(full: float | None, sample: float | None, share: float) -> tuple[float, str]:
    """``rho``: how much longer a pass over all of the timed site's rows takes than one
    over its sample, as measured, within ``[1, 1 / share]`` (more rows never take less,
    and at most their share more: two timings of the same rows, at ``share = 1``, had
    made a calibration's compute half the run's); ``1 / share`` when either was not
    timed."""
    if full and sample:
        return min(1.0 / max(share, 1e-12), max(1.0, full / sample)), "measured passes"
    return 1.0 / max(share, 1e-12), "passes scaled by 1/f"


#: calls whose work is an iterative solve at the site: its inner iterations can grow with
#: the rows beyond a pass (module doc, "Compute at full size")
ITERATIVE_CALLS = frozenset({"LocalSolve"})
#: the rounds grown by the timed steps (:func:`step_growth`)
STEP_CALL = "Evaluate"


def step_growth(full: float | None, sample: float | None) -> float | None:
    """``S_full - S_sample``: how many seconds longer the timer site's step along a
    direction (:func:`geodml.planning.calibration.time_steps`) takes on all its rows
    than on the sample, at least 0; None when either was not timed."""
    if not full or not sample:
        return None
    return max(0.0, full - sample)


def full_compute(calls: Sequence[float], rho: float, names: Sequence[str] = (),
                 iterative_rho: float | None = None,
                 step_added: float | None = None) -> list[float]:
    """Each calibration round's compute at full size: ``o + (c - o) rho``, ``o`` the
    quickest call (a call's fixed overhead); rounds whose call (``names``, as
    ``calls``) is in :data:`ITERATIVE_CALLS` grow by ``iterative_rho`` when given, and
    Evaluate rounds by ``step_added`` seconds (:func:`step_growth`) when given."""
    overhead = min((c for c in calls if c > 0), default=0.0)
    local = rho if iterative_rho is None else iterative_rho
    out = []
    for c, name in zip(calls, names or [""] * len(calls), strict=True):
        if name == STEP_CALL and step_added is not None:
            out.append(c + step_added)
        else:
            rate = local if name in ITERATIVE_CALLS else rho
            out.append(overhead + max(0.0, c - overhead) * rate)
    return out


def predict_geo(large: dict, small: dict | None, full_pass_seconds: float | None,
                dense: Mapping[str, float] | None = None, deployment=None,
                full_step: float | None = None,
                dense_high: Mapping[str, float] | None = None) -> dict:
    """The full run's record from the calibration on the larger share (``large``, as
    :func:`geodml.planning.calibration.calibrate` returns it) and, when one ran, the
    smaller (``small``): rounds, bytes per link, modeled seconds, and ``range``, the
    (low, point, high) multiples of the calibration's rounds the prediction spans.

    ``dense``: bytes per link of one vector round with every vector dense over the
    site's support (:func:`geodml.planning.estimates.bound_links` per round). A link's
    bytes are at least that times the rounds: a sample's vectors are zero wherever its
    rows touch none of the support, and the codec sends such chunks sparse, so a
    calibration on 2% of the rows moved half the bytes per round of the full run
    (1M rows per DC, 2^20 features). The transfer time of the bytes this adds is added
    on the slowest link (``deployment``'s bandwidth). How far zstd compresses the full
    run's dense vectors a sample does not show (it sends them sparse), so where a link is
    priced at the floor, ``dense_high`` (the same vectors' bytes uncompressed, per
    vector round) at the rounds' high end is the high end of its bytes: ``bytes_range``,
    the (low, high) of all links' bytes, and the transfer time it adds is added to the
    modeled time's high end. Iterative rounds' compute grows by
    ``sqrt(rho / f)`` (module doc); ``seconds_range``: the modeled time's (low, high),
    their compute grown by ``rho`` at the low end and by ``1/f`` at the high end."""
    fit = fit_rounds(large["vector_rounds"], large["fraction"],
                     small["vector_rounds"] if small else None,
                     small["fraction"] if small else None)
    rho, passes = pass_growth(full_pass_seconds, large.get("sample_pass"), large["fraction"])
    low, point, high = fit.factors()
    names, share = large.get("call_names", ()), 1.0 / large["fraction"]  # rho <= share
    step_added = step_growth(full_step, large.get("sample_step"))

    def modeled(iterative_rho: float, factor: float) -> float:
        return (large["network_seconds"] + sum(full_compute(
            large["calls"], rho, names, iterative_rho, step_added))) * factor

    seconds = modeled(math.sqrt(rho * share), point)
    links = {k: v * point for k, v in large["links"].items()}
    highs = {k: v * high / point for k, v in links.items()}
    added = added_high = 0.0
    raised = False  # a link's high end at dense_high

    def transfer(name: str, nbytes: float) -> float:
        if deployment is None:
            return 0.0
        src, dst = name.split("->")
        return nbytes * 8.0 / (deployment.link(src, dst).bandwidth_mbps * 1e6)

    for name, per_round in (dense or {}).items():
        floor = per_round * fit.point
        if floor > links.get(name, 0.0):
            added = max(added, transfer(name, floor - links.get(name, 0.0)))
            links[name], highs[name] = floor, floor * high / point
            if dense_high and dense_high.get(name, 0.0) * fit.high > highs[name]:
                raw, raised = dense_high[name] * fit.high, True
                added_high = max(added_high, transfer(name, raw - highs[name]))
                highs[name] = raw
    return {"links": {k: round(v) for k, v in links.items()},
            "rounds": round(large["rounds"] * point), "vector_rounds": fit.point,
            "evaluations": large["evaluations"] * point, "seconds": seconds + added,
            "seconds_range": (modeled(rho, low) + added,
                              modeled(share, high) + added + added_high),
            **({"bytes_range": (sum(links.values()) * low / point, sum(highs.values()))}
               if raised else {}),
            "converged": large["converged"], "range": (low, point, high),
            "rounds_how": fit.how, "exponent": fit.exponent,
            "compute_how": passes + ("; steps timed" if step_added is not None else "")
            + ("; local solves by sqrt(rho / f)" if ITERATIVE_CALLS.intersection(names)
               else ""),
            "calibration_seconds": large["calibration_seconds"]
            + (small["calibration_seconds"] if small else 0.0)}
