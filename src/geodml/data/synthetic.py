r"""A synthetic regional click-through-rate (CTR) generator with Criteo's shape.

The model
---------
There are :math:`K` regions :math:`r = 0..K-1`, :math:`M` numeric fields and
:math:`F` categorical fields. Categorical field :math:`f` (:math:`f = 0..F-1`) has
a vocabulary of :math:`V_f` ids, spread log-uniformly between ``min_vocab`` and
``max_vocab``:  :math:`V_f = \mathrm{round}(V_{min} (V_{max}/V_{min})^{f/(F-1)})`.

*Zipf-like popularity.* A popularity rank :math:`k \in \{0..V-1\}` is drawn as
:math:`k = \lfloor T \rfloor - 1`, where :math:`T` has density
:math:`\propto t^{-s}` on :math:`[1, V+1)`, i.e. by inverse CDF from
:math:`u \sim U[0,1)`:

.. math:: T = \bigl(1 + u\,((V+1)^{1-s} - 1)\bigr)^{1/(1-s)},
          \qquad P(k) \propto \int_{k+1}^{k+2} t^{-s}\,dt \approx (k+1)^{-s}.

*Feature shift.* Each region has its own popular ids: with offsets
:math:`o_{r,f} \sim U\{0..V_f-1\}`, the id of field :math:`f` in a row of region
:math:`r` is :math:`k` with probability :math:`1-\lambda` and
:math:`(k + o_{r,f}) \bmod V_f` with probability :math:`\lambda`, so

.. math:: P_r(v) = (1-\lambda)\,Z_f(v) + \lambda\,Z_f\bigl((v - o_{r,f}) \bmod V_f\bigr).

Numeric field :math:`m` is :math:`x_m = \mu_{r,m} + \varepsilon`,
:math:`\varepsilon \sim N(0,1)`, with region means :math:`\mu_{r,m} \sim N(0, \nu^2)`.

*Columns.* The feature space is ``FeatureSpace.hashed(fields, b, seed)``: numeric
field :math:`m` is column :math:`m`; id :math:`v` of categorical field :math:`f`
is column :math:`M + h(v)` with :math:`h` = ``hash_buckets(v, M + f, seed, b)``
(the field's position in ``space.fields``), value 1. Two fields of one row that
hash to the same column give that column the value 2, as any hashed reader would.

*Labels.* Global weights :math:`w^*_j \sim N(0, \sigma^2)` for every column
:math:`j`, region deltas :math:`\delta_{r,j} \sim N(0, \tau^2)` and region biases
:math:`b_r \sim N(0, \beta^2)` (the label / concept shift):

.. math:: y \mid x, r \sim \mathrm{Bernoulli}\bigl(\operatorname{sigmoid}(
          b_0 + b_r + x^\top (w^* + \delta_r))\bigr),

where the intercept :math:`b_0` solves
:math:`\frac{1}{n}\sum_i \operatorname{sigmoid}(b_0 + x_i^\top w^*) = \text{base\_ctr}`
on a pilot sample of the unshifted law (:math:`\lambda = 0`, :math:`\mu = 0`).

Reproducibility
---------------
Every random quantity comes from ``np.random.default_rng(SeedSequence(...))`` with
a key naming what it is for: ``[seed, 0]`` global weights, ``[seed, 1, r]``
region ``r``'s parameters, ``[seed, 2, r, c]`` / ``[seed, 3, r, c]`` block ``c``
(of ``block_rows`` rows) of region ``r``'s train / test rows, ``[seed, 4]`` the
pilot sample. A region's rows therefore do not depend on how many regions,
processes or threads generate them, nor on the chunk size a consumer asks for.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from geodml.data.dataset import FeatureSpace, FieldSpec
from geodml.data.hashing import hash_buckets
from geodml.data.partition import (
    MANIFEST_NAME,
    make_manifest,
    prepare_out_dir,
    site_stats,
    write_manifest,
)
from geodml.data.source import Chunk
from geodml.data.store import DatasetWriter
from geodml.errors import ConfigError

Split = Literal["train", "test"]
_STREAM = {"weights": 0, "region": 1, "train": 2, "test": 3, "pilot": 4}
_PILOT_ROWS = 16384
DEFAULT_REGIONS = ("us-east", "eu-west", "ap-south", "sa-east")


@dataclass(frozen=True)
class RegionalCTRConfig:
    """Parameters of the regional CTR model (see the module docstring for the math).

    ``feature_shift`` is :math:`\\lambda`, ``numeric_shift`` is :math:`\\nu`,
    ``weight_scale`` :math:`\\sigma`, ``region_weight_scale`` :math:`\\tau`,
    ``label_shift`` :math:`\\beta`, ``zipf_exponent`` :math:`s`.
    """

    regions: tuple[str, ...] = DEFAULT_REGIONS
    rows_per_region: int = 100_000
    test_rows_per_region: int = 20_000
    n_categorical: int = 26
    n_numeric: int = 4
    hash_bits: int = 20
    seed: int = 0
    zipf_exponent: float = 1.2
    min_vocab: int = 10
    max_vocab: int = 1_000_000
    feature_shift: float = 0.3
    numeric_shift: float = 0.5
    weight_scale: float = 0.35
    region_weight_scale: float = 0.15
    label_shift: float = 0.5
    base_ctr: float = 0.18
    block_rows: int = 16384

    def __post_init__(self) -> None:
        object.__setattr__(self, "regions", tuple(str(r) for r in self.regions))
        if not self.regions:
            raise ConfigError("regions: at least one region is needed")
        if len(set(self.regions)) != len(self.regions):
            raise ConfigError(f"regions: names must be distinct, got {list(self.regions)}")
        for name in self.regions:
            if not name or name in (".", "..") or "/" in name or "\\" in name:
                raise ConfigError(f"regions: {name!r} cannot be a directory name")
        checks = [
            ("rows_per_region", self.rows_per_region >= 0, ">= 0"),
            ("test_rows_per_region", self.test_rows_per_region >= 0, ">= 0"),
            ("n_categorical", self.n_categorical >= 1, ">= 1"),
            ("n_numeric", self.n_numeric >= 0, ">= 0"),
            ("hash_bits", 1 <= self.hash_bits <= 28, "in 1..28"),
            ("seed", self.seed >= 0, ">= 0"),
            ("zipf_exponent", self.zipf_exponent > 0 and self.zipf_exponent != 1, "> 0, != 1"),
            ("min_vocab", self.min_vocab >= 1, ">= 1"),
            ("max_vocab", self.max_vocab >= self.min_vocab, ">= min_vocab"),
            ("feature_shift", 0 <= self.feature_shift < 1, "in [0, 1)"),
            ("numeric_shift", self.numeric_shift >= 0, ">= 0"),
            ("weight_scale", self.weight_scale >= 0, ">= 0"),
            ("region_weight_scale", self.region_weight_scale >= 0, ">= 0"),
            ("label_shift", self.label_shift >= 0, ">= 0"),
            ("base_ctr", 0 < self.base_ctr < 1, "in (0, 1)"),
            ("block_rows", self.block_rows >= 1, ">= 1"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"{name}: must be {rule}, got {getattr(self, name)!r}")

    @property
    def vocab_sizes(self) -> np.ndarray:
        """:math:`V_f` for every categorical field (int64)."""
        F = self.n_categorical
        frac = np.arange(F) / max(F - 1, 1)
        v = np.round(self.min_vocab * (self.max_vocab / self.min_vocab) ** frac)
        return v.astype(np.int64)

    @property
    def space(self) -> FeatureSpace:
        """The hashed feature space shared by every region."""
        fields = tuple(FieldSpec(f"I{m + 1}", "numeric") for m in range(self.n_numeric))
        fields += tuple(FieldSpec(f"C{f + 1}", "categorical") for f in range(self.n_categorical))
        return FeatureSpace.hashed(fields, hash_bits=self.hash_bits, hash_seed=self.seed)

    def region_index(self, region: int | str) -> int:
        if isinstance(region, str):
            if region not in self.regions:
                raise ConfigError(f"region {region!r} is not one of {list(self.regions)}")
            return self.regions.index(region)
        if not 0 <= region < len(self.regions):
            raise ConfigError(f"region index {region} is not in 0..{len(self.regions) - 1}")
        return int(region)

    def rows(self, split: Split) -> int:
        return self.rows_per_region if split == "train" else self.test_rows_per_region

    def to_dict(self) -> dict:
        d = asdict(self)
        d["regions"] = list(self.regions)
        return d


@dataclass
class _RegionParams:
    """Region ``r``'s draws: feature offsets, numeric means, weights, bias."""

    offsets: np.ndarray  # int64[F]   o_{r,f}
    means: np.ndarray  # float64[M] mu_{r,m}
    weights: np.ndarray  # float32[d] w* + delta_r
    bias: float  # b_0 + b_r
    feature_shift: float


