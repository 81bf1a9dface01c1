"""What a site says about itself (``Describe``), as the coordinator holds it.

:class:`SiteInfo` is built from a ``DescribeReply`` here, at the edge of the protocol,
and the site builds its reply through :meth:`SiteInfo.to_reply`: one mapping, read
and written in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from geodml.data.dataset import FeatureSpace
from geodml.wire.protocol import pb


@dataclass(frozen=True)
class SiteInfo:
    name: str
    region: str
    rows: int
    features: int
    nnz: int
    positives: int
    data_fingerprint: str
    space: FeatureSpace
    protocol_version: int
    capabilities: tuple[str, ...]
    support_size: int
    shards: int
    raw_export_allowed: bool = False
    export_bytes_estimate: int = 0  # what Export would send (Arrow IPC, zstd), estimated
    secure_aggregation_key: bytes = b""
    requires_secure_aggregation: bool = False
    privacy: PrivacyBudget | None = None  # the site's DP budget, when its policy sets one

    @property
    def answers_unmasked(self) -> bool:
        """Whether the site answers an exact sum in the clear, to a call of its own: it
        neither requires secure aggregation nor keeps a privacy budget (such a site
        refuses any session that is not masked, or not private)."""
        return not self.requires_secure_aggregation and self.privacy is None

    @classmethod
    def from_reply(cls, r: pb.DescribeReply) -> SiteInfo:
        budget = None
        if r.HasField("privacy"):
            p = r.privacy
            budget = PrivacyBudget(p.epsilon, p.delta, p.epsilon_spent,
                                   tuple(p.noise_multipliers))
        return cls(r.site, r.region, r.rows, r.features, r.nnz, r.positives, r.data_fingerprint,
                   FeatureSpace.from_dict(json.loads(r.feature_space_json)), r.protocol_version,
                   tuple(r.capabilities), r.support_size, r.shards, r.raw_export_allowed,
                   r.export_bytes_estimate, r.secure_aggregation_key,
                   r.requires_secure_aggregation, budget)

    def to_reply(self) -> pb.DescribeReply:
        """The ``DescribeReply`` saying this (the inverse of :meth:`from_reply`)."""
        budget = None
        if self.privacy is not None:
            p = self.privacy
            budget = pb.PrivacyBudget(epsilon=p.epsilon, delta=p.delta,
                                      epsilon_spent=p.epsilon_spent,
                                      noise_multipliers=list(p.noise_multipliers))
        return pb.DescribeReply(
            site=self.name, region=self.region, rows=self.rows, features=self.features,
            nnz=self.nnz, positives=self.positives, data_fingerprint=self.data_fingerprint,
            feature_space_fingerprint=self.space.fingerprint(),
            feature_space_json=json.dumps(self.space.to_dict()),
            protocol_version=self.protocol_version, capabilities=list(self.capabilities),
            support_size=self.support_size, shards=self.shards,
            raw_export_allowed=self.raw_export_allowed,
            export_bytes_estimate=self.export_bytes_estimate,
            secure_aggregation_key=self.secure_aggregation_key,
            requires_secure_aggregation=self.requires_secure_aggregation, privacy=budget)


@dataclass(frozen=True)
class PrivacyBudget:
    epsilon: float
    delta: float
    epsilon_spent: float
    noise_multipliers: tuple[float, ...]  # the site's ledger: one Gaussian release each




__all__ = ["PrivacyBudget", "SiteInfo"]
