"""A job, as the coordinator states it and as a site reads it: ``PrepareRequest``.

Coordinator half: :func:`prepare_request` writes what every site of the job shares
(loss, ``lambda``, the feature space, the reply format, the up compression, the
sample) and what is the site's own (whether its vectors are restricted to its
support). Site half: :meth:`JobSpec.from_request` reads it back, checking every
field against the site's data, with a :class:`~geodml.wire.errors.SiteError` naming
the site and the field. Secure aggregation and privacy add their own parts
(:mod:`geodml.job.secure`, :mod:`geodml.job.privacy`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from geodml.compression import CompressionError, Transform, from_spec, wire_format_for
from geodml.data.dataset import Dataset, FeatureSpace
from geodml.job.validation import ValidationJob
from geodml.models.losses import Loss, get_loss
from geodml.wire.codec import WireFormat
from geodml.wire.errors import SiteError
from geodml.wire.protocol import pb


# -- the coordinator's half -----------------------------------------------------------
def prepare_request(loss: str, lam: float, space: FeatureSpace, n_features: int,
                    restrict: bool, reply_format: WireFormat, job: str = "train",
                    up_compression: str | None = None, sample_fraction: float = 1.0,
                    validation: ValidationJob | None = None, down_compression: str | None = None,
                    up_deltas: bool = False) -> pb.PrepareRequest:
    """The ``PrepareRequest`` of one site (``restrict``: its vectors carry only its
    support); ``sample_fraction`` < 1 binds the job to an evenly spaced sample;
    ``validation`` holds out a share of the rows (:mod:`geodml.job.validation`);
    ``down_compression``: the coordinator's, in whose format the sites' directions
    travel; ``up_deltas``: compressed gradients as changes (:mod:`geodml.job.compression`)."""
    held = {} if validation is None else {"validation_share": validation.share,
                                          "validation_seed": validation.seed}
    return pb.PrepareRequest(**held,
        loss=loss, lam=lam, feature_space_fingerprint=space.fingerprint(),
        features=n_features, restrict_to_support=restrict,
        reply_format=reply_format.to_proto(), job=job, up_compression=up_compression or "",
        sample_fraction=sample_fraction if sample_fraction < 1 else 0.0,
        down_compression=down_compression or "", up_deltas=bool(up_compression and up_deltas))


# -- the site's half ---------------------------------------------------------------------
@dataclass(frozen=True)
class JobSpec:
    """What a site computes for a job: the loss, ``lambda``, the reply format, the up
    compression (None: exact), the sample (0: all rows), support restriction, the
    held-out share (0: none) with its seed, the format its directions travel in (None:
    as its gradients) and whether compressed gradients travel as changes."""

    job: str
    loss: Loss
    lam: float
    reply_format: WireFormat
    up: Transform | None
    sample_fraction: float
    restrict: bool
    validation_share: float = 0.0
    validation_seed: int = 0
    directions: WireFormat | None = None
    up_deltas: bool = False

    @classmethod
    def from_request(cls, request: pb.PrepareRequest, site: str, data: Dataset) -> JobSpec:
        """Read and check ``request`` against the site's ``data``."""
        try:
            loss = get_loss(request.loss)
        except ValueError as e:
            raise SiteError("INVALID_ARGUMENT", f"site {site}: {e}") from None
        if not (np.isfinite(request.lam) and request.lam >= 0):
            raise SiteError("INVALID_ARGUMENT", f"site {site}: lambda must be finite, >= 0")
        if request.features != data.n_features:
            raise SiteError(
                "INVALID_ARGUMENT",
                f"site {site}: job has {request.features} features, the site's data "
                f"has {data.n_features}")
        if request.feature_space_fingerprint != data.space.fingerprint():
            raise SiteError(
                "FAILED_PRECONDITION",
                f"site {site}: feature space {data.space.fingerprint()} differs "
                f"from the job's {request.feature_space_fingerprint}")
        if loss.binary and not np.all((data.y == 0) | (data.y == 1)):
            raise SiteError("FAILED_PRECONDITION",
                            f"site {site}: loss {loss.name} needs 0/1 labels")
        up, down = (_transform(text, field, site) for text, field in (
            (request.up_compression, "up_compression"),
            (request.down_compression, "down_compression")))
        fraction = request.sample_fraction
        if not (np.isfinite(fraction) and 0 <= fraction <= 1):
            raise SiteError("INVALID_ARGUMENT",
                            f"site {site}: sample_fraction must be in [0, 1], got {fraction}")
        share = request.validation_share
        if not (np.isfinite(share) and 0 <= share < 1):
            raise SiteError("INVALID_ARGUMENT",
                            f"site {site}: validation_share must be in [0, 1), got {share}")
        return cls(request.job, loss, float(request.lam),
                   WireFormat.from_proto(request.reply_format), up, float(fraction),
                   bool(request.restrict_to_support), float(share),
                   int(request.validation_seed),
                   wire_format_for(down) if down is not None else None,
                   up is not None and request.up_deltas)


def _transform(spec: str, field: str, site: str) -> Transform | None:
    """The compression a request's ``field`` states (None for ""), or a SiteError."""
    if not spec:
        return None
    try:
        return from_spec(spec)
    except CompressionError as e:
        raise SiteError("INVALID_ARGUMENT", f"site {site}: {field}: {e}") from None


__all__ = ["JobSpec", "prepare_request"]
