"""Publishing a Spark DataFrame to Kafka as schemaless Avro, exactly once, as fink-client reads it.

Why no Kafka transactions: a transaction commit writes a control record into every partition it
touched, so offsets stop being message counts. fink-client (`finkctl transfer`, 12.3) treats
them as the same thing: it resumes a partition at "messages read so far" and considers it done
when that equals the high watermark, so on a topic holding control records it re-reads messages
and never finishes. The data topic therefore holds data messages only, with dense offsets, and
exactly-once comes from partition ownership instead:

* every Kafka partition has one writer, the Spark partition `k % S` (the DataFrame is coalesced
  to at most as many Spark partitions S as the topic has Kafka partitions); rows go to one of
  their Spark partition's Kafka partitions by a hash of the alert id, through an idempotent
  producer (no duplicates from internal retries, order kept);
* every task attempt - first try, Spark retry or re-run of a failed job - first reads the alert
  ids already in its Kafka partitions and publishes only the other rows; after flushing, it
  checks that its last message landed exactly where the count says (a concurrent writer or a
  lost message would show) and writes its progress record to `<topic>_status`. A retry of a
  Spark partition whose progress record exists skips it;
* the last message of each partition goes out alone, after a flush, in a record batch of one:
  brokers that compute the high watermark from the last batch's base offset (the embedded
  Tansu) then report it exactly, which fink-client needs to see that a partition is finished.

No attempt may write after another attempt of its partition has read back (Kafka fences
"zombie" writers only for transactional producers). What guarantees it:

* Spark schedules a retry only after the failed attempt has reported its failure, and a
  failing attempt reports only once nothing of it can land any more: it purges nothing (a
  purged in-flight request still reaches the broker), lets its idempotent producer deliver
  or definitively fail every message it holds (resent copies land at most once), then
  destroys the producer (`_retire_worker_producer`). This waits out a stalled broker; if a
  message may have hit the 300 s message timeout (fate unknown), it raises `UnsettledAttempt`;
* after a failed job the driver returns only when none of its tasks runs any more, and raises
  an error saying so if they do not stop (`_collect_in_job_group`);
* retries and resumed runs query their partitions' ends again 1 s after reading them back and
  read again if they moved: requests of a killed attempt that a stalled broker still held land
  as soon as it answers again.

Limits: an attempt killed outright (SIGKILLed Python worker: a cancelled job's tasks after
`spark.python.task.killTimeout`, a lost executor) or one past the message timeout cannot
settle. A request of it landing after the retry's settle check, while the retry publishes, makes
the retry's offset check fail the publication (`PublicationConflict`); after the retry's last
message, it lies beyond the end record's final offsets (fink-client reads to the high watermark
and would see it). Either way publish to a new topic name. Resent copies rely on the broker's
idempotence.

The driver writes the start record before the job and the end record (final offsets per Kafka
partition, which consumers read up to) or a failed record after it. No Spark Kafka connector or
spark-avro jar is needed: rows are encoded batch-wise in Arrow (`fink_pipeline.avro`).

Modules: this one is the driver; `kafka.publish_task` what each Spark task runs,
`kafka.readback` its read-back, `kafka.wire` the wire format, `kafka.faults` the failures tests
inject (never built in production).

Where the time goes: the transfer job hands the tasks archive locations and the tasks read the
content with pyarrow as Spark hands them the rows (`transfer.arrow_content`), so they publish
from their first selection batch on; each Python worker keeps its idempotent producer for its
later tasks (a new one waits for its producer id). `bench/publish.py` prints the CPU seconds
per process and task phase, bench/README.md the figures.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fink_pipeline.avro import avro_schema_from_arrow, schema_fingerprint, schema_json
from fink_pipeline.kafka.clients import make_producer
from fink_pipeline.kafka.faults import PublishFaults
from fink_pipeline.kafka.options import PublishOptions
from fink_pipeline.kafka.publish_task import (
    SETTLE_TIMEOUT_S,
    TASK_SUMMARY_SCHEMA,
    TaskConfig,
    publish_partition,
    publish_row_groups,
    warm_worker,
)
from fink_pipeline.kafka.readback import PublicationConflict
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import StatusWriter, TransferStatus, publication_id_for, read_status
from fink_pipeline.kafka.topics import ensure_topic
from fink_pipeline.kafka.wire import owned_kafka_partitions, schema_message_value, schema_topic, status_topic
from fink_pipeline.spark import is_connect_session, spark_to_arrow_schema
from fink_pipeline.transfer.arrow_content import FILE_COLUMN, ROW_COLUMN, RowGroupSplits

if TYPE_CHECKING:
    from pyspark import RDD
    from pyspark.sql import DataFrame, SparkSession

LOGGER = logging.getLogger("fink_pipeline.publish")
# How long the driver waits for the tasks of a failed, cancelled publishing job to stop: longer
# than a failed attempt may take to settle its messages.
_CANCEL_TIMEOUT_S = SETTLE_TIMEOUT_S + 30.0
# How long the publication waits for its worker warm-up before starting anyway.
_WARM_UP_TIMEOUT_S = 60.0
# Over Spark Connect, how long the driver waits after interrupting a failed publishing job:
# Spark's default spark.python.task.killTimeout (15 s) plus margin; the server's tasks cannot be
# watched from a client (see _collect_tagged).
_CONNECT_SETTLE_S = 20.0
# Over Spark Connect, the tasks of the Python worker warm-up (a client cannot see the cores).
_CONNECT_WARM_UP_TASKS = 8
# Over Spark Connect, archive rows go to publishing tasks by blocks of this many rows of a file.
_CONNECT_BLOCK_ROWS = 65536
# The runtime conf entry marking a Spark Connect session whose Python workers are warm.
_CONNECT_WARM_CONF = "spark.fink.pythonWorkersWarm"
# Spark applications whose Python workers were warmed up (workers live as long as it does).
_WARMED_APPLICATIONS: set[str] = set()


@dataclass(frozen=True)
class PublicationTarget:
    """What a publication writes where: its topic, the request it serves, the column keying its
    messages and the columns its per-class-and-night summary is counted on."""

    topic: str
    request_id: str
    # the survey's time column (dotted; its last name is the published column) and the Unix
    # epoch in its scale, for the alerts-per-night summary
    time_column: str
    time_epoch: float
    key_column: str = "candid"
    class_column: str | None = "finkclass"


@dataclass
class PublishReport:
    """What a publication did: totals, per Kafka partition, per class and night."""

    topic: str
    total: int
    per_partition: dict[int, dict[str, int]]
    per_class_night: dict[str, dict[str, int]]
    schema_fingerprint: str
    avro_schema: dict
    seconds: float
    spark_partitions: int
    skipped_spark_partitions: int = 0
    retried_tasks: int = 0
    bytes_published: int = 0
    # messages an earlier attempt or run had already published (found and not sent again)
    already_published: int = 0
    published_now: int = 0
    # seconds the tasks spent per phase, summed over tasks (input = waiting for Spark's rows),
    # and the CPU seconds of their Python workers per phase
    task_seconds: dict[str, float] = field(default_factory=dict)
    task_cpu_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def alerts_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0


def publish_dataframe(
    df: "DataFrame | RowGroupSplits",
    target: PublicationTarget,
    settings: KafkaSettings,
    *,
    options: PublishOptions | None = None,
    faults: PublishFaults | None = None,
    log: logging.Logger | None = None,
    arrow_content: Any = None,
    spark_partitions: int | None = None,
) -> PublishReport:
    """Publish `df` to `topic` (+ `_schema` and `_status` companions), exactly once.

    Re-running it after a failure publishes only what is missing; on a finished topic it
    publishes nothing. The rows of each Spark partition of `df` must be the same on every
    evaluation (any order), which holds for the transfer job's read-filter-project plans.
    With `arrow_content` (a `transfer.arrow_content.ArrowContent`), `df` holds archive
    locations and the tasks read the published content from the archive files. `faults` are
    failures tests inject (`kafka.faults`); production passes none. `spark_partitions`: how many
    Spark partitions `df` has, when its builder split it so (at most `options.partitions`):
    counting them otherwise plans `df` in Spark, ~1 s of a cold JVM before the first task.
    `df` may be the `RowGroupSplits` of a whole-nights publication: an RDD job on a classic
    session (no Spark SQL before the first alert), a DataFrame of row groups over Spark Connect.
    """
    df, session = _job_input(df)
    topic, request_id, key_column = target.topic, target.request_id, target.key_column
    options = options or PublishOptions()
    log = log or LOGGER
    started = time.monotonic()
    log.info("Determining data schema...")
    arrow_schema = arrow_content.output_schema if arrow_content is not None else spark_to_arrow_schema(df)
    if key_column not in arrow_schema.names:
        raise ValueError(f"the published content must contain {key_column!r} to key the messages")
    if not pa.types.is_integer(arrow_schema.field(key_column).type):
        raise ValueError(f"the message key column {key_column!r} must be an integer alert id, "
                         f"not {arrow_schema.field(key_column).type}")
    avro_schema = avro_schema_from_arrow(arrow_schema)
    fingerprint = schema_fingerprint(avro_schema)
    log.info("Schema OK...")
    if str(session.conf.get("spark.speculation", "false")).lower() == "true":
        raise ValueError("spark.speculation=true runs two attempts of a task at once, which would both "
                         "write the same Kafka partitions: disable it for publishing")

    warm_up = start_worker_warm_up(session, f"fink-publish-{topic}-warm-up")
    for name, partitions in ((topic, options.partitions), (schema_topic(topic), 1), (status_topic(topic), 1)):
        ensure_topic(settings, name, partitions=partitions, retention_ms=options.retention_ms,
                     compression=options.compression, timeout_s=options.admin_timeout_s)
    previous = read_status(settings, topic, timeout_s=options.admin_timeout_s)
    layout = selection_layout(arrow_content)
    _check_same_publication(previous, topic, request_id, fingerprint, options.partitions)
    _check_same_layout(previous, topic, layout)
    if previous.state == "finished":
        log.info(f"Topic {topic} was already published completely ({previous.total} alerts): nothing to do")
        report = _report_from_status(topic, previous, avro_schema, fingerprint, time.monotonic() - started, 0)
        report.notes.append("already finished: nothing published")
        return report

    # At most one Spark partition per Kafka partition, each Kafka partition with one owner.
    df, spark_partitions = _owner_partitions(df, options.partitions, key_column, spark_partitions)
    _check_ownership(previous, spark_partitions, options.partitions)

    status = StatusWriter(settings, topic, create=False)
    try:
        if previous.state == "unknown":
            log.info("Sending the schema to Kafka...")
            _publish_schema(settings, topic, avro_schema, options.schema_copies)
        else:
            log.info(f"Resuming the publication of {topic} ({len(previous.completed_spark_partitions)} "
                     f"of {spark_partitions} Spark partitions already published)")
        # a new publication gets a fresh id, a resumed one keeps its own: consumers tell a topic
        # re-created under the same name from the one their table holds
        status.start(request_id=request_id, partitions=options.partitions, schema_fingerprint=fingerprint,
                     publication_id=publication_id_for(previous), selection_layout=layout)
        time_leaf = target.time_column.rsplit(".", 1)[-1]
        class_column = target.class_column
        config = TaskConfig(
            topic=topic,
            settings=settings,
            avro_schema_json=json.dumps(avro_schema),
            key_column=key_column,
            kafka_partitions=options.partitions,
            spark_partitions=spark_partitions,
            completed=frozenset(previous.completed_spark_partitions),
            request_id=request_id,
            options=options,
            class_column=class_column if class_column in arrow_schema.names else None,
            night_column=time_leaf if time_leaf in arrow_schema.names else None,
            night_epoch=target.time_epoch,
            arrow_content=arrow_content,
            resumed=previous.state != "unknown",
            faults=faults,
        )
        if warm_up is not None:
            warm_up.join(_WARM_UP_TIMEOUT_S)
        log.info(f"Starting to send data to topic {topic}")
        try:
            summaries = [json.loads(summary) for summary in _collect_in_job_group(_publishing_job(df, config), topic)]
            final = read_status(settings, topic, timeout_s=options.admin_timeout_s)
            report = _report_from_status(
                topic, final, avro_schema, fingerprint, time.monotonic() - started, spark_partitions
            )
            _add_task_summaries(report, summaries)
            missing = set(range(spark_partitions)) - final.completed_spark_partitions
            if missing:
                raise PublicationConflict(f"Spark partitions {sorted(missing)} finished without a progress record")
            status.end(request_id=request_id, total=report.total, schema_fingerprint=fingerprint,
                       partitions=report.per_partition)
        except Exception as exc:
            status.failed(_short_error(exc), request_id=request_id)
            raise
    finally:
        status.close()
    log.info(f"Data available at topic: {topic}")
    log.info(f"{report.total} alerts published in {report.seconds:.1f} s ({report.alerts_per_second:,.0f} alerts/s)")
    log.info("End.")
    return report


def _job_input(df: "DataFrame | RowGroupSplits") -> tuple["DataFrame | RowGroupSplits", "SparkSession"]:
    """What the publishing job runs over, and its session: row group splits stay an RDD's
    input on a classic session and become a DataFrame over Spark Connect (no RDDs there)."""
    if not isinstance(df, RowGroupSplits):
        return df, df.sparkSession
    return (df.to_dataframe(), df.session) if is_connect_session(df.session) else (df, df.session)


def _publishing_job(df: "DataFrame | RowGroupSplits", config: TaskConfig) -> "DataFrame | RDD":
    """The job of the publishing tasks: an RDD of row group ranges (no Spark SQL), or the
    DataFrame's partitions through mapInArrow; each task yields its summary line."""
    if isinstance(df, RowGroupSplits):
        return df.to_rdd().mapPartitions(functools.partial(publish_row_groups, config=config))
    return df.mapInArrow(functools.partial(publish_partition, config=config), TASK_SUMMARY_SCHEMA)


