"""The Spark filter-and-project job as pure `DataFrame -> DataFrame` steps.

Order follows Fink's job (reference section 3): read the selected nights, classify, filter by
classes, cross-match a user catalogue (sections 9.1, 9.3), then extra conditions, then the
live-stream filters and blocks, then project the content. Every
step logs the milestone lines Fink's portal shows, so a Dagster run log reads like Fink's monitor.

`build_transfer_dataframe` returns the projected content; `build_publication`, what the
publisher runs, lets Spark select and the publishing tasks read the content of the selected rows
with Arrow when the content is made of plain fields of a local archive (less CPU: see
bench/README.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import pyarrow as pa

from fink_pipeline.archive.layout import science_root
from fink_pipeline.archive.stats import catalog_fingerprint, is_current, read_night_statistics
from fink_pipeline.spark import spark_to_arrow_schema
from fink_pipeline.surveys.base import Survey
from fink_pipeline.transfer.arrow_content import (
    FILE_COLUMN,
    ROW_COLUMN,
    ArrowContent,
    RowGroupSplits,
    file_paths,
    is_arrow_readable_archive,
)
from fink_pipeline.transfer.conditions import ValidatedCondition
from fink_pipeline.transfer.content import PARTITION_COLUMNS, field_type, project, projected_schema
from fink_pipeline.transfer.crossmatch.spark_step import crossmatch_dataframe
from fink_pipeline.transfer.plan import AppliedSelection, TransferPlan

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

LOGGER = logging.getLogger("fink_pipeline.job")


def read_nights(spark: "SparkSession", plan: TransferPlan) -> "DataFrame":
    """Read only the selected nights, with the survey's unified schema.

    Giving the schema explicitly means nights written with an older schema still read
    together with newer ones (missing columns are null instead of dropped), and Spark does
    not open a footer just to infer it. Column pruning then reads only what later steps use.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    schema = from_arrow_schema(plan.survey.archive_schema)
    base = science_root(plan.archive_root, plan.survey.name)
    return spark.read.schema(schema).option("basePath", base).parquet(*plan.night_paths)


def classify(df: "DataFrame", survey: Survey, tns_catalog: Any = None) -> "DataFrame":
    """Add the survey's class columns as native Spark expressions (tnsclass from `tns_catalog`),
    and recompute its TNS column (Rubin's tns_type_recomputed) when there is a catalogue."""
    if survey.classify:
        df = survey.classify(df, tns_catalog) if tns_catalog is not None else survey.classify(df)
    if survey.tns_recompute is not None and tns_catalog is not None:
        df = survey.tns_recompute.apply(df, tns_catalog)
    return df


def filter_classes(df: "DataFrame", survey: Survey, classes: Sequence[str]) -> "DataFrame":
    """Keep alerts of the given classes, with the survey's class semantics."""
    return df.filter(survey.class_filter(classes)) if classes else df


def apply_conditions(df: "DataFrame", conditions: Sequence[ValidatedCondition]) -> "DataFrame":
    """AND every validated condition (their Spark SQL is regenerated from a checked AST)."""
    from pyspark.sql import functions as F

    for condition in conditions:
        df = df.filter(F.expr(condition.spark_sql))
    return df


def apply_selections(df: "DataFrame", selections: Sequence[AppliedSelection], log: logging.Logger | None = None) -> "DataFrame":
    """Keep the alerts every filter and block selects (`NOT` ones: rejects), in the request's
    order; their columns are null-free, so a negation keeps exactly the others."""
    for selection in selections:
        if log is not None:
            log.info(f"Applying user-defined {selection.kind} {'NOT ' if selection.negated else ''}"
                     f"{selection.function.fink_module}...")
        df = df.filter(selection.column())
    return df


def statistics_counts(plan: TransferPlan) -> tuple[int, int] | None:
    """(alerts in the plan's nights, alerts of its classes) from stored, current nightly
    statistics; None when some night has none (counting them here would mean reading the data)."""
    fingerprint = catalog_fingerprint(plan.class_tns_catalog)
    total = selected = 0
    for night in plan.present_nights:
        stats = read_night_statistics(plan.archive_root, plan.survey.name, night)
        if stats is None or not is_current(stats, plan.archive_root, fingerprint):
            return None
        total += stats.total
        selected += stats.selected(plan.request.classes)
    return total, selected


def build_transfer_dataframe(
    spark: "SparkSession", plan: TransferPlan, log: logging.Logger | None = None
) -> "DataFrame":
    """The whole selection: read -> classify -> classes -> catalogue -> conditions -> filter -> content."""
    log = log or LOGGER
    return _limit(project(_select(spark, plan, log, locate=False), plan.content), plan, log)


@dataclass
class Publication:
    """What the publisher runs: `rows` is either the projected content (`arrow_content` None),
    or the selected alerts' archive locations, or every row group of the nights
    (`RowGroupSplits`); the tasks read the content of the last two with Arrow."""

    rows: "DataFrame | RowGroupSplits"
    arrow_content: ArrowContent | None = None
    # how many Spark partitions `rows` has when the builder chose them (None: ask Spark)
    spark_partitions: int | None = None


