"""The baseline methods (one-shot, FedAvg, ADMM, DANE) over in-process federations.

Real SiteService objects behind InProcessTransport (every message serialized and
metered), on a9a split iid into 4 sites and on covtype split by wilderness area
(class 2 vs rest; columns scaled to [-1, 1] by their global max-abs, since raw
covtype is too ill-conditioned even for centralized L-BFGS). The reference
optimum ``F*`` is computed centrally.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.algorithms.record import RunRecorder, RunResult
from geodml.algorithms.registry import METHODS, TrainSpec, train
from geodml.centralized import train_centralized
from geodml.data import Dataset
from geodml.data.readers import open_source
from geodml.data.source import KeySpec, read_all
from geodml.errors import ConfigError
from geodml.federation import Federation, SiteCallError
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions
from geodml.site.executor import ThreadExecutor
from geodml.site.inprocess import InProcessTransport
from geodml.site.local_objective import LocalObjective
from geodml.site.policy import Policy
from geodml.site.procedures import PROCEDURES, ProcedureContext
from geodml.site.service import SiteService

from .conftest import shared_path
from .datasets import load_shared_libsvm

WILDERNESS = ("c10", "c11", "c12", "c13")


def _fed(parts: list[Dataset]) -> Federation:
    services = [SiteService(f"dc{i}", f"region{i}", p) for i, p in enumerate(parts)]
    return Federation([InProcessTransport(s) for s in services], home="coordinator")


def _f_star(data: Dataset) -> float:
    _, result = train_centralized(data, "logistic",
                                  options=LbfgsOptions(gtol=1e-9, max_iter=10_000))
    return result.f


@pytest.fixture(scope="module")
def a9a():
    """a9a split iid into 4 sites by a seeded permutation, and its ``F*``."""
    data = load_shared_libsvm("a9a")
    perm = np.random.default_rng(7).permutation(data.n_rows)
    parts = [Dataset(data.X[i], data.y[i], data.space) for i in np.array_split(perm, 4)]
    return parts, _f_star(data)


@pytest.fixture(scope="module")
def covtype():
    """covtype (20k rows) split by wilderness area into 4 sites, and its ``F*``."""
    src = open_source(shared_path("covtype_20k/covtype.20k.data"), "csv", preset="covtype")
    data, keys = read_all(src, key=KeySpec(onehot=WILDERNESS))
    scale = np.asarray(abs(data.X).max(axis=0).todense()).ravel()
    scale[scale == 0] = 1.0
    data = Dataset(sp.csr_matrix(data.X @ sp.diags(1.0 / scale)), data.y, data.space)
    parts = [Dataset(data.X[keys == k], data.y[keys == k], data.space) for k in WILDERNESS]
    return parts, _f_star(data)


def _run(parts: list[Dataset], f_star: float, method: str, **spec) -> tuple[RunResult, dict]:
    with _fed(parts) as fed:
        spec = TrainSpec(**{"gtol": 1e-7, **spec})
        result = train(fed, method, spec, RunRecorder(fed, f_star=f_star))
        assert result.wan_bytes == fed.meter.wan_bytes() > 0
        assert result.rows[-1].wan_bytes == result.wan_bytes
        assert result.rows[-1].rounds == fed.rounds
        return result, dict(fed.meter.calls)


def _subs(result: RunResult) -> list[float]:
    return [row.suboptimality for row in result.rows]


def test_baselines_are_registered():
    assert {"oneshot", "fedavg", "admm", "dane"} <= set(METHODS)
    assert {"local_minimize", "local_sgd", "admm_local", "dane_local"} <= set(PROCEDURES)


def test_oneshot_iid_a9a_one_local_round(a9a):
    parts, f_star = a9a
    result, calls = _run(parts, f_star, "oneshot")
    assert calls == {"Describe": 4, "Prepare": 4, "LocalSolve": 4, "Evaluate": 4}
    assert len(result.rows) == 1 and result.rows[0].rounds == 2
    assert result.rows[0].suboptimality < 1e-2
    assert result.objective == result.rows[0].objective


def test_fedavg_iid_a9a_decreases_then_reaches_1e_2(a9a):
    """Decreasing over the first rounds up to SGD noise: across 10 partition seeds x 3
    SGD seeds the largest increase between rows 0..2 was 2e-3 relative, so 5e-3 here."""
    parts, f_star = a9a
    result, calls = _run(parts, f_star, "fedavg", max_rounds=6)
    f = [row.objective for row in result.rows]
    assert f[1] < f[0] - 0.5 * (f[0] - f_star)
    assert all(b < a + 5e-3 * f_star for a, b in itertools.pairwise(f[:3]))
    reached = result.first_reaching(1e-2)
    assert reached is not None and reached.iteration <= 5
    assert result.reason == "max_rounds (6) reached" and result.rows[-1].iteration == 6
    tuning = result.info["tuning"]
    assert len(tuning) == 4 and tuning[repr(result.info["eta0"])] == min(tuning.values())
    # row 1 carries the 4 candidate rounds and the 4 Evaluate rounds of the tuning;
    # then one LocalSolve per iteration, and one Evaluate for the last iterate
    assert result.rows[1].rounds == 8
    assert calls["LocalSolve"] == 4 * (4 + 5) and calls["Evaluate"] == 4 * (4 + 1)


def test_fedavg_reports_its_stall_on_covtype(covtype):
    parts, f_star = covtype
    result, _ = _run(parts, f_star, "fedavg", max_rounds=6)
    subs = _subs(result)
    assert result.reason == "max_rounds (6) reached" and not result.converged
    assert subs[-1] < subs[0] and subs[-1] > 1e-2  # FedAvg on non-IID data: far from F*
    assert result.rows[-1].iteration == 6


def test_admm_iid_a9a_reaches_1e_4(a9a):
    parts, f_star = a9a
    result, calls = _run(parts, f_star, "admm", max_rounds=30, tol=1e-4)
    assert result.converged and _subs(result)[-1] <= 1e-4
    assert calls["LocalSolve"] == 4 * len(result.rows)  # F(z^t) came with each round


def test_admm_keeps_decreasing_on_covtype(covtype):
    """ADMM is not a descent method for F(z^t): on covtype split by wilderness area it
    oscillates (e.g. 1.7e-2 at round 8, 2.1e-2 at 10) while its best value keeps
    improving, reaching 1e-4 around round 41."""
    parts, f_star = covtype
    result, _ = _run(parts, f_star, "admm", max_rounds=45)
    subs = _subs(result)
    assert min(subs[:10]) > min(subs[10:20]) > min(subs[20:45]) > subs[45]
    assert subs[45] < 1e-4 and subs[10] < 0.05 * subs[0]


def test_dane_iid_a9a_reaches_1e_4(a9a):
    parts, f_star = a9a
    result, calls = _run(parts, f_star, "dane", max_rounds=10, tol=1e-4)
    assert result.converged and _subs(result)[-1] <= 1e-4
    assert calls["Evaluate"] == 4 * len(result.rows)
    assert calls["LocalSolve"] == 4 * (len(result.rows) - 1)


@pytest.mark.parametrize(("method", "params", "named"), [
    ("fedavg", {"eta": 1.0}, "['eta']"),
    ("fedavg", {"eta0_grid": "1,2"}, "parameter eta0_grid"),
    ("admm", {"rho": 0.0}, "parameter rho"),
    ("admm", {"adapt": "yes"}, "parameter adapt"),
    ("dane", {"inner": 3}, "['inner']"),
    ("oneshot", {"local_max_iter": "many"}, "parameter local_max_iter"),
])
def test_bad_method_params_are_config_errors_naming_them(a9a, method, params, named):
    parts, _ = a9a
    with _fed(parts[:2]) as fed:
        with pytest.raises(ConfigError, match=re.escape(named)):
            train(fed, method, TrainSpec(params=params))
        assert fed.rounds == 0  # refused before any round


def test_dane_is_reported_as_diverging_on_covtype(covtype):
    """DANE (mu = 0) on covtype split by wilderness area: the local Newton-like steps
    of sites that miss whole soil-type columns are huge (curvature lambda only) and the
    average moves far off; the run reports it instead of hiding it."""
    parts, f_star = covtype
    result, _ = _run(parts, f_star, "dane", max_rounds=3)
    subs = _subs(result)
    assert not result.converged and result.reason == "max_rounds (3) reached"
    assert subs[-1] > 1.0 and len(subs) == 4


@pytest.mark.parametrize(("method", "rounds", "rtol"), [
    ("oneshot", 1, 1e-5), ("fedavg", 3, 1e-9), ("admm", 6, 1e-3), ("dane", 2, 1e-6)])
def test_support_restricted_replies_are_exact(covtype, method, rounds, rtol):
    """Sites send only the coordinates their rows touch (the default where the policy
    allows it); every procedure's reply is 0 off the support, so the trajectory is the
    one without restriction, for fewer bytes."""
    parts, f_star = covtype
    runs = []
    for share in (True, False):
        services = [SiteService(f"dc{i}", f"region{i}", p, Policy(share_support=share))
                    for i, p in enumerate(parts)]
        with Federation([InProcessTransport(s) for s in services], home="coordinator") as fed:
            assert any(info.support_size for info in fed.sites.values()) == share
            spec = TrainSpec(gtol=1e-7, max_rounds=rounds,
                             params={"mu": 1e-3} if method == "dane" else {})
            runs.append(train(fed, method, spec, RunRecorder(fed, f_star=f_star)))
    restricted, full = runs
    np.testing.assert_allclose([r.objective for r in restricted.rows],
                               [r.objective for r in full.rows], rtol=rtol)
    assert restricted.wan_bytes < full.wan_bytes


@pytest.mark.parametrize(("procedure", "params", "n_inputs", "name"), [
    ("local_sgd", {"batch_size": 0}, 1, "batch_size"),
    ("local_sgd", {"eta0": "fast"}, 1, "eta0"),
    ("local_sgd", {"epochs": 1.5}, 1, "epochs"),
    ("admm_local", {"rho": -1.0}, 1, "rho"),
    ("admm_local", {"iteration": 3}, 1, "iteration"),
    ("admm_local", {"n_total": 10}, 1, "n_total"),
    ("dane_local", {"mu": -1.0}, 2, "mu"),
    ("dane_local", {"max_iter": 0}, 2, "max_iter"),
])
def test_bad_procedure_params_are_invalid_argument_naming_the_parameter(
        a9a, procedure, params, n_inputs, name):
    parts, _ = a9a
    with _fed(parts[:2]) as fed:
        fed.prepare("logistic", 1e-4)
        with pytest.raises(SiteCallError) as err:
            fed.local_solve(procedure, params, [np.zeros(fed.n_features)] * n_inputs)
        assert err.value.code == "INVALID_ARGUMENT"
        assert f"parameter {name} " in str(err.value)


def _context(data: Dataset, lam: float) -> ProcedureContext:
    loss = get_loss("logistic")
    return ProcedureContext(ThreadExecutor(data.X, data.y, loss), loss, lam, data.n_rows)


def test_local_sgd_with_one_full_batch_is_a_gradient_step(a9a):
    data, lam = a9a[0][0], 1e-3
    ctx = _context(data, lam)
    w = np.random.default_rng(0).normal(scale=0.1, size=data.n_features)
    d, info = PROCEDURES["local_sgd"].run(
        ctx, {"batch_size": data.n_rows, "eta0": 0.5, "epochs": 1}, [w])
    f, g = RegularizedObjective([SiteSums(data.X, data.y, ctx.loss)], lam,
                                data.n_features).value_grad(w)
    assert info["shrink"] == 1.0 - 0.5 * lam
    np.testing.assert_allclose(d + info["shrink"] * w, w - 0.5 * g, rtol=1e-10, atol=1e-12)
    assert info["steps"] == 1 and not info["diverged"]
    assert info["loss_sum"] / data.n_rows + 0.5 * lam * w @ w == pytest.approx(f, rel=1e-12)


def test_local_sgd_decay_schedule_continues_from_t0(a9a):
    """Full-batch SGD is deterministic: two epochs in one call equal one epoch, then
    one more from there with ``t0 = 1`` (the step after one epoch is eta0 / (1 + decay))."""
    data = a9a[0][1]
    ctx = _context(data, 1e-4)
    common = {"batch_size": data.n_rows, "eta0": 2.0, "decay": 3.0}
    run = PROCEDURES["local_sgd"].run
    w = np.full(data.n_features, 0.1)

    def sgd(params: dict, start: np.ndarray) -> tuple[np.ndarray, dict]:
        d, info = run(ctx, {**common, **params}, [start])
        return d + info["shrink"] * start, info

    v_one, _ = sgd({"epochs": 1}, w)
    v_two, info = sgd({"epochs": 2}, w)
    v_next, _ = sgd({"epochs": 1, "t0": 1.0}, v_one)
    assert info["steps"] == 2
    np.testing.assert_allclose(v_next, v_two, rtol=1e-12, atol=1e-15)
    v_flat, _ = sgd({"epochs": 1, "t0": 0.0}, v_one)
    assert not np.allclose(v_flat, v_two)


def test_admm_local_redo_of_an_iteration_is_idempotent(a9a):
    data = a9a[0][2]
    ctx = _context(data, 1e-4)
    params = {"rho": 1e-3, "n_total": 4 * data.n_rows, "max_iter": 20}
    z0 = np.zeros(data.n_features)
    run = PROCEDURES["admm_local"].run
    out0, _ = run(ctx, {**params, "iteration": 0}, [z0])
    z1 = 0.5 * out0
    out1, info1 = run(ctx, {**params, "iteration": 1}, [z1])
    again, info_again = run(ctx, {**params, "iteration": 1}, [z1])
    np.testing.assert_array_equal(again, out1)
    assert info_again == info1 and info1["primal_sq"] > 0
    with pytest.raises(ValueError, match="parameter iteration is 3"):
        run(ctx, {**params, "iteration": 3}, [z1])


def test_local_objective_is_the_sites_objective_plus_its_terms(a9a):
    data = a9a[0][3]
    loss, lam, mu = get_loss("logistic"), 1e-3, 0.2
    rng = np.random.default_rng(1)
    c, b, w, p = (rng.normal(scale=0.1, size=data.n_features) for _ in range(4))
    sums = SiteSums(data.X, data.y, loss)
    obj = LocalObjective(sums, data.n_features, 1.0 / data.n_rows, lam, mu, c, b)
    ref = RegularizedObjective([SiteSums(data.X, data.y, loss)], lam, data.n_features)

    def expected(x):
        f, g = ref.value_grad(x)
        return (f + 0.5 * mu * (x - c) @ (x - c) - b @ x, g + mu * (x - c) - b)

    f, g = obj.value_grad(w)
    f_ref, g_ref = expected(w)
    assert f == pytest.approx(f_ref, rel=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-14)
    obj.set_direction(p)
    vals, ders = obj.line_values(np.array([0.0, 0.3]))
    assert vals[1] == pytest.approx(expected(w + 0.3 * p)[0], rel=1e-12)
    assert ders[1] == pytest.approx(expected(w + 0.3 * p)[1] @ p, rel=1e-9)
    f_step, _ = obj.step(0.3)
    assert f_step == pytest.approx(vals[1], rel=1e-12)
    hv = obj.hess_vec(p)
    _, g_eps = expected(w + 0.3 * p + 1e-6 * p)
    np.testing.assert_allclose(hv, (g_eps - expected(w + 0.3 * p)[1]) / 1e-6, rtol=1e-3,
                               atol=1e-7)