def _add_task_summaries(report: PublishReport, summaries: list[dict]) -> None:
    """What the tasks did (skipped, retried, found, produced; seconds and CPU per phase)."""
    report.skipped_spark_partitions = sum(1 for s in summaries if s["skipped"])
    report.retried_tasks = sum(1 for s in summaries if s["attempt"] > 0)
    report.already_published = sum(s["already_published"] for s in summaries)
    report.published_now = sum(s["produced"] for s in summaries)
    report.bytes_published = sum(s["bytes"] for s in summaries)
    for summary in summaries:
        for phase, seconds in summary.get("seconds", {}).items():
            report.task_seconds[phase] = report.task_seconds.get(phase, 0.0) + seconds
        for phase, seconds in summary.get("cpu", {}).items():
            report.task_cpu_seconds[phase] = report.task_cpu_seconds.get(phase, 0.0) + seconds


def _check_same_publication(previous: TransferStatus, topic: str, request_id: str, fingerprint: str,
                            partitions: int) -> None:
    """A topic belongs to one request and one content: refuse to mix two publications."""
    if previous.state == "unknown":
        return
    if previous.request_id not in (None, request_id):
        raise PublicationConflict(
            f"topic {topic} already holds request {previous.request_id!r}, not {request_id!r}: "
            "publish to a new topic name"
        )
    if previous.schema_fingerprint not in (None, fingerprint):
        raise PublicationConflict(
            f"topic {topic} was published with another content (schema {previous.schema_fingerprint}, "
            f"now {fingerprint}): publish to a new topic name"
        )
    if previous.partitions not in (None, partitions):
        raise PublicationConflict(
            f"topic {topic} was published with {previous.partitions} Kafka partitions, not {partitions}"
        )


