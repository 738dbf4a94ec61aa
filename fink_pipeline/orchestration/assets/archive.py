"""Archive assets, one daily partition per night: night_statistics (alert counts per class)."""

import datetime as dt

import dagster as dg
from pydantic import Field

from fink_pipeline.archive.layout import list_nights
from fink_pipeline.archive.stats import (
    delete_night_statistics,
    load_archive_tns_catalog,
    night_row_count,
    night_statistics as compute_or_read_statistics,
    read_night_statistics,
    statistics_path,
)
from fink_pipeline.orchestration.constants import ARCHIVE_GROUP, OWNERS
from fink_pipeline.orchestration.partitions import night_partitions
from fink_pipeline.orchestration.resources import ArchiveResource
from fink_pipeline.surveys import get_survey

TOP_CLASSES_SHOWN = 20


class NightStatisticsConfig(dg.Config):
    """Which survey's archive to count."""

    survey: str = Field(default="ztf", description="Survey whose archived night is counted (ztf, lsst, elasticc).")


@dg.asset(
    partitions_def=night_partitions,
    group_name=ARCHIVE_GROUP,
    owners=OWNERS,
    kinds={"parquet"},
    check_specs=[dg.AssetCheckSpec("total_matches_archive_rows", asset="night_statistics")],
)
def night_statistics(context: dg.AssetExecutionContext, config: NightStatisticsConfig, archive: ArchiveResource):
    """Alerts of one archived night per class (finkclass x tnsclass), the basis of transfer estimates."""
    try:
        survey = get_survey(config.survey)
    except ValueError as exc:
        raise dg.Failure(description=f"survey: {exc}", allow_retries=False) from None
    night = dt.date.fromisoformat(context.partition_key)
    root = archive.uri
    if night not in set(list_nights(root, survey.name)):
        # no data for the night (Fink has no row either): a stale file must not survive it
        removed = delete_night_statistics(root, survey.name, night)
        removal = ": old statistics removed" if removed else ""
        context.log.info(f"No {survey.name} alert data for night {night}{removal}")
        yield dg.MaterializeResult(metadata={"alerts": 0, "night_present": False})
        yield dg.AssetCheckResult(check_name="total_matches_archive_rows", passed=True,
                                  metadata={"statistics_total": 0, "archive_rows": 0})
        return
    stats, computed = compute_or_read_statistics(survey, root, night, load_archive_tns_catalog(root, survey), save=True)
    context.log.info(f"{stats.total:,} alerts in {len(stats.per_label())} classes for night {night}"
                     + ("" if computed else " (stored statistics were current)"))
    per_label = stats.per_label()
    yield dg.MaterializeResult(
        metadata={
            "alerts": stats.total,
            "night_present": True,
            "classes": len(per_label),
            "files": len(stats.source_files),
            "tns_catalog": stats.tns_catalog,
            "recomputed": computed,
            "path": dg.MetadataValue.path(statistics_path(root, survey.name, night)),
            "top_classes": dg.MetadataValue.json(dict(list(per_label.items())[:TOP_CLASSES_SHOWN])),
        }
    )
    # checked against the files as they are now, read independently of the statistics
    stored = read_night_statistics(root, survey.name, night)
    rows = night_row_count(root, survey.name, night)
    yield dg.AssetCheckResult(
        check_name="total_matches_archive_rows",
        passed=stored is not None and stored.total == rows,
        metadata={"statistics_total": stored.total if stored else -1, "archive_rows": rows},
    )
