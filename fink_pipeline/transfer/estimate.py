"""What a transfer request will publish, before it runs: alert count and size.

`estimate_request(request, archive_root)` returns an `Estimate`:

* **Nights and classes** are counted exactly from the nightly statistics (`archive.stats`),
  including "all classes" and combinations of Fink, SIMBAD and TNS labels (the statistics keep
  label pairs, so an alert both "SN candidate" and "(TNS) SN Ia" counts once). Fink's portal
  instead multiplies totals by fixed class fractions and shows 0 for "all classes"
  (reference section 7.1). Statistics missing or stale for a night are computed on the fly
  (pyarrow, no Spark) and, with `save_statistics=True`, stored.
* **Extra conditions and a live-stream filter** are estimated on a sample: a deterministic
  random sample of rows of every night (only the columns they read, with pyarrow) is evaluated
  by Spark with the very functions of the job (`apply_conditions`, `apply_livestream_filter`),
  so the estimate has the job's semantics, ANSI nulls and all. Per night and class the pass
  rate of the sampled alerts of that class scales the exact class count. Each rate gets a
  Wilson score interval, narrowed by the finite-population correction (a night sampled in
  full is exact); the total's interval adds the nights' variances (normal approximation).
* **Size**: the Avro payload bytes per alert (what the user downloads, before Kafka's
  compression), measured by projecting a sample of alerts on the requested content in Arrow
  exactly as the job does (light-packet flattening, class columns, map keys, Spark's
  nullability) and encoding it with `fink_pipeline.avro.encode_batch`. Alongside, the archive
  bytes the job reads per alert, from the Parquet footers (`metrics.footer_input_bytes`).

Pure: pyarrow/numpy, and a SparkSession only when conditions or a filter need one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import statistics as pystats
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fink_pipeline.archive.layout import list_nights, resolve
from fink_pipeline.archive.stats import (
    COUNT_COLUMN,
    NightStatistics,
    classification_inputs,
    classify_table,
    night_files,
    night_statistics,
)
from fink_pipeline.surveys.base import Survey
from fink_pipeline.transfer.content import PARTITION_COLUMNS, ContentPlan
from fink_pipeline.transfer.metrics import footer_input_bytes, job_read_fields, parquet_leaf_paths
from fink_pipeline.transfer.request import TransferRequestFields

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from fink_pipeline.transfer.job import TransferPlan

TNS_PREFIX = "(TNS) "
SIMBAD_PREFIX = "(SIMBAD) "
ALL_CLASSES_LABEL = "all classes"
#: Rows evaluated for conditions/filters over the whole request (spread evenly over nights) ...
DEFAULT_SAMPLE_ROWS = 40_000
#: ... but at least this many per night (or the whole night when smaller).
MIN_SAMPLE_ROWS_PER_NIGHT = 2_000
#: Alerts encoded to measure the Avro bytes per alert.
DEFAULT_SIZE_SAMPLE_ROWS = 300
_ROW = "_sample_row"
_NIGHT = "_sample_night"


# ---------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class EstimateRow:
    """Estimated alerts of one night (None: all nights) and one class label.

    `in_class` is exact (statistics); `alerts` is the estimate after conditions/filter with its
    interval [`low`, `high`]; `sampled`/`passed` are the sample rows of that class and how many
    passed (0/0 when nothing was sampled).
    """

    night: dt.date | None
    label: str
    in_class: int
    alerts: float
    low: float
    high: float
    sampled: int = 0
    passed: int = 0

    @property
    def exact(self) -> bool:
        return self.low == self.high

    def as_dict(self) -> dict:
        return {
            "night": self.night.isoformat() if self.night else "all",
            "class": self.label,
            "in_class": self.in_class,
            "alerts": round(self.alerts, 1),
            "low": round(self.low, 1),
            "high": round(self.high, 1),
            "sampled": self.sampled,
            "passed": self.passed,
        }


@dataclass
class Estimate:
    """Alert count and size of a transfer request, per night and class and in total."""

    survey: str
    start: dt.date
    stop: dt.date
    classes: list[str]
    nights: list[dt.date]
    missing_nights: list[dt.date]
    # per night and requested label (per finkclass label for "all classes"); labels may
    # overlap (a Fink and a TNS class), the night rows count the union
    rows: list[EstimateRow]
    night_rows: list[EstimateRow]
    total: EstimateRow
    alerts_in_nights: int
    sampled: bool
    confidence: float
    content: str
    bytes_per_alert: float
    archive_bytes_per_alert: float
    method: str
    notes: list[str] = field(default_factory=list)
    statistics_computed: list[dt.date] = field(default_factory=list)

    @property
    def alerts(self) -> float:
        return self.total.alerts

    @property
    def exact(self) -> bool:
        return not self.sampled

    @property
    def size_bytes(self) -> float:
        """Estimated Avro payload of the whole transfer."""
        return self.total.alerts * self.bytes_per_alert

    @property
    def size_range(self) -> tuple[float, float]:
        return self.total.low * self.bytes_per_alert, self.total.high * self.bytes_per_alert

    def per_class(self) -> list[EstimateRow]:
        """The rows summed over nights, one per label (largest first)."""
        by_label: dict[str, list[EstimateRow]] = {}
        for row in self.rows:
            by_label.setdefault(row.label, []).append(row)
        out = [_combine(rows, None, label, self.confidence) for label, rows in by_label.items()]
        return sorted(out, key=lambda r: -r.alerts)

    def as_metadata(self) -> dict[str, Any]:
        """Plain JSON-able values for Dagster materialization metadata (tables as lists of dicts)."""
        low, high = self.size_range
        return {
            "estimated_alerts": int(round(self.total.alerts)),
            "estimated_alerts_low": int(math.floor(self.total.low)),
            "estimated_alerts_high": int(math.ceil(self.total.high)),
            "estimate_exact": self.exact,
            "estimate_method": self.method,
            "alerts_in_nights": self.alerts_in_nights,
            "alerts_in_classes": self.total.in_class,
            "estimated_bytes": int(round(self.size_bytes)),
            "estimated_size": f"{human_bytes(self.size_bytes)} ({human_bytes(low)} .. {human_bytes(high)})",
            "bytes_per_alert": round(self.bytes_per_alert, 1),
            "archive_bytes_read_per_alert": round(self.archive_bytes_per_alert, 1),
            "estimate_per_night": [r.as_dict() for r in self.night_rows],
            "estimate_per_class": [r.as_dict() for r in self.per_class()],
            "estimate_notes": list(self.notes),
        }

    def as_markdown(self) -> str:
        """The per-night and class table as Markdown (for a Dagster `MetadataValue.md`)."""
        lines = ["| night | class | in class | estimated alerts |", "|---|---|---:|---:|"]
        for row in self.rows:
            lines.append(f"| {row.night} | {row.label} | {row.in_class:,} | {format_count(row)} |")
        lines.append(f"| **total** | | {self.total.in_class:,} | **{format_count(self.total)}** |")
        return "\n".join(lines)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_count(row: EstimateRow) -> str:
    """'1,234' when exact, '1,234 (1,200 .. 1,270)' otherwise."""
    if row.exact:
        return f"{int(round(row.alerts)):,}"
    return f"{int(round(row.alerts)):,} ({int(math.floor(row.low)):,} .. {int(math.ceil(row.high)):,})"


# ---------------------------------------------------------------------------------------------
# Class selection on statistics and samples


def selection_mask(survey_name: str, class_columns: Sequence[str], values: Mapping[str, Sequence],
                   classes: Sequence[str], n: int) -> np.ndarray:
    """Which of the `n` rows the job's class filter keeps (`filter_classes` semantics)."""
    if not classes:
        return np.ones(n, dtype=bool)
    first = values[class_columns[0]]
    if survey_name != "ztf":
        wanted = {str(c) for c in classes}
        return np.fromiter((v is not None and str(v) in wanted for v in first), bool, n)
    fink = {c.removeprefix(SIMBAD_PREFIX) for c in classes if not c.startswith(TNS_PREFIX)}
    tns = {c for c in classes if c.startswith(TNS_PREFIX)}
    mask = np.fromiter((v in fink for v in values["finkclass"]), bool, n)
    if tns:
        mask |= np.fromiter((v in tns for v in values["tnsclass"]), bool, n)
    return mask


