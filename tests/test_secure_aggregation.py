"""Secure aggregation: the coordinator's view, the optimum, dropouts, policies."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.centralized import train_centralized
from geodml.data import load_dataset
from geodml.data.dataset import Dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import ConfigError, GeodmlError
from geodml.federation import AGGREGATE, Federation, SecureAggregation, SiteCallError
from geodml.federation.reliability import Reliability
from geodml.optim import LbfgsOptions
from geodml.privacy.secure_aggregation import (
    FixedPointOverflowError,
    Masker,
    Peer,
    SecureAggregationError,
    decode,
    encode,
    new_nonce,
    public_bytes,
    ring_sum,
    site_key,
)
from geodml.site.config import DataConfig, SiteConfig
from geodml.site.inprocess import InProcessTransport
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.site.service import SiteService
from geodml.wire.codec import CodecError, VectorAssembler, WireFormat, encode_ring
from geodml.wire.protocol import pb

REGIONS = ("us-east", "eu-west", "ap-south")
LAM = 1e-3  # well conditioned: the optimum is pinned down to 1e-6 in w


@pytest.fixture(scope="module")
def regional(tmp_path_factory):
    out = tmp_path_factory.mktemp("regional")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=2000,
                                     test_rows_per_region=200, hash_bits=11, seed=5), out)
    return site_dirs(out)


def in_process(datasets: dict[str, Dataset], secure: bool = True, **kw) -> Federation:
    policies = kw.pop("policies", {})
    services = [SiteService(n, n, d, policies.get(n)) for n, d in datasets.items()]
    return Federation([InProcessTransport(s) for s in services], home=next(iter(datasets)),
                      secure=SecureAggregation() if secure else None, **kw)


def loaded(regional, dtype=np.float32) -> dict[str, Dataset]:
    """The sites' rows, as stored (float32) or widened."""
    out = {n: load_dataset(p) for n, p in regional.items()}
    if dtype == np.float32:
        return out
    return {n: Dataset(d.X.astype(dtype), d.y, d.space) for n, d in out.items()}


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# -- the masks -------------------------------------------------------------------------

def maskers(names, nonce=None, bits=24):
    keys = {n: site_key() for n in names}
    peers = [Peer(n, public_bytes(k)) for n, k in keys.items()]
    nonce = nonce or new_nonce()
    return {n: Masker(n, keys[n], peers, nonce, bits) for n in names}


def test_masks_cancel_in_the_sum_and_leave_out_dropped_peers():
    rng = np.random.default_rng(0)
    m = maskers(["a", "b", "c", "d"])
    x = {n: rng.normal(size=50) * 1e4 for n in m}
    total = decode(ring_sum(m[n].mask(x[n], 3, "Evaluate") for n in m), 24)
    np.testing.assert_allclose(total, sum(x.values()), atol=4 * 2.0 ** -25)
    survivors = ["a", "b", "d"]
    partial = decode(ring_sum(m[n].mask(x[n], 3, "Evaluate", ["c"]) for n in survivors), 24)
    np.testing.assert_allclose(partial, sum(x[n] for n in survivors), atol=4 * 2.0 ** -25)
    # other rounds and other reply kinds get other masks
    assert not np.array_equal(m["a"].mask(x["a"], 3, "Evaluate"),
                              m["a"].mask(x["a"], 4, "Evaluate"))
    assert not np.array_equal(m["a"].mask(x["a"], 3, "Evaluate"),
                              m["a"].mask(x["a"], 3, "LineSearch"))


def test_a_lone_site_or_a_bad_peer_list_is_refused():
    m = maskers(["a", "b"])
    with pytest.raises(SecureAggregationError, match="fewer than 2 sites"):
        m["a"].mask(np.ones(3), 1, "Evaluate", ["b"])
    with pytest.raises(SecureAggregationError, match="not in the job"):
        m["a"].mask(np.ones(3), 1, "Evaluate", ["zz"])
    key = site_key()
    with pytest.raises(SecureAggregationError, match="its own public key"):
        Masker("a", key, [Peer("a", public_bytes(site_key())), Peer("b", public_bytes(key))],
               new_nonce(), 24)


def test_values_beyond_the_fixed_point_range_are_refused_not_wrapped():
    with pytest.raises(FixedPointOverflowError, match="fixed-point range"):
        encode(np.array([0.0, 2.0 ** 40]), 24, 4)
    assert decode(encode(np.array([-3.25, 1e9]), 24, 4), 24).tolist() == [-3.25, 1e9]


