"""``geodml audit verify``: check a site's signed audit log (:mod:`geodml.site.audit`).

For every line, in order:

1. it is a JSON record with the fields of its kind;
2. ``seq`` is one more than the previous record's, and ``prev`` is the previous
   record's ``hash`` (record 0: 64 zeros): nothing was removed, inserted or reordered;
3. ``hash`` is ``SHA-256(prev || canonical JSON of the record without hash and sig)``:
   nothing in it was edited;
4. ``sig`` verifies with the public key of the site's certificate (given with
   ``--cert``; its SHA-256 fingerprint must be the one in the genesis record, and, with
   ``--ca``, it must be signed by the deployment's CA).

The first failing line is reported with its line number, ``seq`` and call, and what is
wrong. Then, with ``--coordinator-audit``, every reply the coordinator's audit log says
it received from this site must be in the site's log with the same digest (a
message the site never signed, or records cut off the end of the site's log, show up
here). The summary counts what left the DC by kind (metadata, aggregates, raw rows)
and lists any raw-row exports and the smallest aggregate.
"""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from geodml.errors import GeodmlError
from geodml.site.audit import GENESIS_PREV, cert_fingerprint, record_hash

REQUIRED = ("seq", "time", "prev", "hash", "sig", "kind", "call")


class AuditVerifyError(GeodmlError):
    """The log failed a check; names the file, line and record."""


@dataclass
class AuditSummary:
    site: str
    records: int
    by_kind: Counter = field(default_factory=Counter)
    bytes_by_kind: Counter = field(default_factory=Counter)
    calls: Counter = field(default_factory=Counter)
    raw_exports: list[dict] = field(default_factory=list)
    smallest_aggregate: int | None = None
    restarts: int = 0
    matched: int | None = None  # coordinator records matched, when checked


def _verify_signature(cert: x509.Certificate, signature: bytes, data: bytes) -> bool:
    key = cert.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _load_cert(path: str | os.PathLike, label: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise AuditVerifyError(f"{path}: cannot read the {label} certificate ({e})") from None


def verify_site_log(path: str | os.PathLike, cert_path: str | os.PathLike,
                    ca_path: str | os.PathLike | None = None,
                    coordinator_audit: str | os.PathLike | None = None) -> AuditSummary:
    """Check a site's signed audit log; raises :class:`AuditVerifyError` at the first
    problem, else returns what left the DC."""
    path = Path(path)
    cert = _load_cert(cert_path, "site")
    if ca_path is not None:
        ca = _load_cert(ca_path, "CA")
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature) as e:
            raise AuditVerifyError(f"{cert_path} is not issued by the CA {ca_path} ({e})"
                                   ) from None
    fingerprint = cert_fingerprint(cert)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AuditVerifyError(f"{path}: unreadable ({e})") from None
    if not lines:
        raise AuditVerifyError(f"{path}: empty: no genesis record")
    summary, prev, digests = None, GENESIS_PREV, Counter()
    for number, line in enumerate(lines, 1):
        def fail(why: str, record: dict | None = None, number: int = number
                 ) -> AuditVerifyError:
            what = "" if record is None else (
                f" (seq {record.get('seq')}, {record.get('call') or record.get('kind')})")
            return AuditVerifyError(f"{path}:{number}{what}: {why}")

        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise fail(f"not a JSON record ({e})") from None
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            raise fail(f"not an audit record (needs {', '.join(REQUIRED)})")
        expected_seq = number - 1
        if record["seq"] != expected_seq or record["prev"] != prev:
            raise fail(f"the chain is broken: expected seq {expected_seq} following hash "
                       f"{prev[:12]}..., found seq {record['seq']} following "
                       f"{str(record['prev'])[:12]}... (a record was removed, inserted or "
                       "reordered)", record)
        if record_hash(record) != record["hash"]:
            raise fail("hash mismatch: the record was altered", record)
        try:
            signature = base64.b64decode(record["sig"], validate=True)
        except (ValueError, TypeError):
            raise fail("the signature is not base64", record) from None
        if not _verify_signature(cert, signature, bytes.fromhex(record["hash"])):
            raise fail(f"bad signature: not signed by the key of {cert_path}", record)
        kind = record["kind"]
        if number == 1:
            if kind != "genesis":
                raise fail("the first record is not the genesis record", record)
            summary = AuditSummary(record.get("site", "?"), 0)
        if kind in ("genesis", "restart") and record.get("certificate_sha256") != fingerprint:
            raise fail(f"signed with certificate {str(record.get('certificate_sha256'))[:16]}"
                       f"..., not {cert_path} ({fingerprint[:16]}...)", record)
        summary.records += 1
        summary.by_kind[kind] += 1
        if kind == "restart":
            summary.restarts += 1
        if record["call"] is not None:
            summary.calls[record["call"]] += 1
            summary.bytes_by_kind[kind] += int(record.get("bytes", 0))
            digests[record.get("digest")] += 1
        if kind == "raw-rows":
            summary.raw_exports.append({"line": number, "seq": record["seq"],
                                        "peer": record.get("peer"), "rows": record.get("rows"),
                                        "bytes": record.get("bytes")})
        if kind == "aggregate" and record.get("rows") is not None:
            rows = int(record["rows"])
            if summary.smallest_aggregate is None or rows < summary.smallest_aggregate:
                summary.smallest_aggregate = rows
        prev = record["hash"]
    if coordinator_audit is not None:
        summary.matched = _match_coordinator(Path(coordinator_audit), summary.site, digests)
    return summary


def _match_coordinator(path: Path, site: str, digests: Counter) -> int:
    """Every reply the coordinator logged from ``site`` must be one the site signed."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AuditVerifyError(f"{path}: unreadable ({e})") from None
    matched = 0
    for number, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise AuditVerifyError(f"{path}:{number}: not a JSON record ({e})") from None
        if rec.get("site") != site or rec.get("direction") != "up" or not rec.get("messages"):
            continue
        if rec.get("recovery") or rec.get("complete") is False:
            continue  # a recovery's replies are summed into one record (checked by replay);
            # an attempt cut off in transit holds part of a signed message
        digest = rec.get("digest")
        if digest is None:
            raise AuditVerifyError(f"{path}:{number}: the coordinator's record of {site} "
                                   f"{rec.get('call')} has no digest (written by an older "
                                   "geodml?)")
        if digests[digest] <= 0:
            raise AuditVerifyError(
                f"{path}:{number}: the coordinator received {rec.get('call')} round "
                f"{rec.get('round')} ({rec.get('bytes')} bytes) from {site}, but the site's "
                "log has no signed record of that message")
        digests[digest] -= 1
        matched += 1
    return matched
