"""Sensors: launch submitted transfers, replay standing requests each morning, keep tables up
with their topics.

* `submitted_transfer_sensor`: when a `submit_transfer_job` run succeeds, launch `transfer_job`
  on the partition it created (run key = topic: one transfer run per submission).
* `standing_request_sensor`: each morning, one `transfer_job` run per standing request for the
  night just finished (run key `<name>:<night>`: no night is transferred twice); the cursor is
  the last night replayed, so a daemon that was down catches up. A schedule cannot add dynamic
  partitions in Dagster 1.13 (it may only return run requests), hence a sensor with a daily cursor.
* `transfer_topic_sensor`: watches the status topics of submitted transfers; when a publication
  is finished and the table's last materialization holds fewer rows than were published (a
  table step that failed, a topic published by another process), it launches `alert_table_job`,
  which appends only what is missing. Cursor: the last finished status seen per topic.
"""


import datetime as dt
import json

import dagster as dg

from fink_pipeline.kafka.status import read_status
from fink_pipeline.orchestration.constants import TOPIC_TAG
from fink_pipeline.orchestration.jobs import alert_table_job, submit_transfer_job, transfer_job
from fink_pipeline.orchestration.partitions import transfer_partitions
from fink_pipeline.orchestration.resources import KafkaResource, RequestStoreResource, StandingRequestsResource
from fink_pipeline.transfer.request import RequestError
from fink_pipeline.transfer.standing import due_nights

# A tick reads one status topic per transfer: bound the work (sensor ticks time out after 60 s).
MAX_TOPICS_PER_TICK = 100
IN_FLIGHT_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def utc_now() -> dt.datetime:
    """The current time (one place, so tests can set the clock)."""
    return dt.datetime.now(dt.timezone.utc)


@dg.run_status_sensor(
    name="submitted_transfer_sensor",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[submit_transfer_job],
    request_job=transfer_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launch the transfer of each request submitted from the launchpad.",
)
def submitted_transfer_sensor(context: dg.RunStatusSensorContext):
    topic = context.dagster_run.tags.get(TOPIC_TAG)
    if not topic:
        return dg.SkipReason(f"run {context.dagster_run.run_id} has no {TOPIC_TAG} tag: nothing was submitted")
    return dg.RunRequest(
        run_key=topic,
        partition_key=topic,
        tags={TOPIC_TAG: topic, "fink/submitted_by_run": context.dagster_run.run_id},
    )


@dg.sensor(
    job=transfer_job,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Each morning, transfer the night just finished for every standing request.",
)
def standing_request_sensor(
    context: dg.SensorEvaluationContext, standing: StandingRequestsResource, requests: RequestStoreResource
):
    last = dt.date.fromisoformat(context.cursor) if context.cursor else None
    nights = due_nights(utc_now(), last, standing.replay_hour_utc)
    if not nights:
        return dg.SkipReason(
            f"night {last} is already replayed; the next one is after {standing.replay_hour_utc:02d}:00 UTC"
        )
    store, request_store = standing.store(), requests.store()
    run_requests: list[dg.RunRequest] = []
    for name in store.names():
        try:
            template = store.load(name)
        except RequestError as exc:
            context.log.warning(f"standing request {name} skipped: {exc}")
            continue
        for night in nights:
            try:
                request = template.for_night(night)
            except RequestError as exc:
                context.log.warning(f"standing request {name} skipped for {night}: {exc}")
                continue
            if not request_store.path(request.topic).exists():
                request_store.save(request)  # identity derives from name and night: same file every time
            run_requests.append(
                dg.RunRequest(
                    run_key=template.run_key(night),
                    partition_key=request.topic,
                    tags={TOPIC_TAG: request.topic, "fink/standing": name, "fink/night": night.isoformat()},
                )
            )
    cursor = nights[-1].isoformat()
    if not run_requests:
        return dg.SensorResult(skip_reason=f"no standing request to replay for {cursor}", cursor=cursor)
    keys = [r.partition_key for r in run_requests]
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[transfer_partitions.build_add_request(keys)],
        cursor=cursor,
    )


def _run_in_flight(instance: dg.DagsterInstance, topic: str) -> bool:
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/partition": topic}, statuses=IN_FLIGHT_STATUSES), limit=1
    )
    return bool(records)


def _table_rows(instance: dg.DagsterInstance, topic: str) -> int | None:
    """Rows of the last `alert_table` materialization of `topic` (None when never materialized)."""
    result = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("alert_table"), asset_partitions=[topic]), limit=1
    )
    if not result.records:
        return None
    rows = result.records[0].asset_materialization.metadata.get("rows")
    return int(rows.value) if rows is not None else None


@dg.sensor(
    job=alert_table_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Append newly published alerts of submitted transfers to their tables.",
)
def transfer_topic_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource, requests: RequestStoreResource):
    if not kafka.bootstrap():
        return dg.SkipReason("no Kafka broker configured or running")
    settings = kafka.settings()
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    topics = requests.store().topics()[-MAX_TOPICS_PER_TICK:]
    known_partitions = set(context.instance.get_dynamic_partitions(transfer_partitions.name))
    run_requests: list[dg.RunRequest] = []
    waiting: list[str] = []
    for topic in topics:
        try:
            status = read_status(settings, topic)
        except Exception as exc:  # one unreadable topic must not stop the others
            context.log.warning(f"status of {topic} unreadable: {exc}")
            continue
        if status.state != "finished":
            continue
        signature = f"{status.total}@{status.finished_at.isoformat() if status.finished_at else ''}"
        if seen.get(topic) == signature:
            continue
        if _run_in_flight(context.instance, topic):
            waiting.append(topic)  # its run materializes the table; look again next tick
            continue
        seen[topic] = signature
        if _table_rows(context.instance, topic) == status.total:
            continue
        run_requests.append(dg.RunRequest(run_key=f"{topic}:{signature}", partition_key=topic, tags={TOPIC_TAG: topic}))
    stored = set(topics)
    cursor = json.dumps({t: s for t, s in seen.items() if t in stored}, sort_keys=True)
    new_keys = [r.partition_key for r in run_requests if r.partition_key not in known_partitions]
    if not run_requests:
        reason = f"every finished topic's table is up to date ({len(topics)} transfers watched"
        reason += f", {len(waiting)} with a run in progress)" if waiting else ")"
        return dg.SensorResult(skip_reason=reason, cursor=cursor)
    return dg.SensorResult(
        run_requests=run_requests,
        dynamic_partitions_requests=[transfer_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor,
    )