def test_ring_vectors_travel_as_uint64_and_nothing_else_is_accepted_in_their_slot():
    v = np.random.default_rng(1).integers(0, 2 ** 64, size=70_000, dtype=np.uint64)
    asm = VectorAssembler({0: len(v)}, ring_slots=(0,))
    for chunk in encode_ring(v, 0, WireFormat(chunk_bytes=1 << 16)):
        assert chunk.dtype == pb.UINT64 and chunk.compression == pb.NONE
        asm.add(chunk)
    np.testing.assert_array_equal(asm.result(0), v)
    floats = VectorAssembler({0: 3}, ring_slots=(0,))
    from geodml.wire.codec import encode_vector

    with pytest.raises(CodecError, match="ring vector expected"):
        floats.add(next(encode_vector(np.ones(3), 0, WireFormat())))
    with pytest.raises(CodecError, match="UINT64 where no ring"):
        VectorAssembler({0: 3}).add(next(encode_ring(v[:3], 0, WireFormat())))


# -- the coordinator's view ----------------------------------------------------------------

class Recording(InProcessTransport):
    """What the coordinator receives from a site: the reply messages, as they arrive."""

    def __init__(self, service, views: list):
        super().__init__(service)
        self.views = views

    def call(self, method, request, timeout=None):
        for reply in super().call(method, request, timeout):
            if method == "Evaluate":
                self.views.append((self.site, reply))
            yield reply


def _swap_rows(datasets: dict[str, Dataset], a: str, b: str, i: int, j: int):
    """Row i of site a and row j of site b trade places: every site keeps its row count,
    the total is unchanged, sites a and b hold other rows."""
    da, db = datasets[a], datasets[b]
    keep_a = np.setdiff1d(np.arange(da.n_rows), [i])
    keep_b = np.setdiff1d(np.arange(db.n_rows), [j])
    out = dict(datasets)
    out[a] = Dataset.concat([da.take(keep_a), db.take(np.array([j]))])
    out[b] = Dataset.concat([db.take(keep_b), da.take(np.array([i]))])
    return out


def _views(datasets, jobs: int, world: bytes, bits: int = 24):
    """The coordinator's view of one Evaluate round at w = 0, over ``jobs`` fresh jobs:
    per site, the masked vectors (loss sum, gradient sum). The job nonces come from
    ``world``, so the test is reproducible and the two worlds' masks independent."""
    views: list = []
    services = [SiteService(n, n, d, secret=n.encode() * 4) for n, d in datasets.items()]
    fed = Federation([Recording(s, views) for s in services], home="us-east",
                     secure=SecureAggregation(fraction_bits=bits), nonce_seed=world)
    totals = []
    with fed:
        for _ in range(jobs):
            fed.prepare("logistic", LAM)
            (agg,) = fed.evaluate(np.zeros(fed.n_features))
            totals.append(np.concatenate([[agg.loss_sum], agg.grad]))
    per_site: dict[str, list[np.ndarray]] = {}
    for site, reply in views:  # each reply is one chunk here (a small vector)
        data = np.frombuffer(reply.chunk.data, dtype="<u8")
        per_site.setdefault(site, []).append(data)
    return {s: np.array(v) for s, v in per_site.items()}, np.array(totals)


def _same_distribution(a: np.ndarray, b: np.ndarray) -> float:
    """p-value of a chi-square test that the low bytes of two ring samples come from one
    distribution (every element of every sample, 256 bins)."""
    ca = np.bincount((a & np.uint64(0xFF)).astype(np.int64).ravel(), minlength=256)
    cb = np.bincount((b & np.uint64(0xFF)).astype(np.int64).ravel(), minlength=256)
    return float(chi2_contingency(np.array([ca, cb]) + 1)[1])


