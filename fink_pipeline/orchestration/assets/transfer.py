"""Transfer assets, one dynamic partition per submitted request (key = topic name):
transfer_request -> selected_alerts -> alert_topic -> alert_table."""


import dagster as dg

from fink_pipeline.archive.layout import list_nights
from fink_pipeline.consumer.core import consume_topic
from fink_pipeline.consumer.sinks import DeltaSink, Partitioning, delta_table_counts
from fink_pipeline.kafka.publish import PublishOptions, publish_dataframe
from fink_pipeline.kafka.status import read_status
from fink_pipeline.orchestration.constants import OWNERS, TRANSFER_GROUP
from fink_pipeline.orchestration.partitions import transfer_partitions
from fink_pipeline.orchestration.resources import (
    ArchiveResource,
    KafkaResource,
    RequestStoreResource,
    SparkResource,
    TableResource,
)
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.base import JD_UNIX_EPOCH, MJD_UNIX_EPOCH
from fink_pipeline.transfer.job import build_transfer_dataframe, plan_transfer

TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
TABLE_GROUP_ID = "fink-pipeline-tables"


def _plan(context: dg.AssetExecutionContext, archive: ArchiveResource, requests: RequestStoreResource):
    """Load and validate the partition's request; bad input fails the step with the CLI's message."""
    try:
        request = requests.store().load(context.partition_key)
        plan = plan_transfer(request, archive.uri, list_nights(archive.uri, request.survey))
    except ValueError as exc:  # RequestError, ConditionError, ContentError: a retry cannot help
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    return request, plan


@dg.asset(
    partitions_def=transfer_partitions,
    group_name=TRANSFER_GROUP,
    owners=OWNERS,
    kinds={"python"},
)
def transfer_request(
    context: dg.AssetExecutionContext, archive: ArchiveResource, requests: RequestStoreResource
) -> dg.MaterializeResult:
    """The submitted request, validated against the survey schema and the archive's nights."""
    request, plan = _plan(context, archive, requests)
    context.log.info(f"Request {request.request_id} for topic {request.topic} is valid")
    return dg.MaterializeResult(
        metadata={
            "topic": request.topic,
            "survey": request.survey,
            "nights": f"{request.start} .. {request.stop}",
            "nights_present": len(plan.night_paths),
            "nights_missing": [n.isoformat() for n in plan.missing_nights],
            "classes": request.classes or ["all classes"],
            "conditions": [c.spark_sql for c in plan.conditions],
            "livestream_filter": request.livestream_filter or "none",
            "content": plan.content.packet or ", ".join(plan.content.source_fields),
            "published_columns": len(plan.content.columns),
            "request": dg.MetadataValue.json(request.model_dump(mode="json")),
        }
    )


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "selected_alerts",
            deps=["transfer_request"],
            description="Alerts of the requested nights that pass the classes, conditions and "
            "filter, projected on the requested content (Spark, computed in the same pass as the topic).",
            group_name=TRANSFER_GROUP,
            owners=OWNERS,
            kinds={"spark"},
        ),
        dg.AssetSpec(
            "alert_topic",
            deps=["selected_alerts"],
            description="The Kafka topic holding the selected alerts as schemaless Avro, with its "
            "_schema and _status companions (fink-client compatible, exactly once).",
            group_name=TRANSFER_GROUP,
            owners=OWNERS,
            kinds={"kafka"},
        ),
    ],
    partitions_def=transfer_partitions,
    retry_policy=TRANSIENT_RETRY,
)
def published_alerts(
    context: dg.AssetExecutionContext,
    spark: SparkResource,
    kafka: KafkaResource,
    archive: ArchiveResource,
    requests: RequestStoreResource,
):
    """Run the Spark filter-and-project job and publish its output to the transfer topic."""
    request, plan = _plan(context, archive, requests)
    survey = get_survey(request.survey)
    df = build_transfer_dataframe(spark.get_session(), plan, log=context.log)
    report = publish_dataframe(
        df,
        request.topic,
        kafka.settings(),
        request_id=request.request_id or request.topic,
        survey_time_column=survey.time_column,
        survey_time_epoch=JD_UNIX_EPOCH if survey.time_scale == "jd" else MJD_UNIX_EPOCH,
        key_column=survey.alert_id,
        class_column=survey.class_columns[0] if survey.class_columns else None,
        options=PublishOptions(
            partitions=kafka.partitions, retention_ms=kafka.retention_ms, compression=kafka.compression
        ),
        log=context.log,
    )
    per_class = {label: sum(nights.values()) for label, nights in report.per_class_night.items()}
    yield dg.MaterializeResult(
        asset_key="selected_alerts",
        metadata={
            "alerts": report.total,
            "nights_read": len(plan.night_paths),
            "alerts_per_class": dg.MetadataValue.json(dict(sorted(per_class.items(), key=lambda kv: -kv[1]))),
        },
    )
    yield dg.MaterializeResult(
        asset_key="alert_topic",
        metadata={
            "topic": request.topic,
            "alerts_published": report.total,
            "kafka_partitions": len(report.per_partition),
            "payload_bytes": report.bytes_published,
            "seconds": round(report.seconds, 2),
            "alerts_per_second": round(report.alerts_per_second, 1),
            "schema_fingerprint": report.schema_fingerprint,
            "spark_tasks_retried": report.retried_tasks,
        },
    )


@dg.asset(
    partitions_def=transfer_partitions,
    deps=["alert_topic"],
    group_name=TRANSFER_GROUP,
    owners=OWNERS,
    kinds={"delta"},
    retry_policy=TRANSIENT_RETRY,
    check_specs=[
        dg.AssetCheckSpec("row_count_matches_published", asset="alert_table"),
        dg.AssetCheckSpec("candid_unique", asset="alert_table"),
    ],
)
def alert_table(
    context: dg.AssetExecutionContext, kafka: KafkaResource, tables: TableResource, requests: RequestStoreResource
):
    """The transfer's alerts as a Delta table partitioned by class, appended exactly once from the topic."""
    request = requests.store().load(context.partition_key)
    survey = get_survey(request.survey)
    settings = kafka.settings()
    uri = tables.table_uri(request.topic)
    partitioning = Partitioning(survey.default_partitionby, survey.time_column, survey.time_scale)
    sink = DeltaSink(uri, partitioning, app_prefix=f"{request.topic}:{TABLE_GROUP_ID}",
                     storage_options=tables.storage_options or None)
    report = consume_topic(settings, request.topic, sink, group_id=TABLE_GROUP_ID, log=context.log,
                           quarantine_dir=f"{tables.uri.rstrip('/')}/_quarantine")
    context.log.info(f"{report.consumed} alerts appended to {uri} in {report.seconds:.1f} s")
    rows, distinct = delta_table_counts(uri, survey.alert_id, tables.storage_options or None)
    published = read_status(settings, request.topic).total
    yield dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(uri),
            "rows": rows,
            "appended_this_run": report.consumed,
            "quarantined": report.quarantined,
            "partitioned_by": partitioning.columns,
            "alerts_per_second": round(report.alerts_per_second, 1),
        }
    )
    yield dg.AssetCheckResult(
        check_name="row_count_matches_published",
        passed=rows == published,
        metadata={"rows": rows, "published": published},
    )
    yield dg.AssetCheckResult(
        check_name="candid_unique",
        passed=distinct == rows,
        metadata={"rows": rows, "distinct": distinct},
    )
