"""The code location: one `Definitions` object for the CLI, `dagster dev` and the code server."""

import dagster as dg

from fink_pipeline.orchestration.assets import transfer
from fink_pipeline.orchestration.jobs import transfer_job
from fink_pipeline.orchestration.resources import resources_for

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([transfer]),
    asset_checks=dg.load_asset_checks_from_modules([transfer]),
    jobs=[transfer_job],
    resources=resources_for(),
    # Steps share one process so a run starts one Spark JVM, not one per step.
    executor=dg.in_process_executor,
)
