"""Out-of-core sites: rows streamed block by block from memory-mapped files, with the
same numbers as in memory and resident memory far below the data's size.

Real files on disk: synthetic regional data, a9a (values absent: every value 1) when
../shared/datasets exists, and a few hundred MB of random rows for the memory test.
"""

from __future__ import annotations

import ctypes
import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from geodml.algorithms.registry import TrainSpec, train
from geodml.data import Dataset, FeatureSpace, load_dataset, map_dataset, save_dataset
from geodml.data.partition import site_dirs
from geodml.data.store import DatasetWriter
from geodml.data.streamed import StreamedRows
from geodml.data.synthetic import RegionalCTRConfig, write_regional
from geodml.errors import ConfigError
from geodml.federation import Federation
from geodml.models import SiteSums, get_loss, site_sums
from geodml.site.config import load_site_config
from geodml.site.executor import ThreadExecutor
from geodml.site.inprocess import InProcessTransport
from geodml.site.launcher import LocalCluster
from geodml.site.policy import Policy
from geodml.site.service import SiteService

from .datasets import load_shared_libsvm
from .tools.procstat import drive

REGIONS = ("us-east", "eu-west", "ap-south")
BLOCK = 8192  # nonzeros per block in the equality tests: ~12 blocks per site


@pytest.fixture(scope="module")
def regional(tmp_path_factory) -> dict[str, Path]:
    """Three regions of synthetic CTR data (float32 values), 3,000 rows each."""
    out = tmp_path_factory.mktemp("regional")
    write_regional(RegionalCTRConfig(regions=REGIONS, rows_per_region=3000,
                                     test_rows_per_region=100, hash_bits=12, seed=4), out)
    return site_dirs(out)


