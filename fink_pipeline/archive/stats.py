"""Nightly statistics: how many alerts of each class every archived night holds.

The counterpart of Fink's `statistics_class` table (reference section 7.1), computed with
pyarrow over the night's Parquet files, reading only the classification inputs (no Spark), and
classified by the survey's Arrow classifier, which applies the same rules as the Spark job. One
small Parquet file per night sits beside the archive:

    <root>/<survey>/statistics/night=YYYY-MM-DD.parquet

with one row per combination of class labels (`finkclass`, `tnsclass` for ZTF) and its number of
alerts. Keeping the label *pairs* (not one count per label) lets an estimate count a selection
such as "SN candidate OR (TNS) SN Ia" exactly, without counting an alert twice.

The file's metadata records what it was computed from (the night's file names, sizes and row
counts, and the fingerprint of the TNS catalogue used), so a regenerated night or a new
catalogue makes it stale. A file is written to a hidden temporary name and renamed into place
(atomic on a local filesystem), and recomputing it gives the same bytes: it is idempotent.

TNS: `tnsclass` needs a TNS catalogue. When `<root>/<survey>/tns/tns.parquet` (columns ra,
declination, type) exists, statistics and the transfer job use it; without one every alert's
`tnsclass` is "Unknown", as in Fink's job without its catalogue.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import threading
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Iterable, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from fink_pipeline.archive.footers import FooterSummary, read_footer, summarize
from fink_pipeline.archive.layout import night_dir, resolve
from fink_pipeline.archive.stored_footers import StoredFooters
from fink_pipeline.archive.stored_footers import store as store_footers
from fink_pipeline.surveys.base import Survey

STATISTICS = "statistics"
COUNT_COLUMN = "alerts"
NIGHT_COLUMN = "night"
METADATA_KEY = b"fink_pipeline.statistics"
FORMAT_VERSION = 1
NO_CATALOG = "none"
_FILE_RE = re.compile(r"^night=(\d{4}-\d{2}-\d{2})\.parquet$")


class StatisticsError(ValueError):
    """Statistics that cannot be computed or read (the message says which night and why)."""


@dataclass(frozen=True)
class SourceFile:
    """One Parquet file of a night, as the statistics saw it."""

    name: str
    size: int
    rows: int


# The one label of the statistics of a survey whose alerts carry no class (LSST).
ALL_ALERTS_LABEL = "all alerts"


@dataclass(frozen=True)
class NightStatistics:
    """Alert counts of one night per combination of class labels."""

    survey: str
    night: dt.date
    class_columns: tuple[str, ...]
    # one row per label combination: the class columns, then `alerts` (int64)
    counts: pa.Table
    source_files: tuple[SourceFile, ...]
    tns_catalog: str = NO_CATALOG

    @property
    def total(self) -> int:
        """Alerts of the night."""
        return int(pc.sum(self.counts.column(COUNT_COLUMN)).as_py() or 0)

    @property
    def source_rows(self) -> int:
        """Rows of the night's files according to their footers."""
        return sum(f.rows for f in self.source_files)

    def per_label(self, column: str | None = None) -> dict[str, int]:
        """Alerts per label of one class column (default: the first), largest first; a survey
        without class labels (LSST) has one, `ALL_ALERTS_LABEL`."""
        if not self.class_columns:
            return {ALL_ALERTS_LABEL: self.total}
        column = column or self.class_columns[0]
        out: Counter[str] = Counter()
        for label, count in zip(self.counts.column(column).to_pylist(), self.counts.column(COUNT_COLUMN).to_pylist()):
            out[label] += count
        return dict(out.most_common())

    def rows(self) -> list[dict]:
        """The counts as dicts (class columns + alerts)."""
        return self.counts.to_pylist()

    def label_values(self) -> dict[str, list]:
        """Class column -> its value in each row (label combination) of the counts."""
        return {c: self.counts.column(c).to_pylist() for c in self.class_columns}

    def class_mask(self, classes: Sequence[str]) -> list[bool]:
        """Which rows (label combinations) the survey's class filter keeps."""
        from fink_pipeline.surveys import get_survey

        return get_survey(self.survey).class_mask(self.label_values(), classes, self.counts.num_rows).tolist()

    def selected(self, classes: Sequence[str]) -> int:
        """Alerts of the night that the class filter keeps."""
        counts = self.counts.column(COUNT_COLUMN).to_pylist()
        return sum(n for n, keep in zip(counts, self.class_mask(classes)) if keep)