def selection_layout(arrow_content: Any) -> str | None:
    """How the job's rows fall into Spark partitions: "row_groups" when the selection rows stand
    for whole archive row groups (`ArrowContent.row_groups`), None for Spark's file splits."""
    return "row_groups" if arrow_content is not None and getattr(arrow_content, "row_groups", ()) else None


def _check_same_layout(previous: TransferStatus, topic: str, layout: str | None) -> None:
    """A resumed publication must split its rows among Spark partitions as the interrupted one
    did: each task reads back only its own Kafka partitions, so a row that moved to another
    Spark partition would be published twice."""
    if previous.state in ("unknown", "finished") or previous.selection_layout == layout:
        return

    def said(value: str | None) -> str:
        return "by archive row groups" if value == "row_groups" else "by Spark's file splits"

    raise PublicationConflict(
        f"topic {topic} was started with its alerts split among tasks {said(previous.selection_layout)} "
        f"(an earlier version of fink-pipeline), and this run splits them {said(layout)}: resuming could "
        "publish alerts twice; publish to a new topic name")


def _owner_partitions(df: "DataFrame | RowGroupSplits", kafka_partitions: int, key_column: str,
                      known_partitions: int | None = None) -> tuple["DataFrame | RowGroupSplits", int]:
    """`df` with at most `kafka_partitions` Spark partitions, and how many it has
    (`known_partitions`: as many as its builder made, taken as they are when few enough).
    Row group splits are split again into fewer ranges of consecutive groups if need be.

    A classic session coalesces (no shuffle: tasks publish from their first scanned rows). A
    Spark Connect client cannot count a plan's partitions (no RDD), so there the rows are
    hash-partitioned into exactly `kafka_partitions`: deterministic, every evaluation puts each
    row in the same Spark partition, which exactly-once relies on. Rows holding content go by
    their message key; selection rows that locate the content in the archive go by blocks of
    `_CONNECT_BLOCK_ROWS` rows of a file, so that a task decodes the row groups of its own
    blocks only (by single rows, every task would decode every row group)."""
    if isinstance(df, RowGroupSplits):
        df = df if df.partitions <= kafka_partitions else df.resplit(kafka_partitions)
        return df, df.partitions
    if not is_connect_session(df.sparkSession):
        if known_partitions is not None and known_partitions <= kafka_partitions:
            return df, known_partitions
        spark_partitions = df.rdd.getNumPartitions()
        if spark_partitions > kafka_partitions:
            df = df.coalesce(kafka_partitions)
            spark_partitions = df.rdd.getNumPartitions()
        return df, spark_partitions
    from pyspark.sql import functions as F

    if FILE_COLUMN in df.columns and ROW_COLUMN in df.columns:
        keys = [F.col(FILE_COLUMN), F.floor(F.col(ROW_COLUMN) / _CONNECT_BLOCK_ROWS)]
    else:
        keys = [F.col(key_column)] if key_column in df.columns else [F.col(c) for c in df.columns]
    return df.repartition(kafka_partitions, *keys), kafka_partitions


