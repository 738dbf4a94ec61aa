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

Where the time goes (light packet, 100,000 alerts, 2 cores): the transfer job hands the tasks
archive locations and the tasks read the content with pyarrow (`transfer.arrow_content`: the
JVM's read and Arrow conversion of nested columns cost ~5 CPU-s, pyarrow's ~1); each Python
worker keeps its idempotent producer for its later tasks (a new one waits ~0.5 s for its
producer id). `bench/publish.py` prints the CPU seconds per process and phase.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.avro import avro_schema_from_arrow, encode_batch, schema_fingerprint, schema_json
from fink_pipeline.kafka.defaults import DEFAULT_COMPRESSION, DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import ProgressRecord, StatusWriter, TransferStatus, publication_id_for, read_status
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
COMPRESSION_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
# How long a task may take to read back what earlier attempts published, and to deliver.
_READ_BACK_TIMEOUT_S = 120.0
_FLUSH_TIMEOUT_S = 300.0
# A retry or resumed run re-checks its partitions' ends this long after reading them back: a
# late message of a killed attempt, still in the broker's socket buffers, must show before it
# produces. A failed attempt's settle flush is bounded by the message timeout (+ margin).
_SETTLE_CHECK_S = 1.0
_SETTLE_TIMEOUT_S = _FLUSH_TIMEOUT_S + 10.0
# How long the driver waits for the tasks of a failed, cancelled publishing job to stop: longer
# than a failed attempt may take to settle its messages.
_CANCEL_TIMEOUT_S = _SETTLE_TIMEOUT_S + 30.0


class PublicationConflict(RuntimeError):
    """The topic holds data this publication did not write or cannot account for."""


def schema_topic(topic: str) -> str:
    """The companion topic fink-client reads the Avro schema from."""
    return f"{topic}_schema"


def status_topic(topic: str) -> str:
    """The companion topic carrying start, progress, end and failure records."""
    return f"{topic}_status"


@dataclass(frozen=True)
class PublishOptions:
    """Topic and producer settings of one publication, and failure-injection test hooks."""

    partitions: int = DEFAULT_PARTITIONS  # as on Fink's cluster; fink-client assumes 10 unless told otherwise
    retention_ms: int = DEFAULT_RETENTION_MS  # "available for download for 7 days"
    compression: str = DEFAULT_COMPRESSION
    # fink-client consumes one schema message per run with a committing group: keep copies
    schema_copies: int = 100
    linger_ms: int = 20
    batch_bytes: int = 1_000_000
    # how long the driver waits for the cluster to create/describe topics and return status
    admin_timeout_s: float = 30.0
    # Test hook: the first attempt of each task fails after producing this many messages.
    fail_first_attempt_after: int | None = None
    # Test hook: the first attempt of each task fails right after its progress record (the
    # "commit" of its Spark partition) is delivered.
    fail_first_attempt_after_commit: bool = False
    # Test hook: every attempt of these Spark partitions fails after producing
    # `fail_spark_partitions_after` messages, so the job itself fails (as if killed).
    fail_spark_partitions: tuple[int, ...] = ()
    fail_spark_partitions_after: int = 0
    # Test hook: the first attempt of each task delivers this many messages, creates
    # `<test_gate_dir>/reached-<spark partition>`, waits for `<test_gate_dir>/go` (the test
    # pauses the broker meanwhile), hands the rest of its rows to its producer and fails without
    # flushing them: they are still in flight when the attempt dies.
    fail_first_attempt_in_flight_after: int | None = None
    test_gate_dir: str | None = None

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.retention_ms < 1 and self.retention_ms != -1:
            raise ValueError(f"retention_ms must be positive (or -1: forever), got {self.retention_ms}")
        if self.compression not in COMPRESSION_CODECS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_CODECS)}, got {self.compression!r}")
        if self.schema_copies < 1:
            raise ValueError(f"schema_copies must be >= 1 (fink-client needs the schema), got {self.schema_copies}")
        if self.linger_ms < 0 or self.batch_bytes < 1:
            raise ValueError("linger_ms must be >= 0 and batch_bytes >= 1")
        if self.admin_timeout_s <= 0:
            raise ValueError(f"admin_timeout_s must be positive, got {self.admin_timeout_s}")


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


