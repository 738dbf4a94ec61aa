"""Table writers that commit Kafka progress atomically with the data.

Delta: each append carries one Delta transaction identifier per Kafka partition it contains
(`app_id` = `<prefix>:<partition>`, `version` = next offset to read). The data files and the
offsets land in the same commit, so after a crash at any point the table's own log says where
to resume: nothing is lost and nothing is written twice.

Parquet: file names are derived from (partition, first offset, last offset) and a batch is
marked done by a small marker written after its files; on resume, files past the last marker
are leftovers of an interrupted batch and are removed before reading again.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from fink_pipeline.surveys.base import JD_UNIX_EPOCH, MJD_UNIX_EPOCH

PARTITION_CHOICES = ("finkclass", "tnsclass", "classId", "time", "none")
NULL_PARTITION = "null"


class Sink(Protocol):
    """Where decoded alerts go; `resume_offsets` and `write` must be exact across crashes."""

    def resume_offsets(self, partitions: Sequence[int]) -> dict[int, int]: ...

    def write(self, table: pa.Table, next_offsets: dict[int, int], first_offsets: dict[int, int]) -> None: ...


@dataclass(frozen=True)
class Partitioning:
    """How output rows are grouped into folders."""

    mode: str
    time_column: str | None = None
    time_scale: str = "jd"

    @property
    def columns(self) -> list[str]:
        if self.mode == "none":
            return []
        if self.mode == "time":
            return ["year", "month", "day"]
        return [self.mode]

    def apply(self, table: pa.Table) -> pa.Table:
        """Add or normalise the partition columns (vectorised)."""
        if self.mode == "none":
            return table
        if self.mode == "time":
            return add_time_partitions(table, self.time_column, self.time_scale)
        if self.mode not in table.column_names:
            raise ValueError(
                f"-partitionby {self.mode}: the topic has no {self.mode!r} field; "
                "choose time, none or a class column present in the content"
            )
        column = pc.fill_null(pc.cast(table[self.mode], pa.string()), NULL_PARTITION)
        return table.set_column(table.schema.get_field_index(self.mode), self.mode, column)


def _column_by_path(table: pa.Table, path: str) -> pa.ChunkedArray | None:
    """A root column, or a nested struct field by dotted path."""
    parts = path.split(".")
    if parts[0] not in table.column_names:
        return None
    column = table[parts[0]]
    for part in parts[1:]:
        column = pc.struct_field(column, part)
    return column


def add_time_partitions(table: pa.Table, time_column: str | None, time_scale: str = "jd") -> pa.Table:
    """Recompute year/month/day (ints) from the survey's time column, like fink-client does."""
    candidates = [c for c in (time_column, (time_column or "").rsplit(".", 1)[-1]) if c]
    times = next((col for c in candidates if (col := _column_by_path(table, c)) is not None), None)
    if times is None:
        raise ValueError(f"-partitionby time needs the time column {time_column!r} in the content")
    epoch = JD_UNIX_EPOCH if time_scale == "jd" else MJD_UNIX_EPOCH
    seconds = pc.multiply(pc.subtract(pc.cast(times, pa.float64()), epoch), 86400.0)
    stamps = pc.cast(pc.cast(pc.floor(seconds), pa.int64()), pa.timestamp("s"))
    for name, fn in (("year", pc.year), ("month", pc.month), ("day", pc.day)):
        values = pc.cast(fn(stamps), pa.int32())
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


class DeltaSink:
    """Append to a Delta table; Kafka offsets are Delta transaction identifiers."""

    def __init__(self, uri: str, partitioning: Partitioning, app_prefix: str,
                 storage_options: dict[str, str] | None = None) -> None:
        self.uri = uri
        self.partitioning = partitioning
        self.app_prefix = app_prefix
        self.storage_options = storage_options

    def app_id(self, partition: int) -> str:
        return f"{self.app_prefix}:{partition}"

    def _table(self):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def resume_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Next offset to read for each partition, from the table's transaction log."""
        table = self._table()
        offsets = {}
        for p in partitions:
            version = table.transaction_version(self.app_id(p)) if table is not None else None
            offsets[p] = int(version) if version is not None else 0
        return offsets

    def write(self, table: pa.Table, next_offsets: dict[int, int], first_offsets: dict[int, int]) -> None:
        from deltalake import CommitProperties, Transaction, write_deltalake

        table = self.partitioning.apply(table)
        transactions = [Transaction(app_id=self.app_id(p), version=int(o)) for p, o in next_offsets.items()]
        write_deltalake(
            self.uri,
            table,
            mode="append",
            partition_by=self.partitioning.columns or None,
            storage_options=self.storage_options,
            commit_properties=CommitProperties(app_transactions=transactions, max_commit_retries=50),
        )


