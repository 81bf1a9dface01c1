"""The planner's extrapolation: rounds across two sample sizes, compute from measured
passes, the ranges, and a recommendation only where the ranges separate."""

from __future__ import annotations

import math

import pytest

from geodml.planning.extrapolate import (
    FLAT,
    MAX_EXPONENT,
    NOISE,
    fit_rounds,
    full_compute,
    pass_growth,
    predict_geo,
    step_growth,
)
from geodml.planning.planner import _recommend
from geodml.planning.plans import Estimate


def test_rounds_that_grow_as_a_power_of_the_rows_are_extrapolated_to_all_rows():
    # 217 vector rounds at 1M rows per DC growing as rows^0.36 (the 2^20 grid without the
    # metric): calibrations at 2% and 0.5% see 217 * 0.02^0.36 and 217 * 0.005^0.36
    beta = 0.36
    large, small = 217 * 0.02**beta, 217 * 0.005**beta
    fit = fit_rounds(large, 0.02, small, 0.005)
    assert fit.exponent == pytest.approx(beta)
    assert fit.point == pytest.approx(217)
    assert fit.low < large < 217 < fit.high  # the range spans both predictions
    assert "extrapolated" in fit.how


def test_flat_rounds_keep_the_single_sample_prediction():
    fit = fit_rounds(24, 0.02, 23, 0.005)  # within FLAT: rounds do not grow
    assert fit_rounds(30, 0.2, 21.6, 0.05).how == "flat across samples"  # 1.39x: noise
    assert abs(math.log(24 / 23)) <= math.log1p(FLAT)
    assert fit.point == 24 and fit.exponent == 0 and fit.how == "flat across samples"
    assert fit.low == pytest.approx(24 * math.exp(-NOISE))  # the noise floor, not the gap
    assert fit.high == pytest.approx(24 * math.exp(NOISE))


def test_fewer_rounds_on_more_rows_are_not_extrapolated_downwards():
    fit = fit_rounds(20, 0.1, 30, 0.025)
    assert fit.exponent == 0 and fit.point == 20
    assert fit.low == pytest.approx(20 * 20 / 30)  # the spread is the calibrations' gap
    assert fit.high == pytest.approx(20 * 30 / 20)


def test_a_sparse_calibration_is_priced_at_dense_vectors():
    """A sample's vectors are zero off its rows' features and travel sparse; the full
    run's are dense over the support: each link moves at least that per vector round."""
    from geodml.planning.deployment import parse_deployment

    deployment = parse_deployment({"home": "us-east", "sites": [
        {"name": n, "region": n} for n in ("us-east", "eu-west")]})
    large = {"vector_rounds": 10.0, "fraction": 0.02, "rounds": 20, "evaluations": 10,
             "links": {"us-east->eu-west": 5000, "eu-west->us-east": 50_000},
             "calls": [0.0], "network_seconds": 1.0, "sample_pass": None,
             "converged": True, "calibration_seconds": 1.0}
    dense = {"us-east->eu-west": 2000.0, "eu-west->us-east": 2000.0}  # per vector round
    record = predict_geo(large, None, None, dense, deployment)
    assert record["links"] == {"us-east->eu-west": 20_000, "eu-west->us-east": 50_000}
    link = deployment.link("us-east", "eu-west")
    assert record["seconds"] == pytest.approx(1.0 + 15_000 * 8 / (link.bandwidth_mbps * 1e6))
    assert "bytes_range" not in record  # no high end beyond the rounds' without one

    # how far zstd shrinks the run's dense vectors the sample cannot show: the floored
    # link's high end is its vectors uncompressed, at the rounds' high end
    raw = {k: 2 * v for k, v in dense.items()}
    ranged = predict_geo(large, None, None, dense, deployment, None, raw)
    low, point, high = ranged["range"]
    assert ranged["links"] == record["links"]  # the point does not move
    assert ranged["bytes_range"] == pytest.approx(
        (70_000 * low / point, 4000 * 10 * high / point + 50_000 * high / point))
    added = 40_000 * high / point - 20_000 * high / point
    assert ranged["seconds_range"][1] == pytest.approx(
        record["seconds_range"][1] + added * 8 / (link.bandwidth_mbps * 1e6))


def test_the_exponent_is_clamped():
    fit = fit_rounds(100, 0.01, 10, 0.005)  # 10x more rounds on 2x the rows
    assert fit.exponent == MAX_EXPONENT
    assert fit.point == pytest.approx(100 / 0.01)


def test_a_single_or_whole_calibration_has_the_noise_range():
    for fit in (fit_rounds(30, 0.2), fit_rounds(30, 1.0, 28, 0.25)):
        assert fit.point == 30
        assert (fit.low, fit.high) == pytest.approx((30 * math.exp(-NOISE), 30 * math.exp(NOISE)))


