"""Publishing a Spark DataFrame to Kafka as schemaless Avro, exactly once, from the executors.

Each Spark task owns one transactional producer whose `transactional.id` is derived from the
topic and the Spark partition index. A retried task attempt re-uses that id, so initialising
it fences the failed attempt and aborts its open transaction: a `read_committed` consumer never
sees the partial output. The task's progress record (counts and last offsets) is written to
`<topic>_status` inside the same transaction, so "this Spark partition is published" and its
data become visible atomically; a retry that finds the record skips the partition instead of
publishing it twice (this also makes re-running the whole job idempotent).

No Spark Kafka connector or spark-avro jar is needed: encoding is done batch-wise in Arrow.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pyarrow as pa

from fink_pipeline.avro import avro_schema_from_arrow, encode_batch, schema_fingerprint, schema_json
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import ProgressRecord, StatusWriter, TransferStatus, read_status
from fink_pipeline.kafka.topics import ensure_topic

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

LOGGER = logging.getLogger("fink_pipeline.publish")

SCHEMA_MESSAGE_SCHEMA = {
    "type": "record",
    "name": "topLevelRecord",
    "fields": [{"name": "schema", "type": ["string", "null"]}],
}
TASK_SUMMARY_SCHEMA = "summary string"


def schema_topic(topic: str) -> str:
    """The companion topic fink-client reads the Avro schema from."""
    return f"{topic}_schema"


def status_topic(topic: str) -> str:
    """The companion topic carrying start, progress, end and failure records."""
    return f"{topic}_status"


@dataclass(frozen=True)
class PublishOptions:
    """Topic and producer settings of one publication."""

    partitions: int = 10
    retention_ms: int = 7 * 24 * 3600 * 1000
    compression: str = "lz4"
    # fink-client consumes one schema message per run with a committing group: keep copies
    schema_copies: int = 100
    linger_ms: int = 20
    transaction_timeout_ms: int = 600_000
    # Test hook: the first attempt of each task fails after producing this many messages.
    fail_first_attempt_after: int | None = None


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
    notes: list[str] = field(default_factory=list)

    @property
    def alerts_per_second(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _TaskConfig:
    """What an executor task needs; plain data so that it pickles."""

    topic: str
    settings: KafkaSettings
    avro_schema_json: str
    key_column: str
    kafka_partitions: int
    completed: frozenset[int]
    request_id: str
    options: PublishOptions
    class_column: str | None
    night_column: str | None
    night_epoch: float


def _kafka_partition_of(ids: np.ndarray, n: int) -> np.ndarray:
    """Deterministic spread of alert ids over partitions (Fibonacci hashing, vectorised)."""
    mixed = (ids.astype(np.uint64) * np.uint64(11400714819323198485)) >> np.uint64(33)
    return (mixed % np.uint64(n)).astype(np.int32)


def _committed_partitions(settings: KafkaSettings, topic: str) -> frozenset[int]:
    return frozenset(read_status(settings, topic, timeout_s=30).completed_spark_partitions)


def _publish_task(batches: Iterator[pa.RecordBatch], config: _TaskConfig) -> Iterator[pa.RecordBatch]:
    """Executor side: produce every row of this Spark partition inside one transaction."""
    from confluent_kafka import KafkaException, Producer
    from pyspark import TaskContext

    context = TaskContext.get()
    spark_partition, attempt = context.partitionId(), context.attemptNumber()
    summary = {"spark_partition": spark_partition, "attempt": attempt, "skipped": False}
    if spark_partition in config.completed:
        summary["skipped"] = True
        yield pa.RecordBatch.from_pydict({"summary": [json.dumps(summary)]})
        return

    avro_schema = json.loads(config.avro_schema_json)
    producer = Producer(
        {
            **config.settings.librdkafka_config(),
            "transactional.id": f"{config.topic}-{spark_partition}",
            "enable.idempotence": True,
            "compression.type": config.options.compression,
            "linger.ms": config.options.linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "transaction.timeout.ms": config.options.transaction_timeout_ms,
        }
    )
    # Fences any earlier attempt of this partition and aborts its open transaction; only then
    # can the status topic be read up to its end (an open transaction holds read_committed back).
    producer.init_transactions(60)
    if attempt > 0 and spark_partition in _committed_partitions(config.settings, config.topic):
        # the earlier attempt committed just before it failed: publishing again would duplicate
        summary["skipped"] = True
        yield pa.RecordBatch.from_pydict({"summary": [json.dumps(summary)]})
        return
    producer.begin_transaction()
    n_parts = config.kafka_partitions
    counts = np.zeros(n_parts, dtype=np.int64)
    last_offsets = np.full(n_parts, -1, dtype=np.int64)
    class_night: dict[str, dict[str, int]] = {}
    produced = 0
    payload_bytes = 0

    def remember_offset(err, msg):  # only attached to the last message of each partition per batch
        if err is None and msg is not None:
            p = msg.partition()
            last_offsets[p] = max(last_offsets[p], msg.offset())

    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            values = encode_batch(batch, avro_schema)
            payload_bytes += values.nbytes
            ids = batch.column(config.key_column).to_numpy(zero_copy_only=False)
            parts = _kafka_partition_of(ids, n_parts)
            counts += np.bincount(parts, minlength=n_parts)
            last_index = {int(p): int(np.flatnonzero(parts == p)[-1]) for p in np.unique(parts)}
            callbacks = {i: remember_offset for i in last_index.values()}
            keys = [str(v) for v in ids.tolist()]
            for i, value in enumerate(values.to_pylist()):
                _produce(producer, config.topic, value, keys[i], int(parts[i]), callbacks.get(i))
                produced += 1
                if (
                    config.options.fail_first_attempt_after is not None
                    and attempt == 0
                    and produced >= config.options.fail_first_attempt_after
                ):
                    producer.flush(30)  # make the partial output really reach the broker
                    raise RuntimeError(
                        f"injected failure in Spark partition {spark_partition} after {produced} messages"
                    )
            _count_class_night(batch, config, class_night)
        remaining = producer.flush(120)
        if remaining:
            raise KafkaException(f"{remaining} messages were not delivered within 120 s")
        progress = ProgressRecord(
            spark_partition=spark_partition,
            attempt=attempt,
            produced=produced,
            request_id=config.request_id,
            partitions={
                int(p): {"count": int(counts[p]), "last_offset": int(last_offsets[p])}
                for p in range(n_parts)
                if counts[p]
            },
            class_night=class_night,
            bytes=payload_bytes,
        )
        producer.produce(status_topic(config.topic), key=b"progress", value=progress.model_dump_json().encode())
        producer.commit_transaction(120)
    except BaseException:
        try:
            producer.abort_transaction(30)
        except Exception:  # the broker may be gone; fencing by the retry cleans up anyway
            pass
        raise
    summary.update(count=produced, bytes=payload_bytes)
    yield pa.RecordBatch.from_pydict({"summary": [json.dumps(summary)]})


def _produce(producer, topic: str, value: bytes, key: str, partition: int, callback) -> None:
    """Produce one message, waiting for queue space instead of failing when it is full."""
    while True:
        try:
            if callback is None:
                producer.produce(topic, value=value, key=key, partition=partition)
            else:
                producer.produce(topic, value=value, key=key, partition=partition, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.05)


def _count_class_night(batch: pa.RecordBatch, config: _TaskConfig, out: dict[str, dict[str, int]]) -> None:
    """Alerts per class and night of this batch (for the run's summary plot)."""
    import pyarrow.compute as pc

    if config.night_column is None or config.night_column not in batch.schema.names:
        return
    times = batch.column(config.night_column)
    seconds = pc.multiply(pc.subtract(pc.cast(times, pa.float64()), config.night_epoch), 86400.0)
    nights = pc.strftime(pc.cast(pc.cast(pc.floor(seconds), pa.int64()), pa.timestamp("s")), format="%Y-%m-%d")
    if config.class_column and config.class_column in batch.schema.names:
        labels = pc.fill_null(pc.cast(batch.column(config.class_column), pa.string()), "null")
    else:
        labels = pa.array(["all"] * batch.num_rows)
    table = pa.table({"c": labels, "n": nights}).group_by(["c", "n"]).aggregate([([], "count_all")])
    for label, night, count in zip(*(table.column(i).to_pylist() for i in range(3))):
        bucket = out.setdefault(label, {})
        bucket[night] = bucket.get(night, 0) + count


def spark_to_arrow_schema(df: "DataFrame") -> pa.Schema:
    """The Arrow schema of the batches `mapInArrow` will hand to the tasks."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(df.schema)


def publish_dataframe(
    df: "DataFrame",
    topic: str,
    settings: KafkaSettings,
    *,
    request_id: str,
    survey_time_column: str,
    survey_time_epoch: float,
    key_column: str = "candid",
    class_column: str | None = "finkclass",
    options: PublishOptions | None = None,
    log: logging.Logger | None = None,
) -> PublishReport:
    """Publish `df` to `topic` (+ `_schema` and `_status` companions), exactly once."""
    options = options or PublishOptions()
    log = log or LOGGER
    started = time.monotonic()
    log.info("Determining data schema...")
    arrow_schema = spark_to_arrow_schema(df)
    if key_column not in arrow_schema.names:
        raise ValueError(f"the published content must contain {key_column!r} to key the messages")
    avro_schema = avro_schema_from_arrow(arrow_schema)
    fingerprint = schema_fingerprint(avro_schema)
    log.info("Schema OK...")

    for name, partitions in ((topic, options.partitions), (schema_topic(topic), 1), (status_topic(topic), 1)):
        ensure_topic(settings, name, partitions=partitions, retention_ms=options.retention_ms,
                     compression=options.compression)
    previous = read_status(settings, topic)
    if previous.state == "finished":
        log.info(f"Topic {topic} was already published completely ({previous.total} alerts): nothing to do")
        return _report_from_status(topic, previous, avro_schema, fingerprint, time.monotonic() - started, 0)

    status = StatusWriter(settings, topic, create=False)
    log.info("Sending the schema to Kafka...")
    _publish_schema(settings, topic, avro_schema, options.schema_copies)
    status.start(request_id=request_id, partitions=options.partitions, schema_fingerprint=fingerprint)
    night_column = survey_time_column.rsplit(".", 1)[-1] if survey_time_column.rsplit(".", 1)[-1] in arrow_schema.names else None
    config = _TaskConfig(
        topic=topic,
        settings=settings,
        avro_schema_json=json.dumps(avro_schema),
        key_column=key_column,
        kafka_partitions=options.partitions,
        completed=frozenset(previous.completed_spark_partitions),
        request_id=request_id,
        options=options,
        class_column=class_column if class_column in arrow_schema.names else None,
        night_column=night_column,
        night_epoch=survey_time_epoch,
    )
    log.info(f"Starting to send data to topic {topic}")
    try:
        summaries = [json.loads(row.summary) for row in
                     df.mapInArrow(functools.partial(_publish_task, config=config), TASK_SUMMARY_SCHEMA).collect()]
        final = read_status(settings, topic)
        report = _report_from_status(
            topic, final, avro_schema, fingerprint, time.monotonic() - started, len(summaries)
        )
        report.skipped_spark_partitions = sum(1 for s in summaries if s["skipped"])
        report.retried_tasks = sum(1 for s in summaries if s["attempt"] > 0)
        status.end(request_id=request_id, total=report.total, schema_fingerprint=fingerprint,
                   partitions=report.per_partition)
    except Exception as exc:
        status.failed(exc, request_id=request_id)
        raise
    finally:
        status.close()
    log.info(f"Data available at topic: {topic}")
    log.info(f"{report.total} alerts published in {report.seconds:.1f} s ({report.alerts_per_second:,.0f} alerts/s)")
    log.info("End.")
    return report


def _publish_schema(settings: KafkaSettings, topic: str, avro_schema: dict, copies: int) -> None:
    """Fink's `<topic>_schema` convention: key = schema JSON, value = Avro {schema: name}."""
    import io

    import fastavro
    from confluent_kafka import Producer

    buffer = io.BytesIO()
    parsed = fastavro.parse_schema(SCHEMA_MESSAGE_SCHEMA)
    fastavro.schemaless_writer(buffer, parsed, {"schema": f"new_schema_{time.time()}.avsc"})
    key = schema_json(avro_schema).encode()
    producer = Producer({**settings.librdkafka_config(), "linger.ms": 5, "enable.idempotence": True})
    for _ in range(copies):
        producer.produce(schema_topic(topic), key=key, value=buffer.getvalue())
    if producer.flush(60):
        raise RuntimeError(f"could not write the schema to {schema_topic(topic)}")


def _report_from_status(topic: str, status: TransferStatus, avro_schema: dict, fingerprint: str,
                        seconds: float, spark_partitions: int) -> PublishReport:
    """Totals from the committed progress records (one per Spark partition, retries included)."""
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
        per_partition=per_partition,
        per_class_night=per_class_night,
        schema_fingerprint=fingerprint,
        avro_schema=avro_schema,
        seconds=seconds,
        spark_partitions=spark_partitions,
        bytes_published=payload,
    )