def class_mask(stats: NightStatistics, classes: Sequence[str]) -> list[bool]:
    """Which rows (label combinations) of a night's statistics the class filter keeps."""
    values = {c: stats.counts.column(c).to_pylist() for c in stats.class_columns}
    return selection_mask(stats.survey, stats.class_columns, values, classes, stats.counts.num_rows).tolist()


def _row_labels(survey_name: str, classes: Sequence[str], stats: Sequence[NightStatistics]) -> list[str]:
    """Labels shown per night: the requested ones, or every label of the first class column."""
    if classes:
        return list(classes)
    seen: dict[str, int] = {}
    for s in stats:
        for label, n in s.per_label().items():
            seen[str(label)] = seen.get(str(label), 0) + n
    return [label for label, _ in sorted(seen.items(), key=lambda kv: -kv[1])]


def _label_values(stats_or_sample_values: Mapping[str, Sequence], survey_name: str, class_columns: Sequence[str],
                  label: str, all_classes: bool, n: int) -> np.ndarray:
    """Which of the `n` rows belong to one displayed label."""
    if not class_columns:  # LSST: the one label is every alert
        return np.ones(n, bool)
    if all_classes:
        first = stats_or_sample_values[class_columns[0]]
        return np.fromiter((str(v) == label for v in first), bool, len(first))
    return selection_mask(survey_name, class_columns, stats_or_sample_values, [label], n)


