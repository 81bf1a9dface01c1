"""A site's session: one job's rows, executor, compression state and caches, and the
reading of a call's message stream into vectors."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from geodml.data.streamed import StreamedRows
from geodml.job.compression import UpSender
from geodml.job.privacy import PrivateRows
from geodml.job.validation import SiteValidation, ValidationRows
from geodml.models.losses import Loss
from geodml.models.site_sums import Sums
from geodml.privacy.secure_aggregation import Masker
from geodml.site.executor import Executor
from geodml.wire.codec import VectorAssembler, WireFormat
from geodml.wire.errors import SiteError
from geodml.wire.protocol import pb


@dataclass
class Session:
    id: str
    job: str
    loss: Loss
    lam: float
    executor: Executor
    dim: int
    support: np.ndarray | None
    reply_format: WireFormat
    X: sp.csr_matrix | StreamedRows  # the session's rows (support-restricted columns
    # when restricted); streamed: read from the mapped files block by block
    y: np.ndarray
    shards: int = 1
    threads: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    state: dict = field(default_factory=dict)  # what local procedures keep between calls
    up: UpSender | None = None  # compression of the gradient sums sent up, with its state
    directions: WireFormat | None = None  # how its directions travel (the down format)
    _scratch: Executor | None = None
    # (call, round) -> result of the last round of each call, to answer a retry
    cache: dict[tuple[str, int], tuple] = field(default_factory=dict)
    has_point: bool = False
    masker: Masker | None = None  # secure aggregation: every reply's sums masked
    privacy: pb.PrivacyRequest | None = None  # differential privacy: noisy gradients only
    private_rows: PrivateRows | None = None  # the rows as one matrix, with their norms
    validation: ValidationRows | None = None  # held-out rows (geodml.job.validation)

    def scratch(self) -> Executor:
        """A second executor on the same rows, for local procedures: they never move
        the session's point or its cached directions."""
        if self._scratch is None:  # the same blocks or workers, its own state
            self._scratch = self.executor.sibling()
        return self._scratch

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
        self.executor.close()

    def cached(self, call: str, round_id: int) -> tuple | None:
        return self.cache.get((call, round_id)) if round_id else None

    def remember(self, call: str, round_id: int, result: tuple) -> tuple:
        if round_id:
            self.cache = {k: v for k, v in self.cache.items() if k[0] != call}
            self.cache[(call, round_id)] = result
        return result


def read_message_stream(
    requests: Iterable, lengths: Callable[[object], dict[int, int]], site: str,
    float32: bool = False, float32_range: bool = False,
) -> tuple[object, VectorAssembler]:
    """The first (header) message and an assembler holding every chunk of the stream
    (decoding into float32 when the receiver computes in float32; ``float32_range``:
    refuse values a float32 site cannot hold, kept in float64)."""
    it = iter(requests)
    first = next(it, None)
    if first is None:
        raise SiteError("INVALID_ARGUMENT", f"site {site}: empty request stream")
    slots = lengths(first)
    assembler = VectorAssembler(slots, float32_slots=slots if float32 else (),
                                float32_range_slots=slots if float32_range else ())
    for msg in itertools.chain((first,), it):  # one message at a time: bounded memory
        if msg.HasField("chunk"):
            assembler.add(msg.chunk)
    return first, assembler



__all__ = ["Session", "read_message_stream"]


MAX_SUBSPACE = 64  # directions a subspace may hold


def subspace_coefficients(m: int, given, site: str) -> np.ndarray:
    """Subspace coefficients of a request: ``m`` finite numbers (none given: zeros)."""
    c = np.array(given, dtype=np.float64) if len(given) else np.zeros(m)
    if len(c) != m or not np.all(np.isfinite(c)):
        raise SiteError("INVALID_ARGUMENT",
                        f"site {site}: need {m} finite coefficients, got {len(c)}")
    return c


def subspace_memory(memory: int, site: str) -> int:
    """The steps a commit keeps, at most :data:`MAX_SUBSPACE`."""
    if memory > MAX_SUBSPACE:
        raise SiteError("INVALID_ARGUMENT", f"site {site}: memory must be <= {MAX_SUBSPACE}")
    return memory


class EvaluateResult(NamedTuple):
    """What an Evaluate computed (kept for a retried round): the loss and gradient sums
    (the gradient as it travels: ``delta`` when it is a change, in ``grad_format``), the
    Hessian-vector sum, the held-out rows' score, and after a step along the cached
    direction the exact slope sums ``sum_i l'(z_i) (X p)_i`` (:func:`sums_where_asked`)."""

    loss: float
    rows: int
    grad: np.ndarray | None
    hvp: np.ndarray | None
    grad_format: WireFormat
    delta: bool = False
    validation: SiteValidation | None = None
    derivatives: tuple[float, ...] = ()


def sums_where_asked(s: Session, first: pb.EvaluateRequest, vectors: VectorAssembler,
                     site: str) -> tuple[Sums, tuple[float, ...]]:
    """An Evaluate's sums where it asks for them, which becomes the session's point: at
    ``w`` (slot 0); at ``w + step p`` along the cached direction, or along one sent in
    slot 2 (cached first with ``X p``, as a LineSearch's: an L-BFGS trial step and its
    gradient in one round); or at the current point, first moved by a subspace commit
    (the FADL step and the next gradient in one round). With a step, unmasked, also the
    slope sums ``sum_i l'(z_i) (X p)_i`` (a line search's, exact where the gradient
    travels compressed): at the point before the step when ``p`` came with it, then
    at the new point."""
    ex = s.executor
    if first.commit and (first.has_w or first.HasField("step")):
        raise SiteError("INVALID_ARGUMENT",
                        f"site {site}: commit moves the current point: no w or step")
    if first.has_direction and (first.has_w or not s.has_point or not first.HasField("step")):
        raise SiteError("INVALID_ARGUMENT", f"site {site}: a direction travels with a step "
                        "from the current point (no w; Evaluate a point first)")
    if first.has_w:
        sums = ex.evaluate(vectors.result(0), first.want_gradient)
    elif first.HasField("step"):
        if first.has_direction:
            ex.set_direction(vectors.result(2))
        if not ex.has_direction:
            raise SiteError("FAILED_PRECONDITION",
                            f"site {site}: step without a cached direction")
        if not np.isfinite(first.step):
            raise SiteError("INVALID_ARGUMENT", f"site {site}: step is not finite")
        slopes = s.masker is None  # masked replies carry no scalar in the clear
        at = [0.0, first.step] if first.has_direction else [first.step]
        derivatives = tuple(ex.line_sums(np.array(at))[1].tolist()) if slopes else ()
        sums = ex.step(first.step, first.want_gradient)
        s.has_point = True
        return sums, derivatives
    elif s.has_point:
        if first.commit:
            c = subspace_coefficients(ex.subspace_size, first.commit_coefficients, site)
            ex.subspace_commit(c, subspace_memory(first.commit_memory, site))
        sums = ex.current(first.want_gradient)
    else:
        raise SiteError("FAILED_PRECONDITION", f"site {site}: no point yet: send w first")
    s.has_point = True
    return sums, ()