def test_compute_grows_by_the_measured_pass_not_the_share():
    rho, how = pass_growth(full=2.0, sample=0.05, share=0.01)
    assert rho == pytest.approx(40) and how == "measured passes"
    assert pass_growth(None, 0.05, 0.01) == (pytest.approx(100), "passes scaled by 1/f")
    # the quickest call (0.01 s) is overhead; the rest grows by rho
    assert full_compute([0.01, 0.06, 0.11], 40) == pytest.approx([0.01, 2.01, 4.01])


def test_a_prediction_scales_bytes_and_seconds_with_the_rounds():
    large = {"vector_rounds": 20.0, "fraction": 0.02, "rounds": 40, "evaluations": 20,
             "links": {"a->b": 1000, "b->a": 3000}, "calls": [0.01, 0.02],
             "network_seconds": 4.0, "sample_pass": 0.01, "converged": True,
             "calibration_seconds": 5.0}
    small = {**large, "vector_rounds": 10.0, "fraction": 0.005, "calibration_seconds": 1.0}
    record = predict_geo(large, small, full_pass_seconds=0.5)  # rho = 50
    factor = record["vector_rounds"] / 20.0
    assert record["exponent"] == pytest.approx(0.5)  # twice the rounds on 4x the rows
    assert record["links"] == {"a->b": round(1000 * factor), "b->a": round(3000 * factor)}
    assert record["seconds"] == pytest.approx((4.0 + 0.01 + 0.51) * factor)
    low, point, high = record["range"]
    assert low < 1.0 < point < high and point == pytest.approx(factor)
    assert record["calibration_seconds"] == 6.0  # both calibrations are what planning cost


def test_local_solves_widen_the_time_range_by_the_share():
    """A LocalSolve's inner iterations can grow with the rows beyond a pass: the modeled
    time's point grows those rounds by sqrt(rho / f), its high end by 1/f."""
    large = {"vector_rounds": 10.0, "fraction": 0.02, "rounds": 20, "evaluations": 10,
             "links": {"a->b": 1000}, "calls": [0.01, 0.11, 0.21],
             "call_names": ["Evaluate", "Evaluate", "LocalSolve"], "network_seconds": 1.0,
             "sample_pass": 0.01, "converged": True, "calibration_seconds": 1.0}
    record = predict_geo(large, None, full_pass_seconds=0.05)  # rho = 5, 1/f = 50
    assert record["seconds"] == pytest.approx(1.0 + 0.01 + 0.51 + 0.01 + 0.2 * math.sqrt(250))
    low, point, high = record["range"]
    low_s, high_s = record["seconds_range"]
    assert high_s == pytest.approx((1.0 + 0.01 + 0.51 + 0.01 + 0.2 * 50) * high / point)
    assert low_s == pytest.approx((1.0 + 0.01 + 0.51 + 1.01) * low / point)  # by the pass
    assert low_s < record["seconds"] < high_s
    # an SQM-like calibration (no LocalSolve): both ends grow by the pass
    sqm = predict_geo({**large, "call_names": ["Evaluate"] * 3}, None, full_pass_seconds=0.05)
    assert sqm["seconds_range"][1] == pytest.approx(sqm["seconds"] * high / point)


def test_evaluate_rounds_grow_by_the_timed_steps_added_seconds():
    """A sample's Evaluate round is mostly a fixed cost (its vectors' coding), which the
    pass's ratio would multiply: where the timer site's step was timed on the sample and
    on all rows, Evaluate rounds grow by the seconds a step added; other rounds keep the
    pass's ratio."""
    assert step_growth(full=0.25, sample=0.05) == pytest.approx(0.2)
    assert step_growth(full=0.04, sample=0.05) == 0.0  # more rows never take less
    assert step_growth(None, 0.05) is None and step_growth(0.25, None) is None
    large = {"vector_rounds": 10.0, "fraction": 0.02, "rounds": 12, "evaluations": 10,
             "links": {"a->b": 1000}, "calls": [0.01, 0.05, 0.03],
             "call_names": ["Subspace", "Evaluate", "LineSearch"], "network_seconds": 1.0,
             "sample_pass": 0.01, "sample_step": 0.05, "converged": True,
             "calibration_seconds": 1.0}
    # rho = 8 for the other rounds, 0.01 the quickest call: 0.01 + 0.02 * 8 = 0.17
    timed = predict_geo(large, None, full_pass_seconds=0.08, full_step=0.2)
    assert timed["seconds"] == pytest.approx(1.0 + 0.01 + (0.05 + 0.15) + 0.17)
    assert "steps timed" in timed["compute_how"]
    untimed = predict_geo(large, None, full_pass_seconds=0.08)
    assert untimed["seconds"] == pytest.approx(1.0 + 0.01 + (0.01 + 0.04 * 8) + 0.17)


