"""Differential privacy in a job: the coordinator's request and the site's clipped,
noisy release, side by side (the math and the ledger: :mod:`geodml.privacy.dp`).

Coordinator half: :class:`PrivacyJob` (per-row clip norm ``C``, each site's noise
multiplier ``sigma``) becomes a site's ``PrepareRequest.privacy`` through
:func:`privacy_request`. Site half: :func:`check_request` checks it against the site's
policy and ledger; :func:`private_gradient` charges the ledger first, then releases

    g~ = sum_i clip_C(grad_i(w)) + N(0, (sigma C)^2 I)

the noise drawn from the site's secret, the job nonce and the round, so a replayed
round releases the same numbers (and is not charged twice).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from geodml.data.streamed import StreamedRows
from geodml.models.losses import Loss
from geodml.privacy.dp import (
    PrivacyBudgetError,
    PrivacyLedger,
    PrivacyReplayError,
    clipped_gradient_sum,
    gaussian_noise,
    row_l2_norms,
)
from geodml.wire.errors import SiteError
from geodml.wire.protocol import pb

if TYPE_CHECKING:  # the site's policy: only its checks are called
    from geodml.site.policy import Policy


@dataclass(frozen=True)
class PrivacyJob:
    """A differentially private job: per-row clip norm, and each site's noise
    multiplier (calibrated to its remaining budget, :mod:`geodml.privacy.dp`)."""

    clip: float
    noise_multipliers: dict[str, float]


# -- the coordinator's half -----------------------------------------------------------
def privacy_request(job: PrivacyJob, site: str, nonce: bytes) -> pb.PrivacyRequest:
    """Site ``site``'s part of a private job (``nonce``: the job's, 16 bytes)."""
    return pb.PrivacyRequest(clip=job.clip, noise_multiplier=job.noise_multipliers[site],
                             nonce=nonce)


# -- the site's half ---------------------------------------------------------------------
def check_request(request: pb.PrepareRequest, site: str, policy: Policy,
                  ledger: PrivacyLedger | None) -> pb.PrivacyRequest | None:
    """The job's differential privacy, checked against the site's policy and ledger;
    None for a job that is not private (if the policy allows one)."""
    if not request.HasField("privacy"):
        policy.check_unprivate(site)
        return None
    dp = request.privacy
    if request.restrict_to_support:
        raise SiteError("INVALID_ARGUMENT",
                        f"site {site}: a private job may not restrict vectors to the "
                        "site's feature support (it would reveal which features rows touch)")
    if ledger is None:
        raise SiteError("FAILED_PRECONDITION",
                        f"site {site}: no privacy budget: its policy sets no "
                        "dp_epsilon, so it cannot account for a private job")
    if not (np.isfinite(dp.clip) and dp.clip > 0 and np.isfinite(dp.noise_multiplier)
            and dp.noise_multiplier > 0 and len(dp.nonce) == 16):
        raise SiteError("INVALID_ARGUMENT",
                        f"site {site}: privacy needs a positive clip and noise "
                        "multiplier and a 16-byte nonce")
    return dp


@dataclass
class PrivateRows:
    """A private session's rows as one matrix, with the row norms clipping needs."""

    X: sp.csr_matrix | StreamedRows
    y: np.ndarray
    row_norms: np.ndarray | None = None

    def matrix(self) -> sp.csr_matrix:
        if isinstance(self.X, StreamedRows):  # geodml.privacy computes on one matrix
            self.X = self.X.to_csr()
        if self.row_norms is None:
            self.row_norms = row_l2_norms(self.X)
        return self.X


def private_gradient(dp: pb.PrivacyRequest, request: pb.EvaluateRequest, w: np.ndarray,
                     rows: PrivateRows, loss: Loss, ledger: PrivacyLedger, secret: bytes,
                     site: str) -> np.ndarray:
    """The clipped gradient sum at ``w`` plus Gaussian noise, charged to ``ledger``
    first (the module docstring)."""
    if not (request.has_w and request.want_gradient) or request.want_hvp or not request.round:
        raise SiteError("FAILED_PRECONDITION",
                        f"site {site}: a differentially private session answers "
                        "only Evaluate with a point w, for its gradient, in a round")
    w = np.asarray(w, dtype=np.float64)
    digest = hashlib.sha256(w.tobytes() + f"{dp.clip!r} {dp.noise_multiplier!r}".encode()
                            ).hexdigest()  # what the release depends on
    try:
        ledger.charge(f"{dp.nonce.hex()}:{request.round}", dp.noise_multiplier, site, digest)
    except PrivacyBudgetError as e:
        raise SiteError("RESOURCE_EXHAUSTED", str(e)) from None
    except PrivacyReplayError as e:
        raise SiteError("PERMISSION_DENIED", str(e)) from None
    X = rows.matrix()
    grad = clipped_gradient_sum(X, rows.y, w, loss, dp.clip, rows.row_norms)
    grad += gaussian_noise(secret, dp.nonce, request.round, len(grad),
                           dp.noise_multiplier * dp.clip)
    return grad


__all__ = [
    "PrivacyJob",
    "PrivateRows",
    "check_request",
    "privacy_request",
    "private_gradient",
]