def _check_ownership(previous: TransferStatus, spark_partitions: int, kafka_partitions: int) -> None:
    """A resumed run must give each Kafka partition the same owner as the interrupted one."""
    for spark_partition, progress in previous.progress_by_spark_partition.items():
        owned = set(owned_kafka_partitions(spark_partition, spark_partitions, kafka_partitions))
        if spark_partition >= spark_partitions or not set(progress.partitions) <= owned:
            raise PublicationConflict(
                f"the interrupted run's Spark partition {spark_partition} wrote Kafka partitions "
                f"{sorted(progress.partitions)}, which this run's {spark_partitions} Spark partitions "
                "would give to other tasks: the input changed; publish to a new topic name"
            )


def _short_error(exc: BaseException) -> str:
    """A failed record's message: Spark wraps the task error in a long JVM trace."""
    text = f"{type(exc).__name__}: {exc}"
    for marker in ("PublicationConflict: ", "UnsettledAttempt: ", "RuntimeError: ", "ValueError: ", "KafkaException: ", "TimeoutError: "):
        index = text.find(marker)
        if index >= 0 and "Traceback" in text:
            return text[index:].split("\n", 1)[0][:2000]
    return text[:2000]


def start_worker_warm_up(session: "SparkSession", job_group: str) -> threading.Thread | None:
    """Start Python workers and import the publishing modules in them ahead of a publication
    (while the driver validates the request or sets up the topics): a worker's first task
    otherwise spends seconds importing before its first alert. A tiny job in `job_group`, run
    in a thread, once per Spark application; Spark reuses its workers for the publishing
    tasks. Best effort: a failure only costs the warm start. None when already done."""
    connect = is_connect_session(session)
    # a Spark Connect server starts Python workers per client session (its own environment)
    application = f"connect:{session.session_id}" if connect else session.sparkContext.applicationId
    if application in _WARMED_APPLICATIONS or (connect and _connect_session_warm(session)):
        return None
    _WARMED_APPLICATIONS.add(application)

    def run() -> None:
        try:
            if connect:  # no SparkContext: enough tiny tasks to reach every core of a small server
                workers = _CONNECT_WARM_UP_TASKS
                session.range(workers, numPartitions=workers).mapInArrow(warm_worker, "id long").collect()
                # runs of other processes sharing this server-side session skip it
                session.conf.set(_CONNECT_WARM_CONF, "true")
            else:  # an RDD job: no Spark SQL (a row-group publication runs none either)
                sc = session.sparkContext
                sc.setJobGroup(job_group, "warm up the Python workers for publishing")
                workers = max(1, sc.defaultParallelism)
                sc.parallelize(range(workers), workers).mapPartitions(warm_worker).collect()
        except Exception as exc:  # the publication itself reports real problems
            LOGGER.info(f"Python worker warm-up skipped: {exc}")

    thread = threading.Thread(target=run, name=f"warm-up-{job_group}", daemon=True)
    thread.start()
    return thread


