"""Transfer assets, one dynamic partition per submitted request (key = topic name):
transfer_request -> selected_alerts -> alert_topic -> alert_table.

The last three are one step (`transferred_alerts`): the table is filled from the topic while the
topic is written (`consumer.follow`), so a transfer takes about the longer of publishing and
consuming, not their sum; lineage, metadata and checks stay per asset.

Every step is idempotent, so a retry (RetryPolicy with exponential backoff) never duplicates:
the publisher skips the Spark partitions its `<topic>_status` records as done, and the table
resumes from the offsets committed with its data. Bad input fails at once, without retries,
with the CLI's message.
"""

import contextlib
import time

import dagster as dg
from deltalake import DeltaTable

from fink_pipeline import paths
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.avro import arrow_schema_for_avro
from fink_pipeline.consumer.core import consume_topic, fetch_schema
from fink_pipeline.consumer.delta_sink import DeltaSink
from fink_pipeline.consumer.follow import TopicFollower
from fink_pipeline.consumer.partitioning import default_partitioning
from fink_pipeline.consumer.readers import delta_table_counts
from fink_pipeline.kafka.publish import PublicationTarget, publish_dataframe
from fink_pipeline.orchestration.constants import OWNERS, TRANSFER_GROUP
from fink_pipeline.orchestration.partitions import transfer_partitions
from fink_pipeline.orchestration.report import (
    start_class_night_png,
    class_night_table,
    archive_files,
    markdown_image,
    save_png,
)
from fink_pipeline.orchestration.resources import (
    ArchiveResource,
    KafkaResource,
    RequestStoreResource,
    SparkResource,
    TableResource,
)
from fink_pipeline.orchestration.topic_recovery import publication_problems, reset_orphaned_topics
from fink_pipeline.storage import spark_archive_access_error
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.base import JD_UNIX_EPOCH, MJD_UNIX_EPOCH
from fink_pipeline.transfer.estimate import estimate_request
from fink_pipeline.transfer.plan import pin_catalog, plan_transfer
from fink_pipeline.transfer.select import build_publication
from fink_pipeline.transfer.request import RequestError

# Transient failures (broker restarting, network, a Spark executor lost): 3 more attempts,
# waiting ~2, 4 and 8 s. Enough for a broker restart; a broker that stays away fails the run.
TRANSIENT_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
TABLE_GROUP_ID = "fink-pipeline-tables"


def _plan(context: dg.AssetExecutionContext, archive: ArchiveResource, requests: RequestStoreResource):
    """Load and validate the partition's request; bad input fails the step with the CLI's message."""
    try:
        request = requests.store().load(context.partition_key)
        plan = plan_transfer(request, archive.uri, list_nights(archive.uri, request.survey))
    except ValueError as exc:  # RequestError, ConditionError, ContentError: a retry cannot help
        raise dg.Failure(description=str(exc), allow_retries=False) from None
    if plan.crossmatch is not None and request.catalog_sha256 is None:
        # a request stored without its catalogue's hash (a standing request's night): pinned
        # now, so that the later steps and every retry match against these very sources
        request = pin_catalog(request, plan)
        requests.store().save(request)
        context.log.info(f"Catalogue {plan.crossmatch.catalog_filename} pinned to this transfer "
                         f"(sha256 {plan.crossmatch.sha256})")
    return request, plan


def _catalog_metadata(plan) -> dict:
    """The catalogue a cross-match used, with its content hash (what a retry must match again)."""
    if plan.crossmatch is None:
        return {}
    return {
        "catalog": plan.crossmatch.catalog_filename,
        "catalog_sha256": plan.crossmatch.sha256,
        "catalog_sources": plan.crossmatch.sources,
        "catalog_radius": plan.crossmatch.radius,
        "catalog_id_column": plan.crossmatch.id_col,
    }


@contextlib.contextmanager
def _transient(context: dg.AssetExecutionContext, what: str, bootstrap: str):
    """Turn an infrastructure error into a retried failure whose message says what and where."""
    try:
        yield
    except (dg.Failure, RequestError):
        raise
    except Exception as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        attempts = TRANSIENT_RETRY.max_retries + 1
        raise dg.Failure(
            description=f"{what} failed on attempt {context.retry_number + 1} of {attempts} "
            f"(Kafka {bootstrap}): {type(exc).__name__}: {first_line}",
            allow_retries=True,
        ) from exc


