"""Secure aggregation: the coordinator learns the sum of the sites' numbers, not one site's.

Every pair of sites ``{i, j}`` agrees on a secret by X25519 key exchange (each site's
public key reaches the others through the coordinator, in ``Describe`` and ``Prepare``)
and derives a 256-bit key per job::

    k_ij = HKDF-SHA256(X25519(sk_i, pk_j), salt = job nonce, info = "geodml secagg" | i | j)

with ``i < j`` by name. For round ``r`` and reply kind ``c`` the pair's mask is the
ChaCha20 keystream of ``k_ij`` with nonce ``(counter 0, r, c)``, read as little-endian
uint64 ring elements ``m_ij`` (mod ``2^64``). Site ``i`` sends

    y_i = enc(x_i) + sum_{j > i} m_ij - sum_{j < i} m_ij        (mod 2^64)

where ``enc(x) = round(x * 2^f)`` in two's complement (``f`` fraction bits, by default chosen
from the job's total rows so that per-row means are resolved to ``2^-44``). Every
``m_ij`` appears once with each sign, so ``sum_i y_i = enc(sum_i x_i)`` up to rounding
(at most ``K / 2^(f+1)`` per element); without the pair keys each ``y_i`` is uniformly
distributed, whatever ``x_i`` is. A value with ``|x| >= 2^(63-f) / K`` could wrap the
sum around, so it is refused (``FixedPointOverflowError``), never silently wrong.

Dropped sites: a request may list ``dropped`` peers; their pair masks are left out, so
the survivors' replies sum to the survivors' sum. The coordinator re-asks the survivors
for a round a site dropped out of; they answer the same numbers from their cache, masked
without the lost peer. The only extra the coordinator learns is the masks of the pairs
with the lost site for that round, which hide nothing once that site is gone (its reply
for that round never arrived: that is why it was dropped).

Threat model: an honest-but-curious coordinator that relays the public keys faithfully
(sites do not sign them), and sites that do not collude with it.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from geodml.errors import GeodmlError

MEAN_BITS = 44  # fixed-point resolution relative to per-row means (see fraction_bits_for)
NONCE_BYTES = 16
KEY_BYTES = 32
_INFO = b"geodml secagg v1"
# reply kinds, so two messages of one round never share a mask
REPLY_KINDS = {"Evaluate": 1, "LineSearch": 2, "LocalSolve": 3, "Subspace": 4}


class SecureAggregationError(GeodmlError):
    """A secure-aggregation setup or value the protocol cannot take."""


class FixedPointOverflowError(SecureAggregationError):
    """A value too large for the fixed-point range: the masked sum could wrap around."""


def new_nonce() -> bytes:
    """A fresh job nonce (the coordinator makes one per Prepare)."""
    return os.urandom(NONCE_BYTES)


def site_key(seed: bytes | None = None) -> X25519PrivateKey:
    """A site's X25519 key: derived from ``seed`` (its TLS private key, so a restarted
    site keeps its key and can be recovered), or random."""
    if seed is None:
        return X25519PrivateKey.generate()
    raw = hashlib.blake2b(seed, digest_size=KEY_BYTES, person=b"geodml-secagg").digest()
    return X25519PrivateKey.from_private_bytes(raw)


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def fraction_bits_for(rows: int, mean_bits: int = MEAN_BITS) -> int:
    """Fraction bits for sums over ``rows`` rows: ``mean_bits - ceil(log2 rows)``, so the
    per-row means the coordinator computes from the sums are resolved to ``2^-mean_bits``
    (6e-14) whatever the data's size, and each site's sums may reach
    ``2^(63 - mean_bits) rows / K`` (per-row means up to 5e5 / K)."""
    return int(min(52, max(0, mean_bits - int(np.ceil(np.log2(max(2, rows)))))))


def limit(fraction_bits: int, sites: int) -> float:
    """Largest ``|x|`` a site may send: ``K`` such values sum without wrapping."""
    return 2.0 ** (63 - fraction_bits) / max(1, sites)


def encode(x: np.ndarray, fraction_bits: int, sites: int, what: str = "value") -> np.ndarray:
    """``round(x * 2^f)`` as uint64 ring elements (two's complement)."""
    x = np.asarray(x, dtype=np.float64)
    bound = limit(fraction_bits, sites)
    if x.size and not np.all(np.abs(x) < bound):
        worst = float(np.max(np.abs(x))) if np.all(np.isfinite(x)) else float("nan")
        raise FixedPointOverflowError(
            f"{what}: |value| {worst:.4g} is beyond the fixed-point range {bound:.4g} "
            f"({fraction_bits} fraction bits, {sites} sites); train with fewer "
            "(--secure-fraction-bits)")
    return np.rint(np.ldexp(x, fraction_bits)).astype(np.int64).view(np.uint64)


def decode(ring: np.ndarray, fraction_bits: int) -> np.ndarray:
    """The float64 values of ring elements (a sum of encodings)."""
    return np.ldexp(np.asarray(ring, dtype=np.uint64).view(np.int64).astype(np.float64),
                    -fraction_bits)


def ring_sum(parts: Iterable[np.ndarray]) -> np.ndarray:
    """The sum mod ``2^64`` of uint64 vectors of one length."""
    parts = list(parts)
    total = np.zeros(len(parts[0]), dtype=np.uint64)
    for p in parts:
        np.add(total, p, out=total)  # uint64 arithmetic wraps: exactly mod 2^64
    return total


@dataclass(frozen=True)
class Peer:
    site: str
    public_key: bytes


class Masker:
    """One site's side of a job: the pair keys with every peer, and its masks."""

    def __init__(self, me: str, key: X25519PrivateKey, peers: list[Peer], nonce: bytes,
                 fraction_bits: int):
        names = [p.site for p in peers]
        if len(set(names)) != len(names):
            raise SecureAggregationError("the peer list names a site twice")
        if len(peers) < 2:
            raise SecureAggregationError("secure aggregation needs at least 2 sites")
        if len(nonce) != NONCE_BYTES:
            raise SecureAggregationError(f"the job nonce must be {NONCE_BYTES} bytes")
        if not 0 <= fraction_bits <= 52:
            raise SecureAggregationError("fraction_bits must be in [0, 52]")
        mine = public_bytes(key)
        by_name = {p.site: p.public_key for p in peers}
        if by_name.get(me) != mine:
            raise SecureAggregationError(
                f"the peer list does not carry this site ({me}) with its own public key")
        self.me, self.fraction_bits = me, fraction_bits
        self.peers = sorted(by_name)
        self._keys: dict[str, bytes] = {}
        for name, pk in by_name.items():
            if name == me:
                continue
            if len(pk) != KEY_BYTES:
                raise SecureAggregationError(f"peer {name}'s public key is not 32 bytes")
            try:
                shared = key.exchange(X25519PublicKey.from_public_bytes(pk))
            except ValueError as e:  # a low-order point gives an all-zero secret
                raise SecureAggregationError(f"peer {name}'s public key: {e}") from None
            low, high = sorted((me, name))
            info = _INFO + b"|" + low.encode() + b"|" + high.encode()
            self._keys[name] = HKDF(hashes.SHA256(), KEY_BYTES, nonce, info).derive(shared)

    def sites(self, dropped: Iterable[str] = ()) -> int:
        return len(set(self.peers) - set(dropped))

    def check_dropped(self, dropped: Iterable[str]) -> set[str]:
        dropped = set(dropped)
        unknown = dropped - set(self.peers)
        if unknown:
            raise SecureAggregationError(f"dropped peers {sorted(unknown)} are not in the job")
        if self.me in dropped:
            raise SecureAggregationError(f"this site ({self.me}) is listed as dropped")
        if self.sites(dropped) < 2:
            raise SecureAggregationError(
                "fewer than 2 sites would remain: their sum would reveal one site's numbers")
        return dropped

    def mask(self, values: np.ndarray, round_id: int, kind: str,
             dropped: Iterable[str] = ()) -> np.ndarray:
        """``enc(values)`` plus this site's signed pair masks for the round."""
        dropped = self.check_dropped(dropped)
        out = encode(values, self.fraction_bits, self.sites(dropped), f"site {self.me}")
        for name, key in self._keys.items():
            if name in dropped:
                continue
            m = pair_mask(key, round_id, REPLY_KINDS[kind], len(out))
            if self.me < name:
                np.add(out, m, out=out)
            else:
                np.subtract(out, m, out=out)
        return out


def pair_mask(key: bytes, round_id: int, kind: int, n: int) -> np.ndarray:
    """``n`` ring elements of the pair's ChaCha20 keystream for (round, reply kind)."""
    nonce = struct.pack("<IQI", 0, round_id, kind)  # 32-bit block counter, then the nonce
    stream = Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(
        bytes(8 * n))
    return np.frombuffer(stream, dtype="<u8").copy()
