"""Differential privacy: the mechanism, the accounting, the ledger, what a DP site refuses."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import re

import dp_accounting
import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from dp_accounting import rdp
from pydantic import ValidationError

from geodml.algorithms.registry import TrainSpec, train
from geodml.cli import main
from geodml.data import load_dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import ConfigError, GeodmlError
from geodml.federation import Federation, PrivacyJob, SecureAggregation, SiteCallError
from geodml.model import LinearModel
from geodml.models.losses import get_loss
from geodml.privacy.dp import (
    PrivacyBudgetError,
    calibrate_noise,
    clipped_gradient_sum,
    gaussian_noise,
)
from geodml.site.config import DataConfig, PrivacyConfig, SiteConfig, load_site_config
from geodml.site.inprocess import InProcessTransport
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.site.service import SiteService
from geodml.wire.protocol import pb

REGIONS = ("us-east", "eu-west", "ap-south", "sa-east")
LAM = 1e-3
DELTA = 1e-5
CLIP = 1.0


@pytest.fixture(scope="module")
def regional(tmp_path_factory):
    out = tmp_path_factory.mktemp("regional")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=1500,
                                     test_rows_per_region=200, hash_bits=10, seed=11), out)
    return site_dirs(out)


@pytest.fixture(scope="module")
def datasets(regional):
    return {n: load_dataset(p) for n, p in regional.items()}


def secret(name: str) -> bytes:
    return hashlib.sha256(b"test secret " + name.encode()).digest()


def dp_services(datasets, budgets: dict[str, float] | float, ledgers=None,
                names=REGIONS) -> dict[str, SiteService]:
    """In-process sites with a DP budget (fixed secrets: their noise is reproducible)."""
    if not isinstance(budgets, dict):
        budgets = dict.fromkeys(names, budgets)
    return {n: SiteService(n, n, datasets[n], Policy(dp_epsilon=budgets[n], dp_delta=DELTA),
                           secret=secret(n),
                           privacy_ledger=None if ledgers is None else ledgers[n])
            for n in names}


def federation(services: dict[str, SiteService], **kw) -> Federation:
    return Federation([InProcessTransport(s) for s in services.values()],
                      home=next(iter(services)), **kw)


def independent_epsilon(z: float, releases: int, delta: float) -> float:
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(z), releases)
    return float(accountant.get_epsilon(delta))


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def describe(service: SiteService) -> pb.PrivacyBudget:
    return service.describe(pb.DescribeRequest(), "coordinator").privacy


# -- the mechanism ------------------------------------------------------------------------

def test_clipped_gradient_sum_matches_a_per_row_loop():
    rng = np.random.default_rng(3)
    X = sp.random(300, 40, density=0.2, format="csr", random_state=4) * 5.0
    X = sp.vstack([X, sp.csr_matrix((1, 40))]).tocsr()  # an empty row: no gradient at all
    y = (rng.random(X.shape[0]) < 0.4).astype(np.float64)
    w = rng.normal(size=40) * 0.3
    loss = get_loss("logistic")
    dense = X.toarray()
    grads = [(loss.deriv(y[i:i + 1], np.array([dense[i] @ w]))[0]) * dense[i]
             for i in range(X.shape[0])]
    norms = np.array([np.linalg.norm(g) for g in grads])
    clip = float(np.median(norms[norms > 0]))
    clipped = norms > clip
    assert 50 < clipped.sum() < X.shape[0] - 50  # some rows clipped, many not
    expected = np.zeros(40)
    for g, n in zip(grads, norms, strict=True):
        expected += g * min(1.0, clip / n) if n > 0 else g
    got = clipped_gradient_sum(X, y, w, loss, clip)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    # the unclipped sum differs: the clipping did something
    assert relative(np.sum(grads, axis=0), expected) > 0.05
    # and a clip above every norm is the plain gradient sum
    np.testing.assert_allclose(clipped_gradient_sum(X, y, w, loss, norms.max() * 2),
                               np.sum(grads, axis=0), rtol=1e-12, atol=1e-12)


def test_gaussian_noise_is_keyed_by_secret_nonce_and_round_and_has_the_asked_std():
    s, nonce = b"s" * 32, bytes(range(16))
    a = gaussian_noise(s, nonce, 3, 1000, 2.0)
    np.testing.assert_array_equal(a, gaussian_noise(s, nonce, 3, 1000, 2.0))
    for other in (gaussian_noise(b"t" * 32, nonce, 3, 1000, 2.0),
                  gaussian_noise(s, bytes(16), 3, 1000, 2.0),
                  gaussian_noise(s, nonce, 4, 1000, 2.0)):
        assert not np.any(other == a)
    big = gaussian_noise(s, nonce, 7, 200_000, 3.5)
    assert abs(big.std() / 3.5 - 1) < 0.01
    assert abs(big.mean()) < 5 * 3.5 / np.sqrt(len(big))


# -- accounting over a run ------------------------------------------------------------------

def test_dp_gd_spends_each_sites_budget_as_the_rdp_accountant_says(datasets):
    budgets = {"us-east": 0.5, "eu-west": 1.0, "ap-south": 2.0, "sa-east": 4.0}
    rounds = 20
    services = dp_services(datasets, budgets)
    with federation(services) as fed:
        result = train(fed, "dp-gd", TrainSpec(lam=LAM, params={"rounds": rounds}))
    assert np.all(np.isfinite(result.w)) and np.linalg.norm(result.w) > 0
    privacy = result.info["privacy"]
    assert set(privacy) == set(REGIONS)
    for site, p in privacy.items():
        z = p["noise_multiplier"]
        assert p["releases"] == rounds and len(services[site].ledger.releases) == rounds
        assert list(describe(services[site]).noise_multipliers) == [z] * rounds
        expected = independent_epsilon(z, rounds, DELTA)
        assert p["epsilon_spent"] == pytest.approx(expected, rel=1e-9)
        assert p["epsilon_spent"] <= budgets[site] * (1 + 1e-9)
        assert p["epsilon_spent"] >= 0.99 * budgets[site]  # calibrated: the budget is used
        assert (p["epsilon"], p["delta"]) == (budgets[site], DELTA)
    zs = [privacy[s]["noise_multiplier"] for s in sorted(budgets, key=budgets.get)]
    assert all(a > 1.3 * b for a, b in itertools.pairwise(zs)), zs  # less budget, more noise


def test_a_second_job_after_the_budget_is_spent_is_refused_before_any_release(datasets):
    services = dp_services(datasets, 1.0, names=REGIONS[:3])
    with federation(services) as fed:
        train(fed, "dp-gd", TrainSpec(lam=LAM, params={"rounds": 10}))
    before = {n: (len(s.ledger.releases), s.ledger.spent) for n, s in services.items()}
    assert all(count == 10 for count, _ in before.values())
    with federation(services) as fed:
        with pytest.raises(PrivacyBudgetError, match=r"already spent|budget left"):
            train(fed, "dp-gd", TrainSpec(lam=LAM, params={"rounds": 10}))
        assert fed.meter.calls.get("Evaluate", 0) == 0 and fed.rounds == 0
    assert {n: (len(s.ledger.releases), s.ledger.spent) for n, s in services.items()} == before


def test_a_coordinator_asking_more_rounds_than_calibrated_is_refused_by_the_site(datasets):
    """A coordinator that lies about the rounds: each site checks every release."""
    budgets = {"us-east": 1.0, "eu-west": 50.0, "ap-south": 50.0}
    services = dp_services(datasets, budgets, names=tuple(budgets))
    z = calibrate_noise(1.0, DELTA, 3)  # us-east can afford 3 releases at this noise
    with federation(services) as fed:
        fed.prepare("logistic", LAM, privacy=PrivacyJob(CLIP, dict.fromkeys(budgets, z)))
        rng = np.random.default_rng(0)
        for _ in range(3):
            fed.evaluate(rng.normal(size=fed.n_features) * 0.01)
        for _ in range(4):
            with pytest.raises(SiteCallError) as err:
                fed.evaluate(rng.normal(size=fed.n_features) * 0.01)
            assert err.value.code == "RESOURCE_EXHAUSTED" and err.value.site == "us-east"
            assert "site us-east" in str(err.value) and "budget exhausted" in str(err.value)
    east = services["us-east"].ledger
    assert len(east.releases) == 3 and east.spent <= 1.0
    assert east.spent == pytest.approx(independent_epsilon(z, 3, DELTA), rel=1e-9)
    assert len(services["eu-west"].ledger.releases) == 7  # a site with budget left answers


# -- replays ----------------------------------------------------------------------------------

def test_a_replayed_release_is_answered_with_the_same_bits_or_refused(datasets):
    services = dp_services(datasets, 5.0, names=("us-east",))
    service = services["us-east"]
    d = datasets["us-east"].n_features
    w1, w2 = np.full(d, 0.01), np.full(d, -0.02)
    job = PrivacyJob(CLIP, {"us-east": 3.0})

    def first_round(w):
        with federation(services, nonce_seed=b"same") as fed:
            fed.prepare("logistic", LAM, privacy=job)
            return fed.evaluate(w)[0].grad

    g1 = first_round(w1)
    spent = service.ledger.spent
    assert len(service.ledger.releases) == 1
    data = datasets["us-east"]
    plain = clipped_gradient_sum(data.X, data.y, w1, get_loss("logistic"), CLIP)
    assert relative(g1, plain) > 0.1  # the reply is noisy
    # the same (nonce, round) at the same point: the same bits, nothing charged
    np.testing.assert_array_equal(first_round(w1), g1)
    assert len(service.ledger.releases) == 1 and service.ledger.spent == spent
    # at another point: refused, nothing charged
    with pytest.raises(SiteCallError, match="already answered at another point") as err:
        first_round(w2)
    assert err.value.code == "PERMISSION_DENIED"
    assert len(service.ledger.releases) == 1 and service.ledger.spent == spent


# -- what a DP site refuses ---------------------------------------------------------------

def test_a_private_session_sends_only_noisy_gradients_at_a_point(datasets):
    services = dp_services(datasets, 5.0, names=REGIONS[:2])
    with federation(services) as fed:
        fed.prepare("logistic", LAM, privacy=PrivacyJob(CLIP, dict.fromkeys(services, 4.0)))
        w = np.full(fed.n_features, 0.01)
        calls = {
            "LineSearch": lambda: fed.line_search(-w, [0.5, 1.0]),
            "LocalSolve": lambda: fed.local_solve("local_minimize", {}, [w]),
            "Subspace": lambda: fed.subspace([w], coefficients=np.zeros(1)),
            "Evaluate without w": lambda: fed.evaluate(),
            "Evaluate with hvp": lambda: fed.evaluate(w, v=np.ones(fed.n_features)),
            "Evaluate without gradient": lambda: fed.evaluate(w, want_grad=False),
        }
        for name, call in calls.items():
            with pytest.raises(SiteCallError) as err:
                call()
            assert err.value.code == "FAILED_PRECONDITION", name
            assert "differentially private" in str(err.value), name
        assert all(len(s.ledger.releases) == 0 for s in services.values())
        evals = fed.evaluate(w)  # the session still answers what it may
        assert all(e.grad is not None and e.loss_sum == 0.0 for e in evals)
    assert all(len(s.ledger.releases) == 1 for s in services.values())


def test_a_dp_site_refuses_plain_jobs_and_a_site_without_budget_refuses_private_ones(datasets):
    services = dp_services(datasets, 5.0, names=REGIONS[:2])
    with federation(services) as fed:
        with pytest.raises(SiteCallError, match="dp_epsilon") as err:
            fed.prepare("logistic", LAM)
        assert err.value.code == "PERMISSION_DENIED"
        with pytest.raises(SiteCallError, match="dp_epsilon"):
            train(fed, "sqm-lbfgs", TrainSpec(lam=LAM))
    plain = {n: SiteService(n, n, datasets[n]) for n in REGIONS[:2]}
    with federation(plain) as fed:
        with pytest.raises(SiteCallError, match="no privacy budget") as err:
            fed.prepare("logistic", LAM, privacy=PrivacyJob(CLIP, dict.fromkeys(plain, 4.0)))
        assert err.value.code == "FAILED_PRECONDITION"
        with pytest.raises(ConfigError, match="has no privacy budget"):
            train(fed, "dp-gd", TrainSpec(lam=LAM))


# -- policy and configuration ---------------------------------------------------------------

def test_policy_validation_of_the_budget():
    with pytest.raises(ValidationError, match="dp_epsilon and dp_delta go together"):
        Policy(dp_epsilon=1.0)
    with pytest.raises(ValidationError, match="dp_epsilon and dp_delta go together"):
        Policy(dp_delta=1e-5)
    with pytest.raises(ValidationError, match="allow_raw_export"):
        Policy(dp_epsilon=1.0, dp_delta=1e-5, allow_raw_export=True)
    for bad in ({"dp_epsilon": 0.0, "dp_delta": 1e-5}, {"dp_epsilon": 1.0, "dp_delta": 1.0}):
        with pytest.raises(ValidationError):
            Policy(**bad)
    assert Policy(dp_epsilon=1.0, dp_delta=1e-5).dp_epsilon == 1.0


def test_a_site_config_with_a_budget_needs_a_ledger(tmp_path):
    text = ('name = "eu-west"\ninsecure = true\n[data]\npath = "data"\n'
            "[policy]\ndp_epsilon = 1.0\ndp_delta = 1e-5\n")
    path = tmp_path / "site.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"privacy: .*policy\.dp_epsilon.*\[privacy\] ledger"):
        load_site_config(path)
    path.write_text(text + '[privacy]\nledger = "state/ledger.json"\n')
    config = load_site_config(path)
    assert config.privacy.ledger == (tmp_path / "state" / "ledger.json").resolve()


# -- the ledger across restarts ---------------------------------------------------------------

def test_the_ledger_survives_a_restart_and_a_corrupt_one_stops_the_site(datasets, tmp_path):
    ledgers = {"us-east": tmp_path / "ledger.json"}
    services = dp_services(datasets, 3.0, ledgers, names=("us-east",))
    d = datasets["us-east"].n_features
    w = np.full(d, 0.01)
    job = PrivacyJob(CLIP, {"us-east": 5.0})
    with federation(services, nonce_seed=b"ledger") as fed:
        fed.prepare("logistic", LAM, privacy=job)
        g1 = fed.evaluate(w)[0].grad
        fed.evaluate(w * 2)
    before = describe(services["us-east"])
    assert len(before.noise_multipliers) == 2 and before.epsilon_spent > 0
    assert len(json.loads(ledgers["us-east"].read_text())["releases"]) == 2

    restarted = dp_services(datasets, 3.0, ledgers, names=("us-east",))
    after = describe(restarted["us-east"])
    assert after.epsilon_spent == before.epsilon_spent
    assert list(after.noise_multipliers) == list(before.noise_multipliers)
    with federation(restarted, nonce_seed=b"ledger") as fed:  # the same job, replayed
        fed.prepare("logistic", LAM, privacy=job)
        np.testing.assert_array_equal(fed.evaluate(w)[0].grad, g1)
        with pytest.raises(SiteCallError) as err:
            fed.evaluate(w * 3)  # round 2 was answered at w * 2
        assert err.value.code == "PERMISSION_DENIED"
    assert describe(restarted["us-east"]).epsilon_spent == before.epsilon_spent

    for corrupt in ("{not json", '{"releases": {"x": [-1.0, "d"]}}', "[]"):
        ledgers["us-east"].write_text(corrupt)
        with pytest.raises(GeodmlError, match=re.escape(str(ledgers["us-east"]))):
            dp_services(datasets, 3.0, ledgers, names=("us-east",))


def test_a_restarted_site_without_a_fixed_secret_does_not_answer_a_release_twice(
        datasets, tmp_path):
    ledger = tmp_path / "ledger.json"
    policy = Policy(dp_epsilon=3.0, dp_delta=DELTA)
    w = np.full(datasets["us-east"].n_features, 0.01)
    job = PrivacyJob(CLIP, {"us-east": 5.0})
    replies = []
    for _ in range(2):  # a start, then a restart on the same ledger
        service = SiteService("us-east", "us-east", datasets["us-east"], policy,
                              privacy_ledger=ledger)
        with federation({"us-east": service}, nonce_seed=b"insecure") as fed:
            fed.prepare("logistic", LAM, privacy=job)
            with contextlib.suppress(SiteCallError):  # refusing the replay is safe too
                replies.append(fed.evaluate(w)[0].grad)
        assert len(service.ledger.releases) == 1
    # two independent noise draws of one release, charged once, would halve its noise
    # variance: the restarted site (another random secret) refuses the replay instead
    assert len(replies) == 1


def test_real_site_processes_keep_their_ledger_across_a_restart(regional, tmp_path):
    names = REGIONS[:2]
    configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=regional[n]),
                          policy=Policy(dp_epsilon=2.0, dp_delta=DELTA),
                          privacy=PrivacyConfig(ledger=tmp_path / f"{n}-ledger.json"))
               for n in names]
    with LocalCluster(configs, tmp_path / "sites", insecure=True) as cluster:
        with Federation(cluster.transports(), home=names[0]) as fed:
            result = train(fed, "dp-gd", TrainSpec(lam=LAM, params={"rounds": 8}))
        spent = {n: result.info["privacy"][n]["epsilon_spent"] for n in names}
        assert all(2.0 * 0.99 <= s <= 2.0 * (1 + 1e-9) for s in spent.values())
        cluster.kill(names[1])
        cluster.restart(names[1])
        with Federation(cluster.transports(), home=names[0]) as fed:
            budget = fed.describe_site(names[1]).privacy
            assert budget.epsilon_spent == pytest.approx(spent[names[1]], rel=1e-12)
            assert len(budget.noise_multipliers) == 8
            with pytest.raises(PrivacyBudgetError):
                train(fed, "dp-gd", TrainSpec(lam=LAM, params={"rounds": 8}))
    for n in names:
        assert len(json.loads((tmp_path / f"{n}-ledger.json").read_text())["releases"]) == 8


# -- the CLI ------------------------------------------------------------------------------------

def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_dp_gd_from_the_cli_reports_the_budget_spent_per_site(tmp_path):
    out, model = tmp_path / "sites", tmp_path / "m.npz"
    generated = invoke("generate", out, "--rows", 1500, "--hash-bits", 10, "--seed", 2)
    assert generated.exit_code == 0, generated.output
    result = invoke("train", out, "--method", "dp-gd", "--dp-epsilon", 2, "--dp-delta", 1e-5,
                    "--test", out, "--param", "rounds=20", "--out", model)
    assert result.exit_code == 0, result.output
    assert "20 private rounds done" in result.output and "auc" in result.output
    table = result.output.split("differential privacy, per site", 1)[1]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line) if c.strip()]
        if cells and cells[0] in REGIONS:
            rows[cells[0]] = cells
    assert set(rows) == set(REGIONS), table
    for cells in rows.values():  # site, epsilon spent, budget, delta, noise multiplier, releases
        assert 1.99 <= float(cells[1]) <= 2.0
        assert (cells[2], float(cells[3]), cells[5]) == ("2", 1e-5, "20")
    assert model.exists() and LinearModel.load(model).info["method"] == "dp-gd"

    half = invoke("train", out, "--method", "dp-gd", "--dp-epsilon", 2, "--out", model)
    assert half.exit_code == 2 and "--dp-epsilon and --dp-delta go together" in half.output


# -- with secure aggregation ------------------------------------------------------------------

def test_dp_gd_under_secure_aggregation_gives_the_same_model(datasets):
    """The same sites (same secrets) and the same job nonce: the same noise, so the same
    model up to the fixed point's rounding. Under secure aggregation the federation draws
    the mask nonce first, so the plain run spends one private Prepare (no release) to
    line its DP nonce up with the secure run's."""
    spec = TrainSpec(lam=LAM, params={"rounds": 20})
    with federation(dp_services(datasets, 2.0), secure=SecureAggregation(),
                    nonce_seed=b"seed") as fed:
        secure = train(fed, "dp-gd", spec)

    def plain_run(seed: bytes):
        services = dp_services(datasets, 2.0)
        with federation(services, nonce_seed=seed) as fed:
            fed.prepare("logistic", LAM, privacy=PrivacyJob(CLIP, dict.fromkeys(services, 1.0)))
            result = train(fed, "dp-gd", spec)
        assert all(len(s.ledger.releases) == 20 for s in services.values())
        return result

    plain = plain_run(b"seed")
    assert relative(secure.w, plain.w) <= 1e-6
    assert secure.info["privacy"] == plain.info["privacy"]
    other = plain_run(b"another seed")  # the test has teeth: other noise, another model
    assert relative(other.w, plain.w) > 1e-3
