"""The two halves of a job's compression undo each other: what a site sends up and
what the coordinator makes of it, decided by one flag (geodml.job.compression)."""

from __future__ import annotations

import numpy as np
import pytest

from geodml.compression import from_spec
from geodml.errors import GeodmlError
from geodml.job.compression import (
    CompressionConfig,
    DownChannel,
    UpReceiver,
    UpSender,
    sends_changes,
    travels_as_mean,
)
from geodml.wire.codec import WireFormat, roundtrip


def test_up_halves_undo_each_other_and_switch_together():
    rng = np.random.default_rng(0)
    grad, rows = rng.normal(size=50) * 1e6, 3_000_000  # a sum that float16 cannot hold
    site = UpSender(from_spec('{"kind": "cast", "dtype": "float16"}'), 50)
    coordinator = UpReceiver(CompressionConfig(up='{"kind": "cast", "dtype": "float16"}'))
    full_precision, as_mean = coordinator.begin_evaluate()
    assert (full_precision, as_mean) == (False, True) and site.active
    out, delta = site.send(grad, rows)
    sent = roundtrip(out, site.format)
    assert np.all(np.isfinite(sent)) and np.max(np.abs(sent)) < 65504 and not delta
    got = coordinator.receive("a", 1, sent, rows, as_mean, delta)
    np.testing.assert_allclose(got, grad, rtol=1e-3)
    coordinator.pending = True  # the precision policy switched
    full_precision, as_mean = coordinator.begin_evaluate()
    assert full_precision and not as_mean
    site.stop()  # what the site does on full_precision
    assert not site.active
    np.testing.assert_array_equal(coordinator.receive("a", 2, grad, rows, as_mean, False), grad)


