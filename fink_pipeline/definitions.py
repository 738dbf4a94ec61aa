"""The code location: one `Definitions` object for the CLI, `dagster dev` and the code server."""

import dagster as dg

from fink_pipeline.orchestration.assets import archive, transfer
from fink_pipeline.orchestration.jobs import alert_table_job, submit_transfer_job, transfer_job
from fink_pipeline.orchestration.resources import resources_for
from fink_pipeline.orchestration.schedules import night_statistics_job, night_statistics_schedule
from fink_pipeline.orchestration.sensors import (
    standing_request_sensor,
    submitted_transfer_sensor,
    transfer_topic_sensor,
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([transfer, archive]),
    asset_checks=dg.load_asset_checks_from_modules([transfer, archive]),
    jobs=[transfer_job, alert_table_job, submit_transfer_job, night_statistics_job],
    schedules=[night_statistics_schedule],
    sensors=[submitted_transfer_sensor, standing_request_sensor, transfer_topic_sensor],
    resources=resources_for(),
    # Steps share one process so a run starts one Spark JVM, not one per step.
    executor=dg.in_process_executor,
)
