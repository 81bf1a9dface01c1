"""The coordinator's view of all sites; algorithms are written only against it."""

from geodml.federation.base import Federation, SiteEval, SiteInfo
from geodml.federation.meter import AuditLog, Meter
from geodml.wire.errors import SiteCallError

__all__ = ["AuditLog", "Federation", "Meter", "SiteCallError", "SiteEval", "SiteInfo"]
