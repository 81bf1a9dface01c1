"""What a DC allows to leave it, and who may ask.

Rules (each refusal names its rule, and becomes gRPC PERMISSION_DENIED):

- ``allow_raw_export`` (default false): whether ``Export`` may stream raw rows out.
- ``min_rows_per_aggregate`` (default 1): refuse any aggregate over fewer rows, so
  that a sum cannot single out an individual row.
- ``allowed_clients`` (default empty = any client with a certificate from the
  deployment's CA): certificate common names allowed to call this site.
- ``share_support`` (default true): whether the site may reveal which feature
  indices its rows touch; needed for support-restricted exchange.
- ``require_secure_aggregation`` (default false): refuse jobs whose replies are not
  masked (:mod:`geodml.privacy.secure_aggregation`): the coordinator then learns only
  sums over at least two sites.
- ``dp_epsilon`` / ``dp_delta`` (default none): the site's differential-privacy budget.
  When set, every job must be private (:mod:`geodml.privacy.dp`): the site sends only
  clipped, noisy gradient sums, accounts for each release and refuses the release that
  would spend more than ``dp_epsilon`` at ``dp_delta``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    require_secure_aggregation: bool = False
    dp_epsilon: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    dp_delta: float | None = Field(default=None, gt=0, lt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _budget_complete(self) -> Policy:
        if (self.dp_epsilon is None) != (self.dp_delta is None):
            raise ValueError("dp_epsilon and dp_delta go together: set both or neither")
        if self.dp_epsilon is not None and self.allow_raw_export:
            raise ValueError("allow_raw_export would let raw rows out of a site whose "
                             "policy promises differential privacy (dp_epsilon)")
        return self

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

    def check_unmasked(self, site: str) -> None:
        if self.require_secure_aggregation:
            raise PolicyError(site, "require_secure_aggregation",
                              "this site sends only masked sums: enable secure aggregation")

    def check_unprivate(self, site: str) -> None:
        if self.dp_epsilon is not None:
            raise PolicyError(site, "dp_epsilon",
                              "this site sends only differentially private gradient sums: "
                              "train with a private method (dp-gd)")

    def check_support(self, site: str) -> None:
        if not self.share_support:
            raise PolicyError(site, "share_support",
                              "this site does not reveal which features its rows touch")
