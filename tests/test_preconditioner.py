"""The per-feature (Hessian-diagonal) preconditioner: its math, its statistic from the
sites, and that every exact method reaches the same optimum with it, in fewer rounds
where features are rare."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.algorithms.metric import global_metric
from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.centralized import train_centralized
from geodml.data.dataset import Dataset, FeatureSpace
from geodml.errors import ConfigError
from geodml.federation import CompressionConfig, Federation, SecureAggregation, SiteCallError
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions
from geodml.optim.preconditioner import DIAG, NONE, Preconditioner, ScaledObjective
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

TIGHT = LbfgsOptions(gtol=1e-9, max_iter=5000)


def rare_features(n: int = 3000, d: int = 4000, seed: int = 0, zipf: float = 1.3) -> Dataset:
    """Rows with one always-on feature and 6 Zipf-distributed hashed ones: most
    features are rare, a few frequent (the CTR regime in small)."""
    rng = np.random.default_rng(seed)
    cols = np.minimum(rng.zipf(zipf, size=(n, 6)), d - 1)
    cols = np.column_stack([np.zeros(n, dtype=np.int64), cols])
    X = sp.csr_matrix((np.ones(cols.size), cols.ravel(), np.arange(0, cols.size + 1, 7)),
                      shape=(n, d))
    X.sum_duplicates()
    w = rng.normal(0, 1, d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w)))).astype(np.float64)
    return Dataset(X, y, FeatureSpace(d))


def split(data: Dataset, k: int) -> list[Dataset]:
    bounds = np.linspace(0, data.n_rows, k + 1).astype(int)
    return [data.take(np.arange(a, b)) for a, b in itertools.pairwise(bounds)]


def federation(parts: list[Dataset], **kw) -> Federation:
    services = [SiteService(f"dc{i}", f"dc{i}", p) for i, p in enumerate(parts)]
    return Federation([InProcessTransport(s) for s in services], "dc0", **kw)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return rare_features()


@pytest.fixture(scope="module")
def optimum(data) -> float:
    return train_centralized(data, options=TIGHT, preconditioner=NONE)[1].f


def test_the_scaled_objective_is_the_same_function_in_new_variables(data):
    lam = 1.0 / data.n_rows
    objective = RegularizedObjective([SiteSums(data.X, data.y, get_loss("logistic"))], lam,
                                     data.n_features)
    objective.value(np.zeros(data.n_features))
    metric = DIAG.metric(objective.hess_diag_sum(), data.n_rows, lam)
    scaled = ScaledObjective(objective, metric)
    rng = np.random.default_rng(1)
    v, p = rng.normal(size=data.n_features), rng.normal(size=data.n_features)
    f_v, g_v = scaled.value_grad(v)
    f_w, g_w = objective.value_grad(scaled.to_w(v))
    assert f_v == pytest.approx(f_w)
    np.testing.assert_allclose(g_v, g_w / np.sqrt(metric))  # D^(-1/2) grad F
    eps = 1e-6  # the directional derivative agrees with the scaled gradient
    f_plus, _ = scaled.value_grad(v + eps * p)
    f_minus, _ = scaled.value_grad(v - eps * p)
    assert (f_plus - f_minus) / (2 * eps) == pytest.approx(float(g_v @ p), rel=1e-5)
    scaled.value_grad(np.zeros(data.n_features))  # at 0 the scaled diagonal is all ones
    for j in (0, 5, 100):
        e = np.zeros(data.n_features)
        e[j] = 1.0
        assert float(e @ scaled.hess_vec(e)) == pytest.approx(1.0, rel=1e-9)


def test_the_metric_is_the_hessian_diagonal_at_zero_plus_lambda(data):
    lam = 1e-3
    metric = DIAG.metric(np.asarray(data.X.power(2).sum(axis=0)).ravel() / 4, data.n_rows, lam)
    objective = RegularizedObjective([SiteSums(data.X, data.y, get_loss("logistic"))], lam,
                                     data.n_features)
    objective.value(np.zeros(data.n_features))
    np.testing.assert_allclose(DIAG.metric(objective.hess_diag_sum(), data.n_rows, lam), metric)
    assert metric.min() == pytest.approx(lam)  # untouched features: lambda alone
    mixed = Preconditioner(mix=1.0).metric(objective.hess_diag_sum(), data.n_rows, lam)
    np.testing.assert_allclose(mixed, metric.mean())  # mix 1: the identity, scaled


def test_bad_settings_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="'diagonal' is not one of: diag, none"):
        Preconditioner("diagonal")
    with pytest.raises(ConfigError, match=r"mix must be in \[0, 1\]"):
        Preconditioner(mix=2.0)
    with pytest.raises(ConfigError, match="stop 'l1' is not one of"):
        Preconditioner(stop="l1")


def test_the_sites_diagonal_equals_the_pooled_one(data):
    lam = 1.0 / data.n_rows
    parts = split(data, 3)
    with federation(parts) as fed:
        fed.prepare("logistic", lam)
        cold = global_metric(fed, DIAG, lam)  # each site's rows at its own base rate
        # the procedure's other mode: at the sites' point (none yet: zero)
        replies = fed.local_solve("hess_diag", {"at": "point"}, [])
        at_zero = DIAG.metric(sum(rows * v for v, _i, rows in replies), fed.n_rows, lam)
        assert global_metric(fed, NONE, lam) is None
        assert fed.vector_rounds == pytest.approx(1.0)  # two vectors, up only
    squares = [np.asarray(p.X.power(2).sum(axis=0)).ravel() for p in parts]
    rates = [float(p.y.mean()) for p in parts]
    expected = sum(r * (1 - r) * sq for r, sq in zip(rates, squares, strict=True))
    np.testing.assert_allclose(cold, DIAG.metric(expected, data.n_rows, lam), rtol=1e-12)
    objective = RegularizedObjective([SiteSums(data.X, data.y, get_loss("logistic"))], lam,
                                     data.n_features)
    objective.value(np.zeros(data.n_features))
    np.testing.assert_allclose(at_zero, DIAG.metric(objective.hess_diag_sum(), data.n_rows, lam),
                               rtol=1e-12)
    assert not np.allclose(cold, at_zero)  # the base rate is not 1/2 here


@pytest.mark.parametrize("solver", ["lbfgs", "tron"])
def test_centralized_reaches_the_same_optimum_in_fewer_iterations(data, optimum, solver):
    plain = train_centralized(data, options=LbfgsOptions(gtol=1e-6), solver=solver,
                              preconditioner=NONE)[1]
    pre = train_centralized(data, options=LbfgsOptions(gtol=1e-6), solver=solver)[1]
    tight = train_centralized(data, options=TIGHT, solver=solver)[1]
    assert tight.f == pytest.approx(optimum, rel=1e-10)
    assert pre.converged and plain.converged
    assert pre.iterations * 1.5 <= plain.iterations, (pre.iterations, plain.iterations)


@pytest.mark.parametrize("method", ["sqm-lbfgs", "sqm-tron", "sqm-gd", "fadl", "fadl-subspace"])
def test_every_exact_method_reaches_the_optimum_preconditioned(data, optimum, method):
    with federation(split(data, 3)) as fed:
        result = train(fed, method, TrainSpec(gtol=1e-8, max_rounds=3000),
                       RunRecorder(fed, f_star=optimum))
    assert result.converged, result.reason
    assert result.info["preconditioner"] == "diag"
    assert result.objective == pytest.approx(optimum, rel=1e-8)


@pytest.mark.parametrize(("method", "ratio"), [("sqm-lbfgs", 4.0), ("fadl-subspace", 1.5)])
def test_preconditioning_cuts_vector_rounds_on_rare_features(method, ratio):
    """20,000 rows over 2^16 Zipf(1.1) features: measured 20.5 against 203 vector rounds
    to 1e-6 for sqm-lbfgs, 10 against 21 for fadl-subspace."""
    data = rare_features(20_000, 1 << 16, zipf=1.1)
    optimum = train_centralized(data, options=TIGHT)[1].f
    rounds = {}
    for pre in (DIAG, NONE):
        with federation(split(data, 2)) as fed:
            spec = TrainSpec(tol=1e-6, gtol=1e-12, max_rounds=3000, preconditioner=pre)
            result = train(fed, method, spec, RunRecorder(fed, f_star=optimum))
        assert result.converged, (pre, result.reason)
        rounds[pre.kind] = result.first_reaching(1e-6).vector_rounds
    assert rounds["diag"] * ratio <= rounds["none"], rounds


@pytest.mark.parametrize("method", ["sqm-lbfgs", "fadl-subspace"])
def test_preconditioned_under_secure_aggregation_and_float16(data, optimum, method):
    f16 = '{"kind": "cast", "dtype": "float16"}'
    for kw in ({"secure": SecureAggregation()},
               {"compression": CompressionConfig(up=f16, down=f16)}):
        with federation(split(data, 3), **kw) as fed:
            result = train(fed, method, TrainSpec(tol=1e-6, gtol=1e-12, max_rounds=3000),
                           RunRecorder(fed, f_star=optimum))
        assert result.converged, (kw, result.reason)
        assert result.rows[-1].suboptimality <= 1e-6


def test_a_site_refuses_a_stored_metric_it_never_received(data):
    with federation(split(data, 2)) as fed:
        fed.prepare("logistic", 1.0 / data.n_rows)
        fed.evaluate(np.zeros(data.n_features))
        with pytest.raises(SiteCallError, match="none was sent in this session"):
            fed.local_solve("fadl_local", {"metric": "stored"}, [np.zeros(data.n_features)])
        with pytest.raises(SiteCallError, match="metric must be one of send, stored"):
            fed.local_solve("fadl_local", {"metric": "yes"}, [np.zeros(data.n_features)])


def test_default_memory_holds_the_pairs_within_their_budget():
    from geodml.optim.lbfgs import MAX_MEMORY, MIN_MEMORY, PAIR_BYTES, default_memory

    assert default_memory(54) == MAX_MEMORY == 40  # small models: the most pairs
    assert default_memory(2**20) == 16  # 16 pairs of 2^20 float64 pairs: 256 MB
    assert 16 * 2**20 * default_memory(2**20) <= PAIR_BYTES
    assert default_memory(2**26) == MIN_MEMORY  # never fewer than 10


@pytest.mark.parametrize(("diag", "none", "chosen", "none_cap"), [
    ((48, True), (34, True), "none", 40),  # covtype's home DC: the identity by the margin
    ((19, True), (15, False), "diag", 15),  # w8a's near tie: the diagonal
    ((60, False), (41, True), "none", 50),  # the diagonal stalls, the identity converges
    ((1, True), None, "diag", None),  # no room for the identity to win by the margin
])
def test_auto_picks_the_identity_only_when_it_wins_by_the_margin(diag, none, chosen, none_cap):
    from geodml.optim.preconditioner import PROBE_MAX_ITER, choose

    calls = []

    def iterations_in(diagonal: bool, max_iter: int):
        calls.append((diagonal, max_iter))
        return diag if diagonal else none

    probe = choose(iterations_in)
    assert probe.kind == chosen
    assert calls[0] == (True, PROBE_MAX_ITER)
    assert (calls[1] if none_cap else None) == ((False, none_cap) if none_cap else None)
    assert len(calls) == (2 if none_cap else 1)


@pytest.mark.parametrize("method", ["sqm-lbfgs", "fadl-subspace"])
def test_auto_probes_the_home_site_without_wan_bytes_or_rounds(data, optimum, method):
    """The probe's two solves run at the home DC's site alone: the run moves the WAN
    bytes and counts the rounds of the metric it chose, and its record says which."""
    runs = {}
    for pre in (Preconditioner("auto"), DIAG, NONE):
        with federation(split(data, 3)) as fed:
            result = train(fed, method, TrainSpec(gtol=1e-6, max_rounds=3000,
                                                  preconditioner=pre),
                           RunRecorder(fed, f_star=optimum))
        assert result.converged, (pre, result.reason)
        runs[pre.kind] = result
    auto = runs["auto"]
    chosen = auto.info["preconditioner"].split()[0]
    assert chosen in ("diag", "none") and "auto: L-BFGS to gtol" in auto.info["preconditioner"]
    assert "dc0's rows" in auto.info["preconditioner"]
    assert auto.wan_bytes == runs[chosen].wan_bytes
    assert auto.rows[-1].rounds == runs[chosen].rows[-1].rounds
    assert auto.objective == pytest.approx(runs[chosen].objective, rel=1e-12)


def test_auto_keeps_the_diagonal_under_secure_aggregation(data):
    with federation(split(data, 3), secure=SecureAggregation()) as fed:
        result = train(fed, "sqm-lbfgs", TrainSpec(gtol=1e-4, max_rounds=500,
                                                   preconditioner=Preconditioner("auto")),
                       RunRecorder(fed))
    assert result.info["preconditioner"].startswith("diag (auto: no single site")


def test_centralized_auto_settles_on_the_first_sources_rows(data):
    parts = split(data, 2)
    pooled = Dataset.concat(parts)
    model, result = train_centralized(pooled, options=LbfgsOptions(gtol=1e-6),
                                      preconditioner=Preconditioner("auto"),
                                      sources=[p.n_rows for p in parts])
    described = model.info["preconditioner"]
    assert described.startswith(("diag (auto:", "none (auto:"))
    assert "the first source's rows" in described
    assert result.converged
