"""A site's session: one job's rows, executor, compression state and caches, and the
reading of a call's message stream into vectors."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from geodml.data.streamed import StreamedRows
from geodml.job.compression import UpSender
from geodml.job.privacy import PrivateRows
from geodml.job.validation import ValidationRows
from geodml.models.losses import Loss
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
