"""Schedules: each morning, count the night that just ended (the basis of transfer estimates)."""

import dagster as dg

from fink_pipeline.orchestration.constants import ARCHIVE_GROUP

# The night's alerts are archived by the morning (UTC): a daily partition's run starts once its
# day is over, at this hour, so the statistics exist before users ask for estimates.
NIGHT_STATISTICS_HOUR_UTC = 9

night_statistics_job = dg.define_asset_job(
    "night_statistics_job",
    selection=dg.AssetSelection.groups(ARCHIVE_GROUP),
    description="Count one archived night's alerts per class (finkclass x tnsclass).",
)

# Named night_statistics_job_schedule by Dagster; launches yesterday's partition each morning.
night_statistics_schedule = dg.build_schedule_from_partitioned_job(
    night_statistics_job,
    hour_of_day=NIGHT_STATISTICS_HOUR_UTC,
    minute_of_hour=0,
    name="night_statistics_schedule",
    description="Each morning, compute the statistics of the night that just ended.",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)
