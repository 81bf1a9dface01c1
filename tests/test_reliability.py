"""Faults: a site killed and restarted mid-run, a site that stays away, a coordinator
killed and resumed, corrupted journals and checkpoints. Real site processes, real gRPC."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.federation import CompressionConfig, Federation
from geodml.federation.journal import Journal, JournalError
from geodml.federation.reliability import Reliability, SiteLostError
from geodml.job.compression import AdaptivePrecision
from geodml.model import LinearModel
from geodml.runs import RunDir, RunDirError, read_checked_json, write_checked_json
from geodml.site.config import DataConfig, SiteConfig
from geodml.site.launcher import LocalCluster

from .tools.timing import scaled

REGIONS = ("us-east", "eu-west", "ap-south")
SPEC = {"loss": "logistic", "gtol": 1e-6, "max_rounds": 200}


@pytest.fixture(scope="module")
def regional(tmp_path_factory):
    out = tmp_path_factory.mktemp("regional")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=2000,
                                     test_rows_per_region=200, hash_bits=10, seed=5), out)
    return site_dirs(out)


@pytest.fixture()
def cluster(regional, tmp_path):
    configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=p))
               for n, p in regional.items()]
    with LocalCluster(configs, tmp_path / "sites", insecure=True) as c:
        yield c


def federation(cluster, compress: str | None = None, **kw) -> Federation:
    """``compress``: that cast both ways (gradient sums up as changes), a precision policy."""
    if compress is not None:
        spec = f'{{"kind": "cast", "dtype": "{compress}"}}'
        kw["compression"] = CompressionConfig(up=spec, down=spec, precision=AdaptivePrecision())
    return Federation(cluster.transports(timeout=scaled(60)), home="us-east", **kw)


def run(fed: Federation, method: str = "fadl-subspace", on_row=None):
    return train(fed, method, TrainSpec(**SPEC), RunRecorder(fed, on_row=on_row))


RUNS = [("fadl-subspace", None), ("sqm-lbfgs", None), ("fadl-subspace", "float8")]


@pytest.fixture(scope="module")
def reference(regional, tmp_path_factory):
    """The uninterrupted runs, over gRPC."""
    configs = [SiteConfig(name=n, region=n, insecure=True, data=DataConfig(path=p))
               for n, p in regional.items()]
    out = {}
    with LocalCluster(configs, tmp_path_factory.mktemp("ref"), insecure=True) as c:
        for method, compress in RUNS:
            with federation(c, compress) as fed:
                out[method, compress] = run(fed, method)
    return out


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(("method", "compress"), RUNS)
def test_a_site_killed_and_restarted_mid_run_is_recovered_to_the_same_model(
        cluster, reference, method, compress):
    """With compression too: the restarted site's replayed session rebuilds the gradient
    it sends changes against (geodml.job.compression)."""
    restarted = []

    def kill_at_iteration_3(row) -> None:
        if row.iteration == 3 and not restarted:
            cluster.kill("eu-west")  # the next round finds it dead ...
            restarter = threading.Thread(target=cluster.restart, args=("eu-west",))
            restarter.start()  # ... and retries with backoff until it is back
            restarted.append(restarter)

    with federation(cluster, compress) as fed:
        result = run(fed, method, on_row=kill_at_iteration_3)
        assert fed.recoveries == {"eu-west": 1}
        calls = fed.meter.calls
    restarted[0].join()
    ref = reference[method, compress]
    assert ref.converged, ref.reason
    assert result.reason == ref.reason
    assert relative(result.w, ref.w) <= 1e-9
    assert result.rows[-1].iteration == ref.rows[-1].iteration
    assert calls["Recover"] == 1  # the replay to the restarted site is metered
    assert result.wan_bytes > ref.wan_bytes  # ... and so costs bytes


def test_a_site_away_past_its_deadline_stops_the_run_naming_it(cluster):
    def kill(row) -> None:
        if row.iteration == 2:
            cluster.kill("ap-south")

    policy = Reliability(site_deadline=1.0, backoff_initial=0.05)
    with federation(cluster, reliability=policy) as fed, \
            pytest.raises(SiteLostError, match="site ap-south unreachable") as err:
        run(fed, "sqm-lbfgs", on_row=kill)
    assert err.value.site == "ap-south"
    assert "--resume" in str(err.value)


def test_with_drop_lost_sites_the_run_finishes_on_the_other_dcs_and_says_so(cluster):
    def kill(row) -> None:
        if row.iteration == 2:
            cluster.kill("ap-south")

    policy = Reliability(site_deadline=1.0, backoff_initial=0.05, drop_lost_sites=True)
    with federation(cluster, reliability=policy) as fed:
        result = run(fed, "sqm-lbfgs", on_row=kill)
        assert list(fed.dropped) == ["ap-south"]
        assert "unreachable" in fed.dropped["ap-south"]
        assert fed.names == ["us-east", "eu-west"]
        rows = fed.n_rows
    assert result.converged
    assert rows == 4000  # the objective now covers the two remaining DCs


def test_a_site_that_comes_back_with_other_data_is_refused(cluster, regional, tmp_path):
    other = tmp_path / "other"
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=2000,
                                     test_rows_per_region=200, hash_bits=10, seed=6), other)

    def swap(row) -> None:
        if row.iteration == 2:
            cluster.kill("eu-west")
            site = cluster.sites["eu-west"]
            site.config = site.config.model_copy(
                update={"data": DataConfig(path=site_dirs(other)["eu-west"])})
            cluster.restart("eu-west")

    with federation(cluster) as fed, pytest.raises(Exception, match="other data"):
        run(fed, "sqm-lbfgs", on_row=swap)


# -- the coordinator: killed, resumed ------------------------------------------------------
def geodml(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "geodml", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def site_args(cluster) -> list[str]:
    return [a for name, s in cluster.sites.items() for a in ("--site", f"{name}={s.address}")]


def journaled_calls(journal: Path) -> int:
    """The complete calls in a journal another process is appending to: none until its
    header is whole (the writer may be between creating the file and writing the
    header); a record still being written is not counted (``_scan`` stops there)."""
    from geodml.federation.journal import MAGIC, _scan

    try:
        if journal.stat().st_size < len(MAGIC):
            return 0
    except FileNotFoundError:
        return 0
    return sum(1 for _ in _scan(journal))


def wait_for_calls(journal: Path, calls: int, process, deadline: float = 120) -> None:
    """Until the run has journaled ``calls`` complete calls to a site (each record is
    fsync-ed as its call ends, so this sees the run's progress call by call)."""
    end = time.monotonic() + scaled(deadline)
    while time.monotonic() < end:
        if journaled_calls(journal) >= calls:
            return
        assert process.poll() is None, process.stdout.read()
        time.sleep(0.005)  # polling a file the run writes; bounded by the deadline
    raise AssertionError(f"fewer than {calls} calls journaled within {scaled(deadline)} s")


@pytest.mark.parametrize("compress", ["none", "float8"])
def test_a_killed_coordinator_resumes_to_the_same_model_and_byte_totals(cluster, tmp_path,
                                                                       compress):
    """float8: the replayed journal rebuilds the gradients the sites send changes against."""
    common = ["train", "--method", "fadl-subspace", "--insecure", "--home", "us-east",
              "--gtol", "1e-10", "--compress", compress,
              *site_args(cluster)]  # a long run: killed well before its end
    ref = geodml(*common, "--run-dir", str(tmp_path / "ref"), "--out", str(tmp_path / "ref.npz"))
    assert ref.wait(scaled(180)) == 0, ref.stdout.read()

    crashed = geodml(*common, "--run-dir", str(tmp_path / "run"),
                     "--out", str(tmp_path / "run.npz"))
    ref_cp = read_checked_json(tmp_path / "ref" / "checkpoint.json")
    total = ref_cp["journal"]["eu-west"]
    assert total >= 40, total  # room to be killed mid-way
    wait_for_calls(tmp_path / "run" / "journal" / "eu-west.journal", total // 3, crashed)
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    checkpoint = tmp_path / "run" / "checkpoint.json"
    before = read_checked_json(checkpoint) if checkpoint.exists() else {
        "done": False, "meter": {"wan_bytes": 0}}
    assert not before["done"]

    resumed = geodml("train", "--resume", str(tmp_path / "run"))
    out, _ = resumed.communicate(timeout=scaled(180))
    assert resumed.returncode == 0, out
    assert "resuming the run" in out

    a, b = LinearModel.load(tmp_path / "run.npz"), LinearModel.load(tmp_path / "ref.npz")
    assert relative(a.w, b.w) <= 1e-9
    after = read_checked_json(tmp_path / "run" / "checkpoint.json")
    assert after["done"] and after["iteration"] == ref_cp["iteration"]
    # the totals include the work before the crash: at least the uninterrupted run's
    assert after["meter"]["wan_bytes"] >= ref_cp["meter"]["wan_bytes"]
    assert after["meter"]["wan_bytes"] >= before["meter"]["wan_bytes"]

    again = geodml("train", "--resume", str(tmp_path / "run"))
    out, _ = again.communicate(timeout=scaled(60))
    assert again.returncode == 0 and "has finished" in out


def test_resume_refuses_other_options_and_a_used_run_dir(cluster, tmp_path):
    common = ["train", "--method", "sqm-lbfgs", "--insecure", *site_args(cluster),
              "--max-iter", "2", "--out", str(tmp_path / "m.npz")]
    first = geodml(*common, "--run-dir", str(tmp_path / "run"))
    assert first.wait(scaled(120)) == 0, first.stdout.read()
    second = geodml(*common, "--run-dir", str(tmp_path / "run"))
    out, _ = second.communicate(timeout=scaled(60))
    assert second.returncode == 1 and "already holds a run" in out
    mixed = geodml("train", "--resume", str(tmp_path / "run"), "--gtol", "1e-3")
    out, _ = mixed.communicate(timeout=scaled(60))
    assert mixed.returncode == 2 and "--gtol" in out


# -- corrupted files: clear errors, never a silent fresh start ----------------------------
def test_a_corrupted_checkpoint_is_a_clear_error(tmp_path):
    run = RunDir.create(tmp_path / "run", {"method": "x"})
    run.save_checkpoint({"iteration": 3, "journal": {}}, force=True)
    path = tmp_path / "run" / "checkpoint.json"
    assert run.checkpoint()["iteration"] == 3
    path.write_text(path.read_text().replace('"iteration": 3', '"iteration": 4'))
    with pytest.raises(RunDirError, match=r"checkpoint\.json: checksum mismatch"):
        run.checkpoint()
    path.write_text(path.read_text()[:40])
    with pytest.raises(RunDirError, match=r"checkpoint\.json: unreadable"):
        run.checkpoint()
    with pytest.raises(RunDirError, match="already holds a run"):
        RunDir.create(tmp_path / "run", {})


def test_checked_json_survives_only_whole(tmp_path):
    write_checked_json(tmp_path / "a.json", {"x": [1, 2]})
    assert read_checked_json(tmp_path / "a.json") == {"x": [1, 2]}
    assert not (tmp_path / "a.json.tmp").exists()


def _journal_with(tmp_path, n: int) -> Path:
    j = Journal(tmp_path / "j")
    sj = j.site("eu-west")
    for i in range(n):
        w = sj.begin("Evaluate", i + 1)
        w.request(b"request %d" % i)
        w.reply(b"reply %d" % i)
        w.finish((10, 1), (20, 2), 0.1, None)
        sj.commit()
    j.close()
    return tmp_path / "j" / "eu-west.journal"


def test_a_journal_cut_mid_record_keeps_the_whole_records(tmp_path):
    path = _journal_with(tmp_path, 3)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 5)  # the last call was being written when the process died
    sj = Journal(tmp_path / "j", resume=True).site("eu-west")
    records = list(sj.pending)
    assert [r.round for r in records] == [1, 2]
    assert records[1].replies == [b"reply 1"] and records[1].up == (20, 2)
    assert sj.records == 2


def test_a_corrupted_journal_record_is_named(tmp_path):
    path = _journal_with(tmp_path, 3)
    data = bytearray(path.read_bytes())
    at = data.index(b"request 1")
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(JournalError, match=r"eu-west.journal: record 2 at byte \d+ is corrupt"):
        Journal(tmp_path / "j", resume=True).site("eu-west")


def test_a_journal_shorter_than_its_checkpoint_is_refused(tmp_path):
    run = RunDir.create(tmp_path / "run", {})
    _journal_with(tmp_path / "run", 2)
    os.replace(tmp_path / "run" / "j", run.journal_dir)
    run.save_checkpoint({"journal": {"eu-west": 5}}, force=True)
    with pytest.raises(RunDirError, match=r"2 calls, but checkpoint\.json says 5"):
        run.open_journal(resume=True)


def test_a_compact_journal_keeps_only_the_history_since_the_last_prepare(tmp_path):
    from geodml.federation.journal import DIGEST_PREFIX, replies_digest

    sj = Journal(tmp_path / "j", compact=True).site("eu-west")
    for method, round_id in [("Prepare", None), ("Evaluate", 1), ("Prepare", None),
                             ("Evaluate", 2)]:
        w = sj.begin(method, round_id)
        w.request(b"req")
        w.reply(b"a" * 1000)
        w.reply(b"b")
        w.finish((3, 1), (1001, 2), 0.0, None)
        sj.commit()
    history = list(sj.since_last_prepare())
    assert [(r.method, r.round) for r in history] == [("Prepare", None), ("Evaluate", 2)]
    assert history[0].replies == [b"a" * 1000, b"b"]  # a Prepare's replies are kept whole
    assert history[1].replies == [replies_digest([b"a" * 1000, b"b"])]
    assert history[1].replies[0].startswith(DIGEST_PREFIX)
    assert sj.path.stat().st_size < 2500  # the first Prepare and Evaluate are gone


def test_a_run_stopped_by_a_lost_site_resumes_once_the_site_is_back(cluster, tmp_path):
    """The whole story of the SiteLostError message: the run stops naming the site; the
    site comes back (a new process, same data); --resume finishes with the same model."""
    common = ["train", "--method", "sqm-lbfgs", "--insecure", "--home", "us-east",
              "--gtol", "1e-8", *site_args(cluster)]
    ref = geodml(*common, "--out", str(tmp_path / "ref.npz"))
    assert ref.wait(scaled(180)) == 0, ref.stdout.read()

    run = geodml(*common, "--site-deadline", "1", "--run-dir", str(tmp_path / "run"),
                 "--out", str(tmp_path / "run.npz"))
    wait_for_calls(tmp_path / "run" / "journal" / "ap-south.journal", 8, run)
    cluster.kill("ap-south")
    out, _ = run.communicate(timeout=scaled(120))
    assert run.returncode == 1, out
    assert "site ap-south unreachable" in out and "--resume" in out

    cluster.restart("ap-south")
    resumed = geodml("train", "--resume", str(tmp_path / "run"))
    out, _ = resumed.communicate(timeout=scaled(180))
    assert resumed.returncode == 0, out
    a, b = LinearModel.load(tmp_path / "run.npz"), LinearModel.load(tmp_path / "ref.npz")
    assert relative(a.w, b.w) <= 1e-9
    assert read_checked_json(tmp_path / "run" / "checkpoint.json")["recovered_sites"] == {
        "ap-south": 1}


def test_late_request_writes_of_an_abandoned_call_do_not_corrupt_the_journal(tmp_path):
    """gRPC reads a request stream on its own thread, which can still be writing the
    journal after the call failed and was abandoned (seen when a site was killed)."""
    sj = Journal(tmp_path / "j").site("ap-south")
    failed = sj.begin("Evaluate", 7)
    failed.request(b"first chunk")
    sj.abandon()
    failed.request(b"late chunk, after the failure")  # must be dropped
    retry = sj.begin("Evaluate", 7)
    retry.request(b"whole request")
    failed.request(b"even later")  # still dropped: the retry's record stays whole
    retry.reply(b"reply")
    retry.finish((13, 1), (5, 1), 0.0, None)
    sj.commit()
    sj.close()
    reopened = Journal(tmp_path / "j", resume=True).site("ap-south")
    (record,) = list(reopened.pending)
    assert record.requests == [b"whole request"] and record.replies == [b"reply"]
