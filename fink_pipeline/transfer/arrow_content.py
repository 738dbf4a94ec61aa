"""A transfer's content columns read straight from the archive's Parquet files, in Arrow.

Spark's JVM reads nested alert columns and converts them to Arrow for the Python workers at
several times pyarrow's cost (bench/README.md has the figures). So when a content is made of
plain fields of a local archive, Spark only selects: it reads the columns that classification,
classes and conditions need and returns, for each selected alert, its file and row index plus
the columns Spark computes (classes, night partition columns). When nothing filters on the
classes, Spark reads no column at all and the task classifies the rows itself with the survey's
Arrow classifier (tested equal to Spark's, alert by alert). The publishing task reads the
content of exactly those rows with pyarrow as the selection batches arrive (`ArrowContent.stream`)
and projects it as `content.project` does in Spark (same names, same types: struct columns
rebuilt without nulls, timestamps as Spark's strings), so the published bytes do not depend on
which side read them (tests compare the two row for row).
"""

from __future__ import annotations

import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fink_pipeline.surveys.base import schema_field_type

if TYPE_CHECKING:
    from pyspark import RDD
    from pyspark.sql import DataFrame, SparkSession

# Columns of the selection rows that locate an alert in the archive.
FILE_COLUMN = "_fink_archive_file"
ROW_COLUMN = "_fink_archive_row"
# The column of selection rows that stand for a whole row group (`ArrowContent.row_groups`).
ROW_GROUP_COLUMN = "_fink_archive_row_group"
# Rows decoded at once: bounds the task's memory for heavy contents (cutouts: ~45 kB/alert) and
# for large row groups (1M light alerts from row groups of 20,000: ~40 MiB less per worker than
# with 32 MiB slices).
_SLICE_BYTES = 8 * 1024 * 1024
# Content batches handed to the encoder hold at least this many rows, or this many bytes: an
# archive of small files (2,500 alerts each with cutouts) would otherwise give batches of a
# few thousand rows, and encoding pays a fixed cost per batch and column (light content of
# 2,500-row batches took 1.7x the encoding CPU of 10,000-row ones). Each batch is held several
# times over while it is encoded and produced: 8,192 rows or 8 MiB instead of 16,384 or 16 MiB
# took 85 MiB off the peak RSS of a 1M-alert transfer (two workers), in the same time.
_MIN_BATCH_ROWS = 8_192
_MAX_BATCH_BYTES = 8 * 1024 * 1024
_MAX_BATCH_WAIT_S = 0.5


@dataclass
class Selection:
    """One task's selected rows: archive file (`codes` index `files`), row index, Spark's columns."""

    files: list[str]
    codes: np.ndarray
    rows: np.ndarray
    carried: pa.Table | None