@dataclass
class RegionalCTRGenerator:
    """Draws the shared parameters of a config once; generates blocks of any region."""

    config: RegionalCTRConfig
    _global_weights: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cfg = self.config
        rng = _rng(cfg.seed, _STREAM["weights"])
        d = cfg.space.n_features
        self._global_weights = rng.standard_normal(d, dtype=np.float32)
        self._global_weights *= np.float32(cfg.weight_scale)

    @cached_property
    def intercept(self) -> float:
        """:math:`b_0`, calibrated so the unshifted law has CTR ``base_ctr``."""
        cfg = self.config
        unshifted = _RegionParams(
            offsets=np.zeros(cfg.n_categorical, np.int64),
            means=np.zeros(cfg.n_numeric),
            weights=self._global_weights,
            bias=0.0,
            feature_shift=0.0,
        )
        rng = _rng(cfg.seed, _STREAM["pilot"])
        _, _, _, logits = self._draw(unshifted, rng, _PILOT_ROWS)
        lo, hi = -30.0, 30.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if _sigmoid(logits + mid).mean() < cfg.base_ctr:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def region_params(self, region: int) -> _RegionParams:
        cfg = self.config
        rng = _rng(cfg.seed, _STREAM["region"], region)
        offsets = rng.integers(0, cfg.vocab_sizes)
        means = rng.normal(0.0, cfg.numeric_shift, cfg.n_numeric) if cfg.n_numeric else np.zeros(0)
        bias = float(rng.normal(0.0, cfg.label_shift)) if cfg.label_shift else 0.0
        delta = rng.standard_normal(self._global_weights.shape[0], dtype=np.float32)
        delta *= np.float32(cfg.region_weight_scale)
        delta += self._global_weights
        return _RegionParams(offsets, means, delta, self.intercept + bias, cfg.feature_shift)

    def block(
        self, params: _RegionParams, region: int, split: Split, block_index: int
    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """Rows ``block_index * block_rows ...`` of a region's split, as (X, y)."""
        cfg = self.config
        n_total = cfg.rows(split)
        start = block_index * cfg.block_rows
        n = min(cfg.block_rows, n_total - start)
        if n <= 0:
            raise ConfigError(f"block {block_index} is past the {n_total} {split} rows")
        rng = _rng(cfg.seed, _STREAM[split], region, block_index)
        cols, dup, numeric, logits = self._draw(params, rng, n)
        p = _sigmoid(logits + params.bias)
        y = (rng.random(n) < p).astype(np.float64)
        X = self._csr(cols, dup, numeric, n)
        return X, y

    def _draw(
        self, params: _RegionParams, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, bool, np.ndarray, np.ndarray]:
        """Sorted hashed columns (n, F), whether a row repeats a column, numeric
        values (n, M) and the logits without bias. The draw order is fixed."""
        cfg = self.config
        M, F, s = cfg.n_numeric, cfg.n_categorical, cfg.zipf_exponent
        V = cfg.vocab_sizes[:, None]
        u = rng.random((F, n))
        lam = params.feature_shift
        if lam > 0:
            local = u < lam
            u = np.where(local, u * (1.0 / lam), (u - lam) * (1.0 / (1.0 - lam)))
        scale = (V + 1.0) ** (1.0 - s) - 1.0
        t = np.power(1.0 + u * scale, 1.0 / (1.0 - s))
        ranks = np.minimum(t.astype(np.int64) - 1, V - 1)
        np.maximum(ranks, 0, out=ranks)
        if lam > 0:
            shifted = (ranks + params.offsets[:, None]) % V
            ranks = np.where(local, shifted, ranks)
        buckets = np.empty((F, n), np.int64)
        for f in range(F):
            buckets[f] = hash_buckets(ranks[f], M + f, cfg.seed, cfg.hash_bits)
        buckets += M
        logits = params.weights[buckets].sum(axis=0, dtype=np.float64)
        numeric = rng.standard_normal((n, M))
        if M:
            numeric += params.means
            logits += numeric @ params.weights[:M].astype(np.float64)
        cols = np.sort(buckets.T.astype(np.int32), axis=1)
        dup = bool(F > 1 and np.any(cols[:, 1:] == cols[:, :-1]))
        return cols, dup, numeric, logits

    def _csr(self, cols: np.ndarray, dup: bool, numeric: np.ndarray, n: int) -> sp.csr_matrix:
        cfg = self.config
        M, F = cfg.n_numeric, cfg.n_categorical
        per_row = M + F
        indices = np.empty((n, per_row), np.int32)
        values = np.ones((n, per_row), np.float32)
        if M:
            indices[:, :M] = np.arange(M, dtype=np.int32)
            values[:, :M] = numeric
        indices[:, M:] = cols
        indptr = np.arange(0, n * per_row + 1, per_row, dtype=np.int64)
        X = sp.csr_matrix(
            (values.ravel(), indices.ravel(), indptr), shape=(n, cfg.space.n_features)
        )
        if dup:
            X.sum_duplicates()
        else:
            X.has_sorted_indices = True
        return X

    def n_blocks(self, split: Split) -> int:
        return -(-self.config.rows(split) // self.config.block_rows)


def generate_region_chunks(
    config: RegionalCTRConfig,
    region: int | str,
    split: Split = "train",
    chunk_rows: int | None = None,
    generator: RegionalCTRGenerator | None = None,
) -> Iterator[Chunk]:
    """Stream one region's train (or test) rows as chunks of ``chunk_rows`` rows.

    The rows are the same for every ``chunk_rows`` (default: ``config.block_rows``);
    ``keys`` carries the region name for every row.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    r = config.region_index(region)
    gen = generator or RegionalCTRGenerator(config)
    params = gen.region_params(r)
    want = chunk_rows or config.block_rows
    if want < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {want}")
    name = config.regions[r]
    buf_X: list[sp.csr_matrix] = []
    buf_y: list[np.ndarray] = []
    buffered = 0
    for b in range(gen.n_blocks(split)):
        X, y = gen.block(params, r, split, b)
        buf_X.append(X)
        buf_y.append(y)
        buffered += len(y)
        while buffered >= want:
            X_all = buf_X[0] if len(buf_X) == 1 else sp.vstack(buf_X, format="csr")
            y_all = buf_y[0] if len(buf_y) == 1 else np.concatenate(buf_y)
            yield Chunk(X_all[:want], y_all[:want], np.full(want, name, dtype=object))
            buffered -= want
            buf_X = [X_all[want:]] if buffered else []
            buf_y = [y_all[want:]] if buffered else []
    if buffered:
        X_all = buf_X[0] if len(buf_X) == 1 else sp.vstack(buf_X, format="csr")
        y_all = buf_y[0] if len(buf_y) == 1 else np.concatenate(buf_y)
        yield Chunk(X_all, y_all, np.full(buffered, name, dtype=object))


@dataclass(frozen=True)
class _Job:
    region: int
    split: Split
    block: int
    last_of_split: bool
    last_of_region: bool


def write_regional(
    config: RegionalCTRConfig,
    out_dir: str | os.PathLike,
    regions: Sequence[str] | None = None,
    *,
    workers: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Write ``OUT_DIR/<region>/train`` and ``OUT_DIR/<region>/test`` for the given
    regions (default: all of the config's) plus ``OUT_DIR/manifest.json``.

    Blocks are generated by a pool of ``workers`` threads (default: CPU count;
    numpy releases the GIL in the heavy parts) and appended in order, with at most
    ``2 * workers`` blocks in memory. Returns the manifest; its ``elapsed_seconds``
    and ``rows_per_second`` measure the whole run.
    """
    t0 = time.perf_counter()
    names = list(config.regions if regions is None else regions)
    if not names or len(set(names)) != len(names):
        raise ConfigError(f"regions: give distinct region names to write, got {names}")
    indices = [config.region_index(name) for name in names]
    out = Path(out_dir)
    dirs = [out / config.regions[r] for r in indices]
    prepare_out_dir(out, dirs, overwrite)
    gen = RegionalCTRGenerator(config)
    _ = gen.intercept
    jobs: list[_Job] = []
    for r in indices:
        region_jobs = [
            (split, b, b == gen.n_blocks(split) - 1)
            for split in ("train", "test")
            for b in range(gen.n_blocks(split))
        ]
        jobs.extend(
            _Job(r, split, b, last, i == len(region_jobs) - 1)
            for i, (split, b, last) in enumerate(region_jobs)
        )
    n_workers = max(1, workers or os.cpu_count() or 1)
    params: dict[int, _RegionParams] = {}
    writers: dict[tuple[int, Split], DatasetWriter] = {}
    space = config.space

    def get_params(r: int) -> _RegionParams:
        if r not in params:
            params[r] = gen.region_params(r)
        return params[r]

    # Empty splits (0 rows) still get a complete, empty dataset directory.
    for r in indices:
        for split in ("train", "test"):
            if gen.n_blocks(split) == 0:
                DatasetWriter(out / config.regions[r] / split, space).close()

    try:
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            pending: deque[tuple[_Job, Future]] = deque()
            it = iter(jobs)

            def submit_next() -> None:
                job = next(it, None)
                if job is not None:
                    p = get_params(job.region)
                    pending.append((job, pool.submit(gen.block, p, job.region, job.split,
                                                     job.block)))

            for _ in range(2 * n_workers):
                submit_next()
            while pending:
                job, fut = pending.popleft()
                X, y = fut.result()
                submit_next()
                key = (job.region, job.split)
                if key not in writers:
                    writers[key] = DatasetWriter(out / config.regions[job.region] / job.split,
                                                 space)
                writers[key].append(X, y)
                if job.last_of_split:
                    writers.pop(key).close()
                if job.last_of_region:
                    params.pop(job.region, None)
    finally:
        for w in writers.values():
            w.abort()

    elapsed = time.perf_counter() - t0
    sites = []
    for r in indices:
        name = config.regions[r]
        entry = site_stats(name, out / name / "train", out, keys=[name])
        entry["test"] = site_stats(name, out / name / "test", out)
        for k in ("name", "keys"):
            entry["test"].pop(k, None)
        sites.append(entry)
    total_rows = sum(s["rows"] + s["test"]["rows"] for s in sites)
    manifest = make_manifest(
        scheme="synthetic-regional-ctr",
        parameters=config.to_dict(),
        source=None,
        space=space,
        sites=sites,
        test_rows=sum(s["test"]["rows"] for s in sites),
        test_positives=sum(s["test"]["positives"] for s in sites),
        intercept=gen.intercept,
        elapsed_seconds=elapsed,
        rows_per_second=total_rows / max(elapsed, 1e-9),
    )
    write_manifest(out / MANIFEST_NAME, manifest)
    return manifest


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))
