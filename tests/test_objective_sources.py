"""One regularized objective: over in-process parts and over a federation's sites it
is the same class and gives the same numbers (models/objective.py)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.data.dataset import Dataset, FeatureSpace
from geodml.federation import CompressionConfig, Federation
from geodml.federation.objective import FederatedObjective, FederationSums
from geodml.job.compression import AdaptivePrecision
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.models.objective import PartSums
from geodml.optim import LbfgsOptions
from geodml.optim.lbfgs import lbfgs
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService


def _data(n: int = 240, d: int = 30):
    rng = np.random.default_rng(3)
    X = sp.random(n, d, density=0.3, format="csr", random_state=4)
    y = (X @ rng.standard_normal(d) > 0).astype(float)
    return X, y


def _federation(X, y, k: int = 3, compression: CompressionConfig | None = None) -> Federation:
    bounds = np.linspace(0, X.shape[0], k + 1).astype(int)
    space = FeatureSpace(X.shape[1])
    services = [SiteService(f"s{i}", "r", Dataset(X[a:b], y[a:b], space))
                for i, (a, b) in enumerate(itertools.pairwise(bounds))]
    return Federation([InProcessTransport(s) for s in services], home="s0",
                      compression=compression)


def test_the_federation_is_a_source_of_the_one_objective():
    X, y = _data()
    lam = 1.0 / X.shape[0]
    bounds = np.linspace(0, X.shape[0], 4).astype(int)
    local = RegularizedObjective([SiteSums(X[a:b], y[a:b], get_loss("logistic"))
                                  for a, b in itertools.pairwise(bounds)], lam, X.shape[1])
    assert isinstance(local.source, PartSums)
    with _federation(X, y) as fed:
        fed.prepare("logistic", lam)
        remote = FederatedObjective(fed, lam)
        assert isinstance(remote, RegularizedObjective)
        assert isinstance(remote.source, FederationSums)
        w = np.random.default_rng(5).normal(size=X.shape[1]) * 0.1
        for obj in (local, remote):
            obj.value_grad(w)
        f1, g1 = local.value_grad(w)
        f2, g2 = remote.value_grad(w)
        np.testing.assert_allclose([f1, *g1], [f2, *g2], rtol=1e-12, atol=1e-15)
        p = -g1
        assert local.set_direction(p) is None  # in process the direction is as given
        np.testing.assert_array_equal(remote.set_direction(p), p)  # float64 wire
        alphas = np.array([0.0, 0.5, 1.0])
        for a, b in zip(local.line_values(alphas), remote.line_values(alphas), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(local.step(0.5)[1], remote.step(0.5)[1], rtol=1e-12,
                                   atol=1e-15)
        v = np.ones(X.shape[1])
        np.testing.assert_allclose(local.hess_vec(v), remote.hess_vec(v), rtol=1e-12)


class _Recording(AdaptivePrecision):
    def __init__(self):
        super().__init__()
        self.slopes: list[tuple[float, float]] = []

    def observe_direction(self, believed: float, true: float) -> bool:
        self.slopes.append((believed, true))
        return super().observe_direction(believed, true)


def test_a_compressing_federation_gets_the_slope_probe():
    """The first line search along a new direction also asks for the exact slope at 0;
    the precision policy compares it with the compressed gradient's g~.p."""
    X, y = _data()
    policy = _Recording()
    cfg = CompressionConfig(up='{"kind": "cast", "dtype": "float16"}', precision=policy)
    lam = 1.0 / X.shape[0]
    with _federation(X, y, compression=cfg) as fed:
        fed.prepare("logistic", lam)
        obj = FederatedObjective(fed, lam)
        _, g = obj.value_grad(np.zeros(X.shape[1]))
        p = obj.set_direction(-g)
        f, d = obj.line_values(np.array([0.5, 1.0]))
        assert len(f) == len(d) == 2  # the probe's step 0 is not handed back
        (believed, true), = policy.slopes
        assert believed == float(g @ p) < 0
        assert abs(true - believed) < 1e-2 * abs(believed)  # float16 is close
        obj.line_values(np.array([2.0]))  # the same direction: no second probe
        assert len(policy.slopes) == 1


