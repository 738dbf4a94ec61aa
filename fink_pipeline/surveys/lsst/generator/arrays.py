"""Arrow builders shared with the ELAsTiCC generator: struct, list, string and timestamp
columns from numpy arrays, and the re-chunking of blocks into batches.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.constants import AB_ZERO_NJY, MJD_UNIX_EPOCH


def struct_array(struct_type: pa.StructType, values: dict, n: int, mask: np.ndarray | None = None) -> pa.StructArray:
    """A struct column from numpy/Arrow values by field name; missing fields are all null."""
    children = []
    for f in struct_type:
        v = values.get(f.name)
        if v is None:
            children.append(pa.nulls(n, f.type))
        elif isinstance(v, (pa.Array, pa.ChunkedArray)):
            children.append(v.cast(f.type) if v.type != f.type else v)
        else:
            arr = np.asarray(v)
            if arr.dtype.kind == "f" and not pa.types.is_floating(f.type):
                children.append(pa.array(arr, from_pandas=True).cast(f.type))
            else:
                children.append(pa.array(arr, type=f.type, from_pandas=True))
    return pa.StructArray.from_arrays(children, fields=list(struct_type),
                                      mask=pa.array(mask) if mask is not None else None)  # fmt: skip


def list_array(counts: np.ndarray, items: pa.Array, list_type: pa.DataType) -> pa.ListArray:
    """Lists of consecutive `items`, `counts[i]` for row i."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), items, type=list_type)


def strings(values: np.ndarray) -> pa.Array:
    """Strings from a numpy array (any dtype)."""
    return pa.array(values.astype(str).tolist() if values.dtype.kind != "O" else values.tolist(), pa.string())


def vocab(words: tuple[str, ...] | list[str], idx: np.ndarray) -> pa.Array:
    """Strings by index into a small vocabulary (dictionary decode, vectorised)."""
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), pa.array(list(words))).dictionary_decode()


def timestamps_from_mjd(mjd: np.ndarray) -> pa.Array:
    """UTC timestamps (microseconds) from MJDs."""
    micros = np.round((mjd - MJD_UNIX_EPOCH) * 86400e6).astype(np.int64)
    return pa.array(micros, pa.timestamp("us", tz="UTC"))


def mag_to_njy(mag: np.ndarray) -> np.ndarray:
    """Fluxes (nJy) of AB magnitudes."""
    return AB_ZERO_NJY * 10 ** (-0.4 * mag)


def rechunk(blocks: Iterator[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of record batches into batches of exactly `batch_size` rows (last shorter)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for block in blocks:
        pending.append(block)
        rows += block.num_rows
        while rows >= batch_size:
            table = pa.Table.from_batches(pending)
            head, tail = table.slice(0, batch_size), table.slice(batch_size)
            yield head.combine_chunks().to_batches()[0]
            pending = tail.combine_chunks().to_batches() if tail.num_rows else []
            rows = tail.num_rows
    if rows:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
