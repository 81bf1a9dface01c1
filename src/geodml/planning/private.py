"""Private plans (dp-gd), priced without spending budget: bytes from a *twin* of the
sites, noise calibrated against every site's remaining budget, and the objective the
noise costs (see :mod:`geodml.planning.planner`)."""

from __future__ import annotations

from collections.abc import Sequence

from geodml.errors import GeodmlError
from geodml.federation import SiteInfo
from geodml.planning.deployment import Deployment
from geodml.planning.estimates import MIN_VECTOR_ROUNDS, bound_links, geo_estimate
from geodml.planning.plans import Estimate, GeoVariant, Workload
from geodml.planning.wan import model_run

TWIN_ROUNDS = 3  # rounds a private plan's twin runs; the rest repeat its last round
TWIN_ROWS = 16  # random rows per twin site


def twin_rounds(variant: GeoVariant, sites: Sequence[SiteInfo], home: str,
                workload: Workload, lam: float, rounds: int) -> tuple[list[dict], list[bool]]:
    """Bytes per link of every round of a private run, and which rounds are gradient
    rounds, from its twin (see :mod:`geodml.planning.planner`); every site has a budget."""
    import numpy as np
    import scipy.sparse as sp

    from geodml.algorithms.record import RunRecorder
    from geodml.algorithms.registry import TrainSpec, train
    from geodml.data.dataset import Dataset
    from geodml.federation import Federation
    from geodml.site.inprocess import InProcessTransport
    from geodml.site.policy import Policy
    from geodml.site.service import SiteService

    rng = np.random.default_rng(0)
    services = []
    for s in sites:
        X = sp.random(TWIN_ROWS, s.features, density=min(1.0, 4 / max(1, s.features)),
                      format="csr", random_state=rng, dtype=np.float32)
        data = Dataset(X, (rng.random(TWIN_ROWS) < 0.5).astype(np.float64), s.space)
        services.append(SiteService(s.name, s.region, data, Policy(  # an empty ledger
            dp_epsilon=s.privacy.epsilon, dp_delta=s.privacy.delta)))
    twin = min(rounds, TWIN_ROUNDS)
    params = {**dict(variant.params), "rounds": twin}
    with Federation([InProcessTransport(s) for s in services], home,
                    compression=variant.compression(),
                    secure=variant.secure_aggregation()) as fed:
        spec = TrainSpec(loss=workload.loss, lam=lam, params=params)
        train(fed, variant.method, spec, RunRecorder(fed))
        fed.close_sessions()
        metered = fed.meter.rounds
    per_round = [dict(r.links) for r in metered]
    gradient = [r.call == "Evaluate" for r in metered]
    last = max(i for i, g in enumerate(gradient) if g)
    extra = rounds - twin
    return (per_round[:last + 1] + [per_round[last]] * extra + per_round[last + 1:],
            gradient[:last + 1] + [True] * extra + gradient[last + 1:])


def private_estimate(variant: GeoVariant, sites: Sequence[SiteInfo], deployment: Deployment,
                     workload: Workload, lam: float, nnz_per_second: float,
                      refusals: Sequence[str]) -> Estimate:
    """A private plan priced from its twin, with every site's noise and its cost."""
    from geodml.algorithms.defaults import DEFAULT_MAX_ROUNDS
    from geodml.algorithms.dpgd import dp_gd_settings
    from geodml.privacy.dp import calibrate_noise, epsilon_spent
    from geodml.privacy.noise_cost import mean_gradient_noise_std, noise_objective_cost

    rounds, clip, step = dp_gd_settings(dict(variant.params), lam, DEFAULT_MAX_ROUNDS)
    refusals = list(refusals)
    sigma: dict[str, float] = {}
    privacy_sites = {}
    for s in sites:
        if s.privacy is None:
            continue
        b = s.privacy
        try:
            sigma[s.name] = calibrate_noise(b.epsilon, b.delta, rounds, b.noise_multipliers)
        except GeodmlError as e:
            refusals.append(f"site {s.name}: {e}")
            continue
        privacy_sites[s.name] = {
            "epsilon": b.epsilon, "delta": b.delta, "epsilon_spent_before": b.epsilon_spent,
            "noise_multiplier": sigma[s.name],
            "epsilon_spent_after": epsilon_spent([*b.noise_multipliers,
                                                  *[sigma[s.name]] * rounds], b.delta)}
    n_rows = sum(s.rows for s in sites)
    noise_std = mean_gradient_noise_std(sigma, clip, n_rows)
    cost = noise_objective_cost(sites[0].features, step, rounds, noise_std, lam)
    if all(s.privacy is not None for s in sites):
        per_round, gradient = twin_rounds(variant, sites, deployment.home, workload, lam,
                                           rounds)
    else:  # refused, and no twin can run it: one dense vector each way per round
        vector = {k: v // MIN_VECTOR_ROUNDS
                  for k, v in bound_links(sites, deployment.home, variant).items()}
        per_round, gradient = [vector] * rounds, [True] * rounds
    compute = max(s.nnz for s in sites) / max(nnz_per_second, 1e-9)
    modeled = model_run(per_round, deployment, [compute if g else 0.0 for g in gradient])
    record = {"links": {k: v["bytes"] for k, v in modeled.per_link.items()},
              "seconds": modeled.seconds, "rounds": len(per_round),
              "vector_rounds": float(rounds)}
    basis = (f"{rounds} private rounds (fixed); the noise adds ~{cost:.2g} to the "
             "objective (quadratic model; clipping bias not included)")
    estimate = geo_estimate(variant, record, basis, deployment, workload, refusals=refusals)
    estimate.privacy = {"sites": privacy_sites, "clip": clip, "step": step,
                        "rounds": rounds, "noise_std": noise_std,
                        "noise_objective_cost": cost}
    return estimate
