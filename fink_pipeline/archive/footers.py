"""Compact summaries of Parquet footers: what planning and estimates need, without the footer.

A pyarrow `FileMetaData` of a ZTF file with cutouts costs ~0.5 MiB of memory (thrift structures
for every column chunk, statistics included), so a plan holding the footers of 4 nights of 100
files held 210 MiB. A `FooterSummary` keeps only what its consumers read:

* the row count of each row group (`transfer.sample` draws rows with them),
* the compressed bytes of each leaf column summed over the row groups (`transfer.metrics`),
* a `FooterSchema` shared by every file of the same Parquet schema: its leaf paths, and one
  representative `pq.ParquetSchema` for the kind check of `archive.file_schemas`.

Summarizing costs less CPU than the `pq.ParquetFile(...).metadata` it replaces (`read_footer`).
"""

from __future__ import annotations

import functools
import threading
import weakref
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


@dataclass(frozen=True, eq=False)
class FooterSchema:
    """A Parquet schema shared by files (one object per distinct schema, see `shared_schema`)."""

    # holds the FileMetaData of the first file read with this schema: one per distinct schema
    parquet: pq.ParquetSchema
    leaf_paths: tuple[str, ...]

    @functools.cached_property
    def arrow(self) -> pa.Schema:
        """The schema as Arrow reads it (computed once, for the kind check)."""
        return self.parquet.to_arrow_schema()


@dataclass(frozen=True, eq=False)
class FooterSummary:
    """What planning uses of one Parquet file's footer (see the module docstring)."""

    path: str
    num_rows: int
    row_group_rows: np.ndarray  # int64, one per row group
    schema: FooterSchema
    leaf_bytes: np.ndarray  # int64 compressed bytes of each leaf column (schema order), all row groups

    @property
    def num_row_groups(self) -> int:
        """Row groups of the file."""
        return len(self.row_group_rows)


def read_footer(fs: pafs.FileSystem, path: str) -> pq.FileMetaData:
    """The footer of one Parquet file, read and checked as `pq.ParquetFile` does (same errors)."""
    with fs.open_input_file(path) as handle:
        # pq.ParquetFile's own reader, without the Python index of nested column paths that
        # pq.ParquetFile builds on top of it: 1.9 instead of 2.7 ms for a ZTF footer
        reader = pq.ParquetReader()
        reader.open(handle)
        return reader.metadata


def summarize(path: str, meta: pq.FileMetaData) -> FooterSummary:
    """The summary of one file's footer (`meta` is not kept, only its schema when new)."""
    # not `meta.schema`: it caches a ParquetSchema that refers back to `meta`, a cycle that keeps
    # each footer alive until a garbage collection (100 MiB of heap for 400 ZTF footers)
    schema = shared_schema(pq.ParquetSchema(meta))
    columns = meta.num_columns
    leaf_bytes = np.zeros(columns, np.int64)
    rows = np.empty(meta.num_row_groups, np.int64)
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        rows[g] = group.num_rows
        leaf_bytes += np.fromiter((group.column(c).total_compressed_size for c in range(columns)), np.int64, columns)
    return FooterSummary(path, meta.num_rows, rows, schema, leaf_bytes)


def shared_schema(schema: pq.ParquetSchema) -> FooterSchema:
    """The `FooterSchema` equal to `schema` that live summaries already share, else a new one.

    Files of one night have one schema, so a summary adds no schema of its own; a schema no
    summary refers to any more is forgotten (weak references)."""
    with _SCHEMAS_LOCK:
        for ref in list(_SCHEMAS):
            known = ref()
            if known is None:
                _SCHEMAS.remove(ref)
            elif known.parquet.equals(schema):
                return known
        known = FooterSchema(schema, tuple(schema.column(i).path for i in range(len(schema))))
        _SCHEMAS.insert(0, weakref.ref(known))
        return known


_SCHEMAS: list[weakref.ref] = []
_SCHEMAS_LOCK = threading.Lock()