def _cancelling_sums(steps: int, seed: int = 0):
    """Two sites' gradient sums along a converging run: each large, their sum shrinking
    (the global gradient at the optimum is the small sum of large site sums)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(2, 200)) * 100
    base[1] = -base[0]
    for t in range(steps):  # the global gradient halves per step, as in a linear phase
        global_part = rng.normal(size=200) * 2.0 ** -t
        yield base[0] + global_part, base[1] + global_part


def _global_errors(deltas: bool) -> list[float]:
    """Relative error of the received global gradient per step, float8 up."""
    f8 = from_spec('{"kind": "cast", "dtype": "float8"}')
    sites = {name: UpSender(f8, 200, deltas) for name in "ab"}
    coordinator = UpReceiver(CompressionConfig(up='{"kind": "cast", "dtype": "float8"}',
                                               deltas=deltas))
    errors = []
    for t, sums in enumerate(_cancelling_sums(12)):
        _, as_mean = coordinator.begin_evaluate()
        got = []
        for (name, sender), grad in zip(sites.items(), sums, strict=True):
            out, delta = sender.send(grad, 1)
            assert delta == (deltas and t > 0)
            got.append(coordinator.receive(name, t + 1, roundtrip(out, sender.format), 1,
                                           as_mean, delta))
        true = sums[0] + sums[1]
        errors.append(float(np.linalg.norm(got[0] + got[1] - true) / np.linalg.norm(true)))
    return errors


def test_deltas_keep_the_error_relative_to_the_change_not_to_the_sites_sums():
    plain, deltas = _global_errors(False), _global_errors(True)
    # without deltas the error is relative to each site's sum (100): once the global
    # gradient is 1e-3 of it the received one is noise; with deltas the error of the
    # first (whole) sums is corrected by 1 - 2^-3 per step and later ones are small
    assert plain[-1] >= 0.5
    assert max(deltas[6:]) < 0.2


def test_a_retried_round_is_reconstructed_from_the_same_reference():
    f16 = from_spec('{"kind": "cast", "dtype": "float16"}')
    site, coordinator = UpSender(f16, 3, deltas=True), UpReceiver(
        CompressionConfig(up='{"kind": "cast", "dtype": "float16"}'))
    first = coordinator.receive("a", 1, site.send(np.ones(3), 1)[0], 1, True, False)
    out, delta = site.send(np.full(3, 3.0), 1)
    again = [coordinator.receive("a", 2, out, 1, True, delta) for _ in range(2)]
    np.testing.assert_array_equal(first, np.ones(3))
    np.testing.assert_array_equal(again[0], np.full(3, 3.0))
    np.testing.assert_array_equal(again[1], again[0])
    with pytest.raises(GeodmlError, match="site b sent a gradient change before any"):
        coordinator.receive("b", 2, out, 1, True, True)


def test_the_rule_is_one_function():
    assert travels_as_mean(True, exact=False)
    assert not travels_as_mean(True, exact=True)
    assert not travels_as_mean(False, exact=False)
    assert not UpReceiver(CompressionConfig()).begin_evaluate()[1]
    # changes: a compressed job that asks for them, without a residual of its own
    f8 = '{"kind": "cast", "dtype": "float8"}'
    assert sends_changes(f8, True) and sends_changes(from_spec(f8), True)
    assert not sends_changes(f8, False) and not sends_changes("", True)
    assert not sends_changes('{"kind": "cast", "dtype": "float8", "error_feedback": true}', True)


def test_down_channel_sends_what_it_says_the_sites_receive():
    v = np.linspace(-3, 3, 40)
    down = DownChannel('{"kind": "cast", "dtype": "bfloat16"}', 40, WireFormat())
    got = down.as_received(v)
    assert down.format.dtype == "bfloat16"
    np.testing.assert_array_equal(roundtrip(got, down.format), got)
    assert not np.array_equal(got, v)
    down.stop()
    np.testing.assert_array_equal(down.as_received(v), v)


def test_a_metric_travels_in_bfloat16_when_the_job_compresses():
    """A metric preconditions: three significant digits do, float64 would cost four
    bfloat16 vectors each way (docs/compression.md)."""
    from geodml.site.procedures import PROCEDURES
    from geodml.wire.dtypes import metric_format

    exact = WireFormat()
    assert metric_format(exact).dtype == "bfloat16"
    assert metric_format(WireFormat("float32", compression="zstd")) == WireFormat(
        "bfloat16", compression="zstd")  # the job's other choices kept
    assert metric_format(WireFormat("float16")).dtype == "float16"  # already as coarse
    stat = PROCEDURES["hess_diag"]
    assert stat.reply_format(exact, None) == exact  # an uncompressed job: exact
    for up, sent in (("qfloat8", "bfloat16"), ("qint8", "bfloat16"), ("float16", "float16"),
                     ("bfloat16", "bfloat16")):
        assert stat.reply_format(exact, WireFormat(up)).dtype == sent, up
    assert PROCEDURES["fadl_local"].reply_format(exact, WireFormat("qfloat8")).dtype == "qfloat8"


def test_the_direction_check_is_off_where_every_compression_is_a_float_cast():
    """A cast errs relative to each entry, so -D^(-1) g~ descends wherever g does; int8
    and top-k err absolutely and keep the check (an ascent switches in every case)."""
    from geodml.job.compression import SLOPE_AGREEMENT, AdaptivePrecision, CompressionConfig

    f8, bf16 = '{"kind": "cast", "dtype": "float8"}', '{"kind": "cast", "dtype": "bfloat16"}'
    int8, top = '{"kind": "quantize_int8"}', '{"kind": "top_k", "fraction": 0.1}'
    for up, down, agreement in ((f8, f8, 0.0), (bf16, None, 0.0), (f8, int8, SLOPE_AGREEMENT),
                                (top, None, SLOPE_AGREEMENT)):
        policy = CompressionConfig(up=up, down=down, precision=AdaptivePrecision()).precision
        assert policy.agreement == agreement, (up, down)
        assert policy.observe_direction(-1.0, -0.3) is (agreement == 0.0)
    given = CompressionConfig(up=f8, precision=AdaptivePrecision(agreement=0.9)).precision
    assert given.agreement == 0.9  # a policy's own choice stands
    off = CompressionConfig(up=f8, precision=AdaptivePrecision()).precision
    assert not off.observe_direction(-1.0, 0.1)  # an ascent direction still switches