def _write(path: Path, kind: str, n: int = 4000, d: int = 300, seed: int = 0) -> Path:
    """A dataset directory with float32, float64 or absent (all ones) values."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.05, format="csr", random_state=seed)
    X = sp.csr_matrix(X.multiply((np.arange(d) % 3 != 0)[None, :]))  # untouched columns
    X.eliminate_zeros()
    if kind == "ones":
        X.data[:] = 1.0
    dtype = np.float64 if kind == "float64" else np.float32
    save_dataset(path, Dataset(X.astype(dtype), (rng.random(n) < 0.3).astype(float),
                               FeatureSpace(d)), dtype=dtype)
    return path


def _session(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """A row sample and the support (the columns any row touches), as Prepare builds
    them."""
    rows = np.unique(np.linspace(0, data.n_rows - 1, data.n_rows // 3).round().astype(np.int64))
    support = np.flatnonzero(np.bincount(data.X.indices, minlength=data.n_features))
    assert len(support) < data.n_features
    return rows, support


def _in_memory(data: Dataset, rows: np.ndarray | None, columns: np.ndarray | None
               ) -> sp.csr_matrix:
    """The session's rows in memory, by scipy's own indexing."""
    X = data.X
    if columns is not None:
        X = X[:, columns]
    return X if rows is None else X[rows]


def _same(a, b) -> None:
    """Bitwise equal sums: floats, arrays, tuples of them, or Sums."""
    if hasattr(a, "loss"):
        assert a.loss == b.loss and a.rows == b.rows
        a, b = a.grad, b.grad
    if isinstance(a, tuple):
        for x, y in zip(a, b, strict=True):
            _same(x, y)
        return
    np.testing.assert_array_equal(a, b)
    assert np.asarray(a).dtype == np.asarray(b).dtype


def _all_calls(ex) -> list:
    """Every SiteSums call, in an order the algorithms use them."""
    rng = np.random.default_rng(1)
    d = ex.n_features
    w, v, u = (rng.standard_normal(d) for _ in range(3))
    out = [ex.evaluate(w), ex.hess_vec(v), ex.current(), ex.current(need_grad=False)]
    ex.set_direction(v)
    out += [ex.line_sums(np.array([0.1, 0.5, 1.0])), ex.step(0.5), ex.evaluate(w, False)]
    ex.set_direction(u)
    out += [ex.line_sums(np.array([0.3])), ex.step(0.7, need_grad=False), ex.current()]
    ex.add_direction(v)
    ex.add_direction(u)
    out.append(ex.subspace_sums(np.array([0.2, -0.1])))
    ex.subspace_commit(np.array([0.2, -0.1]), memory=2)
    ex.add_direction(w)
    out += [ex.subspace_sums(np.array([0.05, 0.1])), ex.current(), ex.hess_vec(u)]
    return out


def test_row_blocks_share_the_mapped_files_instead_of_copying_them(tmp_path):
    """scipy copies a block that is a view of an array more than twice its size, so a
    site cut into 3+ blocks held its data twice (once in anonymous memory, also when
    memory-mapped); shards were copies too (``X[a:b]``). Now both are views."""
    data = load_dataset(_write(tmp_path / "d", "float32", n=20000), mmap=True)
    assert isinstance(data.X.data.base.base, np.memmap)
    ex = ThreadExecutor(data.X, data.y, get_loss("logistic"), shards=2, threads=2,
                        block_nnz=2000)
    blocks = [b for s in ex.shards for b in s._blocks]
    assert len(blocks) >= 8
    for b in blocks:
        with b.matrix() as (X, XT):
            for arr, whole in ((X.data, data.X.data), (X.indices, data.X.indices),
                               (XT.indices, data.X.indices)):
                assert np.may_share_memory(arr, whole)
    streamed = StreamedRows(map_dataset(tmp_path / "d").X)
    block = streamed.block(100, 900)
    assert np.may_share_memory(block.data, streamed._X.data)
    assert np.may_share_memory(block.T.indices, streamed._X.indices)
    ex.close()


def test_absent_values_map_to_a_stand_in_that_takes_no_memory(tmp_path):
    path = _write(tmp_path / "ones", "ones")
    assert not (path / "values.bin").exists()
    mapped = map_dataset(path)
    assert mapped.X.data.strides == (0,) and mapped.X.dtype == np.float32
    ref = load_dataset(path)
    assert (mapped.X != ref.X).nnz == 0
    rows = StreamedRows(mapped.X)
    np.testing.assert_array_equal(rows.block(10, 20).toarray(), ref.X[10:20].toarray())


@pytest.mark.parametrize("kind", ["float32", "float64", "ones"])
@pytest.mark.parametrize("subset", ["all", "sample", "support", "sample+support"])
def test_streamed_sums_equal_in_memory_bit_for_bit(tmp_path, kind, subset):
    """Every SiteSums call through a 2-shard executor: streamed blocks of the mapped
    files against the in-memory matrix cut into the same blocks."""
    path = _write(tmp_path / kind, kind)
    rows, columns = _session(load_dataset(path))
    rows = rows if "sample" in subset else None
    columns = columns if "support" in subset else None
    mem, mapped = load_dataset(path), map_dataset(path)
    y = mem.y if rows is None else mem.y[rows]
    loss = get_loss("logistic")
    a = ThreadExecutor(_in_memory(mem, rows, columns), y, loss, 2, 2, block_nnz=1500)
    b = ThreadExecutor(StreamedRows(mapped.X, rows, columns), y, loss, 2, 2, block_nnz=1500)
    assert b.shards[0].streamed and not a.shards[0].streamed
    assert [len(s._blocks) for s in a.shards] == [len(s._blocks) for s in b.shards]
    assert min(len(s._blocks) for s in b.shards) >= 3
    for x, z in zip(_all_calls(a), _all_calls(b), strict=True):
        _same(x, z)
    a.close()
    b.close()


def test_a_streamed_step_without_the_line_cache_gives_the_same_bits(tmp_path, monkeypatch):
    """Streamed sites keep a line search's derivatives only for few rows x steps; a
    step then recomputes them from ``z + a q``: the same numbers."""
    path = _write(tmp_path / "d", "float32")
    mem, mapped = load_dataset(path), map_dataset(path)
    loss = get_loss("logistic")
    a = SiteSums(mem.X, mem.y, loss, n_threads=2, block_nnz=1500)
    monkeypatch.setattr(site_sums, "LINE_CACHE_STREAMED", 0)
    b = SiteSums(StreamedRows(mapped.X), mapped.y, loss, n_threads=2, block_nnz=1500)
    w, v = np.linspace(-0.1, 0.1, a.n_features), np.linspace(1, -1, a.n_features)
    for s in (a, b):
        s.evaluate(w)
        s.set_direction(v)
    _same(a.line_sums(np.array([0.2, 0.6])), b.line_sums(np.array([0.2, 0.6])))
    assert len(a._line_cache) == 2 and b._line_cache == {}
    _same(a.step(0.6), b.step(0.6))


def test_a_streamed_site_with_one_block_equals_the_default_in_memory_site(regional):
    """With blocks as large as the data, the streamed layout is the in-memory one."""
    data, mapped = load_dataset(regional["eu-west"]), map_dataset(regional["eu-west"])
    loss = get_loss("logistic")
    a = SiteSums(data.X, data.y, loss, n_threads=2)
    b = SiteSums(StreamedRows(mapped.X), mapped.y, loss, n_threads=2, block_nnz=1 << 30)
    for x, z in zip(_all_calls(a), _all_calls(b), strict=True):
        _same(x, z)


def _federation(sites: dict[str, Path], stream: bool, sample: float = 1.0,
                policy: Policy | None = None) -> Federation:
    services = [SiteService(n, n, map_dataset(p) if stream else load_dataset(p), policy,
                            shards=2, threads=2, stream=stream, block_nnz=BLOCK)
                for n, p in sites.items()]
    return Federation([InProcessTransport(s) for s in services], home=REGIONS[0],
                      sample_fraction=sample)


@pytest.mark.parametrize(("method", "sample"), [
    ("sqm-lbfgs", 1.0), ("fadl-subspace", 1.0), ("sqm-lbfgs", 0.4), ("fadl", 1.0),
    ("fedavg", 1.0), ("dane", 1.0), ("admm", 1.0)])
def test_streamed_sites_train_the_same_trajectory_as_in_memory(regional, method, sample):
    """Three in-process sites (2 shards each, support-restricted, optionally a row
    sample): streamed and in-memory runs agree in every objective, the model, and
    every metered byte. fadl/dane/admm/fedavg run their local procedures (TRON,
    L-BFGS, SGD) on the site's scratch executor."""
    params = {"dane": {"inner_max_iter": 5}, "admm": {"inner_max_iter": 5},
              "fadl": {"inner_iterations": 3},
              "fadl-subspace": {"inner_iterations": 3}}.get(method, {})
    spec = TrainSpec(gtol=1e-7, max_rounds=4 if method == "sqm-lbfgs" else 2, params=params)
    runs = []
    for stream in (False, True):
        with _federation(regional, stream, sample) as fed:
            runs.append((train(fed, method, spec), fed.meter.snapshot()))
            assert fed.n_rows == (9000 if sample == 1 else 3 * 1200)
    (mem, mem_bytes), (streamed, streamed_bytes) = runs
    assert len(mem.rows) >= 2
    assert [r.objective for r in streamed.rows] == [r.objective for r in mem.rows]
    np.testing.assert_array_equal(streamed.w, mem.w)
    assert streamed_bytes == mem_bytes


