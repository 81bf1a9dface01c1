"""The coordinator's view of all sites; algorithms are written only against it.

:mod:`~geodml.federation.federation` holds the rounds, :mod:`~geodml.federation.client`
one site's call (session, meter, audit, journal, retry), :mod:`~geodml.federation.recovery`
replay and recovery; the job's concerns are :mod:`geodml.job`'s coordinator halves."""

from geodml.federation.federation import AGGREGATE, Federation, SiteEval
from geodml.federation.meter import AuditLog, Meter
from geodml.job.compression import CompressionConfig
from geodml.job.privacy import PrivacyJob
from geodml.job.secure import SecureAggregation
from geodml.wire.errors import SiteCallError
from geodml.wire.info import SiteInfo

__all__ = ["AGGREGATE", "AuditLog", "CompressionConfig", "Federation", "Meter", "PrivacyJob",
           "SecureAggregation", "SiteCallError", "SiteEval", "SiteInfo"]
