"""Compression of one job's vectors: both channels, both halves, and the precision policy.

Two channels cross the WAN. **Down**: the coordinator compresses the vectors it sends
(points, directions, local-solve inputs) with one transform and its state
(:class:`DownChannel`); algorithms send and use :meth:`DownChannel.as_received`, so the
coordinator and the sites compute with the same numbers. **Up**: every site compresses
the gradient sums it sends with its own transform and error-feedback state
(:class:`UpSender`, the site half); the coordinator's :class:`UpReceiver` is the other
half.

Per-row means. A compressed gradient sum travels as the per-row mean ``g / max(1, n)``
(``n`` the rows it sums over): a sum over millions of rows would saturate float16
(largest 65504). The receiver multiplies by ``n``. Whether a gradient travels as a
mean is decided in one place, :func:`travels_as_mean`, from the one flag both halves
share: the job's up compression is on (``PrepareRequest.up_compression``) and no
Evaluate has yet asked for full precision (``EvaluateRequest.full_precision``, after
which both halves stop for good). :func:`to_mean` and :func:`from_mean` are the two
halves of the scaling.

Deltas. Near the optimum the sites' gradient sums are large and nearly cancel: the
global gradient is their small sum. A compression error relative to each site's sum
(a cast's, a quantizer's) is then large against the global gradient, and the exact
methods lose iterations to it (float8 up: 23 iterations where bfloat16 takes 17, 2^20
features, 100k rows per DC). With ``deltas`` (the default) a site codes each gradient
as its change since its previous one, as both halves reconstructed it::

    r_0 = 0,   sent_t = T(m_t - r_{t-1}),   r_t = r_{t-1} + sent_t

(``m_t`` the per-row mean, ``T`` the transform). The error of ``r_t`` is the
transform's error on the change ``m_t - r_{t-1}``, which shrinks with the steps, so a
one-byte format costs no iterations (17 with float8 deltas). The next change carries
this one's error: deltas are error feedback, so a transform with its own residual keeps
sending whole gradients (it would compensate twice). The reply says whether it
carries a change (``EvaluateReply.gradient_delta``); a session's first gradient, and
every one after full precision, is the gradient itself. The coordinator's half keeps
``r`` per site and round, so a retried round is applied once.

Precision policy. :class:`AdaptivePrecision` watches the received gradients (and the
slope along each direction) and switches both channels to full precision for good
near the optimum, so exact methods still reach it: down at once, up from the next
Evaluate on (the request carries ``full_precision``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from geodml.compression import (
    CompressionError,
    Transform,
    from_spec,
    has_error_feedback,
    wire_format_for,
)
from geodml.errors import GeodmlError
from geodml.models.objective import ObjectiveOracle
from geodml.wire.codec import WireFormat, encode_vector, roundtrip, roundtrip_counted, vector_bytes


def travels_as_mean(up_compression: bool, exact: bool) -> bool:
    """Whether a gradient sum travels up as a per-row mean: exactly when the job
    compresses gradients up (``up_compression``) and the channel has not switched to
    full precision (``exact``). Both halves call this with their copy of the two flags."""
    return up_compression and not exact


def sends_changes(up: Transform | str | None, deltas: bool) -> bool:
    """Whether compressed gradient sums travel as changes (the module's Deltas): the job
    compresses up and asks for it (``deltas``), and the up compression keeps no residual
    of its own (deltas are error feedback: both would compensate each error twice). Both
    halves call this with their copy of the two."""
    return up not in (None, "") and deltas and not has_error_feedback(up)


def to_mean(grad: np.ndarray, rows: int) -> np.ndarray:
    """The site half: the gradient sum as a per-row mean, ``g / max(1, n)``."""
    return grad / max(1, rows)


def from_mean(grad: np.ndarray, rows: int) -> np.ndarray:
    """The coordinator half: the sum back from the mean, ``g n`` (0 over 0 rows)."""
    return grad * rows


def relative_error(spec: Mapping[str, Any] | str | None) -> bool:
    """Whether a spec's error is relative to each entry: only casts (float32, float16,
    bfloat16, float8), chained or with error feedback; not quantize_int8 (one scale per
    chunk zeroes small entries) nor top_k (drops entries)."""
    def walk(node: Mapping[str, Any]) -> bool:
        if node["kind"] == "chain":
            return all(walk(step) for step in node["steps"])
        return node["kind"] in ("identity", "cast")

    return walk(from_spec(spec).spec or {"kind": "identity"})


SLOPE_AGREEMENT = 0.5  # AdaptivePrecision's direction check where compression errs absolutely


@dataclass
class CompressionConfig:
    """Compression of what crosses the WAN (JSON specs, see :mod:`geodml.compression`).

    ``up``: each site compresses the gradient sums it sends (its own state); ``down``:
    the coordinator compresses the vectors it sends (directions, points, gradients for
    local solves). ``precision`` switches both to full precision
    near the optimum, so exact methods still reach it. ``deltas``: compressed gradient
    sums travel as their changes (see the module's Deltas).
    """

    up: str | None = None
    down: str | None = None
    precision: AdaptivePrecision | None = None
    deltas: bool = True  # compressed gradient sums travel as changes (see Deltas above)

    def __post_init__(self) -> None:
        """A policy left to choose its direction check gets it from the specs: off (an
        ascent still switches) where every compression errs relative to each entry."""
        p = self.precision
        if p is not None and p.agreement is None:
            relative = all(relative_error(spec) for spec in (self.up, self.down) if spec)
            p.agreement = 0.0 if relative else SLOPE_AGREEMENT


class UpSender:
    """The site half of the up channel: the job's transform and its state. Gradient
    sums go out as per-row means (:func:`to_mean`) in :func:`wire_format_for` of the
    transform, with ``deltas`` as changes since the previous one (the module's Deltas);
    after :meth:`stop` they go out exact, as sums."""

    def __init__(self, transform: Transform, dim: int, deltas: bool = False):
        """``transform``: the job's ``up_compression`` (:func:`geodml.compression.from_spec`);
        ``deltas``: the job's ``up_deltas``."""
        self.transform: Transform | None = transform
        self.state: object = transform.init(dim)
        self.format: WireFormat | None = wire_format_for(self.transform)
        self.deltas = sends_changes(transform, deltas)
        self.reference: np.ndarray | None = None  # r: the last mean as both halves hold it

    @property
    def active(self) -> bool:
        """Whether gradients still travel compressed (:func:`travels_as_mean`)."""
        return travels_as_mean(self.transform is not None, exact=False)

    def stop(self) -> None:
        """Exact from now on; no residual owed."""
        self.transform = self.state = self.format = self.reference = None

    def send(self, grad: np.ndarray, rows: int) -> tuple[np.ndarray, bool]:
        """What travels for the gradient sum ``grad`` over ``rows`` rows, and whether it
        is a change since the previous one (state advances)."""
        mean = to_mean(grad, rows)
        delta = self.reference is not None
        out, self.state = self.transform.update(mean - self.reference if delta else mean,
                                                self.state)
        if self.deltas:
            self.reference = self.reference + out if delta else out
        return out, delta


class UpReceiver:
    """The coordinator half of the up channel: it mirrors the sites' flag (compressing,
    or exact since a ``full_precision`` request), undoes the per-row mean and, where the
    job's gradients travel as changes, adds them up."""

    def __init__(self, config: CompressionConfig):
        self.config = config
        self.compressing = bool(config.up)
        self.exact = False
        self.pending = False  # the next Evaluate tells the sites to stop compressing
        # per site: (round, r before that round's reply, r after it) (the module's Deltas)
        self._references: dict[str, tuple[int, np.ndarray | None, np.ndarray]] = {}

    @cached_property
    def deltas(self) -> bool:
        """Whether the sites send changes (read at the first gradient: a bad up spec is
        the sites' to name, in the Prepare they refuse)."""
        return sends_changes(self.config.up, self.config.deltas)

    def begin_evaluate(self) -> tuple[bool, bool]:
        """For the next Evaluate: ``(full_precision, as_mean)``: whether the request
        tells the sites to stop compressing, and whether its gradients travel as
        means (:func:`travels_as_mean`; the sites stop before they answer)."""
        full_precision, self.pending = self.pending, False
        self.exact = self.exact or full_precision
        return full_precision, travels_as_mean(self.compressing, self.exact)

    def receive(self, site: str, round_id: int, grad: np.ndarray, rows: int, as_mean: bool,
                delta: bool) -> np.ndarray:
        """The gradient sum of ``site``'s reply in round ``round_id``: ``grad`` as decoded
        (expanded to the model's features), a change since the site's previous gradient
        when ``delta``. A retried round is reconstructed from the same reference."""
        if not (as_mean and self.deltas):  # no reference to keep
            if delta:
                raise GeodmlError(f"site {site} sent a gradient change, which the job does "
                                  "not send" + ("" if as_mean else " in full precision"))
            return from_mean(grad, rows) if as_mean else grad
        last = self._references.get(site)
        before = None if last is None else last[1] if last[0] == round_id else last[2]
        if delta:
            if before is None:
                raise GeodmlError(f"site {site} sent a gradient change before any gradient")
            grad = before + grad
        self._references[site] = (round_id, before, grad)
        return from_mean(grad, rows)


class DownChannel:
    """The coordinator's compression of the vectors it sends, with its state."""

    def __init__(self, spec: str | None, dim: int, wire: WireFormat):
        self.wire = wire
        self.transform: Transform | None = from_spec(spec) if spec else None
        self.state: object = self.transform.init(dim) if self.transform is not None else None

    @property
    def format(self) -> WireFormat:
        """The codec format of vectors sent to the sites."""
        t = self.transform
        return wire_format_for(t) if t is not None else self.wire

    def stop(self) -> None:
        self.transform = self.state = None

    @property
    def keeps_subsets(self) -> bool:
        """Whether a subset of a vector as received re-encodes to the same values (so
        a site sent only its support's coordinates holds what the coordinator holds).
        QINT8's scale is per chunk: a subset gets its own scale and is quantized anew,
        which would leave the site at another point than the coordinator's."""
        return self.format.dtype != "qint8"

    def as_received(self, v: np.ndarray) -> np.ndarray:
        """What the sites receive when ``v`` is sent: after the transform (its state
        advances: once per vector sent) and the wire format."""
        v = np.asarray(v, dtype=np.float64)
        if self.transform is not None:
            v, self.state = self.transform.update(v, self.state)
        fmt = self.format
        return v if fmt.dtype == "float64" else roundtrip(v, fmt)


def _fraction_arg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
            or not 0.0 <= float(value) <= 1.0:
        raise CompressionError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass
class AdaptivePrecision:
    """Compress while far from the optimum, then full precision for good.

    Two rules, each switching to full precision permanently (after the switch an exact method
    runs exactly, so it reaches the uncompressed optimum under its usual stopping rule):

    * gradient norm: ``observe(||g_t||)`` gets the norm of each *received* gradient (what a
      coordinator knows); the first sets the reference ``r = ||g_0||``; the policy switches
      once ``||g_t|| <= threshold * r``.
    * direction check: for a direction ``p`` computed from received gradients the solver
      believes the slope is ``g~.p``; the sites' exact line-search scalars give the true slope
      ``phi'(0) = g.p``. ``observe_direction(g~.p, phi'(0))`` switches when
      ``phi'(0) > agreement * g~.p`` (with ``g~.p < 0``): the compressed gradient then
      overstates the decrease by more than ``1 / agreement``, i.e. the compression error is
      no longer small against the gradient, and a line search along such directions stalls.

    ``threshold = 0`` disables the first rule, ``agreement = 0`` the second (it then fires
    only on an ascent direction, ``phi'(0) > 0``). ``agreement = None`` lets the job choose
    (:class:`CompressionConfig`): 0 where every compression is a float cast, whose error is
    relative to each entry (at most 1/8 for float8), so ``g~_i g_i > 0`` wherever ``g_i != 0``
    and ``-D^(-1) g~`` descends; :data:`SLOPE_AGREEMENT` otherwise (int8, top-k). With the
    check at 0.5, float8 switched to float64 after 18 of FADL-subspace's 24 gradients at
    2^20 and moved 2.5x the bytes of float8 throughout, in as many iterations
    (BENCHMARKS.md).
    """

    threshold: float = 1e-3
    agreement: float | None = None
    reference: float | None = None
    observations: int = 0
    switched_at: int | None = None  # the gradient observation after which all is exact
    reason: str = ""

    def __post_init__(self) -> None:
        self.threshold = _fraction_arg(self.threshold, "threshold")
        if self.agreement is not None:
            self.agreement = _fraction_arg(self.agreement, "agreement")

    @property
    def compressing(self) -> bool:
        """Whether the next vector is sent compressed."""
        return self.switched_at is None

    def _switch(self, reason: str) -> None:
        if self.switched_at is None:
            self.switched_at = self.observations
            self.reason = reason

    def observe(self, grad_norm: float) -> bool:
        """Record a received gradient norm; return whether the next vector is compressed."""
        grad_norm = float(grad_norm)
        if not math.isfinite(grad_norm) or grad_norm < 0:
            raise CompressionError(f"gradient norm must be finite and >= 0, got {grad_norm}")
        self.observations += 1
        if self.reference is None:
            self.reference = grad_norm
        if self.threshold > 0 and grad_norm <= self.threshold * self.reference:
            self._switch(f"gradient norm {grad_norm:.3g} <= {self.threshold:g} x "
                         f"{self.reference:.3g}")
        return self.compressing

    def observe_direction(self, believed: float, true: float) -> bool:
        """Record the slope along a direction as the solver computed it from compressed
        gradients (``believed = g~.p``) and as the sites report it exactly (``true``);
        return whether the next vector is compressed."""
        believed, true = float(believed), float(true)
        if not (math.isfinite(believed) and math.isfinite(true)):
            raise CompressionError(f"slopes must be finite, got {believed} and {true}")
        agreement = SLOPE_AGREEMENT if self.agreement is None else self.agreement
        if believed < 0 and true > agreement * believed:
            self._switch(f"true slope {true:.3g} vs compressed {believed:.3g}")
        return self.compressing


_FULL = WireFormat()


class CompressedGradientOracle:
    """An :class:`~geodml.models.ObjectiveOracle` whose gradients arrive compressed.

    Every gradient the wrapped oracle returns (from ``value_grad`` and ``step``) goes through
    ``transform`` (its state kept here) while ``policy`` says so, otherwise in full precision
    (the residual of error feedback is dropped at the switch: an exact gradient needs no
    correction), and then through the codec in ``wire_format_for(transform)``, so the solver
    sees exactly what a receiver decodes. Values, line-search scalars and Hessian-vector
    products pass through unchanged. While compressing under a policy, the first line-search
    batch after ``set_direction(p)`` also asks for step 0 (one more scalar in the same round,
    unless 0 is already there) and hands ``policy.observe_direction`` the believed slope
    ``g~.p`` (``g~`` the last gradient delivered) and the true one. ``bytes_sent`` counts the
    encoded gradients, ``bytes_full`` what float64 would have cost. In a federation each site
    compresses its own gradient sum the same way; the coordinator adds ``lambda w`` itself.
    """

    def __init__(self, oracle: ObjectiveOracle, transform: Transform,
                 policy: AdaptivePrecision | None = None, *, wire: WireFormat | None = None):
        self.oracle = oracle
        self.transform = transform
        self.policy = policy
        self.n_features = oracle.n_features
        self.wire = wire if wire is not None else wire_format_for(transform)
        self.state = transform.init(self.n_features)
        self.gradients = 0
        self.compressed = 0
        self.bytes_sent = 0
        self.bytes_full = 0
        self._full_precision = False
        self._last: np.ndarray | None = None  # the last gradient delivered
        self._believed: float | None = None  # g~.p for the direction awaiting its probe

    def _receive(self, g: np.ndarray) -> np.ndarray:
        if self.policy is None or self.policy.compressing:
            out, self.state = self.transform.update(g, self.state)
            fmt = self.wire
            self.compressed += 1
        else:
            if not self._full_precision:
                self._full_precision = True
                self.state = self.transform.init(self.n_features)
            out, fmt = g, _FULL
        received, nbytes = roundtrip_counted(out, fmt)
        self.gradients += 1
        self.bytes_sent += nbytes
        self.bytes_full += vector_bytes(encode_vector(g, 0, _FULL))
        if self.policy is not None:
            self.policy.observe(float(np.linalg.norm(received)))
        self._last = received
        return received

    def value_grad(self, w: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = self.oracle.value_grad(w)
        return f, self._receive(g)

    def set_direction(self, p: np.ndarray) -> None:
        self.oracle.set_direction(p)
        probe = self.policy is not None and self.policy.compressing and self._last is not None
        self._believed = float(self._last @ np.asarray(p, dtype=np.float64)) if probe else None

    def line_values(self, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._believed is None or self.policy is None:
            return self.oracle.line_values(alphas)
        believed, self._believed = self._believed, None
        alphas = np.asarray(alphas, dtype=np.float64)
        zero = np.flatnonzero(alphas == 0.0)
        if zero.size:
            f, d = self.oracle.line_values(alphas)
            slope = float(d[zero[0]])
        else:
            f, d = self.oracle.line_values(np.concatenate([[0.0], alphas]))
            slope = float(d[0])
            f, d = f[1:], d[1:]
        self.policy.observe_direction(believed, slope)
        return f, d

    def step(self, alpha: float) -> tuple[float, np.ndarray]:
        if self._believed is not None and self.policy is not None:  # a move comes first
            believed, self._believed = self._believed, None
            self.policy.observe_direction(believed, float(self.oracle.line_values(
                np.zeros(1))[1][0]))
        f, g = self.oracle.step(alpha)
        return f, self._receive(g)

    @property
    def step_slope(self) -> float | None:
        return getattr(self.oracle, "step_slope", None)

    def hess_vec(self, v: np.ndarray) -> np.ndarray:
        return self.oracle.hess_vec(v)




__all__ = ["AdaptivePrecision", "CompressedGradientOracle", "CompressionConfig", "DownChannel",
           "UpReceiver", "UpSender", "from_mean", "to_mean", "travels_as_mean"]