@dataclass(frozen=True)
class ArrowContent:
    """How a publishing task turns selection rows into the content batches it publishes.

    `columns` are the content's (source path, output name) pairs in publication order;
    outputs named in `carried` come from the selection rows (computed by Spark), the others
    from the archive file's columns `file_columns`, dotted paths read as structs holding only
    those fields (7 of the 103 `candidate` fields for a light packet). `archive_schema` types
    what a night written with an older schema lacks, so it reads as Spark reads it (null).
    `output_schema` is the Arrow schema Spark's projection would have (the Avro schema's source).
    Outputs named in `classified` are computed by `classify` from the `class_inputs` paths.
    """

    columns: tuple[tuple[str, str], ...]
    carried: tuple[str, ...]
    file_columns: tuple[str, ...]
    archive_schema: pa.Schema
    output_schema: pa.Schema
    # class columns the task computes with `classify` (the survey's Arrow classifier) from
    # the archive columns `class_inputs`, when Spark has no class to filter on
    classified: tuple[str, ...] = ()
    class_inputs: tuple[str, ...] = ()
    classify: Callable[[pa.Table], dict[str, pa.Array]] | None = None
    # (file, first row, rows) of every row group of the nights, when every row is published:
    # selection rows are then indices into it (column ROW_GROUP_COLUMN), so that Spark lists
    # a few hundred row groups instead of every alert (`expand` turns them into rows)
    row_groups: tuple[tuple[str, int, int], ...] = ()

    def expand(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Selection rows that stand for row groups (`row_groups`) as the rows of those groups,
        in the order given; any other selection batch as it is."""
        if ROW_GROUP_COLUMN not in batch.schema.names:
            return batch
        indices = batch.column(ROW_GROUP_COLUMN).to_numpy(zero_copy_only=False)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self.row_groups)):
            raise ValueError(f"row group {indices.max()} of a selection of {len(self.row_groups)}")
        groups = [self.row_groups[i] for i in indices.tolist()]
        uris = sorted({uri for uri, _, _ in groups})
        code_of = {uri: code for code, uri in enumerate(uris)}
        counts = np.array([rows for _, _, rows in groups], np.int64)
        starts = np.array([first for _, first, _ in groups], np.int64)
        codes = np.repeat(np.array([code_of[uri] for uri, _, _ in groups], np.int32), counts)
        # row k of group i is starts[i] + k: one arange, shifted per group
        bounds = np.r_[0, np.cumsum(counts)]
        rows = np.arange(bounds[-1], dtype=np.int64) + np.repeat(starts - bounds[:-1], counts)
        files = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(uris, pa.string()))
        return pa.RecordBatch.from_arrays([files, pa.array(rows)], names=[FILE_COLUMN, ROW_COLUMN])

    def stream(self, selection: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """The content of the selection rows as they arrive, in bounded batches.

        Spark hands a task its rows file split by file split, row group by row group, in row
        order: each row group is then decoded once, slice by slice, and the selected rows of a
        selection batch are published before the next one is read. Rows that break that order
        (a sorted `limit`, a revisited row group) are collected and read at the end, as
        `batches(collect(...))` reads them; either way every selection row is read once.
        """
        yield from _coalesced(self._stream(selection))

    def _stream(self, selection: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        reader = _OrderedReader(self)
        for batch in selection:
            if batch.num_rows:
                yield from reader.add(self.expand(batch))
        reader.close()
        if reader.late:
            yield from self.batches(self.collect(reader.late))

    def collect(self, batches: Iterable[pa.RecordBatch]) -> "Selection":
        """A task's selection rows, compacted: file names once, ~40 bytes per row."""
        files: dict[str, int] = {}
        codes, rows, carried = [], [], []
        for batch in batches:
            if batch.num_rows == 0:
                continue
            batch = self.expand(batch)
            encoded = pc.dictionary_encode(batch.column(FILE_COLUMN))
            known = [files.setdefault(name, len(files)) for name in encoded.dictionary.to_pylist()]
            codes.append(np.array(known, dtype=np.int32)[encoded.indices.to_numpy(zero_copy_only=False)])
            rows.append(batch.column(ROW_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
            carried.append(batch.select(list(self.carried)))
        if not codes:
            return Selection([], np.empty(0, np.int32), np.empty(0, np.int64), None)
        return Selection(list(files), np.concatenate(codes), np.concatenate(rows), pa.Table.from_batches(carried))

    def batches(self, selection: "Selection") -> Iterator[pa.RecordBatch]:
        """The content of the selected rows, file by file in row order, in bounded batches."""
        if len(selection.rows) == 0:
            return
        name_rank = np.argsort(np.argsort(selection.files)).astype(np.int32)
        order = np.lexsort((selection.rows, name_rank[selection.codes]))
        codes, rows = selection.codes[order], selection.rows[order]
        carried = selection.carried.take(pa.array(order))
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        stops = np.r_[starts[1:], len(codes)]
        for start, stop in zip(starts.tolist(), stops.tolist()):
            yield from self._file_batches(
                selection.files[codes[start]], rows[start:stop], carried.slice(start, stop - start)
            )

    def _file_batches(self, uri: str, rows: np.ndarray, carried: pa.Table) -> Iterator[pa.RecordBatch]:
        archive_file = _ArchiveFile(uri, self.file_columns)
        group_of = archive_file.groups_of(rows)
        done = 0
        for group in np.unique(group_of).tolist():
            wanted = rows[group_of == group] - archive_file.group_starts[group]
            cursor = _GroupCursor(archive_file, group)
            yield from cursor.take(self, wanted, carried.slice(done, len(wanted)))
            done += len(wanted)

    def project(self, raw: pa.RecordBatch, carried: pa.Table | pa.RecordBatch) -> pa.RecordBatch:
        """The output columns of rows `raw` (archive root columns) and `carried` (same rows)."""
        arrays = []
        classes = self._classes(raw) if self.classified else {}
        for source, name in self.columns:
            target = self.output_schema.field(name).type
            if name in classes:
                column = classes[name]
            elif name in self.carried:
                column = carried.column(name)
                if isinstance(column, pa.ChunkedArray):
                    column = column.combine_chunks()
            else:
                column = self._resolve(raw, source)
                if pa.types.is_struct(column.type):
                    column = _without_nulls(column)
                elif pa.types.is_timestamp(column.type):
                    column = spark_timestamp_strings(column)
            arrays.append(conform(column, target))
        return pa.RecordBatch.from_arrays(arrays, schema=self.output_schema)

    def _classes(self, raw: pa.RecordBatch) -> dict[str, pa.Array]:
        """The `classified` columns of rows `raw`, from their inputs (null where a night lacks one)."""
        inputs = pa.table({path: self._resolve(raw, path) for path in self.class_inputs})
        labels = self.classify(inputs)
        return {name: labels[name] for name in self.classified}

    def _resolve(self, raw: pa.RecordBatch, source: str) -> pa.Array:
        root, *path = source.split(".")
        if root in raw.schema.names:
            column = raw.column(root)
        else:  # a night written before the column existed
            column = pa.nulls(raw.num_rows, self.archive_schema.field(root).type)
        for depth, part in enumerate(path, start=1):
            if column.type.get_field_index(part) < 0:  # a field added after this night was written
                column = pa.nulls(raw.num_rows, _nested_type(self.archive_schema.field(root).type, path[:depth]))
            else:
                column = pc.struct_field(column, part)  # a null parent gives a null child
        return column


@dataclass(frozen=True)
class RowGroupSplits:
    """Row groups 0..count-1 of a whole-nights publication (`ArrowContent.row_groups`), in
    `partitions` Spark partitions of consecutive groups, split as
    `spark.range(count, numPartitions=partitions)` splits its ids.

    The publisher runs them as an RDD on a classic session: no Spark SQL, whose first query
    cost a cold JVM ~2.5 CPU-s and ~2 s before the first publishing task (measured, issue 17).
    Spark Connect has no RDDs: there they are `to_dataframe()`."""

    session: "SparkSession"
    count: int
    partitions: int

    def groups_of(self, partition: int) -> range:
        """The row groups of Spark partition `partition` (spark.range's integer split)."""
        return range(partition * self.count // self.partitions, (partition + 1) * self.count // self.partitions)

    def resplit(self, partitions: int) -> "RowGroupSplits":
        """The same row groups in `partitions` Spark partitions."""
        return RowGroupSplits(self.session, self.count, partitions)

    def to_rdd(self) -> "RDD":
        """One element per Spark partition: its range of row groups (a list of `partitions`
        elements is sliced one element per partition, in order)."""
        splits = [self.groups_of(p) for p in range(self.partitions)]
        return self.session.sparkContext.parallelize(splits, self.partitions)

    def to_dataframe(self) -> "DataFrame":
        """The row groups as a DataFrame of one column, `ROW_GROUP_COLUMN`."""
        ids = self.session.range(0, self.count, 1, numPartitions=self.partitions)
        return ids.withColumnRenamed("id", ROW_GROUP_COLUMN)


class _ArchiveFile:
    """One archive file's footer facts: the content columns it has and where its row groups start."""

    def __init__(self, uri: str, file_columns: Sequence[str]) -> None:
        self.uri = uri
        # pq.ParquetFile's own reader, opened as it opens it, without the Python index of nested
        # column paths it builds for every file: the leaf indices of the content columns are
        # worked out once per schema (`_column_layout`)
        self.reader = pq.ParquetReader()
        self.reader.open(_open_archive_file(uri), arrow_extensions_enabled=True)
        self.metadata = self.reader.metadata
        self.columns, self.leaves = _column_layout(self.metadata.schema, tuple(file_columns))
        group_rows = [self.metadata.row_group(g).num_rows for g in range(self.metadata.num_row_groups)]
        self.group_starts = np.r_[0, np.cumsum(group_rows, dtype=np.int64)]

    def groups_of(self, rows: np.ndarray) -> np.ndarray:
        """The row group of each file row index, refusing rows the file does not have."""
        if len(rows) and (rows.min() < 0 or rows.max() >= self.group_starts[-1]):
            raise ValueError(f"{self.uri} has {self.group_starts[-1]} rows, the selection asks for row "
                             f"{rows.max()}: the archive file changed while the transfer ran")
        return np.searchsorted(self.group_starts, rows, side="right") - 1


class _GroupCursor:
    """Decodes one row group slice by slice, forward only, keeping the current slice for the
    selected rows still to come (a row repeated once per catalogue source it matches)."""

    def __init__(self, archive_file: _ArchiveFile, group: int) -> None:
        self.group = group
        slice_rows = _slice_rows(archive_file.metadata.row_group(group), archive_file.leaves)
        self._slices = archive_file.reader.iter_batches(
            slice_rows, row_groups=[group], column_indices=archive_file.leaves, use_threads=False)
        self.raw: pa.RecordBatch | None = None
        self.start = 0  # row of the group where `raw` starts
        self.last_row = -1  # the last row taken (rows must come in order)

    def take(self, content: "ArrowContent", wanted: np.ndarray, carried: pa.Table | pa.RecordBatch
             ) -> Iterator[pa.RecordBatch]:
        """The content of rows `wanted` of the group (sorted, at or after the last row taken)."""
        done = 0
        while done < len(wanted):
            while self.raw is None or wanted[done] >= self.start + self.raw.num_rows:
                if self.raw is not None:
                    self.start += self.raw.num_rows
                self.raw = next(self._slices)
            end = self.start + self.raw.num_rows
            stop = int(np.searchsorted(wanted, end, side="left"))
            part = wanted[done:stop] - self.start
            # rows are sorted, a row repeated once per catalogue source it matches: as many
            # rows as they span means a run of distinct rows, sliced without a copy
            contiguous = part[-1] - part[0] == len(part) - 1
            taken = self.raw.slice(int(part[0]), len(part)) if contiguous else self.raw.take(pa.array(part))
            yield content.project(taken, carried.slice(done, stop - done))
            done = stop
        if len(wanted):
            self.last_row = int(wanted[-1])


class _OrderedReader:
    """Reads the content of selection rows arriving in archive order (`ArrowContent.stream`).

    One row group is open at a time; rows of a group already left, or before the last row
    taken, end the ordered reading: they and every later row go to `late`."""

    def __init__(self, content: ArrowContent) -> None:
        self.content = content
        self.files: dict[str, _ArchiveFile] = {}
        self.cursor: _GroupCursor | None = None
        self.cursor_key: tuple[str, int] | None = None
        self.left: set[tuple[str, int]] = set()
        self.late: list[pa.RecordBatch] = []

    def add(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        """The content of `batch`'s rows that keep the archive order (the rest goes to `late`)."""
        if self.late:
            self.late.append(batch)
            return
        encoded = pc.dictionary_encode(batch.column(FILE_COLUMN))
        uris = encoded.dictionary.to_pylist()
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        rows = batch.column(ROW_COLUMN).to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        groups = np.empty(len(rows), np.int64)
        for code, uri in enumerate(uris):
            if uri not in self.files:
                self._forget_files(keep=set(uris))
                self.files[uri] = _ArchiveFile(uri, self.content.file_columns)
            in_file = codes == code if len(uris) > 1 else slice(None)
            groups[in_file] = self.files[uri].groups_of(rows[in_file])
        # runs of one (file, row group), in arrival order
        changes = np.flatnonzero((codes[1:] != codes[:-1]) | (groups[1:] != groups[:-1])) + 1
        starts, stops = np.r_[0, changes].tolist(), np.r_[changes, len(rows)].tolist()
        carried = batch.select(list(self.content.carried))
        for start, stop in zip(starts, stops):
            key = (uris[codes[start]], int(groups[start]))
            archive_file = self.files[key[0]]
            wanted = rows[start:stop] - archive_file.group_starts[key[1]]
            if key != self.cursor_key:
                if key in self.left:
                    self.late.append(batch.slice(start))
                    return
                self._leave()
                self.cursor, self.cursor_key = _GroupCursor(archive_file, key[1]), key
            if wanted[0] < self.cursor.last_row or (len(wanted) > 1 and np.any(wanted[1:] < wanted[:-1])):
                self.late.append(batch.slice(start))
                return
            yield from self.cursor.take(self.content, wanted, carried.slice(start, stop - start))

    def close(self) -> None:
        """Nothing left to read in order: the open row group is done."""
        self._leave()

    def _forget_files(self, keep: set[str]) -> None:
        """Close the files read before, but the open one and those of the batch at hand: a
        task's split holds ~40 files, each open file holding its footer and reader buffers
        (a file needed again is opened again)."""
        current = self.cursor_key[0] if self.cursor_key is not None else None
        for uri in [uri for uri in self.files if uri != current and uri not in keep]:
            del self.files[uri]

    def _leave(self) -> None:
        if self.cursor_key is not None:
            self.left.add(self.cursor_key)
        self.cursor = self.cursor_key = None


def _coalesced(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """`batches` in order, joined into batches of at least `_MIN_BATCH_ROWS` rows unless that
    would pass `_MAX_BATCH_BYTES`. The first batch goes out alone, and a batch being joined goes
    out with the first batch arriving `_MAX_BATCH_WAIT_S` or more after it began: joining must
    not hold back the first alerts of a topic, nor rows while Spark is slow to select more."""
    pending: list[pa.RecordBatch] = []
    rows = size = 0
    first = True
    since = 0.0
    for batch in batches:
        if pending and size + batch.nbytes > _MAX_BATCH_BYTES:
            yield _joined(pending)
            pending, rows, size = [], 0, 0
        if not pending:
            since = time.monotonic()
        pending.append(batch)
        rows += batch.num_rows
        size += batch.nbytes
        if (first or rows >= _MIN_BATCH_ROWS or size >= _MAX_BATCH_BYTES
                or time.monotonic() - since > _MAX_BATCH_WAIT_S):
            yield _joined(pending)
            pending, rows, size, first = [], 0, 0, False
    if pending:
        yield _joined(pending)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return batches[0] if len(batches) == 1 else pa.concat_batches(batches)


def local_path(uri: str) -> str:
    """The local path of a `file:` URI as Spark reports it (`_metadata.file_path`)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"{uri}: not a local file")
    return urllib.parse.unquote(parsed.path) if parsed.scheme else uri


def is_local_archive(root: str) -> bool:
    """Whether the archive at `root` is a local path or `file:` URI."""
    return urllib.parse.urlparse(str(root)).scheme in ("", "file")


def is_arrow_readable_archive(root: str) -> bool:
    """Whether the publishing tasks can read the archive at `root` with Arrow: a local path, or an
    S3 bucket through pyarrow's S3 filesystem (endpoint, region and keys from the executors'
    environment: AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, ...)."""
    from fink_pipeline.storage import S3_SCHEMES, scheme_of

    return is_local_archive(root) or scheme_of(str(root)) in S3_SCHEMES


def _open_archive_file(uri: str):
    """A local path, or an open pyarrow file of an object-store URI (Spark's `s3a://` included)."""
    if is_local_archive(uri):
        return local_path(uri)
    from fink_pipeline.storage import arrow_filesystem

    scheme, path = uri.split("://", 1)  # the path inside an S3 filesystem: bucket/key
    key = (scheme, path.split("/", 1)[0])
    filesystem = _ARCHIVE_FILESYSTEMS.get(key)
    if filesystem is None:  # one client per bucket and worker process (one per file doubled the reads' time)
        filesystem = _ARCHIVE_FILESYSTEMS[key] = arrow_filesystem(uri)[0]
    return filesystem.open_input_file(path)


_ARCHIVE_FILESYSTEMS: dict[tuple[str, str], object] = {}


# Content columns present in a file schema and their leaf column indices, by (schema, wanted
# columns): a task opens every file of its split, and the files of an archive share one schema
# (building its Arrow schema and looking the columns up, once per file, were ~2.5 % of the
# workers' profile at 1M alerts).
_COLUMN_LAYOUTS: list[tuple[pq.ParquetSchema, tuple[str, ...], list[str], list[int]]] = []


def _column_layout(schema: pq.ParquetSchema, file_columns: tuple[str, ...]) -> tuple[list[str], list[int]]:
    """(the `file_columns` the schema has, the indices of their leaf columns in schema order):
    a dotted path reads the leaves under it, as `pq.ParquetFile.iter_batches(columns=...)` does."""
    for known, wanted, present, leaves in _COLUMN_LAYOUTS:
        if wanted == file_columns and known.equals(schema):
            return present, leaves
    arrow_schema = schema.to_arrow_schema()
    present = [path for path in file_columns if schema_field_type(arrow_schema, path) is not None]
    prefixes = tuple(path + "." for path in present)
    exact = set(present)
    leaves = [i for i in range(len(schema)) if (path := schema.column(i).path) in exact or path.startswith(prefixes)]
    del _COLUMN_LAYOUTS[:-7]  # a few schemas at most (nights written by older versions)
    _COLUMN_LAYOUTS.append((schema, file_columns, present, leaves))
    return present, leaves


def spark_timestamp_strings(column: pa.Array) -> pa.Array:
    """Timestamps as Spark casts them to strings in a UTC session: `yyyy-MM-dd HH:mm:ss`, then
    the microseconds without trailing zeros, if any (`2024-03-01 05:12:33.12`).

    Written digit by digit into a byte matrix with numpy (strftime costs ~2.7 us per value):
    the `yyyy-MM-dd` part once per distinct day, then each row's used prefix kept.
    """
    from fink_pipeline.avro.encode import used_prefixes

    values = pc.cast(pc.cast(column, pa.timestamp("us", tz=column.type.tz)), pa.int64())
    nulls = values.is_null().to_numpy(zero_copy_only=False) if values.null_count else None
    micros = values.fill_null(0).to_numpy()
    seconds, fraction = np.divmod(micros, 1_000_000)  # floor: -0.5 s is 23:59:59.5 the day before
    days, within_day = np.divmod(seconds, 86_400)
    distinct, inverse = np.unique(days, return_inverse=True)
    dates = np.datetime_as_string(distinct.astype("datetime64[D]"))
    if any(len(date) != 10 for date in dates.tolist()):  # years beyond 0000-9999: Arrow's strftime
        return _strftime_timestamp_strings(column)
    text = np.empty((len(micros), 26), np.uint8)
    text[:, :10] = np.frombuffer("".join(dates.tolist()).encode(), np.uint8).reshape(-1, 10)[inverse.reshape(-1)]
    text[:, 10], text[:, 13], text[:, 16], text[:, 19] = ord(" "), ord(":"), ord(":"), ord(".")
    hours, rest = np.divmod(within_day, 3600)
    minutes, secs = np.divmod(rest, 60)
    for position, value in ((11, hours), (14, minutes), (17, secs)):
        tens, units = np.divmod(value, 10)
        text[:, position], text[:, position + 1] = tens + 48, units + 48
    digits = fraction
    trailing_zeros = np.zeros(len(micros), np.int64)
    still_zero = np.ones(len(micros), bool)
    for position in range(25, 19, -1):  # microsecond digits, last first
        digits, digit = np.divmod(digits, 10)
        text[:, position] = digit + 48
        still_zero &= digit == 0
        trailing_zeros += still_zero
    lengths = np.where(fraction == 0, 19, 26 - trailing_zeros)
    result = used_prefixes(text, lengths).view(pa.large_string()).cast(pa.string())
    return pc.if_else(pa.array(nulls), pa.scalar(None, pa.string()), result) if nulls is not None else result


def _strftime_timestamp_strings(column: pa.Array) -> pa.Array:
    text = pc.strftime(pc.cast(column, pa.timestamp("us", tz=column.type.tz)), format="%Y-%m-%d %H:%M:%S")
    text = pc.replace_substring_regex(text, r"(\.[0-9]*[1-9])0+$", r"\1")
    return pc.replace_substring_regex(text, r"\.0+$", "")


def conform(column: pa.Array, target: pa.DataType) -> pa.Array:
    """`column` with type `target`: struct fields matched by name (missing ones null), lists
    element-wise, anything else cast (safe: a lossy cast is an error, not silent)."""
    if column.type == target:
        return column
    if pa.types.is_struct(target) and pa.types.is_struct(column.type):
        children = []
        for field in target:
            if column.type.get_field_index(field.name) < 0:
                children.append(pa.nulls(len(column), field.type))
            else:
                children.append(conform(column.field(field.name), field.type))
        mask = column.is_null() if column.null_count else None
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    if (pa.types.is_list(target) or pa.types.is_large_list(target)) and (
        pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
    ):
        values = conform(column.values, target.value_type)
        cls = pa.LargeListArray if pa.types.is_large_list(target) else pa.ListArray
        offsets = column.offsets
        if pa.types.is_large_list(target) != pa.types.is_large_list(column.type):
            offsets = pc.cast(offsets, pa.int64() if pa.types.is_large_list(target) else pa.int32())
        mask = column.is_null() if column.null_count else None
        return cls.from_arrays(offsets, values, type=pa.list_(target.value_field) if cls is pa.ListArray
                               else pa.large_list(target.value_field), mask=mask)
    return pc.cast(column, target)


def _without_nulls(column: pa.StructArray) -> pa.StructArray:
    """Spark's `struct(x.*)`: never null; a null parent becomes a record of nulls."""
    if column.null_count == 0 and column.offset == 0:
        return pa.StructArray.from_arrays([column.field(i) for i in range(column.type.num_fields)],
                                          fields=list(column.type))
    return pa.StructArray.from_arrays(column.flatten(), fields=list(column.type))


def file_paths(sources: Sequence[str]) -> tuple[str, ...]:
    """The Parquet column paths to read for dotted `sources` (a whole struct covers its fields)."""
    paths = sorted(set(sources))
    return tuple(p for p in paths if not any(p.startswith(other + ".") for other in paths))


def _nested_type(dtype: pa.DataType, path: Sequence[str]) -> pa.DataType:
    for part in path:
        dtype = dtype.field(part).type
    return dtype


def _slice_rows(group: pq.RowGroupMetaData, leaves: Sequence[int]) -> int:
    """Rows per decoded slice of a row group, so that a slice of the `leaves` columns holds about
    `_SLICE_BYTES` (at least 256 rows)."""
    size = sum(group.column(i).total_uncompressed_size for i in leaves)
    per_row = max(1, size // max(1, group.num_rows))
    return int(max(256, min(group.num_rows, _SLICE_BYTES // per_row)))
