"""Each concern of a job keeps its coordinator half and its site half in one module
(geodml.job); here the two halves meet and undo each other."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.data.dataset import Dataset, FeatureSpace
from geodml.errors import GeodmlError
from geodml.job import privacy, secure, spec, support
from geodml.privacy.dp import PrivacyLedger
from geodml.privacy.secure_aggregation import public_bytes, site_key
from geodml.site.policy import Policy
from geodml.wire.codec import WireFormat
from geodml.wire.errors import SiteError
from geodml.wire.info import SiteInfo
from geodml.wire.protocol import pb


def _info(name: str, key, rows: int) -> SiteInfo:
    return SiteInfo(name, "r", rows, 5, 0, 0, "", FeatureSpace(5), 1, (), 0, 1,
                    secure_aggregation_key=public_bytes(key))


def test_secure_site_masks_and_coordinator_unmasks_the_sum():
    keys = {n: site_key(n.encode() * 8) for n in ("a", "b", "c")}
    infos = {n: _info(n, k, 100) for n, k in keys.items()}
    setup = secure.setup(secure.SecureAggregation(), infos, list(infos),
                         secure.job_nonce(b"seed", 1))
    request = pb.PrepareRequest(secure=setup)
    values = {n: np.random.default_rng(i).normal(size=7) for i, n in enumerate(keys)}
    round_request = pb.EvaluateRequest(round=3)
    masked = [secure.mask(secure.masker_for(request, n, keys[n], Policy()), round_request,
                          "Evaluate", values[n], n) for n in keys]
    assert not np.allclose(secure.unmask(masked[:1], setup.fraction_bits), values["a"])
    total = secure.unmask(masked, setup.fraction_bits)
    bound = secure.sum_resolution(3, setup.fraction_bits)
    np.testing.assert_allclose(total, sum(values.values()), rtol=0, atol=bound)
    assert secure.job_nonce(b"seed", 1) == secure.job_nonce(b"seed", 1) != \
        secure.job_nonce(b"seed", 2)


def test_secure_site_half_refuses_what_the_policy_forbids():
    with pytest.raises(Exception, match="require_secure_aggregation"):
        secure.masker_for(pb.PrepareRequest(), "a", site_key(), Policy(
            require_secure_aggregation=True))
    with pytest.raises(SiteError, match="round number"):
        keys = {n: site_key() for n in ("a", "b")}
        infos = {n: _info(n, k, 10) for n, k in keys.items()}
        req = pb.PrepareRequest(secure=secure.setup(secure.SecureAggregation(), infos,
                                                    list(infos), b"\0" * 16))
        secure.mask(secure.masker_for(req, "a", keys["a"], Policy()), pb.EvaluateRequest(),
                    "Evaluate", np.zeros(2), "a")


def test_privacy_request_is_what_the_site_reads_and_it_charges_once(tmp_path):
    job = privacy.PrivacyJob(clip=1.0, noise_multipliers={"a": 2.0})
    req = pb.PrepareRequest(privacy=privacy.privacy_request(job, "a", b"n" * 16))
    ledger = PrivacyLedger(10.0, 1e-5, tmp_path / "ledger.json", b"secret")
    dp = privacy.check_request(req, "a", Policy(dp_epsilon=10.0, dp_delta=1e-5), ledger)
    assert (dp.clip, dp.noise_multiplier) == (1.0, 2.0)
    X = sp.csr_matrix(np.eye(4))
    rows = privacy.PrivateRows(X, np.array([0.0, 1, 0, 1]))
    ask = pb.EvaluateRequest(round=1, has_w=True, want_gradient=True)
    from geodml.models.losses import get_loss

    g1 = privacy.private_gradient(dp, ask, np.zeros(4), rows, get_loss("logistic"), ledger,
                                  b"secret", "a")
    g2 = privacy.private_gradient(dp, ask, np.zeros(4), rows, get_loss("logistic"), ledger,
                                  b"secret", "a")  # a replay: the same release, not charged
    np.testing.assert_array_equal(g1, g2)
    assert len(ledger.releases) == 1
    with pytest.raises(SiteError, match="restrict"):
        req.restrict_to_support = True
        privacy.check_request(req, "a", Policy(dp_epsilon=10.0, dp_delta=1e-5), ledger)


def test_support_restrict_and_expand_undo_each_other():
    rng = np.random.default_rng(0)
    X = sp.random(30, 50, density=0.05, format="csr", random_state=1)
    S = support.support_of(X.indices, 50)
    assert np.array_equal(S, np.unique(X.indices))
    Xs = support.renumber_columns(X, S, 50)
    w = rng.normal(size=50)
    np.testing.assert_allclose(Xs @ support.restrict(w, S), X @ w)
    g = X.T @ rng.normal(size=30)  # a gradient sum: zero off the support
    np.testing.assert_allclose(support.expand(support.restrict(g, S), S, 50), g)
    assert support.dim(S, 50) == len(S) and support.dim(None, 50) == 50
    assert support.restrict(w, None) is w and support.expand(w, None, 50) is w


def test_a_support_travels_as_indices_or_as_a_bitmap_whichever_is_smaller():
    rng = np.random.default_rng(2)
    for n, size in ((100, 3), (100, 4), (100, 5), (1000, 700), (64, 64), (2**20, 465_000)):
        S = np.sort(rng.choice(n, size, replace=False)).astype(np.uint32)
        slot, values = support.support_to_wire(S, n)
        bitmap = support.bitmap_words(n) < size  # 4 bytes per index against per word
        assert slot == (support.BITMAP_SLOT if bitmap else support.INDEX_SLOT), (n, size)
        assert len(values) == (support.bitmap_words(n) if bitmap else size)
        assert slot == support.support_slot(size, n)  # the coordinator's side agrees
        np.testing.assert_array_equal(support.support_from_wire(slot, values, size, n, "s"), S)
    slot, values = support.support_to_wire(np.arange(10, dtype=np.uint32), 40)
    assert slot == support.BITMAP_SLOT
    with pytest.raises(GeodmlError, match="site s: its support bitmap has 10 features"):
        support.support_from_wire(slot, values, 9, 40, "s")  # the reply's size disagrees
    values = values.copy()
    values[-1] |= np.uint32(1 << 31)  # feature 63 of a 40-feature space
    with pytest.raises(GeodmlError, match="largest 63"):
        support.support_from_wire(slot, values, 11, 40, "s")


def test_spec_site_reads_back_what_the_coordinator_wrote():
    data = Dataset(sp.csr_matrix(np.eye(3)), np.array([0.0, 1, 1]), FeatureSpace(3))
    req = spec.prepare_request("logistic", 0.5, data.space, 3, True,
                               WireFormat("float32"), job="probe",
                               up_compression='{"kind": "cast", "dtype": "float16"}',
                               sample_fraction=0.5,
                               down_compression='{"kind": "cast", "dtype": "float8"}',
                               up_deltas=True)
    job = spec.JobSpec.from_request(pb.PrepareRequest.FromString(req.SerializeToString()),
                                    "a", data)
    assert (job.job, job.loss.name, job.lam, job.sample_fraction, job.restrict) == (
        "probe", "logistic", 0.5, 0.5, True)
    assert job.reply_format == WireFormat("float32") and job.up is not None
    # the site's directions travel as the coordinator's do; gradients as changes
    assert job.directions == WireFormat("qfloat8", "zstd") and job.up_deltas
    no_up = spec.prepare_request("logistic", 0.5, data.space, 3, True, WireFormat(),
                                 up_deltas=True)
    assert not no_up.up_deltas  # nothing compressed up: nothing to send as changes
    req.down_compression = '{"kind": "cast", "dtype": "float7"}'
    with pytest.raises(SiteError, match=r"site a: down_compression: .*dtype"):
        spec.JobSpec.from_request(req, "a", data)
    req.down_compression = ""
    assert spec.prepare_request("squared", 0.0, data.space, 3, False, WireFormat()
                                ).sample_fraction == 0.0
    req.features = 4
    with pytest.raises(SiteError, match="site a: job has 4 features"):
        spec.JobSpec.from_request(req, "a", data)