# ---------------------------------------------------------------------------------------------
# Intervals


def _z(confidence: float) -> float:
    return pystats.NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(passed: int, sampled: int, population: int, confidence: float) -> tuple[float, float, float]:
    """(rate, low, high) of a pass rate: Wilson score interval, narrowed by the finite-population
    correction sqrt((N - n) / (N - 1)) around the observed rate (a complete census is exact)."""
    if sampled == 0:
        return math.nan, 0.0, 1.0
    p = passed / sampled
    z = _z(confidence)
    denom = 1.0 + z * z / sampled
    center = (p + z * z / (2 * sampled)) / denom
    half = z * math.sqrt(p * (1 - p) / sampled + z * z / (4 * sampled * sampled)) / denom
    fpc = math.sqrt(max(population - sampled, 0) / (population - 1)) if population > 1 else 0.0
    low = p - (p - max(center - half, 0.0)) * fpc
    high = p + (min(center + half, 1.0) - p) * fpc
    return p, max(low, 0.0), min(high, 1.0)


def _stratum(night: dt.date | None, label: str, in_class: int, sampled: int, passed: int,
             fallback_rate: float, confidence: float) -> EstimateRow:
    if in_class == 0:
        return EstimateRow(night, label, 0, 0.0, 0.0, 0.0, sampled, passed)
    if sampled == 0:
        # nothing of this class in the sample: the night's pooled rate, anything possible
        rate = 0.0 if math.isnan(fallback_rate) else fallback_rate
        return EstimateRow(night, label, in_class, in_class * rate, 0.0, float(in_class), 0, 0)
    rate, low, high = wilson_interval(passed, sampled, in_class, confidence)
    return EstimateRow(night, label, in_class, in_class * rate, in_class * low, in_class * high, sampled, passed)


