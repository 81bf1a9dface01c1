r"""Split one dataset into K site (DC) directories, streaming chunk by chunk.

Schemes
-------
``iid``
    Row :math:`i` (counted from 0 over the whole source) goes to site
    :math:`\lfloor K\,u_i \rfloor`, where :math:`u_i = 2^{-53}\,(\mathrm{mix64}(i \oplus s)
    \gg 11)` is a uniform number derived from the seed salt :math:`s`. The result
    depends on the seed only, never on the chunk size.
``dirichlet``
    Label skew. For each class :math:`c` (the integer label) draw
    :math:`p_c \sim \mathrm{Dirichlet}(\alpha \mathbf{1}_K)` from a generator seeded
    by ``(seed, c)``; row :math:`i` of class :math:`c` goes to the site
    :math:`k` with :math:`\sum_{j<k} p_{c,j} \le u_i < \sum_{j\le k} p_{c,j}`
    (:math:`u_i` as above, another salt), i.e. to site :math:`k` with probability
    :math:`p_{c,k}`. Small :math:`\alpha` concentrates each class on few sites;
    large :math:`\alpha` tends to iid.
``by-column``
    The natural split: each row carries a key (:class:`KeySpec`: a column's value,
    the active one-hot column, or the active ``prefix:*`` feature) and a mapping
    sends key values to sites. Without a mapping, a first pass counts the rows per
    value; with ``k`` the values are then assigned greedily, largest first (ties by
    value), each to the site with the fewest rows so far (ties to the lowest
    index); without ``k`` every value is a site of its own (named after the value,
    largest first; the missing value ``""`` is the site ``_missing``).

Output
------
``OUT_DIR/<site>/`` is a dataset directory (:mod:`geodml.data.store`) per site and
``OUT_DIR/manifest.json`` records the scheme, its parameters, the source, the
feature space and, per site, its name, path, rows, positives, nnz, bytes on disk
and key values. The manifest is written last, so a directory without one is an
interrupted run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from geodml.data.dataset import FeatureSpace
from geodml.data.hashing import mix64
from geodml.data.source import DEFAULT_CHUNK_ROWS, Chunk, KeySpec, Source
from geodml.data.store import DatasetWriter, read_meta, read_versioned_json
from geodml.errors import ConfigError, DataFormatError

Scheme = Literal["iid", "by-column", "dirichlet"]
SCHEMES: tuple[str, ...] = ("iid", "by-column", "dirichlet")
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "geodml-sites"
MANIFEST_VERSION = 1
_DATASET_FILES = ("meta.json", "meta.json.tmp", "indptr.bin", "indices.bin", "values.bin",
                  "labels.bin")
_IID_STREAM = 1
_DIRICHLET_STREAM = 2
_MAX_LISTED = 12


@dataclass(frozen=True)
class PartitionSpec:
    """How to split: the scheme and its parameters.

    ``mapping`` sends key values to sites: a value is a site name, or an ``int``
    ``i`` meaning ``site{i}``. ``other`` (a name or index) receives every key value
    the mapping does not list; without it such a value is an error.
    """

    scheme: Scheme
    k: int | None = None
    seed: int = 0
    alpha: float = 0.5
    key: KeySpec | None = None
    mapping: Mapping[str, str | int] | None = field(default=None, hash=False)
    other: str | int | None = None

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"scheme: must be one of {', '.join(SCHEMES)}, got {self.scheme!r}")
        if self.k is not None and self.k < 1:
            raise ConfigError(f"k: the number of sites must be >= 1, got {self.k}")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")
        if self.scheme in ("iid", "dirichlet"):
            if self.k is None:
                raise ConfigError(f"k: the {self.scheme} scheme needs the number of sites")
            if self.key is not None or self.mapping is not None or self.other is not None:
                raise ConfigError(
                    f"the {self.scheme} scheme takes no partition key, mapping or other site "
                    "(those are for by-column)"
                )
        if self.scheme == "dirichlet" and not self.alpha > 0:
            raise ConfigError(f"alpha: the Dirichlet concentration must be > 0, got {self.alpha}")
        if self.scheme == "by-column":
            if self.key is None:
                raise ConfigError(
                    "by-column needs a partition key (a column, one-hot columns or a "
                    "feature prefix)"
                )
            if self.other is not None and self.mapping is None:
                raise ConfigError("an 'other' site needs a mapping (without one every value "
                                  "gets a site)")
            if self.mapping is not None and not self.mapping:
                raise ConfigError("mapping: empty; give at least one VALUE=SITE")

    def parameters(self) -> dict:
        """The scheme's parameters as JSON-ready values (for the manifest)."""
        if self.scheme == "iid":
            return {"k": self.k, "seed": self.seed}
        if self.scheme == "dirichlet":
            return {"k": self.k, "seed": self.seed, "alpha": self.alpha}
        assert self.key is not None
        key = {"column": self.key.column, "onehot": list(self.key.onehot),
               "feature_prefix": self.key.feature_prefix}
        return {
            "k": self.k,
            "key": {k: v for k, v in key.items() if v},
            "mapping": None if self.mapping is None else {
                str(v): _site_label(s) for v, s in self.mapping.items()},
            "other": None if self.other is None else _site_label(self.other),
        }