def build_publication(
    spark: "SparkSession", plan: TransferPlan, log: logging.Logger | None = None, *, arrow_content: bool = True,
    max_partitions: int | None = None,
) -> Publication:
    """The transfer's selection, ready to publish (in at most `max_partitions` Spark partitions
    when it is made of row groups; other selections are coalesced by the publisher).

    With `arrow_content` (the default) and a content of plain fields of a local archive,
    Spark selects and the publishing tasks read the content columns of the selected rows
    with Arrow (`fink_pipeline.transfer.arrow_content`), classifying them too when nothing
    filters on the classes; otherwise Spark projects the content itself, as
    `build_transfer_dataframe` does.
    """
    from pyspark.sql import functions as F

    log = log or LOGGER
    deferrable = arrow_content and is_arrow_readable_archive(plan.archive_root)
    content = plan.content
    survey = plan.survey
    # Nothing filters on the classes: the tasks classify the rows they publish with the
    # survey's Arrow classifier, and Spark only lists the rows (it reads no column at all).
    classified_in_task = deferrable and _classes_unfiltered(plan) and any(
        source in survey.class_columns for source, _ in content.columns)
    if classified_in_task and (whole_nights := _whole_nights_publication(spark, plan, log, max_partitions)) is not None:
        return whole_nights
    df = _select(spark, plan, log, locate=deferrable, classify_rows=not classified_in_task)
    classified_df = classify(df, survey, plan.tns_catalog) if classified_in_task else df
    # classes, a recomputed TNS column and night partition columns come from Spark (or the
    # classifier); every other plain field is read from the archive file
    carried = set(survey.class_columns) | set(PARTITION_COLUMNS)
    if plan.crossmatch is not None:
        carried.add(plan.crossmatch.id_col)
    if survey.tns_recompute is not None and plan.tns_catalog is not None:
        carried.add(survey.tns_recompute.column)
    file_columns = file_paths([source for source, name in content.columns if source not in carried])
    # an empty column list would make pyarrow read every column
    if (not deferrable or not file_columns
            or any(field_type(classified_df.schema, source) is None for source, _ in content.columns)):
        # map keys (`mangrove.HyperLEDA_name`): Spark reads them
        if classified_in_task:
            df = classified_df
        if deferrable:
            df = df.drop(FILE_COLUMN, ROW_COLUMN)
        return Publication(_limit(project(df, content), plan, log))
    output_schema = spark_to_arrow_schema(project(classified_df, content))
    classified = tuple(name for source, name in content.columns
                       if classified_in_task and source in survey.class_columns)
    class_inputs = tuple(survey.classification_inputs) if classified else ()
    carried_names = tuple(name for source, name in content.columns if source in carried and name not in classified)
    arrow_content = ArrowContent(
        columns=content.columns,
        carried=carried_names,
        file_columns=file_paths(list(file_columns) + list(class_inputs)),
        archive_schema=survey.archive_schema,
        output_schema=output_schema,
        classified=classified,
        class_inputs=class_inputs,
        classify=survey.classify_arrow if classified else None,
    )
    selection = df.select(F.col(FILE_COLUMN), F.col(ROW_COLUMN),
                          *[F.col(source).alias(name) for source, name in content.columns
                            if source in carried and name not in classified])
    return Publication(_limit(selection, plan, log), arrow_content)


def _whole_nights_publication(spark: "SparkSession", plan: TransferPlan, log: logging.Logger,
                              max_partitions: int | None) -> Publication | None:
    """Every alert of the nights, classified by the tasks (`build_publication` has checked that
    nothing filters): Spark hands the tasks the nights' row groups (~2,500 alerts each with
    cutouts; listing 1M alerts' files and rows cost the JVM ~10 CPU-s) and needs no DataFrame of
    the nights. The output schema is worked out from the archive schema (`projected_schema`),
    not by Spark's analyzer, which took ~2 s of the cold JVM before the first alert left.
    The row groups go to at most `max_partitions` Spark partitions of consecutive groups: those
    a coalesce of one partition per group gives (tested equal), and the same on every
    evaluation, which exactly-once needs. None when the content needs Spark (a night column, a
    map key) or the plan has no footers: `build_publication` then selects with Spark."""
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    survey, content = plan.survey, plan.content
    if any(source in PARTITION_COLUMNS for source, _ in content.columns):
        return None
    file_columns = file_paths([source for source, _ in content.columns if source not in survey.class_columns])
    row_groups = _archive_row_groups(plan)
    if not file_columns or not row_groups:
        return None
    spark_schema = projected_schema(
        from_arrow_schema(pa.schema([*survey.archive_schema, *_class_schema(spark, survey)])), content)
    if spark_schema is None:
        return None
    _log_reading(plan, log)
    log.info(f"Selecting content {content.packet or content.source_fields}...")
    class_inputs = tuple(survey.classification_inputs)
    arrow_content = ArrowContent(
        columns=content.columns,
        carried=(),
        file_columns=file_paths(list(file_columns) + list(class_inputs)),
        archive_schema=survey.archive_schema,
        output_schema=to_arrow_schema(spark_schema, timezone=spark.conf.get("spark.sql.session.timeZone")),
        classified=tuple(name for source, name in content.columns if source in survey.class_columns),
        class_inputs=class_inputs,
        classify=survey.classify_arrow,
        row_groups=row_groups,
    )
    log.info(f"Publishing every alert of {len(row_groups):,} row groups")
    partitions = len(row_groups) if max_partitions is None else max(1, min(len(row_groups), max_partitions))
    return Publication(RowGroupSplits(spark, len(row_groups), partitions), arrow_content,
                       spark_partitions=partitions if max_partitions is not None else None)