def test_streamed_describe_support_and_export_match_in_memory(regional):
    """Describe's counts, fingerprint, support size and export estimate, and the
    exported rows and their metered bytes, are the in-memory site's."""
    policy = Policy(allow_raw_export=True)
    feds = [_federation(regional, stream, policy=policy) for stream in (False, True)]
    for name in REGIONS:
        a, b = (fed.sites[name] for fed in feds)
        assert (a.rows, a.nnz, a.support_size, a.data_fingerprint) == (
            b.rows, b.nnz, b.support_size, b.data_fingerprint)
        assert a.export_bytes_estimate == b.export_bytes_estimate
    for fed in feds:
        fed.prepare("logistic", 1e-4)
    exported = [fed.export("eu-west") for fed in feds]
    assert (exported[0].X != exported[1].X).nnz == 0
    np.testing.assert_array_equal(exported[0].y, exported[1].y)
    assert feds[0].meter.snapshot() == feds[1].meter.snapshot()
    for fed in feds:
        fed.close()


def _site_toml(tmp_path: Path, name: str, data: Path, block_nnz: int) -> Path:
    config = tmp_path / f"{name}.toml"
    config.write_text(f"""name = "{name}"
region = "{name}"
listen = "127.0.0.1:0"
insecure = true

[data]
path = "{data.relative_to(tmp_path)}"
stream = true
block_nnz = {block_nnz}

[executor]
shards = 2
threads = 2
""")
    return config