@dataclass(frozen=True)
class _TaskConfig:
    """What an executor task needs; plain data so that it pickles (the password stays a
    SecretStr: neither repr nor a traceback shows it)."""

    topic: str
    settings: KafkaSettings
    avro_schema_json: str
    key_column: str
    kafka_partitions: int
    spark_partitions: int
    completed: frozenset[int]
    request_id: str
    options: PublishOptions
    class_column: str | None
    night_column: str | None
    night_epoch: float
    # rows are archive locations whose content the task reads (transfer.arrow_content)
    arrow_content: Any = None
    # the topic already had a start record: earlier runs' attempts may have written to it
    resumed: bool = False


def owned_kafka_partitions(spark_partition: int, spark_partitions: int, kafka_partitions: int) -> list[int]:
    """The Kafka partitions that Spark partition `spark_partition` alone writes (k % S == s)."""
    return list(range(spark_partition, kafka_partitions, spark_partitions))


def kafka_partition_of(ids: np.ndarray, owned: np.ndarray) -> np.ndarray:
    """Deterministic spread of alert ids over the `owned` Kafka partitions (Fibonacci hashing)."""
    mixed = (ids.astype(np.uint64) * np.uint64(11400714819323198485)) >> np.uint64(33)
    return owned[(mixed % np.uint64(len(owned))).astype(np.int64)]


def producer_config(config: _TaskConfig) -> dict[str, Any]:
    """The librdkafka configuration of a task's producer: the connection settings (SASL
    included) plus idempotence, compression and batching."""
    options = config.options
    return {
        **config.settings.librdkafka_config(),
        # ordered, no duplicate from internal retries: a partition's content stays a prefix
        "enable.idempotence": True,
        "compression.type": options.compression,
        "linger.ms": options.linger_ms,
        "batch.size": options.batch_bytes,
        "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1024 * 1024,
        "message.timeout.ms": int(_FLUSH_TIMEOUT_S * 1000),
        # the driver created the topics; a typo must not auto-create a 4-partition topic
        "allow.auto.create.topics": False,
    }


# --------------------------------------------------------------------------------------------
# executor side


@dataclass
class _PartitionState:
    """One owned Kafka partition during a task attempt."""

    existing_ids: np.ndarray  # sorted alert ids found in the partition when the attempt started
    end_offset: int  # where the attempt's first message will land
    sent: int = 0  # messages this attempt produced to it
    pending: tuple[bytes, str] | None = None  # held back: the partition's last message so far
    last_offset: int = -1  # delivery report of the final message


def _read_existing(config: _TaskConfig, owned: list[int], settle: bool = False) -> dict[int, _PartitionState]:
    """Alert ids already published in the `owned` partitions and where each partition ends.

    Empty partitions (high watermark 0) cost one watermark query; others are read from the
    beginning up to the end-of-partition event, which reports the real end (a broker's high
    watermark may be too low for batched records, see the embedded broker notes).

    With `settle` (a retry, or a run resuming a publication: earlier attempts may have written),
    the watermarks are queried again `_SETTLE_CHECK_S` after the read and the partitions read
    again until they did not move: a message of a killed attempt that a stalled broker still
    held in its socket buffers lands as soon as the broker answers again, and must be seen
    before this attempt produces. (Any new record batch moves the watermark, exact or not.)
    """
    deadline = time.monotonic() + _READ_BACK_TIMEOUT_S
    while True:
        marks, states = _read_existing_once(config, owned, deadline)
        if not settle:
            return states
        time.sleep(_SETTLE_CHECK_S)
        if _watermarks(config, owned) == marks:
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kafka partitions {owned} of {config.topic} kept growing while this attempt "
                               "read them back: another writer is still active")
        LOGGER.warning(f"Kafka partitions {owned} of {config.topic} grew while being read back: reading again")


def _watermarks(config: _TaskConfig, owned: list[int]) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(config.settings.consumer_config(
        group_id=f"fink-publish-readback-{uuid.uuid4().hex}", enable_auto_commit=False))
    try:
        return {k: consumer.get_watermark_offsets(TopicPartition(config.topic, k), timeout=_READ_BACK_TIMEOUT_S,
                                                  cached=False)[1] for k in owned}
    finally:
        consumer.close()


