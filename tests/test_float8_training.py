"""float8 (scaled E5M2, 1 byte per entry) both ways on rare features: the exact methods
compress for a while, switch to full precision near the end and reach the float64 run's
optimum; down vectors reach support-restricted sites exactly as the coordinator holds
them; a gRPC run equals the in-process one."""

from __future__ import annotations

import pytest

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.centralized import train_centralized
from geodml.data.dataset import Dataset
from geodml.data.partition import PartitionSpec, partition_source, site_dirs
from geodml.data.source import DatasetSource
from geodml.federation import CompressionConfig
from geodml.job.compression import AdaptivePrecision
from geodml.models import RegularizedObjective, SiteSums, get_loss

from .test_compressed_training import in_process_and_grpc
from .test_preconditioner import TIGHT, federation, rare_features, split

F8 = '{"kind": "cast", "dtype": "float8"}'  # both ways, no error feedback (as the CLI's)


@pytest.fixture(scope="module")
def data() -> Dataset:
    return rare_features()


@pytest.fixture(scope="module")
def optimum(data) -> float:
    return train_centralized(data, options=TIGHT)[1].f


def _run(data: Dataset, optimum: float, method: str, config: CompressionConfig | None):
    with federation(split(data, 3), compression=config) as fed:
        result = train(fed, method, TrainSpec(gtol=1e-8, max_rounds=3000),
                       RunRecorder(fed, f_star=optimum))
        restricted = [fed.support(site) is not None for site in fed.names]
    return result, restricted


@pytest.mark.parametrize(("method", "bytes_ratio"), [("sqm-lbfgs", 0.6),
                                                     ("fadl-subspace", 0.6)])
def test_float8_both_ways_reaches_the_float64_optimum(data, optimum, method, bytes_ratio):
    """Measured (3 sites, 3000 rows, 4000 Zipf features): to 1e-4, sqm-lbfgs 31.5 vector
    rounds and 164 KB against float64's 18.5 and 413 KB; fadl-subspace 15 and 108 KB
    against 12 and 269 KB. The policy switched at the 28th and 7th gradient, by the
    gradient norm (its direction check is off for casts; with it at 0.5, sqm-lbfgs
    switched at the 15th: 303 KB)."""
    exact, restricted = _run(data, optimum, method, None)
    policy = AdaptivePrecision()
    f8, _ = _run(data, optimum, method, CompressionConfig(up=F8, down=F8, precision=policy))
    assert all(restricted)  # every site gets v[S]: float8 must survive the restriction
    assert exact.converged and f8.converged, f8.reason
    assert f8.objective == pytest.approx(optimum, rel=1e-8)
    assert f8.objective == pytest.approx(exact.objective, rel=1e-8)
    # the objective reported is the one of the model returned: sites and coordinator
    # held the same points all along
    objective = RegularizedObjective([SiteSums(data.X, data.y, get_loss("logistic"))],
                                     1.0 / data.n_rows, data.n_features)
    assert objective.value(f8.w) == pytest.approx(f8.objective, rel=1e-12)
    assert not policy.compressing and policy.switched_at > 2  # compressed for a while
    assert f8.first_reaching(1e-4).wan_bytes < bytes_ratio * exact.first_reaching(
        1e-4).wan_bytes


def test_float8_grpc_run_equals_in_process_run(data, tmp_path):
    partition_source(DatasetSource(data), tmp_path / "sites", PartitionSpec("iid", k=2, seed=5))
    local, remote = in_process_and_grpc(site_dirs(tmp_path / "sites"), tmp_path / "run",
                                        "fadl-subspace", F8, F8)
    assert len(remote.rows) > 3
    assert [r.objective for r in remote.rows] == [r.objective for r in local.rows]
    assert remote.wan_bytes == local.wan_bytes
