"""The README's "Across real machines" steps, run as written on loopback: every command
a real `python -m geodml` process, two site servers with mutual TLS, and the
coordinator dialing them with ``--site ... --tls-dir``, with ``--deployment``, and
with a coordinator certificate of another name (``coordinator-1`` in ``coord/``)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geodml.model import LinearModel

REGIONS = {"us-east": "aws:us-east-1", "eu-west": "aws:eu-west-1"}
TIMEOUT = 300.0  # seconds for one command, generous for a busy 2-core machine


def geodml(*args, cwd: Path) -> str:
    """Run one geodml command to its end; its output, or a failure showing it."""
    proc = subprocess.run([sys.executable, "-m", "geodml", *map(str, args)], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 0, f"geodml {' '.join(map(str, args))}:\n{proc.stdout}"
    return proc.stdout


def failing(*args, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "geodml", *map(str, args)], cwd=cwd,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc.stdout


def _site_toml(name: str) -> str:
    return f"""name = "{name}"
region = "{REGIONS[name]}"
listen = "127.0.0.1:0"

[data]
path = "data/{name}/train"

[policy]
allow_raw_export = false

[tls]
ca = "certs/ca.pem"
cert = "certs/{name}.pem"
key = "certs/{name}.key"
"""


def _wait_for_port(proc: subprocess.Popen, port_file: Path, log: Path) -> int:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        if proc.poll() is not None:
            pytest.fail(f"site exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)  # polling a file another process writes, under a deadline
    pytest.fail(f"no port file {port_file} within {TIMEOUT} s:\n{log.read_text()}")


@pytest.fixture
def dcs(tmp_path):
    """Step 1 and 2: certificates, and one `geodml site serve` process per DC."""
    work = tmp_path
    geodml("generate", "data", "--regions", ",".join(REGIONS), "--rows", 3000,
           "--test-rows", 300, "--hash-bits", 10, "--workers", 1, cwd=work)
    geodml("certs", "init", "ca", cwd=work)
    for name in REGIONS:
        geodml("certs", "issue", "ca", name, "--role", "site", "--host", "127.0.0.1",
               cwd=work)
    geodml("certs", "issue", "ca", "coordinator", "--role", "coordinator", cwd=work)
    procs, ports = [], {}
    try:
        for name in REGIONS:  # every DC gets ca.pem and its own NAME.pem, NAME.key
            dc = work / name
            (dc / "certs").mkdir(parents=True)
            for f in ("ca.pem", f"{name}.pem", f"{name}.key"):
                shutil.copy(work / "ca" / f, dc / "certs" / f)
            (dc / "data").mkdir()
            shutil.copytree(work / "data" / name, dc / "data" / name)
            (dc / "site.toml").write_text(_site_toml(name))
            log = dc / "site.log"
            with open(log, "w") as out:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "geodml", "site", "serve", "--config", "site.toml",
                     "--port-file", "port"], cwd=dc, stdout=out, stderr=subprocess.STDOUT))
            ports[name] = _wait_for_port(procs[-1], dc / "port", log)
        yield work, ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _deployment(work: Path, ports: dict[str, int]) -> Path:
    """Step 3: the home DC's deployment file: every site's address and region, and
    the coordinator's [tls] files."""
    lines = ['home = "us-east"', "", "[tls]", 'ca = "ca/ca.pem"',
             'cert = "ca/coordinator.pem"', 'key = "ca/coordinator.key"']
    for name, port in ports.items():
        lines += ["", "[[sites]]", f'name = "{name}"', f'region = "{REGIONS[name]}"',
                  f'address = "127.0.0.1:{port}"']
    path = work / "deployment.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_readme_multi_dc_steps_work_as_written(dcs):
    work, ports = dcs
    sites = [a for name, port in ports.items() for a in ("--site", f"{name}=127.0.0.1:{port}")]
    deployment = _deployment(work, ports)

    planned = geodml("plan", deployment, "--calibration-rows", 1000, cwd=work)
    assert "recommended:" in planned and "centralize" in planned

    # `geodml train --site NAME=HOST:PORT ... --tls-dir ca`: the default method on sites
    out = geodml("train", *sites, "--tls-dir", "ca", "--out", "a.npz", cwd=work)
    assert "2 sites, home us-east: 6,000 rows" in out, out
    a = LinearModel.load(work / "a.npz")
    assert a.info["method"] == "fadl-subspace" and a.info["converged"]

    # --deployment alone: its sites and its [tls]; the modeled WAN time over its links
    out = geodml("train", "--method", "fadl-subspace", "--deployment", deployment,
                 "--out", "b.npz", cwd=work)
    assert "2 sites, home us-east: 6,000 rows" in out and "(modeled)" in out, out
    b = LinearModel.load(work / "b.npz")
    assert b.info["objective"] == pytest.approx(a.info["objective"], rel=1e-12)

    # what `certs issue --help`'s example writes: coordinator-1 into coord/
    geodml("certs", "issue", "ca", "coordinator-1", "--role", "coordinator", "--out", "coord",
           cwd=work)
    no_ca = failing("train", *sites, "--tls-dir", "coord", cwd=work)
    assert "coord has no ca.pem" in no_ca and "--tls-ca" in no_ca, no_ca
    out = geodml("train", *sites, "--tls-dir", "coord", "--tls-ca", "ca/ca.pem",
                 "--out", "c.npz", cwd=work)
    assert "2 sites" in out
    out = geodml("train", "--deployment", deployment, "--tls-ca", "ca/ca.pem", "--tls-cert",
                 "coord/coordinator-1.pem", "--tls-key", "coord/coordinator-1.key",
                 "--out", "d.npz", cwd=work)
    assert "2 sites" in out
    for name in ("c.npz", "d.npz"):
        assert LinearModel.load(work / name).info["objective"] == pytest.approx(
            a.info["objective"], rel=1e-12)

    no_tls = failing("train", *sites, cwd=work)
    assert "remote sites need --tls-dir" in no_tls, no_tls
