"""Write a synthetic archive: one hive-partitioned Parquet folder per night.

`generate_archive` streams each night's record batches from `survey.generate_night` into
`part-NNNNN.parquet` files (zstd, one row group per batch, a new file before ~128 MB), so memory
is bounded by one batch whatever the night size. A night is written into a staging folder
(`<science>/_staging/...`, invisible to Spark and pyarrow.dataset, which skip `_` names) and
renamed into place only once complete: a crash never leaves a half-written night visible, and
regenerating a night replaces it (with identical bytes, the generator being deterministic).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fink_pipeline.archive.layout import SCIENCE, night_dir, night_partition, resolve
from fink_pipeline.surveys.base import Survey

#: Rows per row group (= per generated batch) without cutouts.
ROWS_PER_GROUP = 20_000
#: With cutouts a row weighs ~45 kB: ~2,500 rows keep a row group near 110 MB.
ROWS_PER_GROUP_WITH_CUTOUTS = 2_500
#: A new part file is started before a file would exceed this size.
MAX_FILE_BYTES = 128 * 1024 * 1024
COMPRESSION = "zstd"
STAGING = "_staging"


@dataclass(frozen=True)
class NightReport:
    """What was written for one night."""

    night: dt.date
    path: str
    alerts: int
    files: int
    bytes: int
    seconds: float


@dataclass
class GenerateReport:
    """Per-night counts and sizes of one `generate_archive` call."""

    survey: str
    root: str
    nights: list[NightReport] = field(default_factory=list)

    @property
    def total_alerts(self) -> int:
        return sum(n.alerts for n in self.nights)

    @property
    def total_bytes(self) -> int:
        return sum(n.bytes for n in self.nights)

    @property
    def total_files(self) -> int:
        return sum(n.files for n in self.nights)

    @property
    def seconds(self) -> float:
        return sum(n.seconds for n in self.nights)

    def as_dict(self) -> dict:
        """JSON-friendly summary."""
        return {
            "survey": self.survey,
            "root": self.root,
            "total_alerts": self.total_alerts,
            "total_bytes": self.total_bytes,
            "nights": [
                {"night": n.night.isoformat(), "path": n.path, "alerts": n.alerts, "files": n.files,
                 "bytes": n.bytes, "seconds": round(n.seconds, 3)}
                for n in self.nights
            ],  # fmt: skip
        }


def generate_archive(
    survey: Survey,
    root: str,
    start: dt.date,
    nights: int,
    alerts_per_night: int,
    seed: int = 0,
    with_cutouts: bool = True,
    progress: Callable[[int], None] | None = None,
    *,
    rows_per_group: int | None = None,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> GenerateReport:
    """Generate `nights` consecutive nights from `start`, `alerts_per_night` alerts each.

    Each night goes to `<root>/<survey>/science/year=YYYY/month=MM/day=DD/part-NNNNN.parquet`
    (see `layout`), replacing that night if it exists. `progress` is called with the number
    of alerts written after each row group (an increment, e.g. `tqdm.update`). A night with
    0 alerts is removed rather than written empty (Fink has no folder for such nights).

    Raises ValueError if the survey has no generator or a count is negative.
    """
    if survey.generate_night is None:
        raise ValueError(f"survey {survey.name!r} has no synthetic alert generator")
    if nights < 0 or alerts_per_night < 0:
        raise ValueError(f"nights ({nights}) and alerts_per_night ({alerts_per_night}) must be >= 0")
    if rows_per_group is None:
        rows_per_group = ROWS_PER_GROUP_WITH_CUTOUTS if with_cutouts else ROWS_PER_GROUP
    report = GenerateReport(survey=survey.name, root=str(root))
    for i in range(nights):
        night = start + dt.timedelta(days=i)
        report.nights.append(
            write_night(survey, root, night, alerts_per_night, seed=seed, with_cutouts=with_cutouts,
                        progress=progress, rows_per_group=rows_per_group, max_file_bytes=max_file_bytes)
        )  # fmt: skip
    return report


def write_night(
    survey: Survey,
    root: str,
    night: dt.date,
    n_alerts: int,
    seed: int = 0,
    with_cutouts: bool = True,
    progress: Callable[[int], None] | None = None,
    *,
    rows_per_group: int = ROWS_PER_GROUP,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> NightReport:
    """Generate one night into a staging folder, then atomically swap it into place."""
    t0 = time.perf_counter()
    fs, base = resolve(root)
    science = f"{base.rstrip('/')}/{survey.name}/{SCIENCE}"
    final = f"{science}/{night_partition(night)}"
    staging_root = f"{science}/{STAGING}"
    tag = f"{night.isoformat()}-"
    _remove_stale_staging(fs, staging_root, tag)
    if n_alerts == 0:
        _delete_dir(fs, final)
        return NightReport(night, night_dir(root, survey.name, night), 0, 0, 0, time.perf_counter() - t0)

    staging = f"{staging_root}/{tag}{uuid.uuid4().hex[:12]}"
    fs.create_dir(staging, recursive=True)
    try:
        alerts, sizes = _write_parts(fs, staging, survey, night, n_alerts, seed, with_cutouts, progress,
                                     rows_per_group, max_file_bytes)  # fmt: skip
        _publish(fs, staging, final, f"{staging_root}/{tag}replaced-{uuid.uuid4().hex[:12]}")
    except BaseException:
        _delete_dir(fs, staging)  # a Python-level failure leaves nothing behind
        raise
    return NightReport(night, night_dir(root, survey.name, night), alerts, len(sizes), sum(sizes),
                       time.perf_counter() - t0)  # fmt: skip


def _write_parts(fs, folder, survey, night, n_alerts, seed, with_cutouts, progress, rows_per_group, max_file_bytes):
    """Stream the night's batches into part files; returns (alerts, file sizes)."""
    schema = survey.archive_schema
    no_dict = _plain_columns(schema)
    writer = stream = None
    sizes: list[int] = []
    alerts = 0
    last_group_bytes = 0
    try:
        for batch in survey.generate_night(night, n_alerts, seed, with_cutouts=with_cutouts, batch_size=rows_per_group):
            if batch.num_rows == 0:
                continue
            if stream is not None and stream.tell() + max(last_group_bytes, 1) > max_file_bytes:
                writer.close()
                stream.close()
                sizes.append(fs.get_file_info(_part(folder, len(sizes))).size)
                writer = stream = None
            if writer is None:
                stream = fs.open_output_stream(_part(folder, len(sizes)))
                writer = pq.ParquetWriter(
                    stream, schema, compression=COMPRESSION,
                    use_dictionary=no_dict["dictionary"], write_statistics=no_dict["dictionary"],
                )  # fmt: skip
            before = stream.tell()
            writer.write_batch(batch, row_group_size=batch.num_rows)
            # the row group is flushed by write_batch: its size predicts the next one's
            last_group_bytes = stream.tell() - before
            alerts += batch.num_rows
            if progress is not None:
                progress(batch.num_rows)
    finally:
        if writer is not None:
            writer.close()
            stream.close()
    if writer is not None:
        sizes.append(fs.get_file_info(_part(folder, len(sizes))).size)
    return alerts, sizes


