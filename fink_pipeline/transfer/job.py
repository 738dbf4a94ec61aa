"""The Spark filter-and-project job as pure `DataFrame -> DataFrame` steps.

Order follows Fink's job (reference section 3): read the selected nights, classify, filter by
classes, then extra conditions, then the live-stream filter, then project the content. Every
step logs the milestone lines Fink's portal shows, so a Dagster run log reads like Fink's monitor.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from fink_pipeline.archive.layout import night_dir
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.base import Survey
from fink_pipeline.transfer.conditions import ValidatedCondition, validate_conditions
from fink_pipeline.transfer.content import ContentPlan, available_fields, project, resolve_content
from fink_pipeline.transfer.request import RequestError, TransferRequestFields

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

LOGGER = logging.getLogger("fink_pipeline.job")
TNS_PREFIX = "(TNS) "
SIMBAD_PREFIX = "(SIMBAD) "


class NoDataError(RequestError):
    """None of the requested nights exists in the archive."""


@dataclass
class TransferPlan:
    """Everything the job needs, resolved and validated before Spark starts."""

    survey: Survey
    request: TransferRequestFields
    archive_root: str
    night_paths: list[str]
    missing_nights: list[dt.date]
    conditions: list[ValidatedCondition]
    livestream_filter: object | None
    content: ContentPlan
    notes: list[str] = field(default_factory=list)


def plan_transfer(request: TransferRequestFields, archive_root: str, existing_nights: Sequence[dt.date]) -> TransferPlan:
    """Validate every part of `request` against the survey and the archive (no Spark needed)."""
    survey = get_survey(request.survey)
    computed = list(survey.class_columns)
    fields = available_fields(survey, computed)
    conditions = validate_conditions(request.conditions, fields)
    livestream_filter = None
    if request.livestream_filter:
        if survey.name != "ztf":
            raise RequestError(f"livestream_filter: live-stream filters exist for ztf only, not {survey.name}")
        from fink_pipeline.surveys.ztf.filters import resolve_filter

        livestream_filter = resolve_filter(request.livestream_filter)
    content = resolve_content(survey, request.content, computed)
    existing = set(existing_nights)
    present = [n for n in request.nights if n in existing]
    missing = [n for n in request.nights if n not in existing]
    if not present:
        raise NoDataError(
            f"No alert data found in between {request.start} and {request.stop} "
            f"for {survey.name} under {archive_root}"
        )
    paths = [night_dir(archive_root, survey.name, n) for n in present]
    return TransferPlan(survey, request, archive_root, paths, missing, conditions, livestream_filter, content)


def read_nights(spark: "SparkSession", plan: TransferPlan) -> "DataFrame":
    """Read only the selected nights, with the survey's unified schema.

    Giving the schema explicitly means nights written with an older schema still read
    together with newer ones (missing columns are null instead of dropped), and Spark does
    not open a footer just to infer it. Column pruning then reads only what later steps use.
    """
    from pyspark.sql.pandas.types import from_arrow_schema

    from fink_pipeline.archive.layout import science_root

    schema = from_arrow_schema(plan.survey.archive_schema)
    base = science_root(plan.archive_root, plan.survey.name)
    df = spark.read.schema(schema).option("basePath", base).parquet(*plan.night_paths)
    return df


def classify(df: "DataFrame", survey: Survey) -> "DataFrame":
    """Add the survey's class columns as native Spark expressions."""
    return survey.classify(df) if survey.classify else df


def filter_classes(df: "DataFrame", survey: Survey, classes: Sequence[str]) -> "DataFrame":
    """Keep alerts of the given classes (Fink semantics: TNS labels on tnsclass, others on finkclass)."""
    from pyspark.sql import functions as F

    if not classes:
        return df
    if survey.name != "ztf":
        column = survey.class_columns[0]
        return df.filter(F.col(column).cast("string").isin([str(c) for c in classes]))
    tns = [c for c in classes if c.startswith(TNS_PREFIX)]
    fink = [c.removeprefix(SIMBAD_PREFIX) for c in classes if not c.startswith(TNS_PREFIX)]
    condition = None
    if fink:
        condition = F.col("finkclass").isin(fink)
    if tns:
        on_tns = F.col("tnsclass").isin(tns)
        condition = on_tns if condition is None else (condition | on_tns)
    return df.filter(condition)


def apply_conditions(df: "DataFrame", conditions: Sequence[ValidatedCondition]) -> "DataFrame":
    """AND every validated condition (their Spark SQL is regenerated from a checked AST)."""
    from pyspark.sql import functions as F

    for condition in conditions:
        df = df.filter(F.expr(condition.spark_sql))
    return df


def apply_livestream_filter(df: "DataFrame", livestream_filter) -> "DataFrame":
    """Keep alerts the replayed live-stream filter selects (nulls count as not selected)."""
    from pyspark.sql import functions as F

    if livestream_filter is None:
        return df
    return df.filter(F.coalesce(livestream_filter.column(), F.lit(False)))


def build_transfer_dataframe(
    spark: "SparkSession", plan: TransferPlan, log: logging.Logger | None = None
) -> "DataFrame":
    """The whole selection: read -> classify -> classes -> conditions -> filter -> content."""
    log = log or LOGGER
    request = plan.request
    log.info("Generating data paths...")
    for night in plan.missing_nights:
        log.info(f"No alert data for night {night.isoformat()}: skipped")
    df = read_nights(spark, plan)
    df = classify(df, plan.survey)
    if request.classes:
        log.info(f"Filtering for classes {list(request.classes)}...")
        df = filter_classes(df, plan.survey, request.classes)
    if plan.conditions:
        log.info(f"Applying extra conditions {[c.source for c in plan.conditions]}...")
        df = apply_conditions(df, plan.conditions)
    if plan.livestream_filter is not None:
        log.info(f"Applying user-defined filter {plan.livestream_filter.fink_module}...")
        df = apply_livestream_filter(df, plan.livestream_filter)
    log.info(f"Selecting content {plan.content.packet or plan.content.source_fields}...")
    df = project(df, plan.content)
    if request.limit:
        log.info(f"Limiting to {request.limit} first entries...")
        df = df.limit(request.limit)
    return df