@dg.asset(
    partitions_def=transfer_partitions,
    group_name=TRANSFER_GROUP,
    owners=OWNERS,
    kinds={"python"},
)
def transfer_request(
    context: dg.AssetExecutionContext,
    archive: ArchiveResource,
    requests: RequestStoreResource,
    spark: SparkResource,
) -> dg.MaterializeResult:
    """The submitted request, validated against the survey schema and the archive's nights, with
    its estimated alert count and size (exact from the nightly statistics for nights and classes)."""
    _check_spark_reads_archive(archive, spark)
    if _run_selects_spark(context):
        spark.warm_up()  # the JVM starts while the request is validated and estimated
    request, plan = _plan(context, archive, requests)
    for note in plan.notes:
        context.log.warning(note)
    context.log.info(f"Request {request.request_id} for topic {request.topic} is valid")
    # spark is passed as a factory: a JVM starts only when conditions or a filter need sampling
    estimate = estimate_request(request, archive.uri, plan=plan, spark=spark.get_session)
    context.log.info(f"Estimate: {estimate.alerts:,.0f} alerts ({estimate.size_bytes / 1e6:,.1f} MB)")
    return dg.MaterializeResult(
        metadata={
            **estimate.as_metadata(),
            "estimate_table": dg.MetadataValue.md(estimate.as_markdown()),
            "topic": request.topic,
            "survey": request.survey,
            "nights": f"{request.start} .. {request.stop}",
            "nights_present": len(plan.night_paths),
            "nights_missing": [n.isoformat() for n in plan.missing_nights],
            "classes": request.classes or ["all classes"],
            "conditions": [c.spark_sql for c in plan.conditions],
            "filters_and_blocks": [f"{s.kind} {s.label}" for s in plan.selections] or ["none"],
            "content": plan.content.packet or ", ".join(plan.content.source_fields),
            "published_columns": len(plan.content.columns),
            "request": dg.MetadataValue.json(request.model_dump(mode="json")),
            **_catalog_metadata(plan),
        }
    )


def _run_selects_spark(context: dg.AssetExecutionContext) -> bool:
    """Whether this run also selects and publishes (steps share one process and one Spark session)."""
    selection = context.run.asset_selection  # None: the whole job (transfer_job: the Spark step too)
    return selection is None or bool({key.to_user_string() for key in selection} & {"selected_alerts", "alert_topic"})


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
        dg.AssetSpec(
            "alert_table",
            deps=["alert_topic"],
            description="The transfer's alerts as a Delta table partitioned by class, appended exactly once "
            "from the topic while it is written (offsets are committed with the data: a run appends only "
            "what the table does not hold yet).",
            group_name=TRANSFER_GROUP,
            owners=OWNERS,
            kinds={"delta"},
        ),
    ],
    check_specs=[
        dg.AssetCheckSpec("row_count_matches_published", asset="alert_table",
                          description="The table holds as many rows as the status topic says were published."),
        dg.AssetCheckSpec("candid_unique", asset="alert_table",
                          description="No alert id appears twice in the table (with a catalogue "
                          "cross-match: no (alert id, source id) pair)."),
    ],
    partitions_def=transfer_partitions,
    retry_policy=TRANSIENT_RETRY,
    # Any of the three can be selected alone (`dagster asset materialize --select alert_table`
    # catches a table up with its topic, without Spark); the topic's two always come from the
    # one Spark pass that selects and publishes (idempotently).
    can_subset=True,
)
def transferred_alerts(
    context: dg.AssetExecutionContext,
    spark: SparkResource,
    kafka: KafkaResource,
    archive: ArchiveResource,
    requests: RequestStoreResource,
    tables: TableResource,
):
    """Run the Spark filter-and-project job, publish its output to the transfer topic and fill the
    table from the topic while it is written: one step, so that the user waits for the slower of
    publishing and consuming, not their sum; each asset gets its own metadata."""
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    publishing = bool(selected & {"selected_alerts", "alert_topic"})
    if publishing:
        request, plan = _plan(context, archive, requests)
    else:
        request, plan = _load_request(requests, context.partition_key), None
    settings = kafka.settings()
    follower = None
    if publishing:
        with _transient(context, f"publishing {request.topic}", settings.bootstrap_servers):
            reset_orphaned_topics(settings, request.topic, log=context.log)
        if "alert_table" in selected:
            follower = TopicFollower(settings, request.topic, _table_sink_factory(request, settings, tables),
                                     group_id=TABLE_GROUP_ID, log=context.log, **_table_consume_options(tables))
            follower.start()
        publish_started_at = time.monotonic()
        try:
            report, publication = _publish(context, request, plan, spark, settings, kafka)
            published_at = time.monotonic()
            if follower is not None:
                spark.release()  # the table fills without Spark: its JVM stops meanwhile
            yield from _publication_results(context, selected, request, plan, report, publication)
        except BaseException:  # the retry resumes from what the follower committed
            if follower is not None:
                follower.abort()
            raise
    if "alert_table" not in selected:
        return
    uri = tables.table_uri(request.topic)
    with _transient(context, f"consuming {request.topic}", settings.bootstrap_servers):
        if follower is not None:
            consumed = follower.finish()
        else:
            sink, options = _table_sink_factory(request, settings, tables)()
            consumed = consume_topic(settings, request.topic, sink, group_id=TABLE_GROUP_ID, log=context.log,
                                     **options, **_table_consume_options(tables))
    published = consumed.expected_total  # the end record's total, as the consumer last read it
    context.log.info(f"{consumed.consumed} alerts appended to {uri} in {consumed.seconds:.1f} s")
    if consumed.consumed == 0 and not consumed.complete and published is None:
        raise dg.Failure(description=f"{request.topic} has no finished publication to read: run the transfer "
                         "(selected_alerts, alert_topic) first", allow_retries=False)
    overlap = {}
    if follower is not None and follower.report is not None:
        both = min(published_at, follower.finished_at) - max(publish_started_at, follower.started_at)
        overlap = {
            "appended_while_publishing": follower.report.consumed,
            # seconds publishing and consuming ran together, and how long the table took to be
            # complete once the topic was
            "overlap_seconds": round(max(0.0, both), 2),
            "complete_after_topic_seconds": round(max(0.0, follower.finished_at - published_at), 2),
        }
        context.log.info(f"Table complete {overlap['complete_after_topic_seconds']:.1f} s after the topic; "
                         f"publishing and consuming overlapped for {overlap['overlap_seconds']:.1f} s")
    yield from _table_results(context, request, tables, uri, consumed, published, overlap)