def _read_existing_once(config: _TaskConfig, owned: list[int],
                        deadline: float) -> tuple[dict[int, int], dict[int, _PartitionState]]:
    """One read-back: (high watermarks queried before reading, partition states)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    consumer = Consumer(
        config.settings.consumer_config(
            group_id=f"fink-publish-readback-{uuid.uuid4().hex}",  # assign() only, never committed
            enable_auto_commit=False,
            enable_partition_eof=True,
            fetch_wait_max_ms=10,
        )
    )
    states = {k: _PartitionState(np.empty(0, np.int64), 0) for k in owned}
    marks: dict[int, int] = {}
    try:
        to_read = []
        for k in owned:
            _, high = consumer.get_watermark_offsets(
                TopicPartition(config.topic, k), timeout=_READ_BACK_TIMEOUT_S, cached=False
            )
            marks[k] = high
            if high > 0:
                to_read.append(k)
        if not to_read:
            return marks, states
        consumer.assign([TopicPartition(config.topic, k, OFFSET_BEGINNING) for k in to_read])
        keys: dict[int, list[bytes]] = {k: [] for k in to_read}
        first: dict[int, int] = {}
        last: dict[int, int] = {k: -1 for k in to_read}
        ends: dict[int, int] = {}
        while len(ends) < len(to_read):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"could not read back Kafka partitions {sorted(set(to_read) - set(ends))} of "
                    f"{config.topic} within {_READ_BACK_TIMEOUT_S:.0f} s"
                )
            for msg in consumer.consume(num_messages=10_000, timeout=min(left, 1.0)):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ends[msg.partition()] = msg.offset()
                        continue
                    raise KafkaException(err)
                keys[msg.partition()].append(msg.key())
                first.setdefault(msg.partition(), msg.offset())
                last[msg.partition()] = msg.offset()
        for k in to_read:
            try:
                ids = np.array([int(key) for key in keys[k]], dtype=np.int64)
            except (TypeError, ValueError):
                raise PublicationConflict(
                    f"Kafka partition {k} of {config.topic} holds messages not keyed by an alert id: "
                    "it was not written by this publisher (publish to a new topic name)"
                ) from None
            span = ends[k] - first.get(k, ends[k])
            if len(ids) != span or (len(ids) and last[k] + 1 != ends[k]):
                raise PublicationConflict(
                    f"Kafka partition {k} of {config.topic} holds {len(ids)} messages between offsets "
                    f"{first.get(k)} and {ends[k]}: it holds records this publisher does not write "
                    "(e.g. transaction markers); publish to a new topic name"
                )
            ids.sort()
            states[k] = _PartitionState(ids, ends[k])
        return marks, states
    finally:
        consumer.close()


def _hold_back_last(parts: np.ndarray) -> np.ndarray:
    """Mask of the last row of each Kafka partition in `parts` (rows in produce order)."""
    mask = np.zeros(len(parts), dtype=bool)
    if len(parts):
        _, first_in_reversed = np.unique(parts[::-1], return_index=True)
        mask[len(parts) - 1 - first_in_reversed] = True
    return mask


class _Laps:
    """Wall and CPU seconds spent per phase of a task (in its summary, printed by the bench).
    CPU time is the worker process's, librdkafka's threads included."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, phase: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + wall - self._wall
        self.cpu[phase] = self.cpu.get(phase, 0.0) + cpu - self._cpu
        self._wall, self._cpu = wall, cpu


