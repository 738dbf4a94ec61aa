"""Asset jobs."""

import dagster as dg

from fink_pipeline.orchestration.constants import TRANSFER_GROUP
from fink_pipeline.orchestration.partitions import transfer_partitions

transfer_job = dg.define_asset_job(
    "transfer_job",
    selection=dg.AssetSelection.groups(TRANSFER_GROUP),
    partitions_def=transfer_partitions,
    description="Validate a request, run the Spark selection, publish the topic, materialize the table.",
    tags={"fink/spark": "true"},
)