def _estimate(plan: str, usd: float, low: float, high: float) -> Estimate:
    e = Estimate(plan, "geo", True, 1, 1.0, usd, 1, 1.0, usd, "test")
    e.ranges["workload_usd"] = (low, high)
    return e


def test_a_recommendation_is_decided_only_where_the_ranges_separate():
    best, reason, decided = _recommend([_estimate("a", 1.0, 0.8, 1.2),
                                        _estimate("b", 2.0, 1.5, 2.5)], "usd")
    assert (best, decided) == ("a", True)
    best, reason, decided = _recommend([_estimate("a", 1.0, 0.5, 2.0),
                                        _estimate("b", 1.1, 0.9, 1.3)], "usd")
    assert (best, decided) == ("a", False)  # the point favours a, the ranges overlap
    assert "at the low ends a is cheapest, at the high ends b" in reason
    # a lower bound (no high end) above the best's range does not block a decision
    bound = _estimate("c", 5.0, 5.0, math.inf)
    assert _recommend([_estimate("a", 1.0, 0.8, 1.2), bound], "usd")[2] is True


def test_solver_iteration_cost_is_a_line_through_its_two_timings():
    from geodml.planning.central_time import _iteration_cost

    cost = _iteration_cost((1e6, 0.012), (1e7, 0.102))  # 10 ns per nonzero + 2 ms
    assert cost(1e8) == pytest.approx(1.002)
    assert cost(1e6) == pytest.approx(0.012)
    # the larger no slower (noise): all of its time grows with the rows
    flat = _iteration_cost((1e6, 0.05), (1e7, 0.04))
    assert flat(4e7) == pytest.approx(0.16)


def test_memory_rates_are_timed_in_a_child_and_positive():
    from geodml.planning.memory_probe import memory_rates

    rates = memory_rates.__wrapped__(64 << 20)  # a small probe, not the cached one
    assert rates is not None
    assert 1e6 < rates.fresh < 1e13 and 1e6 < rates.backed < 1e13


def test_the_setup_range_reaches_down_to_memory_already_backed():
    from geodml.planning.central_time import SETUP_BYTES_PER_NONZERO, SETUP_PASSES, setup_seconds
    from geodml.planning.memory_probe import MemoryRates

    nnz = 10_000_000
    (low, point, high), basis = setup_seconds(nnz, 0.1, MemoryRates(4e8, 1.6e10))
    assert point == high == pytest.approx(SETUP_BYTES_PER_NONZERO * nnz / 4e8)
    assert low == pytest.approx(SETUP_BYTES_PER_NONZERO * nnz / 1.6e10)
    assert "400 MB/s of fresh memory" in basis
    # a machine whose backed memory timed slower than its first touches: no lower low
    assert setup_seconds(nnz, 0.1, MemoryRates(4e8, 2e8))[0][0] == pytest.approx(point)
    assert setup_seconds(nnz, 0.1, None)[0] == pytest.approx((SETUP_PASSES * 0.1,) * 3)


def test_pass_growth_stays_between_one_and_the_inverse_share():
    from geodml.planning.extrapolate import pass_growth

    assert pass_growth(0.05, 0.1, 1.0)[0] == 1.0  # the same rows timed twice: no growth
    assert pass_growth(0.9, 0.1, 0.25)[0] == 4.0  # at most 1 / share
    assert pass_growth(0.3, 0.1, 0.25)[0] == pytest.approx(3.0)
    assert pass_growth(None, 0.1, 0.25)[0] == 4.0


def test_memory_probe_gets_past_recently_freed_memory_to_the_slow_rate():
    from geodml.planning.memory_probe import CHUNK, SLOW_CHUNKS, slow_regime, tail_rate

    span = SLOW_CHUNKS
    fast, slow = CHUNK / 7e9, CHUNK / 4e8  # seconds per chunk at 7 GB/s and 400 MB/s
    pool = [fast] * 40  # 640 MB recently freed, still backed
    assert not slow_regime(pool)
    assert not slow_regime(pool + [slow] * (span - 1))
    assert slow_regime(pool + [slow] * span)
    assert tail_rate(pool + [slow] * span) == pytest.approx(4e8)
    # one slow chunk in the pool (a busy machine) is not the slow regime
    assert not slow_regime(pool + [slow] + [fast] * span)
    # every chunk alike (no pool, or a machine whose first touches cost the same)
    assert not slow_regime([slow] * (3 * span))
    assert tail_rate([slow] * 3) == pytest.approx(4e8)
