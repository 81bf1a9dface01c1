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

_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd")


def encode_rows(data: Dataset, max_chunk_bytes: int = 4 << 20) -> Iterator[tuple[int, bytes]]:
    """Yield ``(rows, ipc_bytes)`` chunks of about ``max_chunk_bytes`` raw CSR bytes."""
    X = data.X
    all_ones = bool(np.all(X.data == 1))
    bytes_per_nnz = 4 + (0 if all_ones else X.data.itemsize)
    avg_row = max(1.0, X.nnz * bytes_per_nnz / max(1, data.n_rows) + 8)
    rows_per_chunk = max(1, int(max_chunk_bytes / avg_row))
    for start in range(0, data.n_rows, rows_per_chunk):
        stop = min(start + rows_per_chunk, data.n_rows)
        lo, hi = int(X.indptr[start]), int(X.indptr[stop])
        offsets = pa.array(np.asarray(X.indptr[start : stop + 1] - lo, dtype=np.int32))
        columns = {
            "label": pa.array(data.y[start:stop]),
            "indices": pa.ListArray.from_arrays(offsets, pa.array(X.indices[lo:hi])),
        }
        if not all_ones:
            columns["values"] = pa.ListArray.from_arrays(offsets, pa.array(X.data[lo:hi]))
        batch = pa.record_batch(columns)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema, options=_OPTIONS) as writer:
            writer.write_batch(batch)
        yield stop - start, sink.getvalue().to_pybytes()


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