class _SparkPartitionPublisher:
    """Publishes the rows of one Spark partition to the Kafka partitions it owns."""

    def __init__(self, config: _TaskConfig, spark_partition: int, attempt: int, producer) -> None:
        self.config = config
        self.spark_partition = spark_partition
        self.attempt = attempt
        self.producer = producer
        self.owned_list = owned_kafka_partitions(spark_partition, config.spark_partitions, config.kafka_partitions)
        self.owned = np.array(self.owned_list, dtype=np.int64)
        self.avro_schema = json.loads(config.avro_schema_json)
        self.states = _read_existing(config, self.owned_list, settle=attempt > 0 or config.resumed)
        self.rows_routed = np.zeros(config.kafka_partitions, dtype=np.int64)
        self.class_night: dict[str, dict[str, int]] = {}
        self.produced = 0
        self.payload_bytes = 0
        # when this attempt last saw its producer hold no message: every message still
        # outstanding at a failure was produced later (a cheap bound on their age)
        self.drained_at = time.monotonic()

    @property
    def already_published(self) -> int:
        return int(sum(len(s.existing_ids) for s in self.states.values()))

    def send(self, value: bytes, key: str, partition: int, callback=None) -> None:
        """Queue one message, waiting for queue space rather than failing when it is full."""
        while True:
            try:
                if callback is None:
                    self.producer.produce(self.config.topic, value, key, partition)
                else:
                    self.producer.produce(self.config.topic, value, key, partition, on_delivery=callback)
                return
            except BufferError:  # let librdkafka deliver, then retry
                self.producer.poll(0.05)

    def route(self, batch: pa.RecordBatch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kafka partition of every row, and the rows not yet published: (ids, parts, kept)."""
        id_column = batch.column(self.config.key_column)
        if id_column.null_count:
            raise ValueError(
                f"{id_column.null_count} rows have a null {self.config.key_column!r}: every published "
                "alert needs its id (filter them out before publishing)"
            )
        ids = id_column.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        parts = kafka_partition_of(ids, self.owned)
        self.rows_routed += np.bincount(parts, minlength=self.config.kafka_partitions)
        _count_class_night(batch, self.config, self.class_night)
        keep = np.ones(len(ids), dtype=bool)
        for k in np.unique(parts).tolist():
            existing = self.states[k].existing_ids
            if len(existing):
                rows = parts == k
                keep[rows] = ~np.isin(ids[rows], existing)
        return ids, parts, np.flatnonzero(keep)

    def encode(self, batch: pa.RecordBatch, kept: np.ndarray) -> pa.LargeBinaryArray:
        to_encode = batch if len(kept) == batch.num_rows else batch.take(pa.array(kept))
        values = encode_batch(to_encode, self.avro_schema)
        self.payload_bytes += values.nbytes
        return values

    def produce(self, values: pa.LargeBinaryArray, ids: np.ndarray, parts: np.ndarray, limit: int | None) -> None:
        """Queue the encoded rows (`ids`, `parts` of the same rows), holding back the last row
        of each partition until the next batch or the end; at most `limit` rows (test hook)."""
        if not len(self.producer):  # one C call per batch
            self.drained_at = time.monotonic()
        value_list = values.to_pylist()
        key_list = pc.cast(pa.array(ids, pa.int64()), pa.string()).to_pylist()  # C, not str() per row
        part_list = parts.tolist()
        held_mask = _hold_back_last(parts)
        held = np.flatnonzero(held_mask).tolist()
        held_back = [(value_list[i], key_list[i], part_list[i]) for i in held]
        for i in reversed(held):  # a few list deletions instead of copying every value
            del value_list[i], key_list[i], part_list[i]
        # the previous batch's held-back message of a partition goes before this batch's rows
        for k in np.unique(parts).tolist():  # every partition of the batch, held-back rows included
            state = self.states[k]
            if state.pending is not None:
                self.send(state.pending[0], state.pending[1], k)
                state.sent += 1
                self.produced += 1
                state.pending = None
        if limit is not None:
            keep = max(0, limit - self.produced)
            value_list, key_list, part_list = value_list[:keep], key_list[:keep], part_list[:keep]
        topic, produce = self.config.topic, self.producer.produce
        i, n = 0, len(value_list)
        while i < n:
            try:
                while i < n:  # the hot loop: one C call per message
                    produce(topic, value_list[i], key_list[i], part_list[i])
                    i += 1
            except BufferError:  # queue full: let librdkafka deliver, then go on
                self.producer.poll(0.05)
        sent_parts = parts[~held_mask][:n]
        for k, count in enumerate(np.bincount(sent_parts, minlength=self.config.kafka_partitions).tolist()):
            if count:
                self.states[k].sent += count
        self.produced += n
        if limit is not None and self.produced >= limit:
            return
        for value, key, k in held_back:
            self.states[k].pending = (value, key)

    def finish(self) -> ProgressRecord:
        """Deliver everything, then each partition's last message alone; check the offsets."""
        topic = self.config.topic
        _flush(self.producer)
        for k in self.owned_list:
            state = self.states[k]
            if state.pending is None:
                continue
            state.last_offset = -2

            def delivered(err, msg, state=state):
                state.last_offset = -3 if err is not None else msg.offset()

            self.send(state.pending[0], state.pending[1], k, delivered)
            state.sent += 1
            self.produced += 1
            state.pending = None
        _flush(self.producer)
        partitions: dict[int, dict[str, int]] = {}
        for k in self.owned_list:
            state = self.states[k]
            expected_end = state.end_offset + state.sent
            if state.sent and state.last_offset != expected_end - 1:
                raise PublicationConflict(
                    f"the last message of Kafka partition {k} of {topic} landed at offset "
                    f"{state.last_offset}, expected {expected_end - 1}: messages were lost or "
                    "another writer published to the partition concurrently"
                )
            total = len(state.existing_ids) + state.sent
            if total != self.rows_routed[k]:
                raise PublicationConflict(
                    f"Kafka partition {k} of {topic} holds {total} alerts but Spark partition "
                    f"{self.spark_partition} routes {int(self.rows_routed[k])} rows to it: the rows "
                    "changed since an earlier attempt published them (is the selection deterministic?)"
                )
            if total:
                partitions[k] = {"count": total, "last_offset": expected_end - 1}
        return ProgressRecord(
            spark_partition=self.spark_partition,
            attempt=self.attempt,
            produced=sum(p["count"] for p in partitions.values()),
            request_id=self.config.request_id,
            partitions=partitions,
            class_night=self.class_night,
            bytes=self.payload_bytes,
        )


def _publish_task(batches: Iterator[pa.RecordBatch], config: _TaskConfig) -> Iterator[pa.RecordBatch]:
    """Executor side: publish the rows of one Spark partition that its Kafka partitions lack."""
    from pyspark import TaskContext

    laps = _Laps()
    started = time.monotonic()
    context = TaskContext.get()
    spark_partition, attempt = context.partitionId(), context.attemptNumber()
    options = config.options
    summary: dict[str, Any] = {"spark_partition": spark_partition, "attempt": attempt, "skipped": False,
                               "produced": 0, "already_published": 0, "bytes": 0, "rows": 0}
    if spark_partition >= config.spark_partitions:
        raise RuntimeError(
            f"Spark partition {spark_partition} exists although the driver planned "
            f"{config.spark_partitions}: the DataFrame's partitioning changed between planning and running"
        )
    if spark_partition in config.completed or (
        attempt > 0 and spark_partition in _committed_partitions(config.settings, config.topic)
    ):
        # An earlier run, or the attempt that failed just after its progress record, did it all.
        summary["skipped"] = True
        yield pa.RecordBatch.from_pydict({"summary": [json.dumps(summary)]})
        return

    limit = None  # test hooks: fail after producing this many messages
    if attempt == 0 and options.fail_first_attempt_after is not None:
        limit = options.fail_first_attempt_after
    if spark_partition in options.fail_spark_partitions:
        limit = options.fail_spark_partitions_after
    producer = _worker_producer(config)
    publisher = None
    try:
        publisher = _SparkPartitionPublisher(config, spark_partition, attempt, producer)
        summary["already_published"] = publisher.already_published
        laps.lap("read_back")
        if config.arrow_content is not None:
            selection = config.arrow_content.collect(batches)  # archive locations and Spark's columns
            laps.lap("select")
            batches = config.arrow_content.batches(selection)
        for batch in batches:
            laps.lap("input")
            summary["rows"] += batch.num_rows
            if batch.num_rows == 0:
                continue
            ids, parts, kept = publisher.route(batch)
            laps.lap("route")
            if len(kept) == 0:
                continue
            values = publisher.encode(batch, kept)
            laps.lap("encode")
            if attempt == 0 and options.fail_first_attempt_in_flight_after is not None:
                _fail_with_messages_in_flight(publisher, values, ids[kept], parts[kept], options)
            publisher.produce(values, ids[kept], parts[kept], limit)
            laps.lap("produce")
            if limit is not None and publisher.produced >= limit:
                break
        laps.lap("input")
        if limit is not None:
            producer.flush(30)  # make the partial output really reach the broker
            raise RuntimeError(f"injected failure in Spark partition {spark_partition} "
                               f"(attempt {attempt}) after {publisher.produced} messages")
        progress = publisher.finish()
        laps.lap("flush")
        _write_progress(producer, config.topic, progress)
        laps.lap("commit")
    except BaseException as exc:
        # Nothing of this attempt may land after its retry has read the partitions back, and
        # Spark schedules the retry only once this attempt has reported its failure.
        _retire_worker_producer(publisher.drained_at if publisher is not None else started, exc)
        raise
    if attempt == 0 and options.fail_first_attempt_after_commit:
        raise RuntimeError(f"injected failure in Spark partition {spark_partition} after its commit")
    summary.update(produced=publisher.produced, bytes=publisher.payload_bytes,
                   seconds={k: round(v, 4) for k, v in laps.seconds.items()},
                   cpu={k: round(v, 4) for k, v in laps.cpu.items()})
    yield pa.RecordBatch.from_pydict({"summary": [json.dumps(summary)]})


# The idempotent producer of this Python worker, reused by its later tasks (Spark reuses
# workers): a new producer waits ~0.5 s for its producer id before sending anything, which a
# task publishing a few seconds of rows would otherwise pay at its end (measured on the
# embedded broker: 20,000 light alerts took 1.1 s alone, as long as 40,000 with a warm one).
# Dropped after any failed attempt, on a fatal producer error and when the configuration changes.
@dataclass
class _CachedProducer:
    key: str  # digest of the producer settings it was made with
    producer: Any = None
    fatal: bool = False  # set by this producer's own error callback: a dropped one's late errors don't count


_WORKER_PRODUCER: _CachedProducer | None = None


def _worker_producer(config: _TaskConfig):
    from confluent_kafka import Producer

    global _WORKER_PRODUCER
    settings = producer_config(config)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    if _WORKER_PRODUCER is None or _WORKER_PRODUCER.key != key or _WORKER_PRODUCER.fatal:
        _drop_worker_producer()
        cached = _CachedProducer(key)
        cached_ref = weakref.ref(cached)  # no cycle: a dropped producer is destroyed at once

        def on_error(err) -> None:  # a fatal error (e.g. the broker forgot our producer id)
            entry = cached_ref()
            if err.fatal() and entry is not None:
                entry.fatal = True

        cached.producer = Producer({**settings, "error_cb": on_error})
        _WORKER_PRODUCER = cached
    return _WORKER_PRODUCER.producer


def _drop_worker_producer() -> None:
    """Replace the cached producer (settings changed or fatal error; it holds nothing: the
    task that used it last flushed it, or its failure retired it)."""
    global _WORKER_PRODUCER
    cached, _WORKER_PRODUCER = _WORKER_PRODUCER, None
    if cached is None:
        return
    try:
        cached.producer.flush(5)
    except Exception:  # a fatal producer: nothing left to deliver anyway
        pass


class UnsettledAttempt(RuntimeError):
    """A failed publishing attempt could not make sure that none of its messages lands later."""


def _retire_worker_producer(drained_at: float, failure: BaseException) -> None:
    """After a failed attempt: settle every message it handed to its producer, then destroy it.

    Nothing is purged: a purged in-flight message is only forgotten by the producer, its
    request still reaches the broker, and a purged queued message may already have been sent
    once (retry queue). Instead the producer delivers everything, retrying with its idempotent
    sequence numbers (a resent copy lands at most once) until every message is acknowledged
    or has failed. Only then is the producer destroyed and the failure reported, so the retry
    (which Spark schedules after the report) reads back everything this attempt wrote. A
    failure can only be trusted as "not written" if no message can have hit the message
    timeout (an unknown fate): the oldest outstanding message was produced after `drained_at`
    (when the producer was last seen empty); past that bound, raise `UnsettledAttempt`.
    """
    global _WORKER_PRODUCER
    cached, _WORKER_PRODUCER = _WORKER_PRODUCER, None
    if cached is None:
        return
    producer, cached.producer = cached.producer, None
    remaining = producer.flush(_SETTLE_TIMEOUT_S)
    if remaining:  # librdkafka did not give up on them: forget them and close
        producer.purge(in_queue=True, in_flight=True)
        producer.flush(1)
    producer.close()
    del producer
    oldest = time.monotonic() - drained_at
    if remaining or oldest >= _FLUSH_TIMEOUT_S:
        raise UnsettledAttempt(
            f"the failed publishing attempt could not settle its messages ({remaining} still "
            f"outstanding; some were up to {oldest:.0f} s old, and those older than the "
            f"{_FLUSH_TIMEOUT_S:.0f} s message timeout have an unknown fate): some may still land; "
            f"check the topic before re-running (attempt failed with {type(failure).__name__}: {failure})"
        ) from failure


def _flush(producer) -> None:
    from confluent_kafka import KafkaException

    remaining = producer.flush(_FLUSH_TIMEOUT_S)
    if remaining:
        raise KafkaException(f"{remaining} messages were not delivered within {_FLUSH_TIMEOUT_S:.0f} s")


def _fail_with_messages_in_flight(publisher: _SparkPartitionPublisher, values: pa.LargeBinaryArray,
                                  ids: np.ndarray, parts: np.ndarray, options: PublishOptions) -> None:
    """Test hook (`fail_first_attempt_in_flight_after`): deliver the first rows, wait at the
    test's gate, send the others and die while they are in flight."""
    import pathlib

    first = options.fail_first_attempt_in_flight_after
    publisher.produce(values.slice(0, first), ids[:first], parts[:first], None)
    publisher.producer.flush(30)
    gate = pathlib.Path(options.test_gate_dir or ".")
    (gate / f"reached-{publisher.spark_partition}").touch()
    deadline = time.monotonic() + 120
    while not (gate / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    publisher.produce(values.slice(first), ids[first:], parts[first:], None)
    publisher.producer.poll(0.2)  # past linger.ms: the messages leave in produce requests
    raise RuntimeError(f"injected failure in Spark partition {publisher.spark_partition} with "
                       f"{len(publisher.producer)} messages in flight")


def _fail_after_flush(producer, message: str) -> None:
    """Test hook: make the partial output really reach the broker, then fail the attempt."""
    producer.flush(30)
    raise RuntimeError(message)


def _write_progress(producer, topic: str, progress: ProgressRecord) -> None:
    """Deliver the Spark partition's progress record (alone in its batch: exact watermarks)."""
    outcome: dict[str, Any] = {}

    def delivered(err, msg):
        outcome["error"] = err

    producer.produce(status_topic(topic), key=b"progress", value=progress.model_dump_json().encode(),
                     partition=0, on_delivery=delivered)
    _flush(producer)
    if outcome.get("error") is not None or "error" not in outcome:
        raise RuntimeError(f"progress record of Spark partition {progress.spark_partition} not "
                           f"delivered: {outcome.get('error')}")


def _committed_partitions(settings: KafkaSettings, topic: str) -> frozenset[int]:
    return frozenset(read_status(settings, topic, timeout_s=30).completed_spark_partitions)


def _count_class_night(batch: pa.RecordBatch, config: _TaskConfig, out: dict[str, dict[str, int]]) -> None:
    """Alerts per class and night of this batch (for the run's summary plot)."""
    import datetime as dt

    if config.night_column is None or config.night_column not in batch.schema.names:
        return
    times = batch.column(config.night_column).to_numpy(zero_copy_only=False).astype(np.float64)
    days = np.floor(times - config.night_epoch)
    valid = np.isfinite(days)
    day_codes = np.where(valid, days, 0).astype(np.int64)
    if config.class_column and config.class_column in batch.schema.names:
        encoded = pc.dictionary_encode(pc.fill_null(pc.cast(batch.column(config.class_column), pa.string()), "null"))
        labels = encoded.dictionary.to_pylist()
        label_codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    else:
        labels = ["all"]
        label_codes = np.zeros(batch.num_rows, dtype=np.int64)
    combined = label_codes[valid] * (1 << 32) + (day_codes[valid] + (1 << 31))
    for code, count in zip(*np.unique(combined, return_counts=True)):
        label = labels[int(code) >> 32]
        night = (dt.date(1970, 1, 1) + dt.timedelta(days=int(code & 0xFFFFFFFF) - (1 << 31))).isoformat()
        bucket = out.setdefault(label, {})
        bucket[night] = bucket.get(night, 0) + int(count)


# --------------------------------------------------------------------------------------------
# driver side


def spark_to_arrow_schema(df: "DataFrame") -> pa.Schema:
    """The Arrow schema of the batches `mapInArrow` will hand to the tasks."""
    from pyspark.sql.pandas.types import to_arrow_schema

    # nested timestamps (Rubin's diaSource.time_processed) stay timestamps, in the session's zone
    return to_arrow_schema(df.schema, timezone=df.sparkSession.conf.get("spark.sql.session.timeZone"))


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
    arrow_content: Any = None,
) -> PublishReport:
    """Publish `df` to `topic` (+ `_schema` and `_status` companions), exactly once.

    Re-running it after a failure publishes only what is missing; on a finished topic it
    publishes nothing. The rows of each Spark partition of `df` must be the same on every
    evaluation (any order), which holds for the transfer job's read-filter-project plans.
    With `arrow_content` (a `transfer.arrow_content.ArrowContent`), `df` holds archive
    locations and the tasks read the published content from the archive files.
    """
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
    spark_conf = df.sparkSession.sparkContext.getConf()
    if spark_conf.get("spark.speculation", "false").lower() == "true":
        raise ValueError("spark.speculation=true runs two attempts of a task at once, which would both "
                         "write the same Kafka partitions: disable it for publishing")

    for name, partitions in ((topic, options.partitions), (schema_topic(topic), 1), (status_topic(topic), 1)):
        ensure_topic(settings, name, partitions=partitions, retention_ms=options.retention_ms,
                     compression=options.compression, timeout_s=options.admin_timeout_s)
    previous = read_status(settings, topic, timeout_s=options.admin_timeout_s)
    _check_same_publication(previous, topic, request_id, fingerprint, options.partitions)
    if previous.state == "finished":
        log.info(f"Topic {topic} was already published completely ({previous.total} alerts): nothing to do")
        report = _report_from_status(topic, previous, avro_schema, fingerprint, time.monotonic() - started, 0)
        report.notes.append("already finished: nothing published")
        return report

    # At most one Spark partition per Kafka partition, each Kafka partition with one owner.
    spark_partitions = df.rdd.getNumPartitions()
    if spark_partitions > options.partitions:
        df = df.coalesce(options.partitions)
        spark_partitions = df.rdd.getNumPartitions()
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
                     publication_id=publication_id_for(previous))
        time_leaf = survey_time_column.rsplit(".", 1)[-1]
        config = _TaskConfig(
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
            night_epoch=survey_time_epoch,
            arrow_content=arrow_content,
            resumed=previous.state != "unknown",
        )
        log.info(f"Starting to send data to topic {topic}")
        try:
            mapped = df.mapInArrow(functools.partial(_publish_task, config=config), TASK_SUMMARY_SCHEMA)
            summaries = [json.loads(row.summary) for row in _collect_in_job_group(mapped, topic)]
            final = read_status(settings, topic, timeout_s=options.admin_timeout_s)
            report = _report_from_status(
                topic, final, avro_schema, fingerprint, time.monotonic() - started, spark_partitions
            )
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