def _connect_session_warm(session: "SparkSession") -> bool:
    """Whether an earlier run warmed this Connect session's Python workers (a runtime conf
    entry, kept by the server for the session: a fresh client process of a shared session
    would otherwise wait for a warm-up job before each publication)."""
    try:
        return str(session.conf.get(_CONNECT_WARM_CONF, "false")).lower() == "true"
    except Exception:  # a server refusing the key: warm up as usual
        return False


def _collect_in_job_group(job: "DataFrame | RDD", topic: str) -> list[str]:
    """Run the publishing job (its tasks' summary lines); if it fails, wait for its cancelled
    tasks to stop before raising, so that none of them still produces when the caller re-runs
    it: if they do not stop within `_CANCEL_TIMEOUT_S`, raise an error that says so instead of
    the job's.
    Over Spark Connect (no SparkContext, no status tracker) the job is tagged and interrupted
    on failure, then the driver waits `_CONNECT_SETTLE_S`, the time a failed attempt takes to
    settle and a cancelled Python worker to be killed."""
    from pyspark import RDD

    if isinstance(job, RDD):
        sc, collect = job.context, job.collect
    elif is_connect_session(job.sparkSession):
        return [row.summary for row in _collect_tagged(job, topic)]
    else:
        sc = job.sparkSession.sparkContext
        collect = lambda: [row.summary for row in job.collect()]  # noqa: E731
    keys = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")
    saved = {key: sc.getLocalProperty(key) for key in keys}
    group = f"fink-publish-{topic}-{uuid.uuid4().hex[:8]}"
    sc.setJobGroup(group, f"publish {topic}", interruptOnCancel=True)
    try:
        return collect()
    except Exception as exc:
        sc.cancelJobGroup(group)
        still_running = _wait_for_job_group(sc, group, timeout_s=_CANCEL_TIMEOUT_S)
        if still_running:
            raise RuntimeError(
                f"the publishing job of {topic} failed, and {still_running} of its cancelled tasks still "
                f"run {_CANCEL_TIMEOUT_S:.0f} s later: they may still write to {topic}; do not re-run the "
                f"publication before they are gone (stop the executors' Python workers). The job failed "
                f"with: {_short_error(exc)}"
            ) from exc
        raise
    finally:
        for key, value in saved.items():
            sc.setLocalProperty(key, value)


