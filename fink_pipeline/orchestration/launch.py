"""Launching a transfer as one Dagster run from Python (demo, CLI `request submit`, tests)."""

from __future__ import annotations

import os

import dagster as dg

from fink_pipeline.orchestration.assets import transfer
from fink_pipeline.orchestration.partitions import transfer_partitions
from fink_pipeline.orchestration.resources import (
    ArchiveResource,
    KafkaResource,
    RequestStoreResource,
    SparkResource,
    TableResource,
)
from fink_pipeline.storage import StorageEnvSettings
from fink_pipeline.transfer.store import RequestStore

TRANSFER_ASSETS = [transfer.transfer_request, transfer.transferred_alerts]


def run_transfer(
    request,
    *,
    bootstrap: str,
    archive_root: str,
    table_root: str,
    request_root: str,
    instance=None,
    spark: SparkResource | None = None,
):
    """Store `request`, add its partition and materialize the transfer assets in one run.

    Spark is `spark`, else the deployment's (`SparkResource.from_env`: FINK_SPARK_REMOTE,
    FINK_SPARK_MASTER, FINK_SPARK_CONF; local Spark when none is set); the archive's and
    tables' object-store options from FINK_ARCHIVE_STORAGE_OPTIONS and FINK_TABLE_STORAGE_OPTIONS."""
    storage = StorageEnvSettings.load()  # FINK_ARCHIVE/TABLE_STORAGE_OPTIONS (keys: AWS_* of the environment)
    RequestStore(request_root).save(request)
    own_instance = instance is None
    instance = instance or (dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral())
    try:
        instance.add_dynamic_partitions(transfer_partitions.name, [request.topic])
        result = dg.materialize(
            TRANSFER_ASSETS,
            partition_key=request.topic,
            instance=instance,
            resources={
                "spark": spark or SparkResource.from_env(),
                "kafka": KafkaResource(bootstrap_servers=bootstrap),
                "archive": ArchiveResource(root=archive_root, storage_options=dict(storage.archive_storage_options)),
                "tables": TableResource(root=table_root, storage_options=dict(storage.table_storage_options)),
                "requests": RequestStoreResource(root=request_root),
            },
            raise_on_error=False,
        )
    finally:
        if own_instance:
            instance.dispose()
    return result
