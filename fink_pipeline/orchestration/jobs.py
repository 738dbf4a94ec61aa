"""Jobs: the whole transfer, the table alone (catching up with its topic), and the launchpad submit."""

import dagster as dg

from fink_pipeline.orchestration.constants import TRANSFER_GROUP
from fink_pipeline.orchestration.submit import submit_transfer_job

transfer_job = dg.define_asset_job(
    "transfer_job",
    selection=dg.AssetSelection.groups(TRANSFER_GROUP),
    description="Validate a request, run the Spark selection, publish the topic, materialize the table.",
    tags={"fink/spark": "true"},
)

alert_table_job = dg.define_asset_job(
    "alert_table_job",
    selection=dg.AssetSelection.assets("alert_table"),
    description="Append the alerts a transfer topic holds and its table does not (no Spark).",
)

__all__ = ["transfer_job", "alert_table_job", "submit_transfer_job"]