# ---------------------------------------------------------------------------------------------
# Locations


def _strip(root: str) -> str:
    text = str(root)
    return text if text.endswith("://") else text.rstrip("/")


def statistics_dir(root: str, survey: str) -> str:
    """`<root>/<survey>/statistics`."""
    return f"{_strip(root)}/{survey}/{STATISTICS}"


def statistics_path(root: str, survey: str, night: dt.date) -> str:
    """`<root>/<survey>/statistics/night=YYYY-MM-DD.parquet`."""
    return f"{statistics_dir(root, survey)}/night={night.isoformat()}.parquet"


def tns_catalog_path(root: str, survey: str) -> str:
    """`<root>/<survey>/tns/tns.parquet`: the TNS catalogue the archive's survey is matched with."""
    return f"{_strip(root)}/{survey}/tns/tns.parquet"


# ---------------------------------------------------------------------------------------------
# TNS catalogue


def catalog_fingerprint(catalog: pa.Table | None) -> str:
    """Short sha256 of a TNS catalogue's ra, declination and type ("none" without one)."""
    if catalog is None:
        return NO_CATALOG
    table = catalog.select(["ra", "declination", "type"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()[:16]


def load_archive_tns_catalog(root: str, survey: Survey) -> pa.Table | None:
    """The archive's prepared TNS catalogue (see the module docstring), or None when absent."""
    if not survey.loads_tns:
        return None
    fs, path = resolve(tns_catalog_path(root, survey.name))
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    try:
        with fs.open_input_file(path) as handle:
            raw = pq.read_table(handle, columns=["ra", "declination", "type"])
    except (pa.ArrowInvalid, KeyError) as exc:
        raise StatisticsError(f"TNS catalogue {path} is unreadable or lacks ra/declination/type: {exc}") from None
    return survey.prepare_tns_catalog(raw)


# ---------------------------------------------------------------------------------------------
# Computing


def night_files(root: str, survey: str, night: dt.date) -> list[tuple[str, int]]:
    """(path, size) of the night's visible Parquet files, sorted by name ([] for no night)."""
    return [(info.path, info.size) for info in _night_file_infos(root, survey, night)[2]]


def _night_file_infos(root: str, survey: str, night: dt.date) -> tuple[pafs.FileSystem, str, list[pafs.FileInfo]]:
    """(filesystem, night directory in it, file infos of its visible Parquet files sorted by path)."""
    fs, base = resolve(night_dir(root, survey, night))
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    return fs, base, sorted((info for info in infos if _visible_parquet(info)), key=lambda info: info.path)


def night_footers(root: str, survey: str, night: dt.date) -> dict[str, FooterSummary]:
    """A summary of the footer of each of the night's files (`night_files` order), by path ({}
    for no night): row counts, compressed bytes per column and schema (`archive.footers`), a
    few KB per ZTF file where its `pq.FileMetaData` held ~0.5 MiB.

    Summaries are reused while the file's size and modification time are unchanged: those this
    process made already (a run plans its request three times: the command's check, then the
    run's two steps), then those an earlier command stored in the cache folder
    (`archive.stored_footers`); ~1 s of footers each for 4 nights of 100 files otherwise."""
    fs, base, infos = _night_file_infos(root, survey, night)
    footers = {}
    stored = None  # loaded when the process has not summarized every file already
    current = {info.path: info for info in infos}
    for info in infos:
        # a store that gives no modification time gets no reuse
        key = (info.path, info.size, info.mtime_ns) if info.mtime_ns is not None else None
        with _FOOTER_CACHE_LOCK:
            footer = _FOOTER_CACHE.get(key) if key else None
        if footer is None and key is not None:
            if stored is None:
                stored = StoredFooters.load(fs, base)
            footer = stored.summary(info, current)
        if footer is None:
            footer = summarize(info.path, read_footer(fs, info.path))
        if key is not None:
            with _FOOTER_CACHE_LOCK:
                _FOOTER_CACHE[key] = footer
                while len(_FOOTER_CACHE) > _FOOTER_CACHE_SIZE:
                    _FOOTER_CACHE.popitem(last=False)
        footers[info.path] = footer
    if stored is not None and stored.outdated(current):
        store_footers(fs, base, footers, current)
    return footers


_FOOTER_CACHE: OrderedDict[tuple[str, int, int], FooterSummary] = OrderedDict()
_FOOTER_CACHE_SIZE = 4096  # a few KB each (ZTF: ~280 leaf columns)
_FOOTER_CACHE_LOCK = threading.Lock()


def _visible_parquet(info: pafs.FileInfo) -> bool:
    return (info.type == pafs.FileType.File and info.base_name.endswith(".parquet")
            and not info.base_name.startswith((".", "_")))


def night_row_count(root: str, survey: str, night: dt.date) -> int:
    """Rows of the night's files, from their footers alone (0 for no night)."""
    return sum(meta.num_rows for meta in night_footers(root, survey, night).values())


def classify_table(survey: Survey, table: pa.Table, tns_catalog: pa.Table | None = None) -> dict[str, pa.Array]:
    """The survey's class columns for the rows of `table` (Arrow classifier, or stored columns)."""
    if survey.classify_arrow is None:
        return {c: table.column(c).combine_chunks() for c in survey.class_columns}
    if tns_catalog is not None:
        return survey.classify_arrow(table, tns_catalog)
    return survey.classify_arrow(table)


def _empty_counts(class_columns: Sequence[str]) -> pa.Table:
    return pa.table({**{c: pa.array([], pa.string()) for c in class_columns}, COUNT_COLUMN: pa.array([], pa.int64())})


def _counts_table(counter: Counter, class_columns: Sequence[str]) -> pa.Table:
    """Counter of label tuples -> table sorted by count (desc) then labels (deterministic)."""
    if not counter:
        return _empty_counts(class_columns)
    items = sorted(counter.items(), key=lambda kv: (-kv[1], tuple("" if v is None else v for v in kv[0])))
    columns = {c: pa.array([labels[i] for labels, _ in items], pa.string()) for i, c in enumerate(class_columns)}
    columns[COUNT_COLUMN] = pa.array([n for _, n in items], pa.int64())
    return pa.table(columns)


def compute_night_statistics(
    survey: Survey, root: str, night: dt.date, tns_catalog: pa.Table | None = None
) -> NightStatistics:
    """Count the night's alerts per label combination, reading only the classification inputs.

    One row group at a time (memory stays bounded whatever the night's size). Raises
    StatisticsError when the night has no Parquet file.
    """
    files = night_files(root, survey.name, night)
    if not files:
        raise StatisticsError(f"night {night.isoformat()}: no {survey.name} data under {root}")
    fs, _ = resolve(root)
    class_columns = tuple(survey.class_columns)
    columns = list(survey.classification_inputs)
    counter: Counter = Counter()
    sources = []
    for path, size in files:
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            sources.append(SourceFile(path.rsplit("/", 1)[-1], size, parquet.metadata.num_rows))
            for group in range(parquet.num_row_groups):
                if not class_columns:  # LSST: one count, from the footer alone
                    counter[()] += parquet.metadata.row_group(group).num_rows
                    continue
                table = parquet.read_row_group(group, columns=columns)
                labels = classify_table(survey, table, tns_catalog)
                keyed = pa.table({c: pc.cast(labels[c], pa.string()) for c in class_columns})
                grouped = keyed.group_by(list(class_columns), use_threads=False).aggregate(
                    [([], "count_all")]
                )
                for row in grouped.to_pylist():
                    counter[tuple(row[c] for c in class_columns)] += row["count_all"]
    return NightStatistics(
        survey=survey.name,
        night=night,
        class_columns=class_columns,
        counts=_counts_table(counter, class_columns),
        source_files=tuple(sources),
        tns_catalog=catalog_fingerprint(tns_catalog),
    )


# ---------------------------------------------------------------------------------------------
# Storing


def _metadata(stats: NightStatistics) -> dict:
    return {
        "version": FORMAT_VERSION,
        "survey": stats.survey,
        "night": stats.night.isoformat(),
        "class_columns": list(stats.class_columns),
        "tns_catalog": stats.tns_catalog,
        "source_files": [[f.name, f.size, f.rows] for f in stats.source_files],
    }


def write_night_statistics(root: str, stats: NightStatistics) -> str:
    """Write (or replace) the night's statistics file atomically; returns its path."""
    fs, _ = resolve(root)
    _, directory = resolve(statistics_dir(root, stats.survey))
    _, final = resolve(statistics_path(root, stats.survey, stats.night))
    fs.create_dir(directory, recursive=True)
    night = pa.array([stats.night] * stats.counts.num_rows, pa.date32())
    table = stats.counts.add_column(0, NIGHT_COLUMN, night)
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(_metadata(stats), sort_keys=True).encode()})
    # hidden name: readers skip it until the rename makes the complete file visible
    tmp = f"{directory}/.{final.rsplit('/', 1)[-1]}.{uuid.uuid4().hex[:12]}"
    try:
        with fs.open_output_stream(tmp) as out:
            pq.write_table(table, out, compression="zstd")
        fs.move(tmp, final)
    except BaseException:
        if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
            fs.delete_file(tmp)
        raise
    return statistics_path(root, stats.survey, stats.night)


