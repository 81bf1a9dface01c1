"""Shared fixtures. Real datasets come from ../shared/datasets when present.

Robust on a busy machine (tests/tools/timing.py, tests/tools/processes.py):

- deadlines are scaled by ``GEODML_TEST_TIME_SCALE`` (default: from the load
  average), the site launcher's start deadline included;
- every process the suite starts inherits ``GEODML_TEST_SESSION=<uuid>``; when a
  test fails, every process it started (and their children) is killed; when the
  session ends, a process of this session still alive fails the run, is listed
  and is killed.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from .tools import processes
from .tools.timing import scaled

SESSION_TOKEN = uuid.uuid4().hex  # fresh: a nested session must not claim its parent
os.environ[processes.ENV] = SESSION_TOKEN

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(
    os.environ.get("GEODML_SHARED_DATASETS", REPO.parent / "shared" / "datasets")
)


def shared_path(relative: str) -> Path:
    """Path of a file under ../shared/datasets, or skip the test with the reason."""
    p = SHARED_DATASETS / relative
    if not p.exists():
        pytest.skip(f"real dataset {relative} not available ({SHARED_DATASETS} absent)")
    return p


@pytest.fixture
def shared():
    return shared_path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, for the fixture below."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_report_{report.when}", report)


@pytest.fixture(autouse=True)
def _machine_scaled_and_reaped(request):
    """Scale the site launcher's deadline to the machine; kill what a failed test
    started (its processes, with their children)."""
    from geodml.site import launcher

    launcher.READY_TIMEOUT = scaled(60.0)
    before = set(processes.descendants())
    yield
    failed = any(getattr(getattr(request.node, f"_report_{when}", None), "failed", False)
                 for when in ("setup", "call"))
    if failed:
        processes.kill_all(p for p in processes.descendants() if p not in before)


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a process started by this session outlives it."""
    deadline = time.monotonic() + scaled(10.0)
    left = processes.with_token(SESSION_TOKEN)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)  # processes told to stop may take a moment; bounded
        left = processes.with_token(SESSION_TOKEN)
    if not left:
        return
    lines = "\n".join(f"  {p}: {processes.command_line(p)}" for p in left)
    session.config.get_terminal_writer().line(
        f"\nprocesses started by this test session are still running; killing them:\n"
        f"{lines}", red=True)
    processes.kill_all(left)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