def _part(folder: str, index: int) -> str:
    return f"{folder}/part-{index:05d}.parquet"


def _plain_columns(schema: pa.Schema) -> dict[str, list[str]]:
    """Leaf paths that get dictionary encoding and statistics: all but the cutout stamps.

    Stamps are unique gzip blobs: a dictionary would only cost time, and their min/max
    statistics would bloat the footer.
    """
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    parquet_schema = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    paths = [parquet_schema.column(i).path for i in range(len(parquet_schema))]
    return {"dictionary": [p for p in paths if not p.startswith("cutout")]}


def _publish(fs: pafs.FileSystem, staging: str, final: str, aside: str) -> None:
    """Swap the complete staging folder into place of the night (an old version goes `aside`)."""
    old = None
    if fs.get_file_info(final).type != pafs.FileType.NotFound:
        old = aside
        _move_dir(fs, final, old)
    fs.create_dir(final.rsplit("/", 1)[0], recursive=True)
    try:
        _move_dir(fs, staging, final)
    except BaseException:
        if old is not None:  # put the previous version back
            _move_dir(fs, old, final)
        raise
    if old is not None:
        _delete_dir(fs, old)


def _move_dir(fs: pafs.FileSystem, src: str, dst: str) -> None:
    """Rename a directory (atomic on a local filesystem); copy + delete where rename is missing."""
    try:
        fs.move(src, dst)
        return
    except (NotImplementedError, OSError):
        if fs.type_name == "local":
            raise
    # object stores: no directory rename, move file by file
    for info in fs.get_file_info(pafs.FileSelector(src, recursive=True)):
        if info.type == pafs.FileType.File:
            fs.copy_file(info.path, dst + info.path[len(src):])
    fs.delete_dir(src)


def _delete_dir(fs: pafs.FileSystem, path: str) -> None:
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)


def _remove_stale_staging(fs: pafs.FileSystem, staging_root: str, tag: str) -> None:
    """Remove what a crashed earlier run left for this night (partial or replaced versions)."""
    infos = fs.get_file_info(pafs.FileSelector(staging_root, allow_not_found=True))
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name.startswith(tag):
            fs.delete_dir(info.path)
