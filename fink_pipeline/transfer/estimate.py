"""What a transfer request will publish, before it runs: alert count and size.

`estimate_request(request, archive_root)` returns an `Estimate`:

* **Nights and classes** are counted exactly from the nightly statistics (`archive.stats`),
  including "all classes" and combinations of Fink, SIMBAD and TNS labels (the statistics keep
  label pairs, so an alert both "SN candidate" and "(TNS) SN Ia" counts once). Fink's portal
  instead multiplies totals by fixed class fractions and shows 0 for "all classes"
  (reference section 7.1). Statistics missing or stale for a night are computed on the fly
  (pyarrow, no Spark) and, with `save_statistics=True`, stored.
* **Extra conditions, filters and blocks** are estimated on a sample: a deterministic
  random sample of rows of every night (only the columns they read, with pyarrow) is evaluated
  by Spark with the very functions of the job (`apply_conditions`, `apply_selections`),
  so the estimate has the job's semantics, ANSI nulls and all. Per night and class the pass
  rate of the sampled alerts of that class scales the exact class count. Each rate gets a
  Wilson score interval, narrowed by the finite-population correction (a night sampled in
  full is exact); the total's interval adds the nights' variances (normal approximation).
* **Size**: the Avro payload bytes per alert (what the user downloads, before Kafka's
  compression), measured by projecting a sample of alerts on the requested content in Arrow
  exactly as the job does (light-packet flattening, class columns, map keys, Spark's
  nullability) and encoding it with `fink_pipeline.avro.encode_batch`. Alongside, the archive
  bytes the job reads per alert, from the Parquet footers the plan read (`metrics.footers_input_bytes`).

Pure: pyarrow/numpy, and a SparkSession only when conditions, filters or blocks need one.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics as pystats
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from fink_pipeline.archive.importer import column_at
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.archive.stats import COUNT_COLUMN, NightStatistics, night_statistics
from fink_pipeline.spark import LOCAL_MASTER, open_spark_session
from fink_pipeline.surveys.base import Survey
from fink_pipeline.transfer.content import ContentPlan
from fink_pipeline.transfer.plan import TransferPlan, plan_transfer
from fink_pipeline.transfer.request import TransferRequestFields
from fink_pipeline.transfer.sample import avro_bytes_per_alert, read_sample, sample_classes, size_sample
from fink_pipeline.transfer.select import apply_conditions, apply_selections, classify

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

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
    # catalogue cross-match: exact (alert, source) pairs per night and the alerts in them,
    # counted on every alert's position before classes, conditions, filters and blocks
    catalog_pairs: dict[dt.date, int] = field(default_factory=dict)
    catalog_alerts: int = 0

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
            **({"catalog_pairs": sum(self.catalog_pairs.values()), "catalog_matched_alerts": self.catalog_alerts}
               if self.catalog_pairs else {}),
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
# Labels shown


def _row_labels(classes: Sequence[str], stats: Sequence[NightStatistics]) -> list[str]:
    """Labels shown per night: the requested ones, or every label of the first class column."""
    if classes:
        return list(classes)
    seen: dict[str, int] = {}
    for s in stats:
        for label, n in s.per_label().items():
            seen[str(label)] = seen.get(str(label), 0) + n
    return [label for label, _ in sorted(seen.items(), key=lambda kv: -kv[1])]


def _label_values(values: Mapping[str, Sequence], survey: Survey, label: str, all_classes: bool,
                  n: int) -> np.ndarray:
    """Which of the `n` rows (class column -> values) belong to one displayed label."""
    if not survey.class_columns:  # LSST: the one label is every alert
        return np.ones(n, bool)
    if all_classes:
        first = values[survey.class_columns[0]]
        return np.fromiter((str(v) == label for v in first), bool, len(first))
    return survey.class_mask(values, [label], n)


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


def _passing_rows(spark: "SparkSession", plan: TransferPlan, sample: pa.Table) -> set[tuple[int, int]]:
    """(night ordinal, row) of the sample rows passing the plan's conditions, filters and blocks, as
    evaluated by Spark with the job's own functions."""
    df = spark.createDataFrame(sample)
    computed = set(plan.survey.class_columns)
    if plan.survey.tns_recompute is not None:
        computed.add(plan.survey.tns_recompute.column)
    if any(f.split(".")[0] in computed for c in plan.conditions for f in c.fields):
        df = classify(df, plan.survey, plan.tns_catalog)
    df = apply_conditions(df, plan.conditions)
    df = apply_selections(df, plan.selections)
    return {(r[0], r[1]) for r in df.select(_NIGHT, _ROW).collect()}


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
    conditions, filters or blocks; without one a local session is started and stopped
    here. See the module docstring for the method.
    """
    if plan is None:
        plan = plan_transfer(request, archive_root, list_nights(archive_root, request.survey), tns_catalog=tns_catalog)
    survey, nights = plan.survey, plan.present_nights
    notes = list(plan.notes)
    stats, computed = _nights_statistics(plan, nights, save_statistics)
    if computed and not save_statistics:
        notes.append(f"nightly statistics of {len(computed)} night(s) were computed on the fly "
                     "(materialize night_statistics to store them)")
    sampled = bool(plan.conditions) or bool(plan.selections)
    sample = _evaluate_sample(plan, nights, sample_rows, seed, spark) if sampled else None
    rows, night_rows = _count_rows(plan, nights, stats, sample, confidence)

    all_classes = not request.classes
    total = _combine(night_rows, None, ALL_CLASSES_LABEL if all_classes else "selected", confidence)
    if request.limit is not None and total.alerts > request.limit:
        notes.append(f"limit: at most {request.limit:,} alerts are published")
        total = EstimateRow(None, total.label, total.in_class, float(request.limit), min(total.low, request.limit),
                            float(request.limit), total.sampled, total.passed)
    if survey.needs_tns(request.classes) and plan.tns_catalog is None:
        notes.append("no TNS catalogue: every alert's tnsclass is 'Unknown', TNS classes select nothing")

    catalog_pairs: dict[dt.date, int] = {}
    catalog_alerts = 0
    if plan.crossmatch is not None:
        catalog_pairs, catalog_alerts = catalog_matches(plan, nights)
        total, note = _matched_total(total, sum(catalog_pairs.values()), sum(s.total for s in stats))
        notes.append(note)
        if request.limit is not None and total.alerts > request.limit:
            total = EstimateRow(None, total.label, total.in_class, float(request.limit),
                                min(total.low, request.limit), float(request.limit), total.sampled, total.passed)
    size_table, size_labels = size_sample(plan, nights, size_sample_rows, seed)
    content = plan.content
    if plan.crossmatch is not None:  # the id column is not in the archive: sized apart
        content = ContentPlan(content.packet, content.columns[:-1])
    bytes_per_alert = (avro_bytes_per_alert(size_table, content, size_labels, survey.field_paths)
                       if size_table.num_rows else 0.0)
    if plan.crossmatch is not None:
        bytes_per_alert += _id_bytes(plan)
    footer = plan.footer_input_bytes()
    method = "nightly statistics (exact)"
    if sample is not None:
        method = (f"nightly statistics x pass rate of a {sum(sample.rows.values()):,}-alert sample evaluated by "
                  f"Spark ({confidence:.0%} Wilson intervals)")
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
        catalog_pairs=catalog_pairs,
        catalog_alerts=catalog_alerts,
    )


def catalog_matches(plan: TransferPlan, nights: Sequence[dt.date]) -> tuple[dict[dt.date, int], int]:
    """(pairs per night, alerts with a match): the catalogue matched against the position of
    every alert of `nights` (two columns read with pyarrow, the job's own index and test)."""
    from fink_pipeline.transfer.crossmatch.index import cached_index

    crossmatch = plan.crossmatch
    index = cached_index(crossmatch.index_path)
    pairs: dict[dt.date, int] = {}
    alerts = 0
    for night in nights:
        table, total = read_sample(plan.archive_root, plan.survey, night, list(crossmatch.position), size=1 << 62,
                                   footers=plan.footers.get(night))
        # struct_field: a null diaSource gives a null (NaN) position, which matches nothing
        ra, dec = (column_at(table, path).to_numpy().astype(np.float64) for path in crossmatch.position)
        matched, _ = index.match(ra, dec)
        pairs[night] = len(matched)
        alerts += len(np.unique(matched))
    return pairs, alerts


def _matched_total(total: EstimateRow, pairs: int, alerts_in_nights: int) -> tuple[EstimateRow, str]:
    """The total after the cross-match: exact pairs, scaled by the other selections' pass rate
    (all alerts pass them: exact)."""
    if total.in_class == alerts_in_nights and total.low == total.high == alerts_in_nights:
        return (EstimateRow(None, total.label, total.in_class, float(pairs), float(pairs), float(pairs)),
                f"catalogue: {pairs:,} (alert, source) pairs within the radius (exact: every alert's position matched)")
    rate = total.alerts / alerts_in_nights if alerts_in_nights else 0.0
    low = total.low / alerts_in_nights if alerts_in_nights else 0.0
    high = total.high / alerts_in_nights if alerts_in_nights else 0.0
    return (EstimateRow(None, total.label, total.in_class, pairs * rate, pairs * low, min(pairs * high, pairs),
                        total.sampled, total.passed),
            f"catalogue: {pairs:,} (alert, source) pairs within the radius (exact), times the {rate:.2%} of alerts "
            "the classes, conditions, filters and blocks keep (assumed independent of the match)")


def _id_bytes(plan: TransferPlan) -> float:
    """Avro bytes of the catalogue id column per row: a long's varint, or a string's length + text."""
    from fink_pipeline.transfer.crossmatch.index import cached_index

    ids = cached_index(plan.crossmatch.index_path).ids
    if pa.types.is_integer(ids.type):
        return 5.0
    sample = ids.slice(0, 10_000)
    return float(np.mean([len(v.encode()) + 1 for v in sample.to_pylist()])) if len(sample) else 1.0


def _nights_statistics(plan: TransferPlan, nights: Sequence[dt.date],
                       save: bool) -> tuple[list[NightStatistics], list[dt.date]]:
    """Each night's statistics (stored, or computed now), and the nights computed now."""
    stats: list[NightStatistics] = []
    computed: list[dt.date] = []
    for night in nights:
        night_stats, fresh = night_statistics(plan.survey, plan.archive_root, night, plan.class_tns_catalog, save=save)
        stats.append(night_stats)
        if fresh:
            computed.append(night)
    return stats, computed


@dataclass
class _EvaluatedSample:
    """Per night: the sampled rows' class labels and count; (night ordinal, row) passing."""

    values: dict[dt.date, dict[str, list]]
    rows: dict[dt.date, int]
    passing: set[tuple[int, int]]

    def passed(self, night: dt.date) -> np.ndarray:
        size = self.rows[night]
        return np.fromiter(((night.toordinal(), i) in self.passing for i in range(size)), bool, size)


def _evaluate_sample(plan: TransferPlan, nights: Sequence[dt.date], sample_rows: int, seed: int,
                     spark) -> _EvaluatedSample:
    """Sample every night (once for all labels) and evaluate conditions and filter with Spark."""
    fields = plan.read_fields(content=False)
    per_night = max(MIN_SAMPLE_ROWS_PER_NIGHT, sample_rows // max(len(nights), 1))
    result = _EvaluatedSample({}, {}, set())
    tables = []
    for night in nights:
        sample, _ = read_sample(plan.archive_root, plan.survey, night, fields, per_night, seed,
                                footers=plan.footers.get(night))
        result.values[night] = sample_classes(plan.survey, sample, plan.class_tns_catalog)
        result.rows[night] = sample.num_rows
        sample = sample.append_column(_NIGHT, pa.array([night.toordinal()] * sample.num_rows, pa.int64()))
        sample = sample.append_column(_ROW, pa.array(np.arange(sample.num_rows), pa.int64()))
        tables.append(sample)
    if tables:
        session, owned = _session(spark)
        try:
            result.passing = _passing_rows(session, plan, pa.concat_tables(tables, promote_options="permissive"))
        finally:
            if owned:
                session.stop()
    return result


def _count_rows(plan: TransferPlan, nights: Sequence[dt.date], stats: Sequence[NightStatistics],
                sample: _EvaluatedSample | None, confidence: float) -> tuple[list[EstimateRow], list[EstimateRow]]:
    """(rows per night and label, rows per night): exact class counts, scaled by the sample's
    pass rates when there is one."""
    survey, classes = plan.survey, plan.request.classes
    all_classes = not classes
    labels = _row_labels(classes, stats)
    rows: list[EstimateRow] = []
    night_rows: list[EstimateRow] = []
    for night, night_stats in zip(nights, stats):
        stat_values = night_stats.label_values()
        counts = np.asarray(night_stats.counts.column(COUNT_COLUMN).to_pylist(), dtype=np.int64)
        in_union = int(counts[survey.class_mask(stat_values, classes, len(counts))].sum())
        per_label = {label: int(counts[_label_values(stat_values, survey, label, all_classes, len(counts))].sum())
                     for label in labels}
        if sample is None:
            rows += [EstimateRow(night, label, n, float(n), float(n), float(n))
                     for label, n in per_label.items() if n or not all_classes]
            night_rows.append(EstimateRow(night, "selected", in_union, float(in_union), float(in_union), float(in_union)))
            continue
        values, size, passed = sample.values[night], sample.rows[night], sample.passed(night)
        in_sample = survey.class_mask(values, classes, size)
        pooled = passed[in_sample].mean() if in_sample.any() else (passed.mean() if size else math.nan)
        for label, n in per_label.items():
            if not n and all_classes:
                continue
            member = _label_values(values, survey, label, all_classes, size)
            rows.append(_stratum(night, label, n, int(member.sum()), int((member & passed).sum()), pooled, confidence))
        night_rows.append(_stratum(night, "selected", in_union, int(in_sample.sum()),
                                   int((in_sample & passed).sum()), pooled, confidence))
    return rows, night_rows


def _session(spark) -> tuple["SparkSession", bool]:
    """(session, created here) from a session, a factory or nothing (local session)."""
    if spark is None:
        return open_spark_session(LOCAL_MASTER, "fink-pipeline-estimate")
    if callable(spark) and not hasattr(spark, "sparkContext"):
        return spark(), False
    return spark, False
