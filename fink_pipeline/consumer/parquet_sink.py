"""Parquet: fink-client's layout (Hive folders, `part-*.parquet`), its publication recorded in
`_offsets/publication.json`. A batch is staged, then published: its files are written under
`_staging/` (ignored by pyarrow, pandas and Spark, like every `_` folder; named `*.staged`, so
`**/*.parquet` globs of polars or DuckDB miss them too), then its marker is
written atomically (the commit), then the files are moved into place. A crash before the marker
leaves only staged files, removed on resume; a crash after it leaves staged files of a committed
batch, moved into place on resume. Readers therefore never see a row of an uncommitted batch
(`parquet_dataset` also skips unmarked files that older versions could leave). Each consumer
holds an exclusive lock per Kafka partition (released by the kernel when the
process dies, even by SIGKILL), so a second consumer of the same partitions refuses to start.

Each file carries pandas metadata declaring its integer columns as pandas' nullable integers
(`Int64`...): `pd.read_parquet(folder)` then keeps them integers even with nulls, where pandas
would otherwise make them float64 and change every Rubin id above 2**53 (diaObjectId is null
for solar-system alerts).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from fink_pipeline.consumer.partitioning import Partitioning, hive_groups
from fink_pipeline.consumer.sinks import (
    ConcurrentConsumerError,
    DiskFullError,
    Publication,
    is_disk_full,
    publication_mismatch,
)

_PART_NAME = re.compile(r"^part-(\d+)-(\d+)-(\d+)-\d+\.parquet$")

MARKER_DIR = "_offsets"

STAGING_DIR = "_staging"

PUBLICATION_FILE = "publication.json"  # in MARKER_DIR: the publication the folder holds

# Staged files do not end in .parquet: `**/*.parquet` globs (polars, DuckDB) that do not skip
# `_` folders as pyarrow, pandas and Spark do must not match them either.
STAGED_SUFFIX = ".staged"


def pandas_integer_metadata(schema: pa.Schema) -> dict[bytes, bytes]:
    """Schema metadata telling pandas (through pyarrow's `to_pandas`) to read every integer
    column as its nullable integer dtype, so that nulls never turn ids into floats."""
    return _pandas_metadata(tuple((f.name, str(f.type)) for f in schema if pa.types.is_integer(f.type)))


@functools.lru_cache(maxsize=64)
def _pandas_metadata(integers: tuple[tuple[str, str], ...]) -> dict[bytes, bytes]:
    columns = [{"name": name, "field_name": name, "pandas_type": kind,
                "numpy_type": kind.replace("uint", "UInt").replace("int", "Int"), "metadata": None}
               for name, kind in integers]
    return {b"pandas": json.dumps({"index_columns": [], "column_indexes": [], "columns": columns,
                                   "creator": {"library": "pyarrow", "version": pa.__version__}}).encode()}


def committed_batches(root: str | Path) -> set[str]:
    """Batch ids whose marker exists: their files are part of the dataset."""
    markers = Path(root) / MARKER_DIR
    return {m.stem.removeprefix("batch-") for m in markers.glob("batch-*.json")} if markers.exists() else set()


def is_committed_file(path: str | Path, batches: set[str]) -> bool:
    """True for a data file of a committed batch (False for leftovers of an interrupted one)."""
    match = _PART_NAME.match(Path(path).name)
    return match is None or "-".join(match.groups()) in batches


def files_in_place(root: str | Path) -> list[Path]:
    """The visible files of the folder, sorted: hidden folders and files (`_staging`, `_offsets`,
    dot files) are not walked, as pandas, pyarrow and Spark skip them. The other consumers of the
    folder write meanwhile: a folder vanishing while walked (a staged batch they just published)
    is skipped, not an error (Path.rglob raises)."""
    files = []
    for folder, subfolders, names in os.walk(root, onerror=lambda error: None):
        subfolders[:] = [name for name in subfolders if not name.startswith(("_", "."))]
        files += [Path(folder) / name for name in names if not name.startswith(("_", "."))]
    return sorted(files)


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
        for path in files_in_place(self.root):
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
            if is_disk_full(exc):  # the batch has no marker: its files are removed on resume
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
                rows = rows.replace_schema_metadata({**(rows.schema.metadata or {}), **pandas_integer_metadata(rows.schema)})
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