# ----------------------------------------------------------------------------- API


def partition_source(
    source: Source,
    out_dir: str | os.PathLike,
    spec: PartitionSpec,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    dtype: str | np.dtype | None = None,
    overwrite: bool = False,
) -> dict:
    """Split ``source`` into site directories under ``out_dir``; returns the manifest.

    Memory is bounded by one chunk of ``chunk_rows`` rows. ``dtype`` is the stored
    value type (float32 / float64); by default the first chunk's (float64 stays
    float64, anything else becomes float32). With ``overwrite`` an earlier
    partition in ``out_dir`` (the sites its manifest lists) is replaced.
    """
    out = Path(out_dir)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows: must be >= 1, got {chunk_rows}")
    assigner: _Assigner
    if spec.scheme == "by-column":
        assigner = _ByColumnAssigner(source, spec, chunk_rows)
    elif spec.scheme == "iid":
        assigner = _IidAssigner(spec)
    else:
        assigner = _DirichletAssigner(spec, source.path)
    names = assigner.names
    prepare_out_dir(out, [out / n for n in names], overwrite)

    K = len(names)
    writers: list[DatasetWriter] = []
    keys_seen: list[set[str]] = [set() for _ in range(K)]
    start = 0
    try:
        for chunk in source.chunks(key=spec.key, chunk_rows=chunk_rows):
            n = chunk.X.shape[0]
            if not writers:
                writers = _open_writers(out, names, source.space, dtype, chunk)
            sites = assigner(chunk, start)
            if chunk.keys is not None:
                _record_keys(keys_seen, sites, chunk.keys)
            _write_split(writers, chunk, sites, K)
            start += n
        if not writers:
            writers = _open_writers(out, names, source.space, dtype, None)
        for w in writers:
            w.close()
    except BaseException:
        for w in writers:
            w.abort()
        raise

    sites_out = [
        site_stats(name, out / name, out, keys=sorted(keys_seen[i]))
        for i, name in enumerate(names)
    ]
    manifest = make_manifest(
        scheme=spec.scheme,
        parameters={**spec.parameters(), **assigner.extra()},
        source=str(source.path),
        space=source.space,
        sites=sites_out,
    )
    write_manifest(out / MANIFEST_NAME, manifest)
    return manifest


def assign_greedy(counts: Mapping[str, int], k: int) -> list[list[str]]:
    """Balance key values over ``k`` sites: largest value first (ties by value), each
    to the site with the fewest rows so far (ties to the lowest site index)."""
    if k > len(counts):
        raise ConfigError(
            f"k={k} sites but the partition key has only {len(counts)} distinct values"
        )
    loads = [0] * k
    sites: list[list[str]] = [[] for _ in range(k)]
    for value, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        i = min(range(k), key=lambda j: (loads[j], j))
        sites[i].append(value)
        loads[i] += count
    return sites


