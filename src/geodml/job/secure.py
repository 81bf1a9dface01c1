"""Secure aggregation in a job: the coordinator's setup and unmasking, and the site's
masking, side by side (the math: :mod:`geodml.privacy.secure_aggregation`).

Coordinator half: :func:`setup` names the peers (every site with its public key), a
fresh job nonce and the fixed point (``f`` fraction bits) in ``PrepareRequest.secure``;
:func:`unmask` decodes the ring sum of the sites' masked replies, ``sum_i x_i``.
Site half: :func:`masker_for` checks the request against the site's policy and builds
its :class:`~geodml.privacy.secure_aggregation.Masker`; :func:`mask` masks one reply's
values for the request's round, leaving out the peers the request says dropped out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from geodml.errors import GeodmlError
from geodml.privacy.secure_aggregation import (
    MEAN_BITS,
    FixedPointOverflowError,
    Masker,
    Peer,
    SecureAggregationError,
    decode,
    fraction_bits_for,
    new_nonce,
    ring_sum,
)
from geodml.wire.errors import SiteCallError, SiteError
from geodml.wire.info import SiteInfo
from geodml.wire.protocol import pb

if TYPE_CHECKING:  # the site's policy: only its checks are called
    from geodml.site.policy import Policy


@dataclass(frozen=True)
class SecureAggregation:
    """Mask every reply so the coordinator learns only sums over the sites
    (:mod:`geodml.privacy.secure_aggregation`). Fixed point: ``fraction_bits``, or
    (None) as many as resolve per-row means to ``2^-mean_bits``."""

    fraction_bits: int | None = None
    mean_bits: int = MEAN_BITS


# -- the coordinator's half -----------------------------------------------------------
def job_nonce(seed: bytes | None, counter: int) -> bytes:
    """A fresh nonce per job: random, or the ``counter``-th from ``seed`` (a resumed
    run must send the same requests as the run it resumes)."""
    if seed is None:
        return new_nonce()
    return hashlib.blake2b(seed + counter.to_bytes(8, "little"), digest_size=16,
                           person=b"geodml-job").digest()


def check_job(config: SecureAggregation | None, compressing: bool, validating: bool) -> None:
    """Refuse what secure aggregation does not combine with: compression (it sums exact
    fixed-point vectors) and held-out validation (whose scores would travel in the clear)."""
    if config is not None and compressing:
        raise GeodmlError("secure aggregation sums exact fixed-point vectors: it does not "
                          "combine with compression")
    if config is not None and validating:
        raise GeodmlError("secure aggregation hides each site's sums; validation scores "
                          "would travel in the clear: train without --stop validation")


def check_sites(names: Sequence[str]) -> None:
    """Secure aggregation needs at least 2 sites."""
    if len(names) < 2:
        raise GeodmlError("secure aggregation needs at least 2 sites: the sum over one "
                          f"site is that site's numbers (sites: {list(names)})")


def setup(config: SecureAggregation, sites: Mapping[str, SiteInfo], names: Sequence[str],
          nonce: bytes) -> pb.SecureAggregation:
    """The job's ``PrepareRequest.secure`` for the sites ``names``: the peers (every
    site, with its public key), ``nonce``, and the fixed point."""
    check_sites(names)
    peers = [pb.SecureAggregation.Peer(site=n, public_key=sites[n].secure_aggregation_key)
             for n in sorted(names)]
    bits = config.fraction_bits
    if bits is None:
        bits = fraction_bits_for(sum(sites[n].rows for n in names), config.mean_bits)
    return pb.SecureAggregation(peers=peers, nonce=nonce, fraction_bits=bits)


def unmask(parts: Iterable[np.ndarray], fraction_bits: int) -> np.ndarray:
    """The sum over the sites of the values their masked ``parts`` carry."""
    return decode(ring_sum(parts), fraction_bits)


def sum_resolution(sites: int, fraction_bits: int) -> float:
    """Largest rounding error of a sum over ``sites`` sites: half a unit per site."""
    return sites * 2.0 ** -(fraction_bits + 1)


def masked_field(site: str, method: str, reply, n: int) -> np.ndarray:
    """A unary reply's masked sums, checked for length."""
    if len(reply.masked) != n:
        raise SiteCallError(site, method, "INTERNAL",
                            f"{len(reply.masked)} masked values, expected {n}")
    return np.array(reply.masked, dtype=np.uint64)


# -- the site's half ---------------------------------------------------------------------
def masker_for(request: pb.PrepareRequest, site: str, key, policy: Policy) -> Masker | None:
    """The job's secure aggregation (``key``: the site's private key), checked against
    the site's ``policy``; None for an unmasked job (if the policy allows one)."""
    if not request.HasField("secure"):
        policy.check_unmasked(site)
        return None
    if request.restrict_to_support or request.up_compression:
        raise SiteError("INVALID_ARGUMENT",
                        f"site {site}: secure aggregation sums dense, exact vectors: "
                        "no support restriction, no up compression")
    sa = request.secure
    try:
        return Masker(site, key, [Peer(p.site, p.public_key) for p in sa.peers], sa.nonce,
                      sa.fraction_bits)
    except SecureAggregationError as e:
        raise SiteError("INVALID_ARGUMENT", f"site {site}: {e}") from None


def mask(masker: Masker, request, kind: str, values: np.ndarray, site: str) -> np.ndarray:
    """``values`` fixed-point encoded and masked for ``request``'s round (which names
    the dropped peers)."""
    if not request.round:
        raise SiteError("INVALID_ARGUMENT", f"site {site}: a masked reply needs a round number")
    try:
        return masker.mask(values, request.round, kind, request.dropped_peers)
    except SecureAggregationError as e:
        code = "OUT_OF_RANGE" if isinstance(e, FixedPointOverflowError) else "INVALID_ARGUMENT"
        raise SiteError(code, f"site {site}: {kind} round {request.round}: {e}") from None


__all__ = ["SecureAggregation", "check_sites", "job_nonce", "mask", "masked_field",
           "masker_for", "setup", "sum_resolution", "unmask"]
