"""The site's own signed, hash-chained audit log and `geodml audit verify`: real mTLS
site processes, a real run, then the log is checked clean and after tampering."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from geodml.algorithms.record import RunRecorder
from geodml.algorithms.registry import TrainSpec, train
from geodml.audit import AuditVerifyError, verify_site_log
from geodml.data.partition import site_dirs
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.federation import AuditLog, Federation
from geodml.site.config import AuditConfig, DataConfig, SiteConfig, TlsConfig
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.wire.tls import init_ca, issue

REGIONS = ("us-east", "eu-west")


@pytest.fixture(scope="module")
def audited_run(tmp_path_factory):
    """A two-DC run over mTLS; eu-west keeps a signed log and allows export."""
    root = tmp_path_factory.mktemp("audited")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=1500,
                                     test_rows_per_region=100, hash_bits=10, seed=2),
                   root / "data")
    certs = root / "certs"
    init_ca(certs)
    for name in REGIONS:
        issue(certs, certs, name, "site")
    coordinator = issue(certs, certs, "coordinator", "coordinator").tls_files()
    configs = [SiteConfig(
        name=n, region=n, data=DataConfig(path=p),
        policy=Policy(allow_raw_export=(n == "eu-west")),
        tls=TlsConfig(ca=certs / "ca.pem", cert=certs / f"{n}.pem", key=certs / f"{n}.key"),
        audit=AuditConfig(path=root / f"{n}-audit.jsonl"))
        for n, p in site_dirs(root / "data").items()]
    with LocalCluster(configs, root / "run", client_tls=coordinator) as cluster, \
            Federation(cluster.transports(), home="us-east",
                       audit=AuditLog(root / "coordinator-audit.jsonl")) as fed:
        train(fed, "sqm-lbfgs", TrainSpec(gtol=1e-5), RunRecorder(fed))
        fed.export("eu-west")
    return root, certs


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_clean_log_verifies_and_says_what_left_the_dc(audited_run):
    root, certs = audited_run
    s = verify_site_log(root / "eu-west-audit.jsonl", certs / "eu-west.pem", certs / "ca.pem",
                        root / "coordinator-audit.jsonl")
    assert s.site == "eu-west"
    assert s.calls["Evaluate"] > 3 and s.calls["LineSearch"] >= 1
    assert s.by_kind["raw-rows"] >= 1 and s.raw_exports[0]["rows"] > 0  # the export
    assert s.smallest_aggregate == 1500
    coordinator_up = [r for r in lines(root / "coordinator-audit.jsonl")
                      if r["site"] == "eu-west" and r["direction"] == "up" and r["messages"]]
    assert s.matched == len(coordinator_up) > 0


def test_the_cli_verifies_and_reports(audited_run):
    root, certs = audited_run
    out = subprocess.run(
        [sys.executable, "-m", "geodml", "audit", "verify", str(root / "us-east-audit.jsonl"),
         "--cert", str(certs / "us-east.pem"), "--ca", str(certs / "ca.pem"),
         "--coordinator-audit", str(root / "coordinator-audit.jsonl")],
        capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified" in out.stdout and "no raw rows left this DC" in out.stdout


def tampered(root, name: str, edit) -> object:
    records = lines(root / "eu-west-audit.jsonl")
    edit(records)
    path = root / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    return path


@pytest.mark.parametrize(("name", "edit", "message"), [
    ("edited", lambda rs: rs[5].update(bytes=rs[5]["bytes"] - 1),
     r":6 \(seq 5, \w+\): hash mismatch: the record was altered"),
    ("removed", lambda rs: rs.pop(4), r":5 \(seq 5, \w+\): the chain is broken"),
    ("reordered", lambda rs: rs.insert(3, rs.pop(6)), r":4 \(seq 6, \w+\): the chain is broken"),
    ("hidden-export", lambda rs: rs.__setitem__(-1, {**rs[-1], "kind": "aggregate"}),
     r"hash mismatch"),
], ids=["edited", "removed", "reordered", "hidden-export"])
def test_a_tampered_log_fails_naming_the_record(audited_run, name, edit, message):
    root, certs = audited_run
    path = tampered(root, name, edit)
    with pytest.raises(AuditVerifyError, match=message):
        verify_site_log(path, certs / "eu-west.pem")
    out = subprocess.run([sys.executable, "-m", "geodml", "audit", "verify", str(path),
                          "--cert", str(certs / "eu-west.pem")], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{name}.jsonl:" in out.stderr


def test_a_rehashed_forgery_fails_the_signature(audited_run):
    """Editing a record and recomputing its hash (and the chain after it) still needs
    the site's key to sign: the signature check catches it."""
    from geodml.site.audit import record_hash

    root, certs = audited_run

    def forge(records):
        records[5]["bytes"] += 1
        for i in range(5, len(records)):
            records[i]["prev"] = records[i - 1]["hash"]
            records[i]["hash"] = record_hash(records[i])

    with pytest.raises(AuditVerifyError, match=r":6 \(seq 5, \w+\): bad signature"):
        verify_site_log(tampered(root, "forged", forge), certs / "eu-west.pem")


def test_another_sites_certificate_and_a_cut_log_are_caught(audited_run):
    root, certs = audited_run
    with pytest.raises(AuditVerifyError, match=r"bad signature|signed with certificate"):
        verify_site_log(root / "eu-west-audit.jsonl", certs / "us-east.pem")
    cut = tampered(root, "cut", lambda rs: rs.pop())  # the export's record cut off the end
    verify_site_log(cut, certs / "eu-west.pem")  # the chain alone cannot see a cut end ...
    with pytest.raises(AuditVerifyError, match="has no signed record of that message"):
        verify_site_log(cut, certs / "eu-west.pem",  # ... the coordinator's log does
                        coordinator_audit=root / "coordinator-audit.jsonl")


def test_signatures_are_real_ecdsa_over_the_hash(audited_run):
    root, _ = audited_run
    first = lines(root / "eu-west-audit.jsonl")[0]
    assert first["kind"] == "genesis" and first["prev"] == "0" * 64
    assert len(base64.b64decode(first["sig"])) >= 64  # a DER-encoded P-256 signature