def _check_spark_reads_archive(archive: ArchiveResource | str, spark: SparkResource) -> None:
    """Fail at once, without retries, when Spark lacks the connector of an object-store archive
    (PyPI's pyspark has none), instead of failing inside a Spark job."""
    uri = archive if isinstance(archive, str) else archive.uri
    problem = None if getattr(spark, "remote", None) else spark_archive_access_error(uri, spark.conf)
    if problem:
        raise dg.Failure(description=problem, allow_retries=False)


def _load_request(requests: RequestStoreResource, topic: str):
    """The stored request of `topic` (a missing or broken one fails at once, no retries)."""
    try:
        return requests.store().load(topic)
    except ValueError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None


def _table_consume_options(tables: TableResource) -> dict:
    # The table is the pipeline's alone: when the topic was published again (the broker lost
    # it and alert_topic republished), the table restarts with the new publication.
    return {"quarantine_dir": tables.quarantine_dir(), "replace_other_publication": True}


def _table_sink_factory(request, settings, tables: TableResource):
    """A function making the transfer table's sink once the topic's schema exists (with the
    schema, so that the consumer does not fetch it again)."""
    survey = get_survey(request.survey)

    def make_sink():
        avro_schema = fetch_schema(settings, request.topic)
        # by class when the content has the class column, else by night (an fxmatch_ztf_ topic's
        # default content objectId, candid, jd, <id>), as fink_datatransfer does by default
        partitioning, _ = default_partitioning(survey.default_partitionby, survey.time_column, survey.time_scale,
                                               arrow_schema_for_avro(avro_schema))
        sink = DeltaSink(tables.table_uri(request.topic), partitioning, storage_options=tables.options())
        return sink, {"avro_schema": avro_schema}

    return make_sink