def _solve(obj, trial: bool):
    # memory 1: a poor curvature model, so some unit steps are rejected and walked on
    return lbfgs(obj, np.zeros(obj.n_features),
                 LbfgsOptions(gtol=1e-8, memory=1, trial_step=trial))


def test_trial_steps_keep_the_iterates_and_save_a_round_per_accepted_unit_step():
    """With curvature pairs every line-search candidate is a move that brings its
    gradient: a taken unit step is one round, a rejected one is searched on from
    there. Same iterates as the scalar line search, in process and over sites; over
    sites the scalar search's round per iteration plus its gradient round become one
    round per candidate."""
    X, y = _data()
    lam = 1.0 / X.shape[0]
    runs = {}
    for trial in (False, True):
        local = RegularizedObjective([SiteSums(X, y, get_loss("logistic"))], lam, X.shape[1])
        runs["local", trial] = _solve(local, trial)
        with _federation(X, y) as fed:
            fed.prepare("logistic", lam)
            runs["sites", trial] = _solve(FederatedObjective(fed, lam), trial)
            runs["rounds", trial] = fed.rounds
    reference = runs["local", False]
    assert reference.converged and reference.iterations > 10
    for key in (("local", True), ("sites", False), ("sites", True)):
        run = runs[key]
        assert [(h.line_rounds, h.alpha == 1.0) for h in run.history] == [
            (h.line_rounds, h.alpha == 1.0) for h in reference.history], key
        np.testing.assert_allclose([h.f for h in run.history],
                                   [h.f for h in reference.history], rtol=1e-12)
        # stepping on from a rejected candidate rounds differently: ulps per iteration
        np.testing.assert_allclose(run.w, reference.w, rtol=1e-7, atol=1e-10)
    history = runs["sites", True].history[1:]
    assert sum(h.line_rounds > 1 for h in history[1:]) >= 3  # rejected, walked on
    plain = 1 + sum(h.line_rounds + 1 for h in runs["sites", False].history[1:])
    assert runs["rounds", False] == plain
    # the walk: the first iteration searches in scalars, then one round per candidate
    # (plus one when the search settles on a candidate other than the last)
    walked = 1 + history[0].line_rounds + 1 + sum(h.line_rounds for h in history[1:])
    assert walked <= runs["rounds", True] <= walked + sum(h.line_rounds > 1
                                                           for h in history[1:])
    assert runs["rounds", True] < 0.6 * plain


def test_a_compressed_trial_step_brings_the_exact_slopes():
    """Where gradients travel compressed, the move that takes a new direction along
    also brings the exact slope sums before and after it: the first checks the
    compressed gradient's g~.p (the precision policy's probe, as a line search's step 0
    would), the second is the line search's phi'(1)."""
    X, y = _data()
    policy = _Recording()
    cfg = CompressionConfig(up='{"kind": "cast", "dtype": "float16"}', precision=policy)
    lam = 1.0 / X.shape[0]
    exact = RegularizedObjective([SiteSums(X, y, get_loss("logistic"))], lam, X.shape[1])
    with _federation(X, y, compression=cfg) as fed:
        fed.prepare("logistic", lam)
        obj = FederatedObjective(fed, lam)
        _, g = obj.value_grad(np.zeros(X.shape[1]))
        p = obj.set_direction(-g)
        rounds = fed.rounds
        obj.step(1.0)
        assert fed.rounds == rounds + 1
        (believed, true), = policy.slopes
        assert believed == float(g @ p)
        exact.value_grad(np.zeros(X.shape[1]))
        exact.set_direction(p)
        _, (d0, d1) = exact.line_values(np.array([0.0, 1.0]))
        assert true == pytest.approx(d0, rel=1e-10)
        assert obj.step_slope == pytest.approx(d1, rel=1e-10)
