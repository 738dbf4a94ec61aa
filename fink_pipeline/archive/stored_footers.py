"""Footer summaries kept between commands, in the cache folder (`paths.cache_dir()/footers/`).

Planning a request reads the footer of every file of its nights (`stats.night_footers`): ~1 s for
4 nights of 100 ZTF files, before a command can start Spark, and again in every command (an
estimate, a submit); a year of nights would take minutes. One small Parquet file per night
directory keeps each file's summary (`footers.FooterSummary`: row counts per row group,
compressed bytes per leaf column) with the file's size and modification time. A later command
reuses a summary only for a file whose path, size and modification time are unchanged, and reads
the footer of one unchanged file per distinct schema (the summaries' Parquet schema is not
stored). A missing, unreadable or foreign cache file is ignored and written again; a cache
folder that cannot be written only costs the footers' reading.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fink_pipeline.archive.footers import FooterSchema, FooterSummary, read_footer, summarize

_FORMAT = b"fink_pipeline.footers.1"
# night directories whose summaries are kept (a few KB each)
KEPT_NIGHTS = 2000
_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("size", pa.int64()),
    ("mtime_ns", pa.int64()),
    ("num_rows", pa.int64()),
    ("row_group_rows", pa.list_(pa.int64())),
    ("leaf_bytes", pa.list_(pa.int64())),
    ("schema_id", pa.int32()),  # files of one Parquet schema share an id
], metadata={b"format": _FORMAT})


@dataclass(frozen=True)
class _Entry:
    size: int
    mtime_ns: int
    num_rows: int
    row_group_rows: np.ndarray
    leaf_bytes: np.ndarray
    schema_id: int


def cache_file(fs: pafs.FileSystem, night_base: str) -> Path:
    """The cache file of the night directory `night_base` of filesystem `fs`."""
    from fink_pipeline import paths

    key = hashlib.sha256(f"{fs.type_name}:{night_base}".encode()).hexdigest()[:32]
    return paths.cache_dir() / "footers" / f"{key}.parquet"


class StoredFooters:
    """The stored summaries of one night directory (`load`), handed out for unchanged files."""

    def __init__(self, fs: pafs.FileSystem, entries: dict[str, _Entry]) -> None:
        self.fs = fs
        self.entries = entries
        self._schemas: dict[int, FooterSchema | None] = {}
        self.read: dict[str, FooterSummary] = {}  # footers read to recover a schema
        self._missed = False  # a file had no usable summary

    @classmethod
    def load(cls, fs: pafs.FileSystem, night_base: str) -> "StoredFooters":
        """The stored summaries of `night_base` (none when there is no usable cache file)."""
        try:
            table = pq.read_table(cache_file(fs, night_base))
            if (table.schema.metadata or {}).get(b"format") != _FORMAT or table.schema.names != _SCHEMA.names:
                return cls(fs, {})
            table = table.cast(_SCHEMA)  # Parquet names list items "element"
        except (OSError, pa.ArrowException, ValueError):
            return cls(fs, {})
        rows, leaves = table.column("row_group_rows").combine_chunks(), table.column("leaf_bytes").combine_chunks()
        row_offsets, row_values = rows.offsets.to_numpy(), rows.values.to_numpy()
        leaf_offsets, leaf_values = leaves.offsets.to_numpy(), leaves.values.to_numpy()
        entries = {}
        for i, (path, size, mtime, num_rows, schema_id) in enumerate(zip(
                *(table.column(c).to_pylist() for c in ("path", "size", "mtime_ns", "num_rows", "schema_id")))):
            entries[path] = _Entry(size, mtime, num_rows, row_values[row_offsets[i]:row_offsets[i + 1]],
                                   leaf_values[leaf_offsets[i]:leaf_offsets[i + 1]], schema_id)
        return cls(fs, entries)

    def summary(self, info: pafs.FileInfo, current: dict[str, pafs.FileInfo]) -> FooterSummary | None:
        """The stored summary of the file `info` when it is unchanged (None otherwise);
        `current` holds the night's files as listed now (a schema is recovered from one of them)."""
        summary = self._summary(info, current)
        self._missed |= summary is None
        return summary

    def outdated(self, current: dict[str, pafs.FileInfo]) -> bool:
        """Whether the stored summaries no longer describe the night's files `current` (a file
        changed, added or removed): the cache is to be written again."""
        return self._missed or self.entries.keys() != current.keys()

    def _summary(self, info: pafs.FileInfo, current: dict[str, pafs.FileInfo]) -> FooterSummary | None:
        entry = self.entries.get(info.path)
        if entry is None or not _unchanged(entry, info):
            return None
        if info.path in self.read:
            return self.read[info.path]
        schema = self._schema(entry.schema_id, current)
        if schema is None or len(schema.leaf_paths) != len(entry.leaf_bytes) \
                or int(entry.row_group_rows.sum()) != entry.num_rows:
            return None
        return FooterSummary(info.path, entry.num_rows, entry.row_group_rows, schema, entry.leaf_bytes)

    def _schema(self, schema_id: int, current: dict[str, pafs.FileInfo]) -> FooterSchema | None:
        """The Parquet schema of the stored files `schema_id`: the footer of one of them still
        unchanged, read once (None when none is)."""
        if schema_id not in self._schemas:
            self._schemas[schema_id] = None
            for path, entry in self.entries.items():
                if entry.schema_id == schema_id and path in current and _unchanged(entry, current[path]):
                    summary = summarize(path, read_footer(self.fs, path))
                    self.read[path] = summary
                    self._schemas[schema_id] = summary.schema
                    break
        return self._schemas[schema_id]


def _unchanged(entry: _Entry, info: pafs.FileInfo) -> bool:
    return info.mtime_ns is not None and (entry.size, entry.mtime_ns) == (info.size, info.mtime_ns)


def store(fs: pafs.FileSystem, night_base: str, footers: dict[str, FooterSummary],
          infos: dict[str, pafs.FileInfo]) -> None:
    """Keep `footers` (the night's summaries, by path) for later commands; files without a
    modification time are left out. Written to a temporary name, then renamed into place; a
    cache folder that cannot be written is skipped."""
    schema_ids: dict[int, int] = {}
    columns: dict[str, list] = {name: [] for name in _SCHEMA.names}
    for path, summary in footers.items():
        info = infos.get(path)
        if info is None or info.mtime_ns is None:
            continue
        values = (path, info.size, info.mtime_ns, summary.num_rows, summary.row_group_rows.tolist(),
                  summary.leaf_bytes.tolist(), schema_ids.setdefault(id(summary.schema), len(schema_ids)))
        for name, value in zip(_SCHEMA.names, values):
            columns[name].append(value)
    target = cache_file(fs, night_base)
    temporary = target.with_name(f".{target.stem}.{uuid.uuid4().hex}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns, schema=_SCHEMA), temporary, compression="zstd")
        os.replace(temporary, target)
        _prune(target.parent)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass


def _prune(folder: Path) -> None:
    """Keep the `KEPT_NIGHTS` most recently written cache files once there are twice as many
    (night directories planned once, such as temporary archives, would pile up)."""
    files = list(folder.glob("*.parquet"))
    if len(files) <= 2 * KEPT_NIGHTS:
        return
    for path in sorted(files, key=lambda f: f.stat().st_mtime_ns)[:-KEPT_NIGHTS]:
        path.unlink(missing_ok=True)
