"""The job's compressed channels as algorithms see them (the coordinator's side of
:mod:`geodml.job.compression`): what the sites receive of a vector sent down, and the
precision policy's observations that end compression near the optimum."""

from __future__ import annotations

import numpy as np

from geodml.job.compression import CompressionConfig, DownChannel, UpReceiver
from geodml.wire.codec import WireFormat, roundtrip
from geodml.wire.dtypes import metric_format


class Channels:
    """Mixed into :class:`~geodml.federation.federation.Federation`, which sets
    ``compression``, ``_down`` and ``_up`` for every job."""

    compression: CompressionConfig
    _down: DownChannel
    _up: UpReceiver

    @property
    def down_format(self) -> WireFormat:
        """The codec format of vectors sent to the sites."""
        return self._down.format

    def as_received(self, v: np.ndarray) -> np.ndarray:
        """What the sites will receive when ``v`` is sent: after the down compression (its
        state advances: call once per vector sent) and the wire format. Algorithms send
        and use this vector, so coordinator and sites compute with the same numbers."""
        return self._down.as_received(v)

    def note_gradient(self, grad_norm: float) -> None:
        """Tell the precision policy the norm of a received global gradient; near the
        optimum it switches both directions to full precision, for good."""
        policy = self.compression.precision
        if policy is None or not policy.compressing:
            return
        if not policy.observe(grad_norm):
            self._full_precision()

    @property
    def compressing(self) -> bool:
        """Whether some direction is still compressed under a precision policy."""
        cfg = self.compression
        return cfg.precision is not None and cfg.precision.compressing and bool(
            cfg.up or cfg.down)

    def note_direction(self, believed_slope: float, true_slope: float) -> None:
        """Tell the policy the slope along a direction as computed from compressed
        gradients and as the sites report it exactly; a disagreement (the compressed
        gradient no longer points downhill enough) switches to full precision."""
        policy = self.compression.precision
        if policy is None or not policy.compressing:
            return
        if not policy.observe_direction(believed_slope, true_slope):
            self._full_precision()

    def _full_precision(self) -> None:
        """Stop compressing: down at once, up from the next Evaluate on."""
        self._down.stop()
        self._up.pending = True

    @property
    def metric_format(self) -> WireFormat:
        """How a per-feature metric travels down: :func:`~geodml.wire.dtypes.metric_format`
        of the job's wire format when the job compresses either way, else that format."""
        cfg = self.compression
        return metric_format(self._down.wire) if cfg.up or cfg.down else self._down.wire

    def as_received_metric(self, v: np.ndarray) -> np.ndarray:
        """What the sites receive of the metric ``v`` sent in :attr:`metric_format`
        (never through the down compression: no state advances)."""
        v = np.asarray(v, dtype=np.float64)
        fmt = self.metric_format
        return v if fmt.dtype == "float64" else roundtrip(v, fmt)