_PART_NAME = re.compile(r"^part-(\d+)-(\d+)-(\d+)-\d+\.parquet$")
_MARKER_DIR = "_offsets"


class ParquetSink:
    """A Hive-partitioned Parquet dataset with offset-derived file names (fink-client layout)."""

    def __init__(self, root: str, partitioning: Partitioning) -> None:
        self.root = Path(root)
        self.partitioning = partitioning

    def _markers(self) -> Path:
        return self.root / _MARKER_DIR

    def resume_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Next offset per partition from the batch markers; removes files of unfinished batches."""
        done: dict[int, int] = {p: 0 for p in partitions}
        finished_batches: set[str] = set()
        if self._markers().exists():
            for marker in self._markers().glob("batch-*.json"):
                finished_batches.add(marker.stem.removeprefix("batch-"))
                for p, (_, last) in json.loads(marker.read_text()).items():
                    if int(p) in done:
                        done[int(p)] = max(done[int(p)], last + 1)
        if self.root.exists():
            for path in self.root.rglob("part-*.parquet"):
                match = _PART_NAME.match(path.name)
                if match and "-".join(match.groups()) not in finished_batches:
                    path.unlink()  # written by a batch that crashed before its marker
        return done

    def write(self, table: pa.Table, next_offsets: dict[int, int], first_offsets: dict[int, int]) -> None:
        table = self.partitioning.apply(table)
        p0 = min(next_offsets)
        batch_id = f"{p0}-{first_offsets[p0]}-{next_offsets[p0] - 1}"
        self.root.mkdir(parents=True, exist_ok=True)
        ds.write_dataset(
            table,
            self.root,
            format="parquet",
            partitioning=self.partitioning.columns or None,
            partitioning_flavor="hive" if self.partitioning.columns else None,
            basename_template=f"part-{batch_id}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
        )
        # One marker per batch, written atomically after all its files: it is the commit.
        self._markers().mkdir(exist_ok=True)
        ranges = {p: [first_offsets[p], next_offsets[p] - 1] for p in next_offsets}
        marker = self._markers() / f"batch-{batch_id}.json"
        tmp = marker.with_name(f".{marker.name}.{uuid.uuid4().hex}")
        tmp.write_text(json.dumps(ranges))
        os.replace(tmp, marker)


def read_parquet_dataset(root: str) -> pa.Table:
    """Read a dataset written by `ParquetSink` (markers ignored, partitions restored)."""
    return ds.dataset(root, format="parquet", partitioning="hive", exclude_invalid_files=True,
                      ignore_prefixes=[_MARKER_DIR, "_", "."]).to_table()


def read_delta_table(uri: str, storage_options: dict[str, str] | None = None) -> pa.Table:
    """Read a whole Delta table into Arrow through deltalake's query engine.

    QueryBuilder avoids an intermittent abort at interpreter exit seen with `to_pyarrow_table`
    (delta-rs #2184; see the dagster notes).
    """
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(uri, storage_options=storage_options)
    reader = QueryBuilder().register("t", table).execute("SELECT * FROM t")
    return pa.table(reader.read_all())


def delta_table_counts(uri: str, id_column: str, storage_options: dict[str, str] | None = None) -> tuple[int, int]:
    """(rows, distinct ids) of a Delta table, computed by deltalake's engine (no full load)."""
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(uri, storage_options=storage_options)
    sql = f'SELECT count(*) AS n, count(DISTINCT "{id_column}") AS d FROM t'
    result = pa.table(QueryBuilder().register("t", table).execute(sql).read_all())
    return int(result["n"][0].as_py()), int(result["d"][0].as_py())


def parquet_file_count(root: str) -> int:
    """How many data files a Parquet sink wrote (for summaries)."""
    return sum(1 for _ in Path(root).rglob("*.parquet")) if Path(root).exists() else 0


__all__ = [
    "DeltaSink",
    "ParquetSink",
    "Partitioning",
    "PARTITION_CHOICES",
    "add_time_partitions",
    "read_delta_table",
    "read_parquet_dataset",
]
