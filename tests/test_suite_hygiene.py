"""The suite's own hygiene on a busy machine: no process it starts outlives it.

A nested pytest session (this repository's conftest loaded as a plugin) runs a test
that fails with a child still running, and one that passes but leaves a process
behind; the first is killed when its test fails, the second fails the session.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from .conftest import REPO, SESSION_TOKEN
from .tools import processes
from .tools.timing import poll, scaled


def test_the_session_token_finds_children_and_orphans(tmp_path):
    pid_file = tmp_path / "orphan.pid"
    # the grandchild is re-parented to PID 1 when its shell exits: still found by token
    subprocess.run(["sh", "-c", f'{sys.executable} -c "import time; time.sleep(600)" & '
                    f"echo $! > {pid_file}"], check=True, timeout=scaled(30))
    orphan = int(poll(lambda: pid_file.read_text().strip() or None, 10, "the orphan's pid"))
    try:
        assert processes.live(orphan)
        assert orphan not in processes.descendants()
        assert orphan in processes.with_token(SESSION_TOKEN)
    finally:
        processes.kill_all([orphan])
    assert not processes.live(orphan)


def nested_pytest(tmp_path: Path, body: str) -> tuple[subprocess.CompletedProcess, int]:
    test = tmp_path / "test_nested.py"
    pid_file = tmp_path / "child.pid"
    test.write_text(textwrap.dedent(f"""
        import subprocess, sys
        def test_it():
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            open({str(pid_file)!r}, "w").write(str(child.pid))
            {body}
        """))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(test)],
        capture_output=True, text=True, timeout=scaled(120), env=env, cwd=tmp_path)
    return proc, int(pid_file.read_text())


def test_a_failed_tests_children_are_killed(tmp_path):
    proc, child = nested_pytest(tmp_path, "assert False, 'fails with a child running'")
    assert proc.returncode == 1, proc.stdout
    assert not processes.live(child)
    assert "still running" not in proc.stdout  # killed when its test failed


def test_a_process_left_behind_fails_the_session(tmp_path):
    proc, child = nested_pytest(tmp_path, "pass")
    assert "1 passed" in proc.stdout
    assert proc.returncode == 1, proc.stdout
    assert "processes started by this test session are still running" in proc.stdout
    assert f"{child}: {sys.executable} -c import time; time.sleep(600)" in proc.stdout
    assert not processes.live(child)