def delete_night_statistics(root: str, survey: str, night: dt.date) -> bool:
    """Remove a night's statistics file; True when one existed."""
    fs, path = resolve(statistics_path(root, survey, night))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return False
    fs.delete_file(path)
    return True


def read_night_statistics(root: str, survey: str, night: dt.date) -> NightStatistics | None:
    """The stored statistics of a night, or None when never computed."""
    fs, path = resolve(statistics_path(root, survey, night))
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_file(path) as handle:
        table = pq.read_table(handle)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise StatisticsError(f"{path} is not a statistics file (no {METADATA_KEY.decode()} metadata)")
    meta = json.loads(raw)
    class_columns = tuple(meta["class_columns"])
    return NightStatistics(
        survey=meta["survey"],
        night=dt.date.fromisoformat(meta["night"]),
        class_columns=class_columns,
        counts=table.select([*class_columns, COUNT_COLUMN]).replace_schema_metadata(None),
        source_files=tuple(SourceFile(n, s, r) for n, s, r in meta["source_files"]),
        tns_catalog=meta.get("tns_catalog", NO_CATALOG),
    )


def is_current(stats: NightStatistics, root: str, tns_fingerprint: str | None = None) -> bool:
    """True when the night's files (names and sizes) and the TNS catalogue are those counted."""
    files = night_files(root, stats.survey, stats.night)
    seen = [(path.rsplit("/", 1)[-1], size) for path, size in files]
    if seen != [(f.name, f.size) for f in stats.source_files]:
        return False
    return tns_fingerprint is None or tns_fingerprint == stats.tns_catalog