@pytest.fixture
def real_site(tmp_path, regional) -> Path:
    """A dataset directory under tmp_path: a9a (every value 1: values.bin absent) when
    ../shared/datasets has it, else a synthetic region (float32 values)."""
    path = tmp_path / "data"
    try:
        save_dataset(path, load_shared_libsvm("a9a"), dtype=np.float32)
        assert not (path / "values.bin").exists()
    except pytest.skip.Exception:
        save_dataset(path, load_dataset(regional["eu-west"]))
    return path


def test_a_site_config_with_stream_serves_a_dataset_directory(tmp_path, real_site):
    """`[data] stream = true` in a site.toml, served by `geodml site serve` over gRPC,
    trains the same L-BFGS trajectory as the in-memory site in process. Blocks of 16,384
    nonzeros (a9a); smaller on the synthetic fallback, so it too spans many blocks."""
    block = min(16384, map_dataset(real_site).X.nnz // 16)
    config = load_site_config(_site_toml(tmp_path, "eu-west", real_site, block))
    assert config.data.stream and config.data.block_nnz == block
    spec = TrainSpec(gtol=1e-7, max_rounds=5)
    service = SiteService("eu-west", "eu-west", load_dataset(real_site), shards=2, threads=2,
                          block_nnz=block)
    assert len(StreamedRows(map_dataset(real_site).X).bounds(block)) > 10
    with Federation([InProcessTransport(service)], home="us-east") as fed:
        local = train(fed, "sqm-lbfgs", spec)
    with LocalCluster([config], tmp_path / "run", insecure=True) as cluster, Federation(
            cluster.transports(), home="us-east") as fed:
        remote = train(fed, "sqm-lbfgs", spec)
    assert [r.objective for r in remote.rows] == [r.objective for r in local.rows]
    np.testing.assert_array_equal(remote.w, local.w)


def test_stream_config_errors_name_the_field(tmp_path):
    data = tmp_path / "x.libsvm"
    data.write_text("1 1:1\n")
    base = 'name = "s"\ninsecure = true\n[data]\npath = "x.libsvm"\n'
    cases = {
        'format = "libsvm"\nstream = true\n': "data.stream: streaming reads a geodml",
        "stream = true\n[executor]\nkind = \"ray\"\n": "data.stream: streaming runs on the "
                                                     "thread executor",
        "stream = true\nblock_nnz = 10\n": "data.block_nnz: Input should be greater than "
                                           "or equal to 1024",
    }
    for extra, message in cases.items():
        path = tmp_path / "s.toml"
        path.write_text(base + extra)
        with pytest.raises(ConfigError, match=message):
            load_site_config(path)


def _status_kb() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


def _growth_kb(run) -> dict[str, int]:
    """What ``run()`` adds to resident memory: its peak (VmHWM, reset first through
    /proc/self/clear_refs) and, after it, RssAnon + RssFile and RssFile alone, each
    over RssAnon + RssFile (or RssFile) before it (glibc's free lists trimmed)."""
    libc = ctypes.CDLL(None)
    libc.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _status_kb()
    run()
    libc.malloc_trim(0)  # what is live, not what glibc keeps of freed blocks
    after = _status_kb()
    resident = before["RssAnon"] + before["RssFile"]
    return {"peak": after["VmHWM"] - resident,
            "after": after["RssAnon"] + after["RssFile"] - resident,
            "file": after["RssFile"] - before["RssFile"]}


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, int]:
    """About 310 MB of rows (512 nonzeros each, float32 values, 2^16 features): few
    rows, so that the O(rows) vectors are small and an O(nnz) term would stand out."""
    path = tmp_path_factory.mktemp("big") / "site"
    rng = np.random.default_rng(0)
    n, k, d, chunk = 80_000, 512, 1 << 16, 8_000
    with DatasetWriter(path, FeatureSpace(d)) as w:
        for _ in range(n // chunk):
            idx = np.sort(rng.integers(0, d, (chunk, k), dtype=np.int32), axis=1)
            X = sp.csr_matrix((rng.random(chunk * k, dtype=np.float32), idx.ravel(),
                               np.arange(0, chunk * k + 1, k)), shape=(chunk, d))
            X.sum_duplicates()
            w.append(X, (rng.random(chunk) < 0.3).astype(float))
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size > 300 << 20
    return path, size


def test_streaming_keeps_resident_memory_far_below_the_data(big):
    """A site streaming ~310 MB of rows. Describe (its support and the export
    estimate, each a pass over the rows or a sample), Prepare and two rounds leave no
    file pages behind. Then a second job: Prepare and 20 rounds of every kind
    (Evaluate, line searches, steps, Hessian-vector products, a local L-BFGS on the
    scratch executor, subspace calls and commits), most a full pass over the rows:
    resident memory (anonymous + file-backed) never peaks a quarter of the data above
    where it started, and ends less than a tenth above it. Two rounds on the
    memory-mapped in-memory site map every page of the data, which shows that the
    measure sees them."""
    path, size = big
    lam = 1e-6
    nnz_bytes = load_dataset(path, mmap=True).nnz * 8

    def job(service: SiteService, n: int) -> None:
        with Federation([InProcessTransport(service)], home="s") as fed:
            fed.prepare("logistic", lam)
            drive(fed, n, lam)

    def site(stream: bool) -> SiteService:
        data = map_dataset(path) if stream else load_dataset(path, mmap=True)
        return SiteService("s", "s", data, shards=2, threads=2, stream=stream,
                           block_nnz=1 << 19)

    streaming = site(stream=True)
    first = _growth_kb(lambda: job(streaming, 2))  # also warms up pools and allocators
    assert first["file"] << 10 < size / 50, (first, size)
    streamed = _growth_kb(lambda: job(streaming, 20))
    print(f"streamed: {first} then {streamed} KiB over {size >> 10} KiB of data")
    assert streamed["peak"] << 10 < size / 4, (streamed, size)
    assert streamed["after"] << 10 < size / 10, (streamed, size)
    assert streamed["file"] << 10 < size / 50, (streamed, size)
    streaming.shutdown()

    def in_memory() -> None:
        service = site(stream=False)
        job(service, 2)
        service.shutdown()

    mapped = _growth_kb(in_memory)
    print(f"memory-mapped in memory: {mapped} KiB")
    assert mapped["peak"] << 10 > 0.9 * nnz_bytes, (mapped, nnz_bytes)


def test_streamed_rows_reject_unsorted_rows_and_non_csr(tmp_path):
    X = load_dataset(_write(tmp_path / "d", "float32")).X
    with pytest.raises(ValueError, match="sorted and distinct"):
        StreamedRows(X, np.array([3, 1]))
    with pytest.raises(TypeError, match="needs a CSR matrix"):
        StreamedRows(X.tocsc())
    rows = StreamedRows(X)
    assert rows.bounds(10**9) == [0, X.shape[0]]
    assert all(b - a > 0 for a, b in itertools.pairwise(rows.bounds(1000)))
