"""Raw rows in a compact columnar form for the centralized baseline's export.

A chunk of rows is one Arrow IPC stream (schema + one record batch) with
zstd-compressed buffers and three columns: ``label`` (float64), ``indices``
(list<int32>) and ``values`` (list<float32|float64>; omitted when every value is
1.0, as in one-hot CTR data). The receiver rebuilds CSR rows without copying
through Python objects.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from geodml.data.dataset import Dataset, FeatureSpace
from geodml.data.streamed import StreamedRows, csr_rows

_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def values_all_ones(values: np.ndarray) -> bool:
    """Whether every value is 1.0 (the store's zero-stride stand-in for absent values:
    one look)."""
    if values.strides == (0,):
        return bool(np.all(values[:1] == 1))
    return bool(np.all(values == 1))


def rows_per_chunk(nnz: int, n_rows: int, value_bytes: int, all_ones: bool,
                   max_chunk_bytes: int) -> int:
    """Rows per chunk of about ``max_chunk_bytes`` raw bytes: ``4`` bytes per index,
    ``value_bytes`` per value (none when all ones) and 8 per label."""
    bytes_per_nnz = 4 + (0 if all_ones else value_bytes)
    avg_row = max(1.0, nnz * bytes_per_nnz / max(1, n_rows) + 8)
    return max(1, int(max_chunk_bytes / avg_row))


def encode_chunk(X: sp.csr_matrix, y: np.ndarray, all_ones: bool) -> bytes:
    """All rows of ``X`` (labels ``y``) as one IPC stream (without values if
    ``all_ones``)."""
    lo, hi = int(X.indptr[0]), int(X.indptr[-1])
    offsets = pa.array(np.asarray(X.indptr - lo, dtype=np.int32))
    columns = {
        "label": pa.array(np.asarray(y)),
        "indices": pa.ListArray.from_arrays(offsets, pa.array(X.indices[lo:hi])),
    }
    if not all_ones:
        columns["values"] = pa.ListArray.from_arrays(offsets, pa.array(X.data[lo:hi]))
    batch = pa.record_batch(columns)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema, options=_OPTIONS) as writer:
        writer.write_batch(batch)
    return sink.getvalue().to_pybytes()


def encode_rows(data: Dataset, max_chunk_bytes: int = 4 << 20) -> Iterator[tuple[int, bytes]]:
    """Yield ``(rows, ipc_bytes)`` chunks of about ``max_chunk_bytes`` raw CSR bytes."""
    X = data.X
    all_ones = values_all_ones(X.data)
    per_chunk = rows_per_chunk(X.nnz, data.n_rows, X.data.itemsize, all_ones, max_chunk_bytes)
    for start in range(0, data.n_rows, per_chunk):
        stop = min(start + per_chunk, data.n_rows)
        yield stop - start, encode_chunk(csr_rows(X, start, stop), data.y[start:stop], all_ones)


def encode_streamed(rows: StreamedRows, y: np.ndarray, max_chunk_bytes: int = 4 << 20
                    ) -> Iterator[tuple[int, bytes]]:
    """:func:`encode_rows` of a streamed site's rows (all, or a sample), read chunk by
    chunk with each chunk's pages released after: the same bytes, with memory for one
    chunk (a first pass over the values decides whether they are all ones)."""
    n = rows.shape[0]
    all_ones = rows.all_ones()
    per_chunk = rows_per_chunk(rows.nnz, n, rows.dtype.itemsize, all_ones, max_chunk_bytes)
    for start in range(0, n, per_chunk):
        stop = min(start + per_chunk, n)
        blob = encode_chunk(rows.block(start, stop), y[start:stop], all_ones)
        rows.release(start, stop)
        yield stop - start, blob


def decode_rows(chunks: list[bytes], space: FeatureSpace) -> Dataset:
    """Rebuild a dataset from the IPC chunks of :func:`encode_rows`."""
    Xs, ys = [], []
    for blob in chunks:
        table = pa.ipc.open_stream(blob).read_all()
        for batch in table.to_batches():
            idx_list = batch.column("indices")
            offsets = idx_list.offsets.to_numpy()
            offsets = offsets - offsets[0]
            indices = idx_list.flatten().to_numpy()
            if "values" in batch.schema.names:
                values = batch.column("values").flatten().to_numpy()
            else:
                values = np.ones(len(indices), dtype=np.float32)
            n = batch.num_rows
            Xs.append(sp.csr_matrix((values, indices, offsets), shape=(n, space.n_features)))
            ys.append(batch.column("label").to_numpy())
    if not Xs:
        return Dataset(sp.csr_matrix((0, space.n_features), dtype=np.float32), np.zeros(0), space)
    return Dataset(sp.vstack(Xs, format="csr"), np.concatenate(ys), space)
