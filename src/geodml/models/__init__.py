"""Objectives of L2-regularized linear models, split into per-DC sums."""

from geodml.models.losses import LOSSES, Loss, get_loss
from geodml.models.objective import ObjectiveOracle, RegularizedObjective
from geodml.models.site_sums import SiteSums

__all__ = ["LOSSES", "Loss", "ObjectiveOracle", "RegularizedObjective", "SiteSums", "get_loss"]