def _collect_in_job_group(mapped: "DataFrame", topic: str) -> list:
    """Run the publishing job; if it fails, wait for its cancelled tasks to stop before
    raising, so that none of them still produces when the caller re-runs it: if they do not
    stop within `_CANCEL_TIMEOUT_S`, raise an error that says so instead of the job's."""
    sc = mapped.sparkSession.sparkContext
    keys = ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel")
    saved = {key: sc.getLocalProperty(key) for key in keys}
    group = f"fink-publish-{topic}-{uuid.uuid4().hex[:8]}"
    sc.setJobGroup(group, f"publish {topic}", interruptOnCancel=True)
    try:
        return mapped.collect()
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
    import io

    import fastavro
    from confluent_kafka import Producer

    buffer = io.BytesIO()
    parsed = fastavro.parse_schema(SCHEMA_MESSAGE_SCHEMA)
    fastavro.schemaless_writer(buffer, parsed, {"schema": f"new_schema_{time.time()}.avsc"})
    key = schema_json(avro_schema).encode()
    # Not idempotent: copies are identical, and an idempotent producer's start costs ~0.5 s.
    producer = Producer({**settings.librdkafka_config(), "linger.ms": 5, "acks": "all",
                         "allow.auto.create.topics": False})
    for _ in range(copies):
        producer.produce(schema_topic(topic), key=key, value=buffer.getvalue(), partition=0)
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