def _collect_tagged(mapped: "DataFrame", topic: str) -> list:
    """`_collect_in_job_group` over Spark Connect: an operation tag instead of a job group."""
    session = mapped.sparkSession
    tag = f"fink-publish-{uuid.uuid4().hex[:12]}"
    session.addTag(tag)
    try:
        return mapped.collect()
    except Exception:
        try:
            session.interruptTag(tag)
        except Exception as interrupt_error:  # the server may be gone: nothing runs there any more
            LOGGER.info(f"interrupting {tag} failed: {interrupt_error}")
        time.sleep(_CONNECT_SETTLE_S)
        raise
    finally:
        session.removeTag(tag)


def _wait_for_job_group(sc, group: str, timeout_s: float) -> int:
    """Wait until no task of the job group runs; return how many still do after `timeout_s`.

    A Python task counts as running until its worker has returned or been killed (the JVM task
    thread waits for the worker), so 0 means no task of the group can still produce; a failed
    attempt itself settles its messages before reporting (`_retire_worker_producer`)."""
    tracker = sc.statusTracker()
    deadline = time.monotonic() + timeout_s
    while True:
        active = 0
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            for stage_id in job.stageIds if job else []:
                stage = tracker.getStageInfo(stage_id)
                active += stage.numActiveTasks if stage else 0
        if active == 0 or time.monotonic() >= deadline:
            return active
        time.sleep(0.1)


