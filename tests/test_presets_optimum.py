"""Every shipped preset as shipped reaches scikit-learn's optimum (issue 19).

Per preset (its own encoding: the preset's numeric transforms and 2^18 hashed
categoricals; Criteo's and iPinYou's readers), logistic loss, ``lambda = 1/N``:
centralized L-BFGS and SQM L-BFGS over K = 4 in-process sites split by the preset's
natural column (airline by Origin, taxi by pickup community area, adult by race,
covtype by wilderness area, Avazu by site_id, iPinYou by region; Criteo has none and
is split iid) end within 1e-6 relative of scikit-learn's ``LogisticRegression``
(newton-cg, tol 1e-12, ``C = 1/(lambda N)``). Key values go to the site with the
fewest rows so far, largest first, as ``geodml partition --scheme by-column -k 4``
does. Row subsets keep each test to seconds; scikit-learn sees only the columns some
row touches (an untouched feature's weight is 0 at the optimum, so ``F*`` is the same).
BLAS runs single-threaded here: on 2 shared cores its threads made each 2^18-wide
L-BFGS iteration about 7x slower.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from geodml.algorithms.registry import TrainSpec, train
from geodml.centralized import train_centralized
from geodml.data import Dataset
from geodml.data.readers import COVTYPE_WILDERNESS, open_source
from geodml.data.source import KeySpec, read_all
from geodml.federation import Federation
from geodml.models import RegularizedObjective, SiteSums, get_loss
from geodml.optim import LbfgsOptions
from geodml.site.inprocess import InProcessTransport
from geodml.site.service import SiteService

from .conftest import shared_path

IPINYOU = "ipinyou_deepctr/"
# name: (file, format, reader options, the natural key (None: iid), rows used)
PRESETS = {
    "airline": ("airline_allyears2k/allyears2k_headers.csv", "csv", {"preset": "airline"},
                KeySpec(column="Origin"), 8_000),
    "taxi": ("chicago_taxi/chicago_taxi_big_tipper.csv", "csv", {"preset": "taxi"},
             KeySpec(column="pickup_community_area"), 6_000),
    "adult": ("adult_uci/adult.data", "csv", {"preset": "adult"}, KeySpec(column="race"),
              8_000),
    "covtype": ("covtype_20k/covtype.20k.data", "csv", {"preset": "covtype"},
                KeySpec(onehot=COVTYPE_WILDERNESS), 20_000),
    "avazu": ("avazu/avazu_train_head9k.csv", "csv", {"preset": "avazu"},
              KeySpec(column="site_id"), 5_000),
    "criteo": ("criteo_dac/criteo_kaggle_train_head10k.tsv", "criteo", {}, None, 5_000),
    "ipinyou": (IPINYOU + "train.fm.txt", "libsvm",
                {"n_features": 133_465, "zero_based": True}, KeySpec(feature_prefix="region:"),
                12_000),
}
K = 4
REL = 1e-6
# lambda-strong convexity: F - F* <= ||g||^2 / (2 lambda); with ||g_0|| < 1 and N <= 20,000
# rows, ||g|| <= 1e-6 ||g_0|| leaves at most 1e-8 absolute, far below 1e-6 relative
OPTIONS = LbfgsOptions(gtol=1e-6, max_iter=5000)


@pytest.fixture(autouse=True, scope="module")
def single_threaded_blas():
    with threadpool_limits(limits=1):
        yield


def natural_split(keys: np.ndarray | None, n: int, k: int = K) -> list[np.ndarray]:
    """Row indices of ``k`` sites: key values largest first, each to the site with the
    fewest rows (ties to the lowest index); without keys a seeded iid split."""
    if keys is None:
        return np.array_split(np.random.default_rng(0).permutation(n), k)
    values, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    site_of, load = np.empty(len(values), dtype=np.int64), np.zeros(k, dtype=np.int64)
    for v in sorted(range(len(values)), key=lambda v: (-counts[v], values[v])):
        site_of[v] = int(np.argmin(load))
        load[site_of[v]] += counts[v]
    return [np.flatnonzero(site_of[inverse] == s) for s in range(k)]


@cache
def preset(name: str) -> tuple[Dataset, tuple[np.ndarray, ...], float]:
    """The preset's first rows (float64), their K site row sets and scikit-learn's F*."""
    rel, fmt, options, key, rows = PRESETS[name]
    options = dict(options)
    if name == "ipinyou":
        options["featindex"] = shared_path(IPINYOU + "featindex.fm.txt")
    data, keys = read_all(open_source(shared_path(rel), fmt, dtype=np.float64, **options), key)
    data = data.take(np.arange(min(rows, data.n_rows)))
    keys = None if keys is None else keys[: data.n_rows]
    return data, tuple(natural_split(keys, data.n_rows)), sklearn_optimum(data, 1 / data.n_rows)


def objective(data: Dataset, lam: float) -> RegularizedObjective:
    return RegularizedObjective([SiteSums(data.X, data.y, get_loss("logistic"))], lam,
                                data.n_features)


def sklearn_optimum(data: Dataset, lam: float) -> float:
    """F at scikit-learn's newton-cg solution (C = 1/(lambda N): its objective is N C F)."""
    used = np.unique(data.X.indices)
    X = data.X[:, used]
    clf = LogisticRegression(C=1.0 / (data.n_rows * lam), fit_intercept=False,
                             solver="newton-cg", tol=1e-12, max_iter=10_000)
    w = np.zeros(data.n_features)
    w[used] = clf.fit(X, data.y).coef_.ravel()
    return objective(data, lam).value(w)


@pytest.mark.parametrize("name", list(PRESETS))
def test_centralized_lbfgs_reaches_sklearns_optimum(name):
    data, _, f_star = preset(name)
    _, result = train_centralized(data, "logistic", 1 / data.n_rows, OPTIONS)
    assert result.converged, result.reason
    assert (result.f - f_star) / f_star <= REL, (name, result.f, f_star, result.iterations)


@pytest.mark.parametrize("name", list(PRESETS))
def test_sqm_lbfgs_over_the_natural_split_reaches_sklearns_optimum(name):
    data, sites, f_star = preset(name)
    services = [SiteService(f"dc{i}", f"region{i}", data.take(rows))
                for i, rows in enumerate(sites) if len(rows)]
    assert len(services) == K
    fed = Federation([InProcessTransport(s) for s in services], home="dc0")
    try:
        result = train(fed, "sqm-lbfgs", TrainSpec(gtol=OPTIONS.gtol, max_rounds=5000))
    finally:
        fed.close()
    assert result.converged, result.reason
    assert (result.objective - f_star) / f_star <= REL, (name, result.objective, f_star,
                                                          result.rows[-1].rounds)