def test_the_coordinators_view_does_not_depend_on_one_sites_vector_only_on_the_sum(regional):
    """Two federations whose sites hold different vectors with the same sum: over fresh
    jobs, what the coordinator receives from a site is identically distributed (uniform),
    and only the sum is the same; without masks the same test tells them apart."""
    datasets = loaded(regional)
    swapped = _swap_rows(datasets, "us-east", "eu-west", 0, 5)
    first, totals_1 = _views(datasets, jobs=60, world=b"first world")
    second, totals_2 = _views(swapped, jobs=60, world=b"second world")
    # the two worlds differ where the coordinator must not see it ...
    d = datasets["us-east"].n_features

    def plain(ds, site):
        X, y = ds[site].X, ds[site].y
        return np.concatenate([[np.log(2) * len(y)], X.T @ (0.5 - y)])

    assert not np.allclose(plain(datasets, "us-east"), plain(swapped, "us-east"))
    # ... and agree where it may: the sums are the same, in every job
    np.testing.assert_allclose(totals_1, totals_2, atol=1e-5)
    np.testing.assert_allclose(totals_1[0], plain(datasets, "us-east") + plain(
        datasets, "eu-west") + plain(datasets, "ap-south"), rtol=1e-6, atol=1e-5)
    for site in ("us-east", "eu-west"):
        a, b = first[site], second[site]
        assert a.shape == b.shape == (60, 1 + d)
        assert _same_distribution(a, b) > 1e-3
        assert _same_distribution(a, np.random.default_rng(7).integers(
            0, 2 ** 64, size=a.shape, dtype=np.uint64)) > 1e-3  # indistinguishable from noise
        assert len({row.tobytes() for row in a}) == 60  # a fresh mask for every job
    # the test has teeth: the unmasked encodings of the two worlds are told apart
    enc_1 = np.tile(encode(plain(datasets, "us-east"), 24, 3), (60, 1))
    enc_2 = np.tile(encode(plain(swapped, "us-east"), 24, 3), (60, 1))
    assert _same_distribution(enc_1, enc_2) < 1e-6


# -- training --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def optimum(regional):
    """``(w*, F*)``: centralized L-BFGS on all rows in float64, far past the runs' tolerance."""
    data = Dataset.concat(list(loaded(regional, np.float64).values()))
    model, result = train_centralized(data, "logistic", LAM,
                                      LbfgsOptions(gtol=1e-12, max_iter=5000))
    return model.w, result.f


@pytest.mark.parametrize("method", ["sqm-lbfgs", "fadl-subspace", "fadl"])
def test_secure_aggregation_reaches_the_same_optimum(regional, optimum, method):
    """Within 1e-9 of the optimum's objective and 2e-6 of its w (float64 rows, so that
    the optimum is defined that finely: float32 products leave ~1e-8 objective noise).

    FADL's subspace Newton stops when its decrease is below the fixed point's rounding
    of the objective (~1e-14), which leaves ``||w - w*|| <~ sqrt(2e-14 / lambda)``:
    about 1e-6 of ``||w*||`` here (measured 6e-8 to 1.05e-6 over these methods)."""
    w_star, f_star = optimum
    with in_process(loaded(regional, np.float64)) as fed:
        result = train(fed, method, TrainSpec(lam=LAM, gtol=1e-9))
        calls = fed.meter.calls
    assert relative(result.w, w_star) <= 2e-6
    assert abs(result.objective - f_star) <= 1e-9 * abs(f_star)
    assert calls["Evaluate"] > 0


def test_over_grpc_sites_exchange_keys_through_describe_and_train(regional, optimum,
                                                                  tmp_path):
    configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=p),
                          policy=Policy(require_secure_aggregation=True))
               for n, p in regional.items()]
    with LocalCluster(configs, tmp_path, insecure=True) as cluster:
        with Federation(cluster.transports(), home="us-east") as plain:
            with pytest.raises(GeodmlError, match="requires secure aggregation"):
                train(plain, "sqm-lbfgs", TrainSpec(lam=LAM))
            assert plain.meter.calls.get("Prepare", 0) == 0  # refused before it started
        with Federation(cluster.transports(), home="us-east",
                        secure=SecureAggregation()) as fed:
            assert all(len(i.secure_aggregation_key) == 32 for i in fed.sites.values())
            result = train(fed, "sqm-lbfgs", TrainSpec(lam=LAM, gtol=1e-9))
    assert relative(result.w, optimum[0]) <= 1e-5  # float32 rows here, as a site stores them


