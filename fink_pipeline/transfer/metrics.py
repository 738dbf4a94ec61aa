"""How many archive bytes a transfer reads: from Spark's input metrics, or from Parquet footers.

Two independent measures:

* `measure_input_bytes(spark, df)` runs the DataFrame to the end (a `noop` write, so every
  projected column is materialized, unlike `count()` which lets Spark prune them) in its own job
  group and sums the `inputBytes` of its stages from Spark's status store (kept even when the UI
  is disabled). Spark 4's Parquet reader fetches column chunks with vectored I/O on other threads,
  which the per-thread Hadoop statistics behind `inputBytes` do not see (every query then
  reports only its footers), so the measure turns vectored reads off for the session while it
  runs.
* `footer_input_bytes(files, fields)` adds up, from the files' footers alone, the compressed
  size of the column chunks holding `fields` (dotted paths such as `candidate.magpsf`,
  `prv_candidates` or a map column): what a reader pruning to those fields has to fetch
  (`TransferPlan.read_fields()` lists those of a transfer).

Pure: pyarrow, plus pyspark objects handed in by the caller (no Dagster).
"""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from fink_pipeline.archive.footers import FooterSchema, FooterSummary, read_footer, summarize
from fink_pipeline.archive.layout import resolve

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Parquet's wrapper levels around list items and map entries, by writer (3-level lists of
# pyarrow/Spark, legacy 2-level lists, maps).
_LIST_WRAPPERS = {("list", "element"), ("list", "item"), ("bag", "array")}
_MAP_WRAPPERS = {("key_value", "key"), ("key_value", "value")}
_VECTORED_IO = "parquet.hadoop.vectored.io.enabled"


@dataclass(frozen=True)
class InputMetrics:
    """Bytes and records Spark read from storage for one action."""

    bytes_read: int
    records_read: int
    stages: int


@dataclass(frozen=True)
class FooterBytes:
    """Compressed column-chunk bytes of some fields over some files, from their footers."""

    bytes: int
    rows: int
    files: int
    columns: int  # Parquet leaf columns counted

    @property
    def bytes_per_row(self) -> float:
        return self.bytes / self.rows if self.rows else 0.0


def logical_path(leaf_path: str) -> str:
    """A Parquet leaf path as a dotted field path: `prv_candidates.list.element.magpsf` ->
    `prv_candidates.magpsf`, `mangrove.key_value.key` -> `mangrove`."""
    parts = leaf_path.split(".")
    out: list[str] = []
    i = 0
    while i < len(parts):
        pair = tuple(parts[i:i + 2])
        if pair in _LIST_WRAPPERS:
            i += 2
            continue
        if pair in _MAP_WRAPPERS:
            break  # a map is one field: its keys and values are not addressable by path
        out.append(parts[i])
        i += 1
    return ".".join(out)


def parquet_leaf_paths(schema: FooterSchema, fields: Iterable[str]) -> list[str]:
    """Parquet leaf column paths holding `fields` (each field: itself and everything under it).

    A field that matches no leaf is shortened from the right until one does, so a map key such
    as `mangrove.HyperLEDA_name` reads the `mangrove` map. Fields absent from the file give
    nothing (Spark reads them as nulls).
    """
    under = _leaves_under(schema.leaf_paths)
    selected: dict[str, None] = {}
    for field in fields:
        probe = field
        while probe:
            hits = under.get(probe)
            if hits:
                selected.update(dict.fromkeys(hits))
                break
            probe = probe.rpartition(".")[0]
    return list(selected)


@functools.lru_cache(maxsize=16)
def _leaves_under(leaves: tuple[str, ...]) -> dict[str, list[str]]:
    """Every dotted field path -> the leaf paths at or under it, in schema order (one pass over
    the leaves instead of one per field: ZTF files have ~1,000 leaves; the files of an archive
    share their schema, hence the cache)."""
    under: dict[str, list[str]] = {}
    for leaf in leaves:
        parts = logical_path(leaf).split(".")
        for depth in range(1, len(parts) + 1):
            under.setdefault(".".join(parts[:depth]), []).append(leaf)
    return under


def footer_input_bytes(files: Sequence[str], fields: Iterable[str] | None = None) -> FooterBytes:
    """Compressed bytes of the column chunks of `fields` (None: every column) in `files`."""
    footers = []
    for path in files:
        fs, inner = resolve(path)
        footers.append(summarize(path, read_footer(fs, inner)))
    return footers_input_bytes(footers, fields)


def footers_input_bytes(footers: Iterable[FooterSummary], fields: Iterable[str] | None = None) -> FooterBytes:
    """`footer_input_bytes` over footers already summarized (`TransferPlan.footers`)."""
    fields = None if fields is None else list(fields)
    total = rows = columns = files = 0
    # leaf column indices of `fields` per distinct schema (the files of a night share one)
    selected: dict[FooterSchema, np.ndarray] = {}
    for footer in footers:
        files += 1
        rows += footer.num_rows
        if not footer.num_row_groups:
            continue  # no column chunk
        if fields is None:
            total += int(footer.leaf_bytes.sum())
            columns += len(footer.leaf_bytes)
            continue
        indices = selected.get(footer.schema)
        if indices is None:
            wanted = set(parquet_leaf_paths(footer.schema, fields))
            indices = np.array([i for i, path in enumerate(footer.schema.leaf_paths) if path in wanted], np.intp)
            selected[footer.schema] = indices
        total += int(footer.leaf_bytes[indices].sum())
        columns += len(indices)
    return FooterBytes(total, rows, files, columns)


def measure_input_bytes(spark: "SparkSession", df: "DataFrame") -> InputMetrics:
    """Run `df` to completion (noop write) and return what Spark read from storage for it."""
    sc = spark.sparkContext
    group = f"fink-pipeline-measure-{uuid.uuid4().hex[:12]}"
    previous_group = sc.getLocalProperty("spark.jobGroup.id")
    previous_io = spark.conf.get(_VECTORED_IO, None)
    spark.conf.set(_VECTORED_IO, "false")
    sc.setJobGroup(group, "measure input bytes")
    try:
        df.write.format("noop").mode("overwrite").save()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", previous_group)
        sc.setLocalProperty("spark.job.description", None)
        if previous_io is None:
            spark.conf.unset(_VECTORED_IO)
        else:
            spark.conf.set(_VECTORED_IO, previous_io)
    jsc = sc._jsc.sc()
    jsc.listenerBus().waitUntilEmpty()  # the status store is fed asynchronously
    store = jsc.statusStore()
    tracker = sc.statusTracker()
    bytes_read = records = stages = 0
    for job_id in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job_id)
        for stage_id in info.stageIds if info else []:
            try:
                data = store.lastStageAttempt(stage_id)
            except Exception:  # a stage that never ran (skipped) has no attempt
                continue
            bytes_read += data.inputBytes()
            records += data.inputRecords()
            stages += 1
    return InputMetrics(bytes_read, records, stages)