def night_statistics(
    survey: Survey,
    root: str,
    night: dt.date,
    tns_catalog: pa.Table | None = None,
    *,
    save: bool = False,
) -> tuple[NightStatistics, bool]:
    """The night's statistics: stored ones when current, else computed (and written if `save`).

    Returns (statistics, computed_now).
    """
    fingerprint = catalog_fingerprint(tns_catalog)
    stored = read_night_statistics(root, survey.name, night)
    if stored is not None and is_current(stored, root, fingerprint):
        return stored, False
    stats = compute_night_statistics(survey, root, night, tns_catalog)
    if save:
        write_night_statistics(root, stats)
    return stats, True


def update_statistics(
    survey: Survey, root: str, nights: Iterable[dt.date] | None = None, tns_catalog: pa.Table | None = None
) -> list[NightStatistics]:
    """Compute and store the statistics of `nights` (default: every archived night) that are stale."""
    from fink_pipeline.archive.layout import list_nights

    if tns_catalog is None:
        tns_catalog = load_archive_tns_catalog(root, survey)
    out = []
    for night in list(nights) if nights is not None else list_nights(root, survey.name):
        stats, _ = night_statistics(survey, root, night, tns_catalog, save=True)
        out.append(stats)
    return out


def stored_nights(root: str, survey: str) -> list[dt.date]:
    """Nights that have a statistics file, sorted."""
    fs, directory = resolve(statistics_dir(root, survey))
    infos = fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
    nights = []
    for info in infos:
        match = _FILE_RE.match(info.base_name)
        if info.type == pafs.FileType.File and match:
            nights.append(dt.date.fromisoformat(match.group(1)))
    return sorted(nights)


def known_labels(root: str, survey: str, column: str | None = None) -> set[str]:
    """Every label of `column` (default: the survey's first class column) in the stored statistics."""
    import pyarrow.dataset as ds

    from fink_pipeline.surveys import get_survey

    class_columns = get_survey(survey).class_columns
    if not class_columns:  # LSST: no class label to know
        return set()
    column = column or class_columns[0]
    paths = [statistics_path(root, survey, night) for night in stored_nights(root, survey)]
    if not paths:
        return set()
    fs, _ = resolve(root)
    table = ds.dataset([resolve(p)[1] for p in paths], format="parquet", filesystem=fs).to_table(columns=[column])
    return {v for v in pc.unique(table.column(column)).to_pylist() if v is not None}
