"""Table writers that commit Kafka progress atomically with the data.

An output folder holds one publication (`Publication`: the topic and the publication id of its
`<topic>_status` start record) and records it; `claim` refuses another one (another topic, or
the same topic published again, e.g. re-created by a broker that lost its data) with
`PublicationMismatch`. Progress belongs to the table and the publication, never to the Kafka
consumer group: any group id resumes where the table stopped.

Delta: each append carries one Delta transaction identifier per Kafka partition it contains
(`app_id` = `<topic>:<publication id>:<partition>`, `version` = next offset to read); the
table's description records its publication. The data files and the offsets land in the same
commit, so after a crash at any point the table's own log says where to resume: nothing is
lost and nothing is written twice. Before each commit the sink checks, in
the snapshot the commit is based on, that every partition's offset is still the one the batch
started from; delta-rs then rejects the commit if a concurrent commit carries one of its
`app_id`s (ConcurrentTransaction). Two consumers started on the same table by mistake therefore
cannot both append the same messages: the late one stops with `ConcurrentConsumerError`.

Parquet: fink-client's layout (Hive folders, `part-*.parquet`), its publication recorded in
`_offsets/publication.json`. A batch is staged, then published: its files are written under
`_staging/` (ignored by pyarrow, pandas and Spark, like every `_` folder; named `*.staged`, so
`**/*.parquet` globs of polars or DuckDB miss them too), then its marker is
written atomically (the commit), then the files are moved into place. A crash before the marker
leaves only staged files, removed on resume; a crash after it leaves staged files of a committed
batch, moved into place on resume. Readers therefore never see a row of an uncommitted batch
(`parquet_dataset` also skips unmarked files that older versions could leave). Each consumer
holds an exclusive lock per Kafka partition (released by the kernel when the
process dies, even by SIGKILL), so a second consumer of the same partitions refuses to start.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from fink_pipeline.surveys.base import JD_UNIX_EPOCH, MJD_UNIX_EPOCH

PARTITION_CHOICES = ("finkclass", "tnsclass", "classId", "time", "none")
TIME_COLUMNS = ("year", "month", "day")


# Publication id of a topic published without a status topic (or by an older publisher): such
# a topic is identified by its name only (a re-creation of it cannot be told apart).
NO_PUBLICATION_ID = "-"


@dataclass(frozen=True)
class Publication:
    """What an output folder holds: the alerts of one publication of one topic.

    `publication_id` comes from the start record of `<topic>_status` (None when the topic has
    none: it is then identified by its name).
    """

    topic: str
    publication_id: str | None = None

    @property
    def key(self) -> str:
        """Prefix of the Delta transaction ids of this publication's offsets."""
        return f"{self.topic}:{self.publication_id or NO_PUBLICATION_ID}"

    def to_json(self) -> str:
        return json.dumps({"topic": self.topic, "publication_id": self.publication_id})

    @classmethod
    def from_json(cls, text: str | None) -> "Publication | None":
        """The recorded publication, None when `text` is not one."""
        try:
            data = json.loads(text or "")
            return cls(str(data["topic"]), data.get("publication_id"))
        except (ValueError, KeyError, TypeError):
            return None


class PublicationMismatch(RuntimeError):
    """The output folder holds another publication: another topic, or the same topic published
    again (its offsets then mean other alerts)."""


NEW_FOLDER_FIX = "fink_datatransfer: another -outdir, or --restart_from_beginning to replace this one"


def publication_mismatch(location: str, held: Publication | None, offered: Publication) -> PublicationMismatch:
    """The error for a folder holding `held` (None: alerts of an unrecorded publication) that
    was offered `offered`; the message names the folder, both publications and the fix."""
    if held is None:
        return PublicationMismatch(
            f"{location} holds alerts without a record of their topic (written by an earlier version): "
            f"download {offered.topic} into a new output folder ({NEW_FOLDER_FIX})")
    if held.topic != offered.topic:
        return PublicationMismatch(
            f"{location} holds topic {held.topic}, not {offered.topic}: download {offered.topic} into a new "
            "output folder (fink_datatransfer: another -outdir)")
    return PublicationMismatch(
        f"{location} holds an earlier publication of {held.topic} (id {held.publication_id or 'none'}); the topic "
        f"was published again since (id {offered.publication_id or 'none'}, re-created under the same name, e.g. "
        f"by a broker that lost its data), so its offsets mean other alerts: download it into a new output folder "
        f"({NEW_FOLDER_FIX})")


