"""The two halves of a job's compression undo each other: what a site sends up and
what the coordinator makes of it, decided by one flag (geodml.job.compression)."""

from __future__ import annotations

import numpy as np

from geodml.compression import from_spec
from geodml.job.compression import DownChannel, UpReceiver, UpSender, travels_as_mean
from geodml.wire.codec import WireFormat, roundtrip


def test_up_halves_undo_each_other_and_switch_together():
    rng = np.random.default_rng(0)
    grad, rows = rng.normal(size=50) * 1e6, 3_000_000  # a sum that float16 cannot hold
    site = UpSender(from_spec('{"kind": "cast", "dtype": "float16"}'), 50)
    coordinator = UpReceiver('{"kind": "cast", "dtype": "float16"}')
    full_precision, as_mean = coordinator.begin_evaluate()
    assert (full_precision, as_mean) == (False, True) and site.active
    sent = roundtrip(site.send(grad, rows), site.format)
    assert np.all(np.isfinite(sent)) and np.max(np.abs(sent)) < 65504
    got = coordinator.receive(sent, rows, as_mean)
    np.testing.assert_allclose(got, grad, rtol=1e-3)
    coordinator.pending = True  # the precision policy switched
    full_precision, as_mean = coordinator.begin_evaluate()
    assert full_precision and not as_mean
    site.stop()  # what the site does on full_precision
    assert not site.active
    np.testing.assert_array_equal(coordinator.receive(grad, rows, as_mean), grad)


def test_the_rule_is_one_function():
    assert travels_as_mean(True, exact=False)
    assert not travels_as_mean(True, exact=True)
    assert not travels_as_mean(False, exact=False)
    assert not UpReceiver(None).begin_evaluate()[1]


def test_down_channel_sends_what_it_says_the_sites_receive():
    v = np.linspace(-3, 3, 40)
    down = DownChannel('{"kind": "cast", "dtype": "bfloat16"}', 40, WireFormat())
    got = down.as_received(v)
    assert down.format.dtype == "bfloat16"
    np.testing.assert_array_equal(roundtrip(got, down.format), got)
    assert not np.array_equal(got, v)
    down.stop()
    np.testing.assert_array_equal(down.as_received(v), v)
