"""A 256 MB model vector (2^26 float32) crosses the wire with bounded memory.

The coordinator and the site are separate processes; each one's peak RSS (VmHWM,
reset through /proc/PID/clear_refs just before the round) is compared with its RSS
before the vector existed. Linux only: skipped elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.data import Dataset, FeatureSpace, save_dataset
from geodml.site.config import DataConfig, SiteConfig
from geodml.site.launcher import LocalCluster

from .tools.timing import scaled

LOG2_DIM = 26
CLIENT = Path(__file__).parent / "tools" / "big_vector_client.py"


def rss(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(),
                    reason="needs Linux /proc to read and reset peak RSS")
def test_a_256_mb_vector_goes_through_with_less_than_twice_its_size(tmp_path):
    d = 1 << LOG2_DIM
    rng = np.random.default_rng(0)
    rows, per_row = 2000, 8
    X = sp.csr_matrix((np.ones(rows * per_row, np.float32),
                       rng.integers(0, d, rows * per_row).astype(np.int32),
                       np.arange(0, rows * per_row + 1, per_row)), shape=(rows, d))
    save_dataset(tmp_path / "site", Dataset(X, (rng.random(rows) < 0.3).astype(float),
                                            FeatureSpace(d)))
    config = SiteConfig(name="site", insecure=True, data=DataConfig(path=tmp_path / "site"))
    with LocalCluster([config], tmp_path / "run", insecure=True) as cluster:
        site = cluster.sites["site"]
        Path(f"/proc/{site.process.pid}/clear_refs").write_text("5")  # reset its peak RSS
        site_before = rss(site.process.pid, "VmRSS")
        out = subprocess.run([sys.executable, str(CLIENT), site.address, str(LOG2_DIM)],
                             capture_output=True, text=True, timeout=scaled(300), check=True)
        site_peak = rss(site.process.pid, "VmHWM")
    report = json.loads(out.stdout)
    vector = report["vector_bytes"]
    assert vector == 4 * d
    assert report["wan_bytes"] > vector  # it really went over the wire, densely
    assert np.isfinite(report["loss_sum"])
    coordinator_growth = report["peak"] - report["rss_before"]
    site_growth = site_peak - site_before
    ratios = (coordinator_growth / vector, site_growth / vector)
    assert max(ratios) < 2, f"peak RSS growth / vector size: coordinator, site = {ratios}"