class ConcurrentConsumerError(RuntimeError):
    """Another consumer is writing the same Kafka partitions into the same table."""


class DiskFullError(RuntimeError):
    """The disk under the table is full; the batch was not committed."""

    def __init__(self, location: str) -> None:
        super().__init__(
            f"no space left on device writing {location}: free space and rerun; the table keeps every "
            "batch committed before and the transfer resumes where it stopped")


def _is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, as an OSError or inside a deltalake error message ("... (os error 28)")."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28)" in text


class Sink(Protocol):
    """Where decoded alerts go; `resume_offsets` and `write` must be exact across crashes."""

    location: str  # the table's folder or URI, for messages

    def prepare(self, schema: pa.Schema) -> None:
        """Create the table for rows of `schema` (before partitioning) if it does not exist."""

    def held_publication(self) -> Publication | None:
        """The publication recorded in the output (None when none is)."""

    def claim(self, publication: Publication, replace_other: bool = False) -> None:
        """Bind the sink to `publication`: record it in an output that holds nothing yet,
        raise PublicationMismatch when the output holds another one (or, with
        `replace_other`, where supported, empty the output first)."""

    def resume_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Next offset to read per Kafka partition, as committed in the table."""

    def write(self, table: pa.Table, next_offsets: dict[int, int], start_offsets: dict[int, int]) -> None:
        """Append `table` and commit, atomically with it, `next_offsets` for the batch's
        partitions; `start_offsets` are the offsets the batch started reading from."""

    def close(self) -> None:
        """Release what the sink holds (locks)."""


@dataclass(frozen=True)
class Partitioning:
    """How output rows are grouped into folders (`-partitionby`)."""

    mode: str
    time_column: str | None = None
    time_scale: str = "jd"

    def __post_init__(self) -> None:
        if self.mode not in PARTITION_CHOICES:
            raise ValueError(f"-partitionby {self.mode!r}: choose one of {', '.join(PARTITION_CHOICES)}")

    @property
    def columns(self) -> list[str]:
        if self.mode == "none":
            return []
        if self.mode == "time":
            return list(TIME_COLUMNS)
        return [self.mode]

    def check(self, schema: pa.Schema) -> None:
        """Fail early, naming the fix, when the content cannot be partitioned this way."""
        if self.mode == "none":
            return
        if self.mode == "time":
            if _time_field(schema, self.time_column) is None:
                raise ValueError(
                    f"-partitionby time needs the time column {self.time_column!r} in the topic's content; "
                    "use -partitionby none (or a class column) for this topic"
                )
            return
        if self.mode not in schema.names:
            raise ValueError(
                f"-partitionby {self.mode}: the topic has no {self.mode!r} field; "
                f"choose time, none or a class column among {[n for n in schema.names if 'class' in n.lower()]}"
            )
        dtype = schema.field(self.mode).type
        if pa.types.is_nested(dtype) or pa.types.is_binary(dtype) or pa.types.is_floating(dtype):
            raise ValueError(f"-partitionby {self.mode}: a {dtype} column cannot name folders; choose another")

    def apply(self, table: pa.Table) -> pa.Table:
        """Add the partition columns (vectorised); class columns are kept as they are."""
        if self.mode == "time":
            return add_time_partitions(table, self.time_column, self.time_scale)
        return table

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """Schema of the rows written for decoded rows of `schema`."""
        return self.apply(schema.empty_table()).schema


def _time_field(schema_or_table, time_column: str | None):
    """Dotted path of the time column as it exists in the content (root name when flattened)."""
    if not time_column:
        return None
    names = schema_or_table.schema.names if isinstance(schema_or_table, pa.Table) else schema_or_table.names
    for candidate in (time_column, time_column.rsplit(".", 1)[-1]):
        if candidate.split(".")[0] in names:
            schema = schema_or_table.schema if isinstance(schema_or_table, pa.Table) else schema_or_table
            dtype = schema.field(candidate.split(".")[0]).type
            ok = True
            for part in candidate.split(".")[1:]:
                if not pa.types.is_struct(dtype) or dtype.get_field_index(part) < 0:
                    ok = False
                    break
                dtype = dtype.field(part).type
            if ok:
                return candidate
    return None


def add_time_partitions(table: pa.Table, time_column: str | None, time_scale: str = "jd") -> pa.Table:
    """year/month/day of the survey's time column as zero-padded strings (`month=03`, the
    layout fink-client writes), replacing any existing year/month/day columns."""
    path = _time_field(table, time_column)
    if path is None:
        raise ValueError(f"-partitionby time needs the time column {time_column!r} in the content")
    parts = path.split(".")
    times = table[parts[0]]
    for part in parts[1:]:
        times = pc.struct_field(times, part)
    epoch = JD_UNIX_EPOCH if time_scale == "jd" else MJD_UNIX_EPOCH
    seconds = pc.multiply(pc.subtract(pc.cast(times, pa.float64()), epoch), 86400.0)
    stamps = pc.cast(pc.cast(pc.floor(seconds), pa.int64()), pa.timestamp("s"))
    table = table.drop_columns([c for c in TIME_COLUMNS if c in table.column_names])
    for name, fmt in zip(TIME_COLUMNS, ("%Y", "%m", "%d")):
        table = table.append_column(pa.field(name, pa.string()), pc.strftime(stamps, format=fmt))
    return table


# --------------------------------------------------------------------------------------------
# Delta


# Delta file statistics (data skipping) on the first 8 leaf columns only: the default 32 reach
# deep into nested alert records and double the write time of full packets.
DELTA_TABLE_CONFIGURATION = {"delta.dataSkippingNumIndexedCols": "8"}


def _delta_writer_properties():
    """Parquet settings of Delta data files: no dictionary encoding (alert columns are mostly
    distinct floats; dictionary attempts cost 2-3x the write time), column-chunk statistics
    (not per page), snappy compression."""
    from deltalake import ColumnProperties, WriterProperties

    return WriterProperties(compression="SNAPPY", default_column_properties=ColumnProperties(
        dictionary_enabled=False, statistics_enabled="CHUNK"))


class DeltaSink:
    """Append to a Delta table; Kafka offsets are Delta transaction identifiers."""

    def __init__(self, uri: str, partitioning: Partitioning,
                 storage_options: dict[str, str] | None = None, max_commit_retries: int = 100) -> None:
        self.uri = str(uri)
        self.partitioning = partitioning
        self.storage_options = storage_options
        self.max_commit_retries = max_commit_retries
        self.publication: Publication | None = None
        self._table = None

    @property
    def location(self) -> str:
        return self.uri

    def app_id(self, partition: int) -> str:
        """Transaction id of `partition`'s offset: keyed on the publication, not the group."""
        if self.publication is None:
            raise RuntimeError(f"{self.uri}: claim() the publication before reading or writing offsets")
        return f"{self.publication.key}:{partition}"

    def held_publication(self) -> Publication | None:
        """The publication recorded in the table (None: no table, or none recorded)."""
        table = self._load()
        return None if table is None else Publication.from_json(table.metadata().description)

    def claim(self, publication: Publication, replace_other: bool = False) -> None:
        """Record `publication` in a table holding no rows yet; refuse a table holding another,
        or with `replace_other` (a table the caller owns entirely, such as the pipeline's)
        delete its rows first: the table restarts cleanly with this publication.

        A table without rows may change hands: its offsets are keyed on the publication, so
        offsets of another one (all its messages undecodable) are never read as this one's.
        A crash between the delete and the new record leaves an empty table: claimed again
        on the next run.
        """
        table = self._load()
        if table is None:
            raise RuntimeError(f"{self.uri}: prepare() the table before claiming it")
        held = Publication.from_json(table.metadata().description)
        if held != publication:
            if table.file_uris():
                if not replace_other:
                    raise publication_mismatch(self.uri, held, publication)
                table.delete()  # one commit removing every row of the other publication
            table.alter.set_table_description(publication.to_json())
        self.publication = publication

    def _load(self):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            return DeltaTable(self.uri, storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    def prepare(self, schema: pa.Schema) -> None:
        """Create the (empty) table with the output schema and partition columns, once.

        Parallel consumers may race to create it: the loser finds it created and goes on.
        """
        from deltalake import DeltaTable

        self.partitioning.check(schema)
        if self._load() is not None:
            return
        try:
            DeltaTable.create(self.uri, schema=self.partitioning.output_schema(schema),
                              partition_by=self.partitioning.columns or None, mode="ignore",
                              configuration=DELTA_TABLE_CONFIGURATION, storage_options=self.storage_options)
        except Exception:
            if self._load() is None:
                raise

    def resume_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Next offset to read for each partition, from the table's transaction log."""
        self._table = self._load()
        return {p: self._committed(p) for p in partitions}

    def _committed(self, partition: int) -> int:
        version = self._table.transaction_version(self.app_id(partition)) if self._table is not None else None
        return int(version) if version is not None else 0

    def write(self, table: pa.Table, next_offsets: dict[int, int], start_offsets: dict[int, int]) -> None:
        from deltalake import CommitProperties, Transaction, write_deltalake
        from deltalake.exceptions import CommitFailedError

        table = self.partitioning.apply(table)
        if self._table is None:
            self.prepare(table.schema)
            self._table = self._load()
        else:
            self._table.update_incremental()
        # The commit below is based on this snapshot: if it still holds our start offsets, any
        # other writer of these partitions commits after it and delta-rs rejects our commit.
        moved = {p: self._committed(p) for p in next_offsets if self._committed(p) != start_offsets[p]}
        if moved:
            raise ConcurrentConsumerError(self._conflict_message(moved, start_offsets))
        transactions = [Transaction(app_id=self.app_id(p), version=int(o)) for p, o in sorted(next_offsets.items())]
        try:
            write_deltalake(
                self._table, table, mode="append",
                partition_by=self.partitioning.columns or None,
                writer_properties=_delta_writer_properties(),
                commit_properties=CommitProperties(app_transactions=transactions,
                                                   max_commit_retries=self.max_commit_retries),
            )
        except CommitFailedError as exc:
            if "Concurrent transaction" in str(exc):
                raise ConcurrentConsumerError(
                    f"{self.uri}: another consumer committed offsets of partitions {sorted(next_offsets)} "
                    "while this one was writing them; this batch was not committed. Run only one "
                    "fink_datatransfer per topic and output folder."
                ) from exc
            if _is_disk_full(exc):
                raise DiskFullError(self.uri) from None
            raise
        except Exception as exc:
            # delta-rs reports a full disk as "Failed to parse parquet: ... (os error 28)": say
            # what happened instead (data files without a commit are not part of the table)
            if _is_disk_full(exc):
                raise DiskFullError(self.uri) from None
            raise

    def _conflict_message(self, moved: dict[int, int], start: dict[int, int]) -> str:
        detail = ", ".join(f"partition {p}: table at {v}, this consumer at {start[p]}" for p, v in sorted(moved.items()))
        return (f"{self.uri}: another consumer is writing the same topic partitions into this table ({detail}). "
                "Stopped without writing: run only one fink_datatransfer per topic and output folder "
                "(the table stays exact; rerun the command once the other one is done to resume).")

    def close(self) -> None:
        self._table = None


# --------------------------------------------------------------------------------------------
# Parquet


_PART_NAME = re.compile(r"^part-(\d+)-(\d+)-(\d+)-\d+\.parquet$")
MARKER_DIR = "_offsets"
STAGING_DIR = "_staging"
PUBLICATION_FILE = "publication.json"  # in MARKER_DIR: the publication the folder holds
# Staged files do not end in .parquet: `**/*.parquet` globs (polars, DuckDB) that do not skip
# `_` folders as pyarrow, pandas and Spark do must not match them either.
STAGED_SUFFIX = ".staged"


def committed_batches(root: str | Path) -> set[str]:
    """Batch ids whose marker exists: their files are part of the dataset."""
    markers = Path(root) / MARKER_DIR
    return {m.stem.removeprefix("batch-") for m in markers.glob("batch-*.json")} if markers.exists() else set()


def is_committed_file(path: str | Path, batches: set[str]) -> bool:
    """True for a data file of a committed batch (False for leftovers of an interrupted one)."""
    match = _PART_NAME.match(Path(path).name)
    return match is None or "-".join(match.groups()) in batches


class ParquetSink:
    """A Hive-partitioned Parquet dataset with offset-derived file names (fink-client layout)."""

    def __init__(self, root: str, partitioning: Partitioning) -> None:
        self.root = Path(root)
        self.partitioning = partitioning
        self.publication: Publication | None = None
        self._locks: dict[int, int] = {}

    @property
    def location(self) -> str:
        return str(self.root)

    def _markers(self) -> Path:
        return self.root / MARKER_DIR

    def prepare(self, schema: pa.Schema) -> None:
        self.partitioning.check(schema)
        self._markers().mkdir(parents=True, exist_ok=True)

    def held_publication(self) -> Publication | None:
        """The publication recorded in the folder (None when none is)."""
        path = self._markers() / PUBLICATION_FILE
        return Publication.from_json(path.read_text()) if path.exists() else None

    def claim(self, publication: Publication, replace_other: bool = False) -> None:
        """Record `publication` in a folder without committed batches; refuse a folder that
        holds another one (the batch markers' offsets would be read as this one's)."""
        if replace_other:
            raise ValueError("a Parquet folder is never replaced in place: download into a new folder")
        self._markers().mkdir(parents=True, exist_ok=True)
        manifest = self._markers() / PUBLICATION_FILE
        for _ in range(2):  # a second pass only when another process recorded one meanwhile
            held = self.held_publication()
            if held == publication:
                self.publication = publication
                return
            if committed_batches(self.root):
                raise publication_mismatch(str(self.root), held, publication)
            tmp = manifest.with_name(f".{manifest.name}.{uuid.uuid4().hex}")
            tmp.write_text(publication.to_json())
            try:
                if held is None:
                    os.link(tmp, manifest)  # atomic create-if-absent: parallel consumers agree
                else:
                    os.replace(tmp, manifest)  # no batch committed yet: the folder changes hands
                    tmp = None
            except FileExistsError:
                continue
            finally:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
        held = self.held_publication()
        if held != publication:
            raise publication_mismatch(str(self.root), held, publication)
        self.publication = publication

    def _lock(self, partitions: Sequence[int]) -> None:
        """Exclusive lock per Kafka partition for this sink's lifetime (flock: freed on death)."""
        self._markers().mkdir(parents=True, exist_ok=True)
        for p in partitions:
            if p in self._locks:
                continue
            path = self._markers() / f".lock-{p}"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                self.close()
                raise ConcurrentConsumerError(
                    f"{self.root}: partition {p} of this topic is being written by another consumer "
                    "(lock held). Run only one fink_datatransfer per topic and output folder."
                ) from None
            self._locks[p] = fd

    def resume_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Next offset per partition from the batch markers. This consumer's staged batches
        (never another consumer's: their batches start at their partitions) are finished when
        committed (moved into place) and removed otherwise, as are unmarked files in place
        (left by older versions, which moved files into place before the marker)."""
        self._lock(partitions)
        done: dict[int, int] = {p: 0 for p in partitions}
        finished: set[str] = set()
        for marker in self._markers().glob("batch-*.json"):
            finished.add(marker.stem.removeprefix("batch-"))
            for p, (_, nxt) in json.loads(marker.read_text())["ranges"].items():
                if int(p) in done:
                    done[int(p)] = max(done[int(p)], int(nxt))
        owned = {str(p) for p in partitions}
        for path in self.root.rglob("part-*.parquet"):
            match = _PART_NAME.match(path.name)
            if match and match.group(1) in owned and "-".join(match.groups()) not in finished:
                path.unlink()  # written by a batch that died before its marker
        staging = self.root / STAGING_DIR
        for folder in staging.iterdir() if staging.exists() else []:
            if folder.name.split("-", 1)[0] in owned:
                if folder.name in finished:
                    self._publish_staged(folder)  # committed, interrupted while moving its files
                else:
                    shutil.rmtree(folder, ignore_errors=True)
        return done

    def write(self, table: pa.Table, next_offsets: dict[int, int], start_offsets: dict[int, int]) -> None:
        try:
            self._write(table, next_offsets, start_offsets)
        except OSError as exc:
            if _is_disk_full(exc):  # the batch has no marker: its files are removed on resume
                raise DiskFullError(str(self.root)) from None
            raise

    def _write(self, table: pa.Table, next_offsets: dict[int, int], start_offsets: dict[int, int]) -> None:
        table = self.partitioning.apply(table)
        p0 = min(next_offsets)
        batch_id = f"{p0}-{start_offsets[p0]}-{next_offsets[p0]}"
        # Stage, commit, publish: the files are written under _staging (invisible to readers),
        # the marker commits them, then they move into place. No reader ever sees a row of a
        # batch without a marker, whatever the moment of a crash.
        staging = self.root / STAGING_DIR / batch_id
        shutil.rmtree(staging, ignore_errors=True)
        if table.num_rows:
            for folder, rows in hive_groups(table, self.partitioning.columns):
                (staging / folder).mkdir(parents=True, exist_ok=True)
                # no dictionary encoding: mostly distinct floats, and it costs 2-3x the write time
                pq.write_table(rows, staging / folder / f"part-{batch_id}-0.parquet{STAGED_SUFFIX}", use_dictionary=False,
                               compression="snappy", row_group_size=64 * 1024)
        ranges = {p: [start_offsets[p], next_offsets[p]] for p in sorted(next_offsets)}
        marker = self._markers() / f"batch-{batch_id}.json"
        tmp = marker.with_name(f".{marker.name}.{uuid.uuid4().hex}")
        try:
            tmp.write_text(json.dumps({"ranges": ranges, "rows": table.num_rows, "at": time.time()}))
            os.replace(tmp, marker)  # the commit
        finally:
            tmp.unlink(missing_ok=True)
        self._publish_staged(staging)

    def _publish_staged(self, staging: Path) -> None:
        """Move a committed batch's staged files into place (again after a crash: idempotent)."""
        for path in sorted(staging.rglob(f"*.parquet{STAGED_SUFFIX}")):
            target = self.root / path.relative_to(staging).with_suffix("")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        shutil.rmtree(staging, ignore_errors=True)

    def close(self) -> None:
        for fd in self._locks.values():
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        self._locks = {}


def hive_groups(table: pa.Table, columns: list[str]):
    """(Hive folder, rows without the partition columns) per partition value, as pyarrow's
    dataset writer names them (`finkclass=SN%20candidate`, `__HIVE_DEFAULT_PARTITION__` for
    null). One sort and zero-copy slices: cheaper than the dataset writer's per-group takes."""
    if not columns:
        yield ".", table
        return
    ordered = table.sort_by([(c, "ascending") for c in columns])
    if len(columns) == 1:
        key = ordered[columns[0]].combine_chunks()
    else:
        key = pc.binary_join_element_wise(
            *[pc.fill_null(pc.cast(ordered[c], pa.string()), "\x00") for c in columns], "/").combine_chunks()
    runs = pc.run_end_encode(key)
    naming = ds.partitioning(pa.schema([ordered.schema.field(c) for c in columns]), flavor="hive")
    body = ordered.drop_columns(columns)
    start = 0
    for end in runs.run_ends.to_pylist():
        expression = None
        for c in columns:
            value = ordered[c][start]
            term = pc.field(c).is_null() if not value.is_valid else pc.field(c) == value
            expression = term if expression is None else expression & term
        yield naming.format(expression)[0], body.slice(start, end - start)
        start = end


# --------------------------------------------------------------------------------------------
# reading back


def read_parquet_dataset(root: str, columns: list[str] | None = None) -> pa.Table:
    """Read a dataset written by `ParquetSink`: committed batches only, Hive partitions restored."""
    return parquet_dataset(root).to_table(columns=columns)


def committed_parquet_files(root: str | Path) -> list[str]:
    """Data files of the folder's committed batches (what pandas and Spark read too: staged
    files live under `_staging`; unmarked files in place, which only older versions left
    after a crash, are skipped)."""
    root = Path(root)
    if not root.exists():
        return []
    batches = committed_batches(root)
    files = []
    for path in sorted(root.rglob("*.parquet")):
        hidden = any(part.startswith(("_", ".")) for part in path.relative_to(root).parts)
        if not hidden and is_committed_file(path, batches):
            files.append(str(path))
    return files


def parquet_dataset(root: str, partitioning: ds.Partitioning | str = "hive") -> ds.Dataset:
    """The `ParquetSink` dataset: its committed files, Hive partitions restored."""
    return ds.dataset(committed_parquet_files(root), format="parquet", partitioning=partitioning,
                      partition_base_dir=str(root), exclude_invalid_files=False)


def read_delta_table(uri: str, storage_options: dict[str, str] | None = None) -> pa.Table:
    """Read a whole Delta table into Arrow through deltalake's query engine.

    QueryBuilder avoids an intermittent abort at interpreter exit seen with `to_pyarrow_table`
    (delta-rs #2184; see the dagster notes).
    """
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(uri, storage_options=storage_options)
    reader = QueryBuilder().register("t", table).execute("SELECT * FROM t")
    # the query engine returns view types (string_view); give back the table's own schema
    schema = pa.schema(table.schema().to_arrow())
    return pa.table(reader.read_all()).select(schema.names).cast(schema)


def delta_data_files(uri: str, storage_options: dict[str, str] | None = None) -> list[str]:
    """URIs of the Parquet files of the table's current version: what engines without a Delta
    reader (DuckDB offline, Spark without delta-spark) read. Never glob the folder: it may
    also hold files of commits that failed or were superseded."""
    from deltalake import DeltaTable

    return DeltaTable(uri, storage_options=storage_options).file_uris()


def delta_committed_offsets(uri: str, partitions: Sequence[int],
                            storage_options: dict[str, str] | None = None) -> dict[int, int]:
    """Next offset per Kafka partition committed in the table, for the publication it holds."""
    sink = DeltaSink(uri, Partitioning("none"), storage_options=storage_options)
    held = sink.held_publication()
    if held is None:
        return {p: 0 for p in partitions}
    sink.publication = held
    return sink.resume_offsets(partitions)


def delta_table_counts(uri: str, id_column: str, storage_options: dict[str, str] | None = None) -> tuple[int, int]:
    """(rows, distinct ids) of a Delta table, computed by deltalake's engine (no full load)."""
    from deltalake import DeltaTable, QueryBuilder

    table = DeltaTable(uri, storage_options=storage_options)
    sql = f'SELECT count(*) AS n, count(DISTINCT "{id_column}") AS d FROM t'
    result = pa.table(QueryBuilder().register("t", table).execute(sql).read_all())
    return int(result["n"][0].as_py()), int(result["d"][0].as_py())


def rows_per_partition_value(uri: str, fmt: str, columns: list[str]) -> dict[str, int]:
    """Rows per partition folder value (`a/b/c` for several columns) without reading the data:
    Delta from the log's per-file record counts, Parquet from the file footers."""
    counts: dict[str, int] = {}
    if fmt == "delta":
        from deltalake import DeltaTable

        try:
            actions = pa.table(DeltaTable(uri).get_add_actions(flatten=True))
        except Exception:  # no table yet
            return counts
        values = [actions[f"partition.{c}"].to_pylist() for c in columns] if columns else []
        for i, n in enumerate(actions["num_records"].to_pylist()):
            key = "/".join(str(v[i]) for v in values) if columns else "all"
            counts[key] = counts.get(key, 0) + int(n or 0)
        return counts
    if not Path(uri).exists():
        return counts
    # folder values as written (`03`), not as inferred (3)
    partitioning = ds.HivePartitioning(pa.schema([(c, pa.string()) for c in columns])) if columns else None
    for fragment in parquet_dataset(uri, partitioning).get_fragments():
        expression = ds.get_partition_keys(fragment.partition_expression)
        key = "/".join(str(expression.get(c)) for c in columns) if columns else "all"
        counts[key] = counts.get(key, 0) + fragment.metadata.num_rows
    return counts


__all__ = [
    "ConcurrentConsumerError",
    "DeltaSink",
    "DiskFullError",
    "ParquetSink",
    "Partitioning",
    "PARTITION_CHOICES",
    "Publication",
    "PublicationMismatch",
    "committed_parquet_files",
    "delta_committed_offsets",
    "add_time_partitions",
    "delta_data_files",
    "delta_table_counts",
    "read_delta_table",
    "read_parquet_dataset",
    "rows_per_partition_value",
]