def _publish(context, request, plan, spark: SparkResource, settings, kafka: KafkaResource):
    """The Spark selection published to the topic, checked against its status; (report, publication)."""
    survey = get_survey(request.survey)
    request_id = request.request_id or request.topic
    _check_spark_reads_archive(plan.archive_root, spark)
    with _transient(context, f"publishing {request.topic}", settings.bootstrap_servers):
        options = kafka.publish_options()
        publication = build_publication(spark.get_session(), plan, log=context.log, max_partitions=options.partitions)
        target = PublicationTarget(
            topic=request.topic,
            request_id=request_id,
            time_column=survey.time_column,
            time_epoch=JD_UNIX_EPOCH if survey.time_scale == "jd" else MJD_UNIX_EPOCH,
            key_column=survey.alert_id,
            class_column=survey.class_columns[0] if survey.class_columns else None,
        )
        report = publish_dataframe(
            publication.rows,
            target,
            settings,
            options=options,
            log=context.log,
            arrow_content=publication.arrow_content,
            spark_partitions=publication.spark_partitions,
        )
        problems = publication_problems(settings, request.topic, report, request_id)
    if problems:
        # The broker lost part of the publication (restarted without its data): start over.
        raise dg.Failure(
            description=f"the status of {request.topic} does not account for this publication: "
            + "; ".join(problems),
            allow_retries=True,
        )
    return report, publication


def _publication_results(context, selected: set[str], request, plan, report, publication):
    """The materializations of selected_alerts and alert_topic (those selected)."""
    per_class = {label: sum(nights.values()) for label, nights in report.per_class_night.items()}
    title = f"{request.topic}: alerts per class and night"
    draw = start_class_night_png(report.per_class_night, title)
    files = archive_files(plan.night_paths)
    png = draw()
    plot_path = save_png(png, paths.state_dir() / "reports" / request.topic / "alerts_per_class_night.png")
    bytes_on_disk = sum(size for _, size in files)
    # compressed bytes of the column chunks the job reads, from the footers the plan read
    footer = plan.footer_input_bytes()
    bytes_read = footer.bytes if footer is not None else 0
    if "selected_alerts" in selected:
        yield dg.MaterializeResult(
            asset_key="selected_alerts",
            metadata={
                "alerts": report.total,
                "nights_read": len(plan.night_paths),
                "nights_missing": len(plan.missing_nights),
                "archive_files": len(files),
                # arrow: Spark selected, the publishing tasks read the content (transfer.arrow_content)
                "content_read_by": "arrow" if publication.arrow_content is not None else "spark",
                "archive_bytes_on_disk": dg.MetadataValue.int(bytes_on_disk),
                "archive_bytes_read": dg.MetadataValue.int(bytes_read),
                "archive_mb_per_second": round(bytes_read / 1e6 / report.seconds, 1) if report.seconds else 0.0,
                "alerts_per_class": dg.MetadataValue.json(dict(sorted(per_class.items(), key=lambda kv: -kv[1]))),
                "alerts_per_class_and_night": dg.MetadataValue.md(class_night_table(report.per_class_night)),
                "plot": dg.MetadataValue.md(markdown_image(png, title)),
                "plot_path": dg.MetadataValue.path(str(plot_path)),
                **_catalog_metadata(plan),
            },
        )
    if "alert_topic" in selected:
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
                "spark_partitions": report.spark_partitions,
                "spark_partitions_resumed": report.skipped_spark_partitions,
                "alerts_sent_this_attempt": report.published_now,
                "alerts_found_already_published": report.already_published,
                "spark_tasks_retried": report.retried_tasks,
                "step_attempt": context.retry_number + 1,
            },
        )


def _table_results(context, request, tables: TableResource, uri: str, consumed, published, overlap: dict):
    """The alert_table materialization and its checks (those selected)."""
    survey = get_survey(request.survey)
    # with a catalogue, an alert appears once per source it matched
    key = [survey.alert_id] + ([request.id_col] if request.catalog_filename else [])
    rows, distinct = delta_table_counts(uri, key, tables.options())
    yield dg.MaterializeResult(
        asset_key="alert_table",
        metadata={
            "path": dg.MetadataValue.path(uri),
            "topic": request.topic,
            "rows": rows,
            "published": published if published is not None else -1,
            "appended_this_run": consumed.consumed,
            "quarantined": consumed.quarantined,
            "partitioned_by": DeltaTable(uri, storage_options=tables.options()).metadata().partition_columns,
            "seconds": round(consumed.seconds, 2),
            "alerts_per_second": round(consumed.alerts_per_second, 1),
            **overlap,
        },
    )
    checks = {check.name for check in context.selected_asset_check_keys}
    if "row_count_matches_published" in checks:
        yield dg.AssetCheckResult(
            asset_key="alert_table",
            check_name="row_count_matches_published",
            passed=rows == published,
            metadata={"rows": rows, "published": published if published is not None else -1},
        )
    if "candid_unique" in checks:
        yield dg.AssetCheckResult(
            asset_key="alert_table",
            check_name="candid_unique",
            passed=distinct == rows,
            metadata={"rows": rows, "distinct": distinct},
        )
