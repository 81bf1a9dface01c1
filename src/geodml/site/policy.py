"""What a DC allows to leave it, and who may ask.

Rules (each refusal names its rule, and becomes gRPC PERMISSION_DENIED):

- ``allow_raw_export`` (default false): whether ``Export`` may stream raw rows out.
- ``min_rows_per_aggregate`` (default 1): refuse any aggregate over fewer rows, so
  that a sum cannot single out an individual row.
- ``allowed_clients`` (default empty = any client with a certificate from the
  deployment's CA): certificate common names allowed to call this site.
- ``share_support`` (default true): whether the site may reveal which feature
  indices its rows touch; needed for support-restricted exchange.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from geodml.errors import GeodmlError


class PolicyError(GeodmlError):
    """A call the site's policy refuses; names the site and the rule."""

    def __init__(self, site: str, rule: str, detail: str):
        self.site, self.rule = site, rule
        super().__init__(f"site {site}: refused by policy {rule}: {detail}")


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow_raw_export: bool = False
    min_rows_per_aggregate: int = Field(default=1, ge=1)
    allowed_clients: list[str] = Field(default_factory=list)
    share_support: bool = True

    def check_client(self, site: str, identity: str | None) -> None:
        if self.allowed_clients and identity not in self.allowed_clients:
            raise PolicyError(
                site, "allowed_clients",
                f"client {identity!r} is not in {self.allowed_clients}" if identity
                else f"a client without a certificate is not in {self.allowed_clients}",
            )

    def check_aggregate(self, site: str, rows: int) -> None:
        if rows < self.min_rows_per_aggregate:
            raise PolicyError(
                site, "min_rows_per_aggregate",
                f"an aggregate over {rows} rows is below the minimum of "
                f"{self.min_rows_per_aggregate}",
            )

    def check_export(self, site: str) -> None:
        if not self.allow_raw_export:
            raise PolicyError(site, "allow_raw_export",
                              "raw rows may not leave this data center")

    def check_support(self, site: str) -> None:
        if not self.share_support:
            raise PolicyError(site, "share_support",
                              "this site does not reveal which features its rows touch")