def _publish_schema(settings: KafkaSettings, topic: str, avro_schema: dict, copies: int) -> None:
    """Fink's `<topic>_schema` convention: key = schema JSON, value = Avro {schema: name}."""
    key, value = schema_json(avro_schema).encode(), schema_message_value()
    # Not idempotent: copies are identical, and an idempotent producer's start costs ~0.5 s.
    producer = make_producer(settings, {"linger.ms": 5, "acks": "all"})
    for _ in range(copies):
        producer.produce(schema_topic(topic), key=key, value=value, partition=0)
    if producer.flush(60):
        raise RuntimeError(f"could not write the schema to {schema_topic(topic)}")


def _report_from_status(topic: str, status: TransferStatus, avro_schema: dict, fingerprint: str,
                        seconds: float, spark_partitions: int) -> PublishReport:
    """Totals from the progress records (each Kafka partition is in exactly one of them)."""
    per_partition: dict[int, dict[str, int]] = {}
    per_class_night: dict[str, dict[str, int]] = {}
    payload = 0
    for progress in status.progress_by_spark_partition.values():
        payload += progress.bytes
        for p, offsets in progress.partitions.items():
            entry = per_partition.setdefault(p, {"count": 0, "last_offset": -1})
            entry["count"] += offsets.count
            entry["last_offset"] = max(entry["last_offset"], offsets.last_offset)
        for label, nights in progress.class_night.items():
            bucket = per_class_night.setdefault(label, {})
            for night, n in nights.items():
                bucket[night] = bucket.get(night, 0) + n
    if status.state == "finished":
        per_partition = {p: {"count": o.count, "last_offset": o.last_offset} for p, o in status.final_offsets.items()}
    return PublishReport(
        topic=topic,
        total=sum(entry["count"] for entry in per_partition.values()),
        per_partition=dict(sorted(per_partition.items())),
        per_class_night=per_class_night,
        schema_fingerprint=fingerprint,
        avro_schema=avro_schema,
        seconds=seconds,
        spark_partitions=spark_partitions,
        bytes_published=payload,
    )