def _class_schema(spark: "SparkSession", survey: Survey) -> pa.Schema:
    """The class columns as `classify` types them: the survey's `class_schema`, else Spark's
    analysis of `classify` over an empty DataFrame of the archive schema."""
    if survey.class_schema is not None:
        return survey.class_schema
    from pyspark.sql.pandas.types import from_arrow_schema

    empty = spark.createDataFrame([], from_arrow_schema(survey.archive_schema))
    return spark_to_arrow_schema(classify(empty, survey).select(*survey.class_columns))


def _archive_row_groups(plan: TransferPlan) -> tuple[tuple[str, int, int], ...]:
    """(file, first row, rows) of every non-empty row group of the plan's nights, from the
    footers planning read, nights and files in order; () when the plan has no footers."""
    from fink_pipeline.storage import scheme_of

    if not plan.footers or set(plan.footers) != set(plan.present_nights):
        return ()
    scheme = scheme_of(str(plan.archive_root))
    prefix = f"{scheme}://" if scheme not in ("", "file") else ""
    groups = []
    for night in sorted(plan.footers):
        for path, footer in sorted(plan.footers[night].items()):
            first = 0
            for rows in footer.row_group_rows.tolist():
                if rows:
                    groups.append((prefix + path, first, rows))
                first += rows
    return tuple(groups)


def _classes_unfiltered(plan: TransferPlan) -> bool:
    """Whether every row of the nights is published, its classes computable from its own
    columns by the survey's Arrow classifier (no TNS catalogue: its tnsclass is "Unknown")."""
    return (not plan.request.classes and not plan.conditions and not plan.selections
            and plan.crossmatch is None and not plan.request.limit and plan.tns_catalog is None
            and plan.survey.classify_arrow is not None)


def _select(spark: "SparkSession", plan: TransferPlan, log: logging.Logger, *, locate: bool,
            classify_rows: bool = True) -> "DataFrame":
    """read -> classify -> classes -> catalogue -> conditions -> filter (ordered by alert id under a limit);
    with `locate`, each row also carries its archive file and row index; without
    `classify_rows` (nothing filters on the classes), no class column is added."""
    from pyspark.sql import functions as F

    request = plan.request
    counts = _log_reading(plan, log)
    df = read_nights(spark, plan)
    if locate:
        df = df.withColumn(FILE_COLUMN, F.col("_metadata.file_path")).withColumn(
            ROW_COLUMN, F.col("_metadata.row_index"))
    if classify_rows:
        df = classify(df, plan.survey, plan.tns_catalog)
    if request.classes:
        log.info(f"Filtering for classes {list(request.classes)}...")
        if counts:
            log.info(f"{counts[1]:,} alerts of these classes according to the nightly statistics")
        df = filter_classes(df, plan.survey, request.classes)
    if plan.crossmatch is not None:
        log.info(f"Cross-matching with the catalogue {plan.crossmatch.description}...")
        df = crossmatch_dataframe(df, plan.crossmatch)
    if plan.conditions:
        log.info(f"Applying extra conditions {[c.source for c in plan.conditions]}...")
        df = apply_conditions(df, plan.conditions)
    df = apply_selections(df, plan.selections, log)
    log.info(f"Selecting content {plan.content.packet or plan.content.source_fields}...")
    if request.limit:
        # A bare limit keeps whichever rows the tasks return first, which may differ between
        # evaluations; publishing exactly once needs the same rows on a retry: the first
        # alert ids (Spark keeps only the top `limit` rows per task, no full sort).
        order = [plan.survey.alert_id] + ([plan.crossmatch.id_col] if plan.crossmatch is not None else [])
        df = df.orderBy(*order)
    return df


def _log_reading(plan: TransferPlan, log: logging.Logger) -> tuple[int, int] | None:
    """Log the nights read, as Fink's job does; the nightly statistics' counts (or None)."""
    log.info("Generating data paths...")
    for night in plan.missing_nights:
        log.info(f"No alert data for night {night.isoformat()}: skipped")
    for note in plan.notes:
        log.warning(note)
    counts = statistics_counts(plan)
    log.info(
        f"Reading {len(plan.night_paths)} nights from {plan.archive_root}"
        + (f" ({counts[0]:,} alerts according to the nightly statistics)..." if counts else "...")
    )
    return counts


def _limit(df: "DataFrame", plan: TransferPlan, log: logging.Logger) -> "DataFrame":
    if plan.request.limit:
        log.info(f"Limiting to {plan.request.limit} first entries...")
        df = df.limit(plan.request.limit)
    return df
