"""Import real alerts into the night-partitioned archive (`fink-pipeline archive import`).

Inputs, recognised by their first bytes (not their names):

* Avro container files, plain or gzip-compressed (`.avro.gz`), any codec fastavro reads
  (null, deflate, snappy through cramjam, ...): raw survey packets (`ztf.alert`,
  `lsst.vX_Y.alert`, `elasticc.v0_9.alert`, `["null", T]` unions), Spark/Fink-written Avro
  (`topLevelRecord`, `[T, "null"]` unions) and Data Transfer output;
* Parquet files (Fink's science tables, consumer output, hive-partitioned folders);
* Confluent-framed Kafka message bodies (byte 0 = 0, 4-byte schema id, schemaless Avro), when a
  folder of survey schemas is given (`schemas_dir`, e.g. the `lsst-alert-packet` layout
  `v11_1/lsst.v11_1.alert.avsc`; schema id = major * 100 + minor, as Rubin's registry numbers them).

Directories are walked recursively; hidden and `_`-prefixed entries are ignored, as Spark does.
Reading the inputs lives in `archive.sources`, conforming them in `archive.conform`.

Schema evolution is explicit. Every input is read with its own (writer) schema, then conformed
to the survey's one unified archive schema: fields are matched by name at every nesting level,
fields the input lacks become null (never dropped from the archive), compatible types are cast
(float -> double, int -> long, string or nanosecond timestamps -> UTC microsecond timestamps,
timestamp logical types -> their raw long when the archive keeps a long, ...), and input fields
the archive schema does not know are reported per file as `dropped_fields` (partition columns
year/month/day and transfer-computed class columns are expected and not reported).

Night and atomicity. The night of an alert is the UTC date of the survey's time column
(`Survey.night_of`); rows whose time is missing or outside 1990..2099 are counted as invalid.
Rows are streamed in chunks into one staging folder per night (`<science>/_staging/import-*`,
invisible to readers); nothing is visible before the whole import has been read. Then each
night is published: a new night folder appears with one atomic rename; for a night that already
exists, each new part file is renamed into it (each file appears whole).

Re-import never duplicates alerts: an alert is identified by the survey's `alert_id`
(ZTF `candid`, Rubin `diaSourceId`, ELAsTiCC `alertId`), unique within its night, and a row whose
id is already in the night folder, or earlier in the same import, is skipped and counted as a
duplicate. The first version of an alert wins; replace a night by deleting its folder first.
Importing the same files again therefore writes nothing, and an import interrupted while
publishing is completed by running it again. Concurrent imports into the same survey root are
serialised by a lock file (`<science>/_import.lock`, local roots).

Memory stays bounded: files are read `chunk_rows` records at a time, rows wait in per-night
buffers flushed as Parquet row groups (at most `max_buffer_bytes` buffered in total), and at most
`max_open_writers` part files are open at once. What grows with the import is only the set of
alert ids per touched night (about 70 bytes per alert), needed for deduplication.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fink_pipeline.archive.generate import (
    COMPRESSION,
    MAX_FILE_BYTES,
    _delete_dir,
    _move_dir,
    _plain_columns,
)
from fink_pipeline.archive.conform import conform_batch, unknown_fields
from fink_pipeline.archive.layout import SCIENCE, night_dir, night_partition, resolve
from fink_pipeline.archive.sources import (
    CHUNK_ROWS,
    ImportFileError,
    SchemaRegistry,
    discover_files,
    read_source,
    sniff_format,
)
from fink_pipeline.surveys.base import Survey, flatten_schema

#: Rows of one night are written as a row group once this many are buffered...
ROWS_PER_GROUP = 20_000
#: ... or once they weigh this much (cutouts make rows heavy).
GROUP_BYTES = 64 * 1024 * 1024
#: Total bytes buffered over all nights before the largest buffer is flushed early.
MAX_BUFFER_BYTES = 256 * 1024 * 1024
#: Part files kept open at once; the least recently used one is closed beyond that.
MAX_OPEN_WRITERS = 32
#: Accepted observation times (UTC years): anything else is a corrupt or synthetic time.
FIRST_YEAR, LAST_YEAR = 1990, 2099
#: Columns derived from the directory names or computed by the transfer, never imported.
PARTITION_COLUMNS = ("year", "month", "day")
STAGING = "_staging"
EPOCH = dt.date(1970, 1, 1)
LOCK_FILE = "_import.lock"

# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


@dataclass
class FileImport:
    """What happened to one input file."""

    path: str
    format: str = "unknown"
    writer_schema: str = ""
    rows_read: int = 0
    imported: int = 0
    duplicates: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    dropped_fields: tuple[str, ...] = ()
    # fields present in the input whose values could not take the archive type (kept as null)
    incompatible_fields: tuple[str, ...] = ()
    error: str | None = None
    # found while walking a folder but not an alert file (schemas, READMEs): not an error
    ignored: bool = False

    @property
    def skipped(self) -> bool:
        """True when the file could not be read at all."""
        return self.error is not None and self.rows_read == 0 and not self.ignored

    @property
    def invalid_rows(self) -> int:
        return sum(self.invalid.values())


@dataclass(frozen=True)
class NightImport:
    """New alerts published into one night folder."""

    night: dt.date
    path: str
    alerts: int
    files: int
    bytes: int


@dataclass
class ImportReport:
    """Per-file and per-night outcome of one `import_alerts` call."""

    survey: str
    root: str
    files: list[FileImport] = field(default_factory=list)
    nights: list[NightImport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_imported(self) -> int:
        return sum(n.alerts for n in self.nights)

    @property
    def total_read(self) -> int:
        return sum(f.rows_read for f in self.files)

    @property
    def total_duplicates(self) -> int:
        return sum(f.duplicates for f in self.files)

    @property
    def total_invalid(self) -> int:
        return sum(f.invalid_rows for f in self.files)

    @property
    def failed_files(self) -> list[FileImport]:
        """Files with an error, including those that failed after some rows were imported."""
        return [f for f in self.files if f.error is not None and not f.ignored]

    @property
    def per_night(self) -> dict[dt.date, int]:
        return {n.night: n.alerts for n in self.nights}

    def as_dict(self) -> dict:
        """JSON-friendly summary."""
        return {
            "survey": self.survey,
            "root": self.root,
            "read": self.total_read,
            "imported": self.total_imported,
            "duplicates": self.total_duplicates,
            "invalid": self.total_invalid,
            "seconds": round(self.seconds, 3),
            "nights": [
                {"night": n.night.isoformat(), "path": n.path, "alerts": n.alerts, "files": n.files, "bytes": n.bytes}
                for n in self.nights
            ],
            "files": [
                {"path": f.path, "format": f.format, "writer_schema": f.writer_schema, "read": f.rows_read,
                 "imported": f.imported, "duplicates": f.duplicates, "invalid": dict(f.invalid),
                 "dropped_fields": list(f.dropped_fields), "incompatible_fields": list(f.incompatible_fields),
                 "error": f.error, "ignored": f.ignored}
                for f in self.files
            ],  # fmt: skip
        }


# --------------------------------------------------------------------------------------------
# Alert ids and nights
# --------------------------------------------------------------------------------------------


def column_at(batch: pa.RecordBatch | pa.Table, dotted: str) -> pa.Array | pa.ChunkedArray:
    """The (possibly nested) column at a dotted path; a null parent gives a null value."""
    head, *rest = dotted.split(".")
    arr = batch.column(head)
    for name in rest:
        arr = pc.struct_field(arr, name)
    return arr


def fill_alert_ids(batch: pa.RecordBatch, survey: Survey) -> pa.RecordBatch:
    """Fill a null root alert id from the survey's fallbacks (`extra["alert_id_fallbacks"]`).

    Rubin lsst.v7_4 packets carry `alertId` instead of the root `diaSourceId`, which is always
    the triggering `diaSource.diaSourceId`.
    """
    fallbacks = survey.extra.get("alert_id_fallbacks", ())
    index = batch.schema.get_field_index(survey.alert_id)
    if not fallbacks or index < 0:
        return batch
    ids = batch.column(index)
    if ids.null_count == 0:
        return batch
    for path in fallbacks:
        ids = pc.coalesce(ids, column_at(batch, path).cast(ids.type))
    return batch.set_column(index, survey.alert_id, ids)


def night_days(survey: Survey, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray]:
    """(days since 1970-01-01 of each row's UTC night, validity mask) from the time column."""
    values = column_at(batch, survey.time_column).cast(pa.float64()).to_numpy(zero_copy_only=False)
    values = np.asarray(values, dtype=np.float64)  # nulls come back as NaN
    with np.errstate(invalid="ignore", over="ignore"):
        seconds = survey.time_to_unix_seconds(values)
        days = np.floor(seconds / 86400.0)
        low = (dt.date(FIRST_YEAR, 1, 1) - EPOCH).days
        high = (dt.date(LAST_YEAR + 1, 1, 1) - EPOCH).days
        valid = np.isfinite(days) & (days >= low) & (days < high)
    return np.where(valid, days, 0).astype(np.int64), valid


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class _NightBuffer:
    """Rows of one night waiting to be written, and the part files written so far."""

    def __init__(self, night: dt.date, folder: str) -> None:
        self.night = night
        self.folder = folder
        self.pending: list[pa.RecordBatch] = []
        self.pending_rows = 0
        self.pending_bytes = 0
        self.parts: list[str] = []
        self.rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.stream = None


class _NightWriters:
    """Per-night staging writers with bounded buffers and a bounded number of open files."""

    def __init__(self, fs: pafs.FileSystem, staging: str, schema: pa.Schema, prefix: str,
                 max_buffer_bytes: int, max_open_writers: int, max_file_bytes: int) -> None:  # fmt: skip
        self.fs = fs
        self.staging = staging
        self.schema = schema
        self.prefix = prefix
        self.max_buffer_bytes = max_buffer_bytes
        self.max_open_writers = max_open_writers
        self.max_file_bytes = max_file_bytes
        self.nights: dict[dt.date, _NightBuffer] = {}
        self.open: OrderedDict[dt.date, None] = OrderedDict()
        self.buffered_bytes = 0
        self.dictionary = _plain_columns(schema)["dictionary"]

    def add(self, night: dt.date, rows: pa.RecordBatch) -> None:
        buf = self.nights.get(night)
        if buf is None:
            folder = f"{self.staging}/{night_partition(night)}"
            self.fs.create_dir(folder, recursive=True)
            buf = self.nights[night] = _NightBuffer(night, folder)
        size = rows.nbytes
        buf.pending.append(rows)
        buf.pending_rows += rows.num_rows
        buf.pending_bytes += size
        self.buffered_bytes += size
        if buf.pending_rows >= ROWS_PER_GROUP or buf.pending_bytes >= GROUP_BYTES:
            self._flush(buf)
        while self.buffered_bytes > self.max_buffer_bytes:
            self._flush(max(self.nights.values(), key=lambda b: b.pending_bytes))

    def _flush(self, buf: _NightBuffer) -> None:
        if not buf.pending_rows:
            return
        table = pa.Table.from_batches(buf.pending, schema=self.schema)
        if buf.writer is not None and buf.stream.tell() >= self.max_file_bytes:
            self._close(buf)
        if buf.writer is None:
            if len(self.open) >= self.max_open_writers:
                self._close(self.nights[next(iter(self.open))])
            path = f"{buf.folder}/part-{self.prefix}-{len(buf.parts):05d}.parquet"
            buf.stream = self.fs.open_output_stream(path)
            buf.writer = pq.ParquetWriter(buf.stream, self.schema, compression=COMPRESSION,
                                          use_dictionary=self.dictionary, write_statistics=self.dictionary)  # fmt: skip
            buf.parts.append(path)
            self.open[buf.night] = None
        self.open.move_to_end(buf.night)
        buf.writer.write_table(table, row_group_size=table.num_rows)
        buf.rows += table.num_rows
        self.buffered_bytes -= buf.pending_bytes
        buf.pending, buf.pending_rows, buf.pending_bytes = [], 0, 0

    def _close(self, buf: _NightBuffer) -> None:
        if buf.writer is not None:
            buf.writer.close()
            buf.stream.close()
            buf.writer = buf.stream = None
            self.open.pop(buf.night, None)

    def finish(self) -> None:
        """Flush every buffer and close every file."""
        for buf in self.nights.values():
            self._flush(buf)
            self._close(buf)

    def abort(self) -> None:
        for buf in self.nights.values():
            with contextlib.suppress(Exception):
                if buf.writer is not None:
                    buf.writer.close()
                    buf.stream.close()


def _existing_ids(fs: pafs.FileSystem, folder: str, column: str) -> set:
    """Alert ids already present in a published night folder (reads that one column)."""
    ids: set = set()
    if fs.get_file_info(folder).type == pafs.FileType.NotFound:
        return ids
    for info in fs.get_file_info(pafs.FileSelector(folder)):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet"):
            continue
        if info.base_name.startswith((".", "_")):
            continue
        with fs.open_input_file(info.path) as fh:
            parquet = pq.ParquetFile(fh)
            if column not in parquet.schema_arrow.names:
                continue
            for batch in parquet.iter_batches(columns=[column], batch_size=65_536):
                ids.update(v for v in batch.column(0).to_pylist() if v is not None)
    return ids


@contextlib.contextmanager
def _import_lock(fs: pafs.FileSystem, science: str):
    """Serialise imports into one survey root (advisory lock; local filesystems only)."""
    if fs.type_name != "local":
        yield
        return
    import fcntl

    os.makedirs(science, exist_ok=True)
    with open(os.path.join(science, LOCK_FILE), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _publish_night(fs: pafs.FileSystem, buf: _NightBuffer, final: str) -> int:
    """Make a staged night visible; returns the bytes published."""
    sizes = sum(fs.get_file_info(p).size for p in buf.parts)
    if fs.get_file_info(final).type == pafs.FileType.NotFound:
        fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
        _move_dir(fs, buf.folder, final)  # one rename: the whole night appears at once
    else:
        for part in buf.parts:  # each file appears whole; ids make a re-run complete the rest
            fs.move(part, f"{final}/{part.rsplit('/', 1)[1]}")
    return sizes


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def import_alerts(
    paths: Sequence[str | os.PathLike],
    survey: Survey,
    root: str,
    progress: Callable[[int], None] | None = None,
    *,
    schemas_dir: str | os.PathLike | None = None,
    chunk_rows: int = CHUNK_ROWS,
    max_buffer_bytes: int = MAX_BUFFER_BYTES,
    max_open_writers: int = MAX_OPEN_WRITERS,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> ImportReport:
    """Import the alerts of `paths` (files or folders) into `<root>/<survey>/science/`.

    See the module docstring for formats, schema evolution, night assignment, deduplication and
    atomicity. `progress` is called with the number of input rows read after each chunk (an
    increment, e.g. `tqdm.update`). A file that cannot be read is reported and skipped; the
    other files are still imported. Raises FileNotFoundError for a path that does not exist and
    ValueError for bad limits.
    """
    if chunk_rows <= 0 or max_buffer_bytes <= 0 or max_open_writers <= 0:
        raise ValueError("chunk_rows, max_buffer_bytes and max_open_writers must be positive")
    t0 = time.perf_counter()
    files = discover_files(paths)
    report = ImportReport(survey=survey.name, root=str(root))
    fs, base = resolve(root)
    science = f"{base.rstrip('/')}/{survey.name}/{SCIENCE}"
    target = survey.archive_schema
    if target.get_field_index(survey.alert_id) < 0:
        raise ValueError(f"survey {survey.name}: alert_id {survey.alert_id!r} is not a root archive column")
    ignored = set(PARTITION_COLUMNS) | {c for c in survey.class_columns if target.get_field_index(c) < 0}
    registry = SchemaRegistry(schemas_dir)
    import_id = uuid.uuid4().hex[:12]
    staging = f"{science}/{STAGING}/import-{import_id}"

    with _import_lock(fs, science):
        fs.create_dir(staging, recursive=True)
        writers = _NightWriters(fs, staging, target, f"import-{import_id}", max_buffer_bytes,
                                max_open_writers, max_file_bytes)  # fmt: skip
        known_ids: dict[dt.date, set] = {}
        try:
            for path, explicit in files:
                entry = FileImport(path=path)
                report.files.append(entry)
                if not explicit and sniff_format(path) == "unknown":
                    entry.ignored = True  # a schema or README next to the alerts
                    entry.error = "not an alert file (ignored)"
                    continue
                _import_file(path, entry, survey, target, ignored, registry, chunk_rows, writers,
                             known_ids, fs, science, progress)  # fmt: skip
            writers.finish()
            for night in sorted(writers.nights):
                buf = writers.nights[night]
                if not buf.rows:
                    continue
                final = f"{science}/{night_partition(night)}"
                size = _publish_night(fs, buf, final)
                report.nights.append(
                    NightImport(night, night_dir(root, survey.name, night), buf.rows, len(buf.parts), size)
                )
        except BaseException:
            writers.abort()
            raise
        finally:
            _delete_dir(fs, staging)
    report.seconds = time.perf_counter() - t0
    return report


def _import_file(path, entry: FileImport, survey: Survey, target: pa.Schema, ignored: set,
                 registry: SchemaRegistry, chunk_rows: int, writers: _NightWriters,
                 known_ids: dict[dt.date, set], fs: pafs.FileSystem, science: str, progress) -> None:  # fmt: skip
    """Stream one file into the night writers, recording counts and errors in `entry`."""
    entry.format = sniff_format(path)
    try:
        entry.writer_schema, source_schema, batches = read_source(path, entry.format, registry, chunk_rows)
        entry.dropped_fields = unknown_fields(source_schema, target, ignored)
        missing_time = _missing_path(source_schema, survey.time_column)
        if missing_time:
            raise ImportFileError(
                f"no {survey.time_column} field ({missing_time!r} missing): not a {survey.name} alert "
                "file, or the wrong --survey"
            )
        issues: list[str] = []
        for batch in batches:
            entry.rows_read += batch.num_rows
            batch = fill_alert_ids(conform_batch(batch, target, issues), survey)
            if issues:
                entry.incompatible_fields = tuple(dict.fromkeys((*entry.incompatible_fields, *issues)))
                issues.clear()
            _route(batch, entry, survey, writers, known_ids, fs, science)
            if progress is not None:
                progress(batch.num_rows)
    except (ImportFileError, OSError, ValueError, TypeError, KeyError, pa.ArrowException, EOFError) as exc:
        # fastavro raises plain ValueError/EOFError/KeyError on corrupt blocks
        message = str(exc) if isinstance(exc, ImportFileError) else f"{type(exc).__name__}: {exc}"
        entry.error = message if not entry.rows_read else f"{message} (after {entry.rows_read} rows)"


def _missing_path(schema: pa.Schema, dotted: str) -> str | None:
    """The first part of a dotted path the schema lacks, or None."""
    paths = flatten_schema(schema)
    parts = dotted.split(".")
    for i in range(1, len(parts) + 1):
        prefix = ".".join(parts[:i])
        if prefix not in paths:
            return prefix
    return None


def _route(batch: pa.RecordBatch, entry: FileImport, survey: Survey, writers: _NightWriters,
           known_ids: dict[dt.date, set], fs: pafs.FileSystem, science: str) -> None:  # fmt: skip
    """Split a conformed batch by night, drop invalid and duplicate rows, buffer the rest."""
    days, valid_time = night_days(survey, batch)
    bad_time = f"{survey.time_column} missing or outside {FIRST_YEAR}..{LAST_YEAR}"
    ids = batch.column(survey.alert_id).to_pylist()
    keep = np.zeros(batch.num_rows, dtype=bool)
    for i, (day, ok, alert_id) in enumerate(zip(days.tolist(), valid_time.tolist(), ids)):
        if not ok or alert_id is None:
            reason = bad_time if not ok else f"{survey.alert_id} missing"
            entry.invalid[reason] = entry.invalid.get(reason, 0) + 1
            continue
        night = EPOCH + dt.timedelta(days=day)
        seen = known_ids.get(night)
        if seen is None:
            seen = known_ids[night] = _existing_ids(fs, f"{science}/{night_partition(night)}", survey.alert_id)
        if alert_id in seen:
            entry.duplicates += 1
            continue
        seen.add(alert_id)
        keep[i] = True
    if not keep.any():
        return
    kept_days = days[keep]
    rows = batch.filter(pa.array(keep))
    distinct = np.unique(kept_days).tolist()
    for day in distinct:
        part = rows.filter(pa.array(kept_days == day)) if len(distinct) > 1 else rows
        writers.add(EPOCH + dt.timedelta(days=day), part)
        entry.imported += part.num_rows