def _combine(rows: Sequence[EstimateRow], night: dt.date | None, label: str, confidence: float) -> EstimateRow:
    """Sum of independent strata: estimates add, and so do their variances (normal approx.)."""
    z = _z(confidence)
    alerts = sum(r.alerts for r in rows)
    in_class = sum(r.in_class for r in rows)
    if all(r.exact for r in rows):
        return EstimateRow(night, label, in_class, alerts, alerts, alerts,
                           sum(r.sampled for r in rows), sum(r.passed for r in rows))
    sd = math.sqrt(sum(((r.high - r.low) / (2 * z)) ** 2 for r in rows))
    low = max(alerts - z * sd, sum(r.low for r in rows), 0.0)
    high = min(alerts + z * sd, sum(r.high for r in rows), float(in_class))
    return EstimateRow(night, label, in_class, alerts, min(low, alerts), max(high, alerts),
                       sum(r.sampled for r in rows), sum(r.passed for r in rows))


# ---------------------------------------------------------------------------------------------
# Sampling with pyarrow


def _sample_indices(total: int, size: int, seed: int, night: dt.date) -> np.ndarray:
    """Sorted row numbers of a deterministic random sample of one night (all rows if smaller)."""
    if size >= total:
        return np.arange(total)
    rng = np.random.default_rng([seed, night.toordinal()])
    return np.sort(rng.choice(total, size=size, replace=False))


def read_sample(root: str, survey: Survey, night: dt.date, fields: Sequence[str], size: int,
                seed: int = 0) -> tuple[pa.Table, int]:
    """(sample, rows in the night): `size` random rows of the night with only `fields` (nested
    as in the archive), plus the partition columns year/month/day. Reads only the row groups
    holding sampled rows, and within them only the columns of `fields`."""
    files = night_files(root, survey.name, night)
    fs, _ = resolve(root)
    with contextlib.ExitStack() as stack:
        handles = [pq.ParquetFile(stack.enter_context(fs.open_input_file(path))) for path, _ in files]
        groups = [(h, g, h.metadata.row_group(g).num_rows) for h in handles for g in range(h.num_row_groups)]
        total = sum(n for _, _, n in groups)
        wanted = _sample_indices(total, size, seed, night)
        pieces = []
        start = 0
        for handle, g, n in groups:
            lo, hi = np.searchsorted(wanted, [start, start + n])
            if hi > lo:
                columns = parquet_leaf_paths(handle.schema, fields)
                table = handle.read_row_group(g, columns=columns)
                pieces.append(table.take(pa.array(wanted[lo:hi] - start)))
            start += n
    sample = pa.concat_tables(pieces, promote_options="permissive") if pieces else pa.table({})
    rows = sample.num_rows
    for name, value in zip(PARTITION_COLUMNS, (night.year, night.month, night.day)):
        sample = sample.append_column(name, pa.array([value] * rows, pa.int32()))
    return sample, total


def _sample_classes(survey: Survey, table: pa.Table, tns_catalog) -> dict[str, list]:
    labels = classify_table(survey, table, tns_catalog)
    return {c: pc.cast(labels[c], pa.string()).to_pylist() for c in survey.class_columns}


def _passing_rows(spark: "SparkSession", plan: "TransferPlan", sample: pa.Table) -> set[tuple[int, int]]:
    """(night ordinal, row) of the sample rows passing the plan's conditions and filter, as
    evaluated by Spark with the job's own functions."""
    from fink_pipeline.transfer.job import apply_conditions, apply_livestream_filter, classify

    df = spark.createDataFrame(sample)
    class_columns = set(plan.survey.class_columns)
    if any(f.split(".")[0] in class_columns for c in plan.conditions for f in c.fields):
        df = classify(df, plan.survey, plan.tns_catalog)
    df = apply_conditions(df, plan.conditions)
    df = apply_livestream_filter(df, plan.livestream_filter)
    return {(r[0], r[1]) for r in df.select(_NIGHT, _ROW).collect()}


# ---------------------------------------------------------------------------------------------
# Size