def count_keys(
    source: Source, key: KeySpec, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> dict[str, int]:
    """Rows per key value over the whole source (one streaming pass)."""
    counts: dict[str, int] = {}
    for chunk in source.chunks(key=key, chunk_rows=chunk_rows):
        keys = _keys_of(chunk, source.path)
        values, n = np.unique(keys, return_counts=True)
        for v, c in zip(values.tolist(), n.tolist(), strict=True):
            counts[v] = counts.get(v, 0) + c
    return counts


# ------------------------------------------------------------------- manifest I/O


def make_manifest(
    scheme: str,
    parameters: dict,
    source: str | None,
    space: FeatureSpace,
    sites: list[dict],
    **extra: object,
) -> dict:
    """The manifest dictionary shared by ``partition`` and ``generate`` (JSON types
    only, so it equals what :func:`read_manifest` reads back)."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "scheme": scheme,
        "parameters": parameters,
        "source": source,
        "feature_space": space.to_dict(),
        "feature_space_fingerprint": space.fingerprint(),
        "rows": sum(s["rows"] for s in sites),
        "positives": sum(s["positives"] for s in sites),
        "sites": sites,
        **extra,
    }
    return json.loads(json.dumps(manifest))


def site_stats(
    name: str, dataset_dir: Path, root: Path, keys: Iterable[str] | None = None
) -> dict:
    """A manifest's entry of one site: counts from ``meta.json``, bytes from disk."""
    meta = read_meta(dataset_dir)
    size = sum(f.stat().st_size for f in dataset_dir.iterdir() if f.is_file())
    entry = {
        "name": name,
        "path": dataset_dir.relative_to(root).as_posix(),
        "rows": int(meta["n_rows"]),
        "positives": int(meta["positives"]),
        "nnz": int(meta["nnz"]),
        "bytes": int(size),
    }
    if keys is not None:
        entry["keys"] = list(keys)
    return entry


def write_manifest(path: Path, manifest: dict) -> None:
    """Write ``manifest.json`` atomically (write, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """The manifest of a partition / generated directory, checked for its format."""
    return read_versioned_json(
        Path(out_dir) / MANIFEST_NAME, MANIFEST_FORMAT, MANIFEST_VERSION, "manifest format",
        f"no {MANIFEST_NAME}: not a partition directory, or an interrupted one",
        missing_at=out_dir)


def site_dirs(out_dir: str | os.PathLike, split: str = "train") -> dict[str, Path]:
    """Site name -> dataset directory, from a manifest (``split='test'`` for a
    generated dataset's held-out rows)."""
    manifest = read_manifest(out_dir)
    root = Path(out_dir)
    out: dict[str, Path] = {}
    for s in manifest["sites"]:
        entry = s if split == "train" else s.get(split)
        if entry is None:
            raise DataFormatError(str(root / MANIFEST_NAME), None,
                                  f"site {s['name']!r} has no {split!r} data")
        out[s["name"]] = root / entry["path"]
    return out


def prepare_out_dir(out: Path, dataset_dirs: list[Path], overwrite: bool) -> None:
    """Make ``out`` ready for new site directories.

    Refuses to touch an earlier partition (a ``manifest.json``) or a non-empty
    target directory unless ``overwrite``; then removes exactly the dataset files of
    the sites the old manifest lists and of the new targets, nothing else.
    """
    old = out / MANIFEST_NAME
    if old.exists() and not overwrite:
        raise ConfigError(f"{out}: already holds a partition ({MANIFEST_NAME}); "
                          "choose another directory or overwrite it (--force)")
    clear: list[Path] = []
    if old.exists():
        try:
            manifest = json.loads(old.read_text())
            for s in manifest.get("sites", []):
                for entry in (s, s.get("test")):
                    if entry and "path" in entry:
                        clear.append(out / entry["path"])
        except (json.JSONDecodeError, AttributeError, TypeError):
            pass
        old.unlink()
    for d in dataset_dirs:
        if d.exists() and any(d.iterdir()) and not overwrite:
            raise ConfigError(f"{d}: exists and is not empty; choose another output "
                              "directory or overwrite it (--force)")
    for d in clear + dataset_dirs:
        _clear_dataset_dir(out, d)
    out.mkdir(parents=True, exist_ok=True)


def _clear_dataset_dir(root: Path, d: Path) -> None:
    resolved = d.resolve()
    if root.resolve() not in resolved.parents or not resolved.is_dir():
        return
    for name in _DATASET_FILES:
        (resolved / name).unlink(missing_ok=True)
    for sub in ("train", "test"):
        if (resolved / sub).is_dir():
            _clear_dataset_dir(root, resolved / sub)
    if not any(resolved.iterdir()):
        resolved.rmdir()


# ------------------------------------------------------------------- assignment


def _row_uniform(start: int, n: int, seed: int, stream: int) -> np.ndarray:
    """:math:`u_i \\in [0, 1)` of global rows ``start .. start+n-1`` (53 random bits)."""
    salt = mix64(mix64(np.array([seed], np.uint64)) ^ np.uint64(stream))[0]
    h = mix64(np.arange(start, start + n, dtype=np.uint64) ^ salt)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class _IidAssigner:
    """Row :math:`i` to site :math:`\\lfloor K u_i \\rfloor`."""

    def __init__(self, spec: PartitionSpec):
        assert spec.k is not None
        self.k, self.seed = spec.k, spec.seed
        self.names = [f"site{i}" for i in range(spec.k)]

    def __call__(self, chunk: Chunk, start: int) -> np.ndarray:
        u = _row_uniform(start, chunk.X.shape[0], self.seed, _IID_STREAM)
        return np.minimum((u * self.k).astype(np.int64), self.k - 1)

    def extra(self) -> dict:
        return {}


class _DirichletAssigner:
    """Row :math:`i` of class :math:`c` to the site where :math:`u_i` falls in the
    cumulative proportions :math:`p_c \\sim \\mathrm{Dirichlet}(\\alpha 1_K)`."""

    def __init__(self, spec: PartitionSpec, path: str):
        assert spec.k is not None
        self.k, self.seed, self.alpha, self.path = spec.k, spec.seed, spec.alpha, path
        self.names = [f"site{i}" for i in range(spec.k)]
        self.p: dict[int, np.ndarray] = {}

    def proportions(self, c: int) -> np.ndarray:
        """:math:`p_c`, drawn from a generator seeded by ``(seed, c)`` alone."""
        if c not in self.p:
            zigzag = 2 * c if c >= 0 else -2 * c - 1
            ss = np.random.SeedSequence([self.seed, _DIRICHLET_STREAM, zigzag])
            self.p[c] = np.random.default_rng(ss).dirichlet(np.full(self.k, self.alpha))
        return self.p[c]

    def __call__(self, chunk: Chunk, start: int) -> np.ndarray:
        n = chunk.X.shape[0]
        y = np.asarray(chunk.y, dtype=np.float64)
        c = np.rint(y)
        bad = np.flatnonzero(c != y)
        if bad.size:
            raise ConfigError(
                f"{self.path}: row {start + bad[0] + 1} has label {float(y[bad[0]])!r}; "
                "dirichlet label skew needs integer class labels"
            )
        u = _row_uniform(start, n, self.seed, _DIRICHLET_STREAM)
        sites = np.empty(n, np.int64)
        classes = c.astype(np.int64)
        for cls in np.unique(classes).tolist():
            rows = np.flatnonzero(classes == cls)
            cumulative = np.cumsum(self.proportions(cls))
            sites[rows] = np.searchsorted(cumulative, u[rows], side="right")
        return np.minimum(sites, self.k - 1)

    def extra(self) -> dict:
        return {"class_proportions": {str(c): self.p[c].round(6).tolist()
                                      for c in sorted(self.p)}}


class _ByColumnAssigner:
    """Row to the site its key value is mapped (or greedily assigned) to."""

    def __init__(self, source: Source, spec: PartitionSpec, chunk_rows: int):
        assert spec.key is not None
        self.path = source.path
        self._extra: dict = {}
        self.other: int | None = None
        if spec.mapping is not None:
            self.names, self.table, self.other = _mapping_sites(spec)
            return
        counts = count_keys(source, spec.key, chunk_rows)
        if not counts:
            raise ConfigError(f"{source.path}: no rows, so no key values to make sites of")
        if spec.k is None:
            values = sorted(counts, key=lambda v: (-counts[v], v))
            self.names = _unique_dir_names(values)
            groups = [[v] for v in values]
        else:
            groups = assign_greedy(counts, spec.k)
            self.names = [f"site{i}" for i in range(spec.k)]
        self.table = {v: i for i, g in enumerate(groups) for v in g}
        self._extra = {"key_counts": {v: counts[v] for v in sorted(counts)}}

    def __call__(self, chunk: Chunk, start: int) -> np.ndarray:
        keys = _keys_of(chunk, self.path)
        values, inverse = np.unique(keys, return_inverse=True)
        inverse = inverse.reshape(-1)
        missing = -1 if self.other is None else self.other
        site_of = np.array([self.table.get(v, missing) for v in values.tolist()],
                           dtype=np.int64)
        if np.any(site_of < 0):
            first = int(np.flatnonzero(site_of[inverse] < 0)[0])
            v = str(values[inverse[first]])
            shown = repr(v) if v else "'' (the value is missing)"
            raise ConfigError(
                f"{self.path}: row {start + first + 1} has partition key {shown}, which the "
                f"mapping does not list (mapped: {_listing(self.table)}); map it "
                f"(--map {v}=SITE) or send unmapped values to a site (--other SITE)"
            )
        return site_of[inverse]

    def extra(self) -> dict:
        return self._extra


_Assigner = _IidAssigner | _DirichletAssigner | _ByColumnAssigner


def _mapping_sites(spec: PartitionSpec) -> tuple[list[str], dict[str, int], int | None]:
    assert spec.mapping is not None
    targets = [*spec.mapping.values(), *([] if spec.other is None else [spec.other])]
    indexed = [_as_index(t) for t in targets]
    if all(i is not None for i in indexed):
        top = max(i for i in indexed if i is not None) + 1
        K = spec.k if spec.k is not None else top
        if top > K:
            raise ConfigError(f"mapping: site index {top - 1} is not in 0..{K - 1} (k={K})")
        names = [f"site{i}" for i in range(K)]
    elif any(i is not None for i in indexed):
        raise ConfigError("mapping: give every site as a name or every site as an index, "
                          f"not both (got {sorted({str(t) for t in targets})})")
    else:
        names = list(dict.fromkeys(str(t) for t in targets))
        for n in names:
            if _dir_name(n) != n:
                raise ConfigError(f"mapping: site name {n!r} cannot be a directory name "
                                  "(use letters, digits and . _ - = : +)")
        if spec.k is not None and spec.k != len(names):
            raise ConfigError(f"k={spec.k} but the mapping names {len(names)} sites: "
                              f"{', '.join(names)}")
    index = {n: i for i, n in enumerate(names)}

    def site_index(t: str | int) -> int:
        i = _as_index(t)
        return i if i is not None else index[str(t)]

    table = {str(v): site_index(s) for v, s in spec.mapping.items()}
    other = None if spec.other is None else site_index(spec.other)
    return names, table, other


def _as_index(target: str | int) -> int | None:
    if isinstance(target, bool):
        return None
    if isinstance(target, int | np.integer):
        if target < 0:
            raise ConfigError(f"mapping: site index must be >= 0, got {target}")
        return int(target)
    return None


def _site_label(target: str | int) -> str:
    i = _as_index(target)
    return f"site{i}" if i is not None else str(target)


def _keys_of(chunk: Chunk, path: str) -> np.ndarray:
    if chunk.keys is None:
        raise ConfigError(f"{path}: the source gave no partition keys for its rows")
    keys = np.asarray(chunk.keys)
    if keys.shape[0] != chunk.X.shape[0]:
        raise DataFormatError(path, None, f"{keys.shape[0]} partition keys for "
                              f"{chunk.X.shape[0]} rows")
    return keys.astype(str)


def _dir_name(value: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._=:+-]", "_", value)
    if name in ("", ".", ".."):
        name = "_" + (name or "missing")
    return name


def _unique_dir_names(values: list[str]) -> list[str]:
    names: list[str] = []
    used: set[str] = set()
    for v in values:
        base = name = _dir_name(v)
        i = 1
        while name in used:
            i += 1
            name = f"{base}~{i}"
        used.add(name)
        names.append(name)
    return names


def _listing(table: Mapping[str, int]) -> str:
    shown = sorted(table)[:_MAX_LISTED]
    more = len(table) - len(shown)
    return ", ".join(map(repr, shown)) + (f" and {more} more" if more else "")


# ------------------------------------------------------------------------ writing


def _open_writers(
    out: Path,
    names: list[str],
    space: FeatureSpace,
    dtype: str | np.dtype | None,
    first: Chunk | None,
) -> list[DatasetWriter]:
    if dtype is None:
        dtype = np.float64 if first is not None and first.X.dtype == np.float64 else np.float32
    return [DatasetWriter(out / n, space, dtype) for n in names]


def _write_split(writers: list[DatasetWriter], chunk: Chunk, sites: np.ndarray, K: int) -> None:
    """Append each site's rows of the chunk (in source order) to its writer."""
    order = np.argsort(sites, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(sites, minlength=K))])
    X = chunk.X.tocsr()
    y = np.asarray(chunk.y)
    for k in range(K):
        a, b = bounds[k], bounds[k + 1]
        if b > a:
            rows = order[a:b]
            writers[k].append(X[rows], y[rows])


def _record_keys(seen: list[set[str]], sites: np.ndarray, keys: np.ndarray) -> None:
    values, inverse = np.unique(np.asarray(keys).astype(str), return_inverse=True)
    codes = np.unique(sites * len(values) + inverse.reshape(-1))
    for code in codes.tolist():
        seen[code // len(values)].add(str(values[code % len(values)]))
