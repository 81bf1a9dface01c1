"""The site's own audit log: every message that leaves the DC, hash-chained and signed.

The coordinator's audit log says what it received; a DC's owner should not have to
trust it. With ``[audit] path = ...`` in its config, a site writes, in its own DC, one
JSON line per reply it sends::

    {"seq": n, "time": t, "peer": CN, "call": "Evaluate", "kind": "aggregate",
     "content": "loss sum, gradient sum", "rows": 2000, "messages": 3, "bytes": 8213,
     "digest": SHA-256 of the messages, "complete": true,
     "prev": hash of record n-1, "hash": h_n, "sig": ECDSA(h_n)}

    h_n = SHA-256( prev || canonical JSON of the record without hash and sig )

``digest`` is SHA-256 over the serialized reply messages, each prefixed by its length
(4 bytes, little-endian): the coordinator computes the same over what it received and
writes it in its own audit log, so the two logs can be matched message by message.
``sig`` is the signature of ``h_n`` with the key of the site's TLS certificate (ECDSA
with SHA-256 for the EC keys ``geodml certs`` issues). Record 0 is a genesis record
naming the site, the SHA-256 fingerprint of its certificate and its data fingerprint.

Editing a record breaks its hash; removing or reordering records breaks the chain;
forging one needs the site's private key. ``geodml audit verify`` checks all three
(:mod:`geodml.audit`). What the chain cannot show by itself is records cut off at
the end; matching against the coordinator's log shows those.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from geodml.errors import ConfigError

GENESIS_PREV = "0" * 64

def record_hash(record: dict) -> str:
    """``SHA-256(prev || canonical JSON of the record without hash and sig)``."""
    body = {k: v for k, v in record.items() if k not in ("hash", "sig")}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((record["prev"] + canonical).encode()).hexdigest()


def sign(key, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    raise ConfigError(f"audit signing needs an EC or Ed25519 key, not {type(key).__name__}")


def cert_fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


class SignedAuditLog:
    """Appends signed, hash-chained records to the site's audit file (thread-safe)."""

    def __init__(self, path: str | os.PathLike, cert_path: str | os.PathLike,
                 key_path: str | os.PathLike, site: str, data_fingerprint: str):
        self.path = Path(path)
        try:
            cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
            self._key = serialization.load_pem_private_key(Path(key_path).read_bytes(), None)
        except (OSError, ValueError) as e:
            raise ConfigError(f"audit: cannot load the site's certificate and key "
                              f"({cert_path}, {key_path}): {e}") from None
        self._lock = threading.Lock()
        self._seq, self._prev = 0, GENESIS_PREV
        identity = {"call": None, "site": site, "certificate_sha256": cert_fingerprint(cert),
                    "data_fingerprint": data_fingerprint}
        if self.path.exists() and self.path.stat().st_size:
            last = self._last_line()
            try:
                record = json.loads(last)
                self._seq, self._prev = int(record["seq"]) + 1, record["hash"]
            except (ValueError, KeyError) as e:
                raise ConfigError(f"{self.path}: the last record is unreadable ({e}); "
                                  "check it with geodml audit verify") from None
            kind = "restart"  # a restarted site continues its chain and says so
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            kind = "genesis"
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (in close())
        self.append({**identity, "kind": kind})

    def _last_line(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            f.seek(max(0, end - 65536))
            lines = f.read().splitlines()
        return lines[-1].decode("utf-8", "replace") if lines else ""

    def append(self, fields: dict) -> None:
        with self._lock:
            record = {**fields, "seq": self._seq, "time": time.time(), "prev": self._prev}
            record["hash"] = record_hash(record)
            record["sig"] = base64.b64encode(
                sign(self._key, bytes.fromhex(record["hash"]))).decode()
            self._file.write(json.dumps(record, sort_keys=True) + "\n")
            self._file.flush()
            self._seq, self._prev = self._seq + 1, record["hash"]

    def close(self) -> None:
        with self._lock:
            self._file.close()