def _nullable_type(dtype: pa.DataType) -> pa.DataType:
    """`dtype` with every nested field nullable, as Spark reads any file (`asNullable`)."""
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _nullable_type(f.type), True) for f in dtype])
    if pa.types.is_map(dtype):
        return pa.map_(dtype.key_type, pa.field(dtype.item_field.name, _nullable_type(dtype.item_type), True))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pa.list_(pa.field(dtype.value_field.name, _nullable_type(dtype.value_type), True))
    return dtype


def _struct_path(table: pa.Table, path: str) -> pa.Array | None:
    head, *rest = path.split(".")
    if head not in table.column_names:
        return None
    arr = table.column(head).combine_chunks()
    for name in rest:
        if not pa.types.is_struct(arr.type) or arr.type.get_field_index(name) < 0:
            return None
        arr = pc.struct_field(arr, name)
    return arr


def project_arrow(table: pa.Table, content: ContentPlan, classes: Mapping[str, pa.Array],
                  field_types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """The job's projection (`content.project`) of archive rows, in Arrow, with the schema Spark
    publishes: every field nullable except whole struct columns and the always-set tnsclass.
    A field the rows lack (a night of an older schema) is null with its type in `field_types`
    (the survey's `field_paths`), as Spark reads it."""
    arrays, fields = [], []
    for source, name in content.columns:
        if source in classes:
            arr = classes[source]
            nullable = source != "tnsclass"  # coalesce(..., "Unknown") in the job: never null
        else:
            arr = _content_path(table, source, field_types or {})
            nullable = not pa.types.is_struct(arr.type)
        dtype = _nullable_type(arr.type)
        arrays.append(arr.cast(dtype) if dtype != arr.type else arr)
        fields.append(pa.field(name, dtype, nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _content_path(table: pa.Table, source: str, field_types: Mapping[str, pa.DataType]) -> pa.Array:
    """One content field of `table`: a plain field, a map key (`mangrove.HyperLEDA_name`), or
    nulls of its archive type when the rows lack it."""
    arr = _struct_path(table, source)
    if arr is not None and not pa.types.is_null(arr.type):
        return arr
    root, _, key = source.rpartition(".")
    maps = _struct_path(table, root) if root else None
    if arr is None and maps is not None and pa.types.is_map(maps.type):
        return pc.map_lookup(maps, pa.scalar(key, pa.string()), "first")
    dtype = field_types.get(source)
    if dtype is None and pa.types.is_map(field_types.get(root, pa.null())):
        dtype = field_types[root].item_type
    return pa.nulls(table.num_rows, dtype if dtype is not None else pa.string())


def avro_bytes_per_alert(table: pa.Table, content: ContentPlan, classes: Mapping[str, pa.Array],
                         field_types: Mapping[str, pa.DataType] | None = None) -> float:
    """Mean schemaless Avro payload of the rows once projected on `content`."""
    from fink_pipeline.avro import avro_schema_from_arrow, encode_batch

    if table.num_rows == 0:
        return 0.0
    projected = project_arrow(table, content, classes, field_types)
    payloads = encode_batch(projected, avro_schema_from_arrow(projected.schema))
    return float(pc.sum(pc.binary_length(payloads)).as_py()) / table.num_rows


def _size_sample(plan: "TransferPlan", nights: Sequence[dt.date], size_rows: int, seed: int) -> tuple[pa.Table, dict]:
    """A few alerts from up to three nights (first, middle, last) with every column the content needs."""
    survey = plan.survey
    # computed class columns are not in the files (ELAsTiCC's stored classId is)
    computed = set(survey.class_columns) if survey.classify_arrow is not None else set()
    skip = computed | set(PARTITION_COLUMNS)
    fields = [f for f in dict.fromkeys(list(classification_inputs(survey)) + plan.content.source_fields)
              if f.split(".")[0] not in skip]
    chosen = sorted({nights[0], nights[len(nights) // 2], nights[-1]}) if nights else []
    pieces = []
    for night in chosen:
        per_night = max(size_rows // len(chosen), 1)
        sample, _ = read_sample(plan.archive_root, survey, night, fields, per_night, seed + 1)
        pieces.append(sample)
    if not pieces:
        return pa.table({}), {}
    table = pa.concat_tables(pieces, promote_options="permissive")
    return table, classify_table(survey, table, plan.tns_catalog)


# ---------------------------------------------------------------------------------------------
# Entry point


def estimate_request(
    request: TransferRequestFields,
    archive_root: str,
    *,
    spark: "SparkSession | Callable[[], SparkSession] | None" = None,
    tns_catalog: Any = None,
    sample_rows: int = DEFAULT_SAMPLE_ROWS,
    size_sample_rows: int = DEFAULT_SIZE_SAMPLE_ROWS,
    seed: int = 0,
    confidence: float = 0.95,
    save_statistics: bool = False,
    plan: "TransferPlan | None" = None,
) -> Estimate:
    """Estimate the alerts and bytes `request` would publish from the archive at `archive_root`.

    Validates the request first (`plan_transfer`: the same errors as `request validate`).
    `spark` (a session or a zero-argument factory) is used only when the request has extra
    conditions or a live-stream filter; without one a local session is started and stopped
    here. See the module docstring for the method.
    """
    from fink_pipeline.transfer.job import plan_transfer

    if plan is None:
        plan = plan_transfer(request, archive_root, list_nights(archive_root, request.survey), tns_catalog=tns_catalog)
    survey = plan.survey
    missing = set(plan.missing_nights)
    nights = [n for n in request.nights if n not in missing]
    notes = list(plan.notes)
    computed: list[dt.date] = []
    stats: list[NightStatistics] = []
    for night in nights:
        s, fresh = night_statistics(survey, archive_root, night, plan.tns_catalog, save=save_statistics)
        stats.append(s)
        if fresh:
            computed.append(night)
    if computed and not save_statistics:
        notes.append(f"nightly statistics of {len(computed)} night(s) were computed on the fly "
                     "(materialize night_statistics to store them)")

    all_classes = not request.classes
    labels = _row_labels(survey.name, request.classes, stats)
    class_columns = tuple(survey.class_columns)
    sampled = bool(plan.conditions) or plan.livestream_filter is not None

    # Sample and evaluate once for all nights.
    sample_values: dict[dt.date, dict[str, list]] = {}
    sample_rows_per_night: dict[dt.date, int] = {}
    passing: set[tuple[int, int]] = set()
    if sampled:
        fields = _sample_fields(plan)
        per_night = max(MIN_SAMPLE_ROWS_PER_NIGHT, sample_rows // max(len(nights), 1))
        tables = []
        for night in nights:
            sample, _ = read_sample(archive_root, survey, night, fields, per_night, seed)
            sample_values[night] = _sample_classes(survey, sample, plan.tns_catalog)
            sample_rows_per_night[night] = sample.num_rows
            sample = sample.append_column(_NIGHT, pa.array([night.toordinal()] * sample.num_rows, pa.int64()))
            sample = sample.append_column(_ROW, pa.array(np.arange(sample.num_rows), pa.int64()))
            tables.append(sample)
        if tables:
            session, owned = _session(spark)
            try:
                passing = _passing_rows(session, plan, pa.concat_tables(tables, promote_options="permissive"))
            finally:
                if owned:
                    session.stop()

    rows: list[EstimateRow] = []
    night_rows: list[EstimateRow] = []
    for night, s in zip(nights, stats):
        stat_values = {c: s.counts.column(c).to_pylist() for c in class_columns}
        counts = np.asarray(s.counts.column(COUNT_COLUMN).to_pylist(), dtype=np.int64)
        union = selection_mask(survey.name, class_columns, stat_values, request.classes, len(counts))
        in_union = int(counts[union].sum())
        if not sampled:
            for label in labels:
                n = int(counts[_label_values(stat_values, survey.name, class_columns, label, all_classes,
                                             len(counts))].sum())
                if n or not all_classes:
                    rows.append(EstimateRow(night, label, n, float(n), float(n), float(n)))
            exact = float(in_union)
            night_rows.append(EstimateRow(night, "selected", in_union, exact, exact, exact))
            continue
        values = sample_values[night]
        size = sample_rows_per_night[night]
        passed = np.fromiter(((night.toordinal(), i) in passing for i in range(size)), bool, size)
        in_sample = selection_mask(survey.name, class_columns, values, request.classes, size)
        pooled = passed[in_sample].mean() if in_sample.any() else (passed.mean() if size else math.nan)
        for label in labels:
            n = int(counts[_label_values(stat_values, survey.name, class_columns, label, all_classes,
                                         len(counts))].sum())
            if not n and all_classes:
                continue
            member = _label_values(values, survey.name, class_columns, label, all_classes, size)
            rows.append(_stratum(night, label, n, int(member.sum()), int((member & passed).sum()), pooled, confidence))
        night_rows.append(_stratum(night, "selected", in_union, int(in_sample.sum()),
                                   int((in_sample & passed).sum()), pooled, confidence))

    total = _combine(night_rows, None, ALL_CLASSES_LABEL if all_classes else "selected", confidence)
    if request.limit is not None and total.alerts > request.limit:
        notes.append(f"limit: at most {request.limit:,} alerts are published")
        total = EstimateRow(None, total.label, total.in_class, float(request.limit), min(total.low, request.limit),
                            float(request.limit), total.sampled, total.passed)
    if any(c.startswith(TNS_PREFIX) for c in request.classes) and plan.tns_catalog is None:
        notes.append("no TNS catalogue: every alert's tnsclass is 'Unknown', TNS classes select nothing")

    size_table, size_labels = _size_sample(plan, nights, size_sample_rows, seed)
    bytes_per_alert = (avro_bytes_per_alert(size_table, plan.content, size_labels, survey.field_paths)
                       if size_table.num_rows else 0.0)
    files = [path for night in nights for path, _ in night_files(archive_root, survey.name, night)]
    footer = footer_input_bytes(files, job_read_fields(plan)) if files else None
    method = "nightly statistics (exact)"
    if sampled:
        evaluated = sum(sample_rows_per_night.values())
        method = (f"nightly statistics x pass rate of a {evaluated:,}-alert sample evaluated by Spark "
                  f"({confidence:.0%} Wilson intervals)")
    return Estimate(
        survey=survey.name,
        start=request.start_night,
        stop=request.stop_night,
        classes=list(request.classes),
        nights=nights,
        missing_nights=list(plan.missing_nights),
        rows=rows,
        night_rows=night_rows,
        total=total,
        alerts_in_nights=sum(s.total for s in stats),
        sampled=sampled,
        confidence=confidence,
        content=plan.content.packet or ", ".join(plan.content.output_names),
        bytes_per_alert=bytes_per_alert,
        archive_bytes_per_alert=footer.bytes_per_row if footer else 0.0,
        method=method,
        notes=notes,
        statistics_computed=computed,
    )


def _sample_fields(plan: "TransferPlan") -> list[str]:
    """Archive fields the sample needs: classification inputs, condition and filter fields."""
    skip = set(plan.survey.class_columns) | set(PARTITION_COLUMNS)
    fields = list(classification_inputs(plan.survey))
    for condition in plan.conditions:
        fields += condition.fields
    if plan.livestream_filter is not None:
        fields += list(plan.livestream_filter.columns_read)
    return [f for f in dict.fromkeys(fields) if f.split(".")[0] not in skip]


def _session(spark) -> tuple["SparkSession", bool]:
    """(session, created here) from a session, a factory or nothing (local session)."""
    if spark is None:
        from pyspark import SparkContext

        from fink_pipeline.spark import build_spark_session

        owned = SparkContext._active_spark_context is None
        return build_spark_session("local[*]", "fink-pipeline-estimate"), owned
    if callable(spark) and not hasattr(spark, "sparkContext"):
        return spark(), False
    return spark, False
