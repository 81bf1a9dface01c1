"""The planner under the sites' policies: secure aggregation, privacy budgets, DP costs.

In-process sites over small regional CTR data (4 DCs x 1,500 rows, 2^10 hashed
features). A private plan must be priced without spending budget, and its bytes and
noise must be those of the real run.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner

from geodml.algorithms.registry import TrainSpec, train
from geodml.cli import main
from geodml.data import load_dataset, save_dataset
from geodml.data.dataset import Dataset
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.federation import AuditLog, Federation
from geodml.models.losses import get_loss
from geodml.planning.deployment import parse_deployment
from geodml.planning.planner import GeoVariant, Workload, make_plan
from geodml.privacy.noise_cost import (
    direction_cost,
    noise_free_dp_gd,
    noise_objective_cost,
)
from geodml.site.config import DataConfig, PrivacyConfig, SiteConfig
from geodml.site.inprocess import InProcessTransport
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.site.service import SiteService

from .tools.opened import UNNAMED, OpenedFederations

HOME = "us-east"
REGIONS = ("us-east", "eu-west", "ap-south", "sa-east")
DELTA = 1e-5
LAM = 1e-3
ROUNDS = 40
SEEDS = 12  # the mean of 12 noise draws: its std is about a sixth of the estimate
DP = GeoVariant("dp-gd", params=(("rounds", ROUNDS),))


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    out = tmp_path_factory.mktemp("policy-data")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=1500,
                                     test_rows_per_region=0, hash_bits=10, seed=3), out)
    return {n: load_dataset(p) for n, p in site_dirs(out).items()}


@pytest.fixture(scope="module")
def deployment():
    return parse_deployment({"home": HOME, "sites": [{"name": n, "region": n}
                                                      for n in REGIONS]})


class Sites(OpenedFederations):
    """``open_federation(...)`` over shared in-process sites with one policy for all."""

    def __init__(self, datasets, seed: int = 0, budgets: dict[str, float] | None = None,
                 **policy):
        def policy_of(name: str) -> Policy:
            if budgets is None:
                return Policy(**policy)
            return Policy(dp_epsilon=budgets[name], dp_delta=DELTA, **policy)

        self.services = {
            n: SiteService(n, n, d, policy_of(n),
                           secret=hashlib.sha256(f"{seed} {n}".encode()).digest())
            for n, d in datasets.items()}
        super().__init__()
        self.nonce_seed = f"nonces {seed}".encode()  # the noise: fixed by secret and nonce

    def __call__(self, compression=UNNAMED, sample_fraction=UNNAMED, audit=None,
                 secure=None) -> Federation:
        compression, sample_fraction = self.record(compression, sample_fraction)
        return Federation([InProcessTransport(s) for s in self.services.values()], HOME,
                          audit=AuditLog(audit) if audit else None, compression=compression,
                          sample_fraction=sample_fraction, secure=secure,
                          nonce_seed=self.nonce_seed)

    def spent(self) -> dict[str, int]:
        return {n: len(s.ledger.releases) for n, s in self.services.items()}


def test_unmasked_plans_are_not_permitted_where_a_site_requires_masks(datasets, deployment):
    sites = Sites(datasets, require_secure_aggregation=True)
    plain = GeoVariant("fadl-subspace")
    masked = GeoVariant("fadl-subspace", restrict_to_support=False, secure=True)
    plan = make_plan(sites, deployment, [plain, masked], Workload(lam=LAM),
                     calibrate_mode="always", calibration_rows=750)
    refused, allowed = plan.estimate(plain.name), plan.estimate(masked.name)
    assert not refused.permitted
    assert "site us-east sends only masked sums (require_secure_aggregation" in refused.why_not
    assert refused.basis.endswith("refused by policy")
    assert allowed.permitted and allowed.basis.startswith("calibrated")
    assert sites.fractions.count(0.5) == 1  # only the masked plan was calibrated
    assert plan.recommended == masked.name  # centralizing: export forbidden by default


def test_a_private_plan_is_priced_without_spending_budget_and_predicts_the_run(
        datasets, deployment):
    budgets = {"us-east": 1.0, "eu-west": 2.0, "ap-south": 2.0, "sa-east": 4.0}
    sites = Sites(datasets, budgets=budgets)
    plain = GeoVariant("sqm-lbfgs")
    plan = make_plan(sites, deployment, [plain, DP], Workload(lam=LAM))
    assert sites.spent() == dict.fromkeys(REGIONS, 0)  # planning released nothing
    assert sites.fractions.count(1.0) == len(sites.fractions)  # and calibrated nothing
    private = plan.estimate(DP.name)
    assert private.permitted and plan.recommended == DP.name
    assert not plan.estimate(plain.name).permitted
    assert "dp_epsilon = 1" in plan.estimate(plain.name).why_not

    with sites() as fed:
        result = train(fed, "dp-gd", TrainSpec(lam=LAM, params={"rounds": ROUNDS}))
        fed.close_sessions()
        metered = fed.meter.snapshot()
    assert private.wan_bytes == pytest.approx(metered["wan_bytes"], rel=0.01)
    for link, nbytes in private.per_link.items():
        assert nbytes == pytest.approx(metered["links"][link]["bytes"], rel=0.01), link
    for name, predicted in private.privacy["sites"].items():
        ran = result.info["privacy"][name]
        assert predicted["noise_multiplier"] == pytest.approx(ran["noise_multiplier"],
                                                              rel=1e-9)
        assert predicted["epsilon_spent_after"] == pytest.approx(ran["epsilon_spent"],
                                                                 rel=1e-6)
    assert 0 < private.privacy["noise_objective_cost"] < 1


def test_a_spent_budget_or_a_workload_of_runs_makes_the_private_plan_not_permitted(
        datasets, deployment):
    sites = Sites(datasets, dp_epsilon=1.0, dp_delta=DELTA)
    with sites() as fed:  # spend it all
        train(fed, "dp-gd", TrainSpec(lam=LAM, params={"rounds": 5}))
    plan = make_plan(sites, deployment, [DP], Workload(lam=LAM))
    e = plan.estimate(DP.name)
    assert not e.permitted and "site us-east: the budget left" in e.why_not
    assert plan.recommended is None

    fresh = Sites(datasets, dp_epsilon=1.0, dp_delta=DELTA)
    weekly = make_plan(fresh, deployment, [DP], Workload(lam=LAM, days=7))
    assert not weekly.estimate(DP.name).permitted
    assert "a workload of 7 runs" in weekly.estimate(DP.name).why_not


def test_a_private_plan_is_not_permitted_where_a_site_has_no_budget(datasets, deployment):
    sites = Sites(datasets)
    plan = make_plan(sites, deployment, [DP], Workload(lam=LAM), calibrate_mode="always")
    e = plan.estimate(DP.name)
    assert not e.permitted and "site eu-west has no privacy budget" in e.why_not
    assert e.wan_bytes > 0 and sites.fractions == [1.0]


# -- the noise's cost --------------------------------------------------------------------


def test_direction_cost_matches_a_simulation_of_the_noisy_iteration():
    rng = np.random.default_rng(0)
    step, rounds, s = 2.0, 60, 0.01
    for h in (1e-3, 0.05, 0.4):
        a = 1 - step * h
        xi = rng.normal(0, s, (20_000, rounds))
        e = np.zeros(len(xi))
        tail = np.zeros(len(xi))
        for t in range(rounds):
            e = a * e - step * xi[:, t]
            if t + 1 > rounds // 2:
                tail += e
        simulated = np.mean(0.5 * h * (tail / (rounds - rounds // 2)) ** 2)
        assert direction_cost(h, step, rounds, s)[0] == pytest.approx(simulated, rel=0.05)


def objective(data: Dataset, w: np.ndarray, lam: float) -> float:
    z = data.X @ w
    return float(np.mean(get_loss("logistic").value(data.y, z)) + 0.5 * lam * w @ w)


def test_the_noise_costs_no_more_objective_than_the_estimate_where_its_model_holds(
        datasets, deployment):
    """Over seeds, F(w_dp) - F(w without noise) averages below the planner's estimate,
    which bounds it where rows have norm about C (here: hashed one-hot rows, C = 1) and
    is not vacuous (the noise costs at least a tenth of it)."""
    everything = Dataset(sp.vstack([d.X for d in datasets.values()]).tocsr(),
                         np.concatenate([d.y for d in datasets.values()]),
                         next(iter(datasets.values())).space)
    clip = 1.0
    plan = make_plan(Sites(datasets, dp_epsilon=2.0, dp_delta=DELTA), deployment, [DP],
                     Workload(lam=LAM))
    privacy = plan.estimate(DP.name).privacy
    estimate = privacy["noise_objective_cost"]
    assert estimate == pytest.approx(noise_objective_cost(
        everything.n_features, privacy["step"], ROUNDS, privacy["noise_std"], LAM))
    reference = objective(everything, noise_free_dp_gd(
        everything.X, everything.y, get_loss("logistic"), LAM, clip, privacy["step"], ROUNDS),
        LAM)
    costs = []
    for seed in range(SEEDS):
        sites = Sites(datasets, seed=seed, dp_epsilon=2.0, dp_delta=DELTA)
        with sites() as fed:
            result = train(fed, "dp-gd", TrainSpec(lam=LAM, params={"rounds": ROUNDS}))
        costs.append(objective(everything, result.w, LAM) - reference)
    print(f"noise cost {np.mean(costs):.3e} +- {np.std(costs):.1e}, estimate {estimate:.3e}")
    assert estimate / 10 < np.mean(costs) <= estimate, (costs, estimate)


# -- over real site processes, from the CLI -----------------------------------------------


def test_compare_over_private_sites_runs_only_the_private_plan_and_reports_budgets(
        datasets, tmp_path):
    """Three DP site processes: `geodml plan` prices dp-gd without spending budget and
    refuses fadl-subspace; `geodml compare` runs dp-gd only, reports the budgets spent,
    and the planner's bytes are the metered ones."""
    names = REGIONS[:3]
    data_dirs = {}
    for n in names:
        data_dirs[n] = tmp_path / "data" / n
        save_dataset(data_dirs[n], datasets[n])
    configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=data_dirs[n]),
                          policy=Policy(dp_epsilon=1.0, dp_delta=DELTA),
                          privacy=PrivacyConfig(ledger=tmp_path / f"{n}-ledger.json"))
               for n in names]
    with LocalCluster(configs, tmp_path / "sites", insecure=True) as cluster:
        lines = [f"home = {json.dumps(HOME)}", "insecure = true"]
        for n in names:
            lines += ["", "[[sites]]", f"name = {json.dumps(n)}", f"region = {json.dumps(n)}",
                      f"address = {json.dumps(cluster.sites[n].address)}"]
        deployment = tmp_path / "deployment.toml"
        deployment.write_text("\n".join(lines) + "\n")
        methods = ["--method", "dp-gd", "--method", "fadl-subspace"]
        planned = CliRunner().invoke(main, ["plan", str(deployment), *methods,
                                            "--json", str(tmp_path / "plan.json")])
        assert planned.exit_code == 0, planned.output
        assert "recommended: dp-gd" in planned.output
        assert "fadl-subspace is not permitted" in planned.output
        assert "site eu-west adds noise" in planned.output
        with Federation(cluster.transports(), home=HOME) as fed:
            assert all(fed.describe_site(n).privacy.epsilon_spent == 0 for n in names)
        report = tmp_path / "report"
        compared = CliRunner().invoke(main, ["compare", str(deployment), *methods,
                                             "--out", str(report)])
        assert compared.exit_code == 0, compared.output
    runs = {r["plan"]: r for r in json.loads((report / "report.json").read_text())["runs"]}
    assert runs["fadl-subspace"]["refused_by"] == sorted(names)
    assert runs["fadl-subspace"]["wan_bytes"] == 0
    assert runs["centralize"]["refused_by"]  # a private site opens no plain session
    dp = runs["dp-gd"]
    assert dp["objective"] is None and 0.5 < dp["test"].get("auc", 0.6) <= 1
    assert abs(dp["prediction_error"]) < 0.01
    assert set(dp["privacy"]) == set(names)
    assert all(0.99 <= b["epsilon_spent"] <= 1.0 + 1e-9 for b in dp["privacy"].values())
    markdown = (report / "report.md").read_text()
    assert "## Privacy budgets" in markdown and "| dp-gd | eu-west |" in markdown
