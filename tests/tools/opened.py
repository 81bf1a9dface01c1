"""What a planner opened: the test doubles of ``open_federation`` record each federation's
sample fraction here, apart from the centralized solver's samples."""

from __future__ import annotations

UNNAMED = object()  # a keyword the caller left out


class OpenedFederations:
    """``fractions``: the sample fraction of every federation opened but the centralized
    solver's samples (``solver_samples``: opened naming a fraction but no compression, as
    :func:`geodml.planning.calibration.central_iterations` does; geo calibrations name
    both, the Describe, export and run federations neither)."""

    def __init__(self) -> None:
        self.fractions: list[float] = []
        self.solver_samples: list[float] = []

    def record(self, compression, sample_fraction) -> tuple[object, float]:
        """Record one federation's keywords (:data:`UNNAMED` where left out); return the
        compression and fraction to open it with (None and 1.0 where left out)."""
        solver = compression is UNNAMED and sample_fraction is not UNNAMED
        compression = None if compression is UNNAMED else compression
        sample_fraction = 1.0 if sample_fraction is UNNAMED else sample_fraction
        (self.solver_samples if solver else self.fractions).append(sample_fraction)
        return compression, sample_fraction