def test_a_site_lost_mid_run_is_left_out_of_the_masks_and_the_run_ends_on_the_others(
        regional, tmp_path):
    """The round a site drops out of is asked again of the survivors, masked without it;
    the model is then the optimum over the survivors' rows."""
    configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=p))
               for n, p in regional.items()]
    policy = Reliability(site_deadline=1.0, backoff_initial=0.05, drop_lost_sites=True)
    with LocalCluster(configs, tmp_path, insecure=True) as cluster:
        def kill(row) -> None:
            if row.iteration == 3:
                cluster.kill("ap-south")

        with Federation(cluster.transports(), home="us-east", secure=SecureAggregation(),
                        reliability=policy) as fed:
            result = train(fed, "sqm-lbfgs", TrainSpec(lam=LAM, gtol=1e-9),
                           RunRecorder(fed, on_row=kill))
            assert list(fed.dropped) == ["ap-south"]
    survivors = {n: d for n, d in loaded(regional).items() if n != "ap-south"}
    with in_process(survivors, secure=False) as fed:
        ref = train(fed, "sqm-lbfgs", TrainSpec(lam=LAM, gtol=1e-9))
    assert relative(result.w, ref.w) <= 1e-6


def test_each_round_returns_only_the_aggregate(regional):
    with in_process(loaded(regional)) as fed:
        fed.prepare("logistic", LAM)
        w = np.full(fed.n_features, 0.01)
        evals = fed.evaluate(w, v=np.ones(fed.n_features))
        (loss, ders), = fed.line_search(-w, [0.5, 1.0])
    assert [e.site for e in evals] == [AGGREGATE]
    assert evals[0].rows == sum(d.n_rows for d in loaded(regional).values())
    with in_process(loaded(regional), secure=False) as fed:
        fed.prepare("logistic", LAM)
        plain = fed.evaluate(w, v=np.ones(fed.n_features))
        parts = fed.line_search(-w, [0.5, 1.0])
    np.testing.assert_allclose(evals[0].grad, sum(e.grad for e in plain), atol=1e-6)
    np.testing.assert_allclose(evals[0].hvp, sum(e.hvp for e in plain), atol=1e-6)
    np.testing.assert_allclose(evals[0].loss_sum, sum(e.loss_sum for e in plain), atol=1e-6)
    np.testing.assert_allclose(loss, sum(p[0] for p in parts), atol=1e-6)
    np.testing.assert_allclose(ders, sum(p[1] for p in parts), atol=1e-6)


def test_methods_that_need_each_sites_solution_are_refused(regional):
    with in_process(loaded(regional)) as fed, pytest.raises(ConfigError, match="admm needs"):
        train(fed, "admm", TrainSpec(lam=LAM))


def test_a_site_refuses_unmasked_jobs_when_its_policy_requires_masks(regional):
    datasets = loaded(regional)
    service = SiteService("us-east", "us-east", datasets["us-east"],
                          Policy(require_secure_aggregation=True))
    request = pb.PrepareRequest(loss="logistic", lam=LAM,
                                feature_space_fingerprint=datasets["us-east"].space.fingerprint(),
                                features=datasets["us-east"].n_features)
    transport = InProcessTransport(service)
    with pytest.raises(SiteCallError, match="require_secure_aggregation") as err:
        list(transport.call("Prepare", request))
    assert err.value.code == "PERMISSION_DENIED"


def test_an_overflowing_sum_stops_the_run_with_a_clear_error(regional):
    datasets = loaded(regional)
    services = [SiteService(n, n, d) for n, d in datasets.items()]
    with Federation([InProcessTransport(s) for s in services], home="us-east",
                    secure=SecureAggregation(fraction_bits=52)) as fed:
        fed.prepare("logistic", LAM)
        with pytest.raises(SiteCallError, match="fixed-point range") as err:
            fed.evaluate(np.zeros(fed.n_features))
    assert err.value.code == "OUT_OF_RANGE"
    assert "site us-east" in str(err.value) or "site eu-west" in str(err.value)


def test_secure_aggregation_and_compression_do_not_mix(regional):
    from geodml.federation import CompressionConfig

    with pytest.raises(GeodmlError, match="does not combine with compression"):
        in_process(loaded(regional), compression=CompressionConfig(up='{"dtype":"float16"}'))


def test_secure_aggregation_over_one_site_is_refused(regional):
    datasets = dict(list(loaded(regional).items())[:1])
    with in_process(datasets) as fed, pytest.raises(GeodmlError, match="at least 2 sites"):
        fed.prepare("logistic", LAM)
