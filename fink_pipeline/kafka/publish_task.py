"""Executor side of publishing: what one Spark task does with the rows of its partition.

A task (`publish_partition`, run by `mapInArrow`) reads back what earlier attempts published
to the Kafka partitions it owns (`kafka.readback`), routes each row to one of them by its alert
id, encodes the rows it has to send as schemaless Avro, produces them through this Python
worker's idempotent producer holding back each partition's last message, then checks the
offsets and writes its progress record. A failed attempt settles every message it handed to its
producer before it reports (`_retire_worker_producer`): see `kafka.publish` for the guarantee.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.avro import encode_batch
from fink_pipeline.kafka.clients import make_producer
from fink_pipeline.kafka.faults import PublishFaults
from fink_pipeline.kafka.options import PublishOptions
from fink_pipeline.kafka.readback import PublicationConflict, read_existing
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.wire import hold_back_last, kafka_partition_of, owned_kafka_partitions, status_topic
from fink_pipeline.transfer.arrow_content import ROW_GROUP_COLUMN

if TYPE_CHECKING:
    from fink_pipeline.kafka.status import ProgressRecord

LOGGER = logging.getLogger("fink_pipeline.publish")
# The one column of the rows a task returns: its summary (JSON).
TASK_SUMMARY_SCHEMA = "summary string"
# How long a task may take to deliver; a failed attempt's settle flush is bounded by the
# message timeout (+ margin).
FLUSH_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = FLUSH_TIMEOUT_S + 10.0


@dataclass(frozen=True)
class TaskConfig:
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
    # failures injected by tests (kafka.faults); never set in production
    faults: PublishFaults | None = None


def producer_config(config: TaskConfig) -> dict[str, Any]:
    """The librdkafka configuration of a task's producer: the connection settings (SASL
    included) plus idempotence, compression and batching (`make_producer` adds no topic
    auto-creation)."""
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
        # bounds what a worker holds while the broker catches up (with 1 GiB, publishing 1M light
        # alerts peaked at 2,199 MiB of RSS for the whole command, 2,116 with 64 MiB; 16 MiB
        # with the Arrow pool released after each batch: 3 x 246 -> 3 x 207 MiB of workers, same
        # time); produce() waits while it is full
        "queue.buffering.max.kbytes": 16 * 1024,
        "message.timeout.ms": int(FLUSH_TIMEOUT_S * 1000),
    }


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

    def timed(self, items: Iterator[Any], phase: str) -> Iterator[Any]:
        """`items`, the time spent waiting for each one counted in `phase`."""
        for item in items:
            self.lap(phase)
            yield item


class SparkPartitionPublisher:
    """Publishes the rows of one Spark partition to the Kafka partitions it owns."""

    def __init__(self, config: TaskConfig, spark_partition: int, attempt: int, producer) -> None:
        self.config = config
        self.spark_partition = spark_partition
        self.attempt = attempt
        self.producer = producer
        self.owned_list = owned_kafka_partitions(spark_partition, config.spark_partitions, config.kafka_partitions)
        self.owned = np.array(self.owned_list, dtype=np.int64)
        self.avro_schema = json.loads(config.avro_schema_json)
        self.states = read_existing(config.settings, config.topic, self.owned_list, settle=attempt > 0 or config.resumed)
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
        held_mask = hold_back_last(parts)
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
        # imported here: the status module pulls in the request validation (sqlglot), which a
        # Python worker's first task would otherwise import before its first alert
        from fink_pipeline.kafka.status import ProgressRecord

        return ProgressRecord(
            spark_partition=self.spark_partition,
            attempt=self.attempt,
            produced=sum(p["count"] for p in partitions.values()),
            request_id=self.config.request_id,
            partitions=partitions,
            class_night=self.class_night,
            bytes=self.payload_bytes,
        )


def warm_worker(items: Iterator[Any]) -> Iterator[Any]:
    """A warm-up task (an RDD partition, or `mapInArrow` over Spark Connect): run in a Python
    worker, it imports this module (by unpickling this function), and with it the Arrow
    content reader, before any publishing task."""
    yield from items


def publish_row_groups(splits: Iterator[range], config: TaskConfig) -> Iterator[str]:
    """Executor side of an RDD of row group ranges (`transfer.arrow_content.RowGroupSplits`, one
    range per partition): `publish_partition` of those row groups, its summary line."""
    groups = [group for split in splits for group in split]
    batch = pa.RecordBatch.from_arrays([pa.array(groups, pa.int64())], [ROW_GROUP_COLUMN])
    for summary in publish_partition(iter([batch]), config):
        yield from summary.column(0).to_pylist()


def publish_partition(batches: Iterator[pa.RecordBatch], config: TaskConfig) -> Iterator[pa.RecordBatch]:
    """Executor side: publish the rows of one Spark partition that its Kafka partitions lack."""
    from pyspark import TaskContext

    laps = _Laps()
    started = time.monotonic()
    context = TaskContext.get()
    spark_partition, attempt = context.partitionId(), context.attemptNumber()
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

    faults = config.faults  # None in production: tests inject failures (kafka.faults)
    limit = faults.produce_limit(spark_partition, attempt) if faults else None
    producer = _worker_producer(config)
    publisher = None
    try:
        publisher = SparkPartitionPublisher(config, spark_partition, attempt, producer)
        summary["already_published"] = publisher.already_published
        laps.lap("read_back")
        content_phase = "input"
        if config.arrow_content is not None:
            # archive locations and Spark's columns, read as they arrive: waiting for Spark is
            # "input", reading the content of its rows "content"
            batches = config.arrow_content.stream(laps.timed(batches, "input"))
            content_phase = "content"
        for batch in batches:
            laps.lap(content_phase)
            summary["rows"] += batch.num_rows
            if batch.num_rows == 0:
                continue
            ids, parts, kept = publisher.route(batch)
            laps.lap("route")
            if len(kept) == 0:
                continue
            values = publisher.encode(batch, kept)
            laps.lap("encode")
            if faults:
                faults.check_in_flight(publisher, values, ids[kept], parts[kept])
            publisher.produce(values, ids[kept], parts[kept], limit)
            del values, batch
            # hand the batch's Arrow memory back to the system: the pool otherwise keeps the
            # pages of the largest batches it served, ~100 MiB per worker
            pa.default_memory_pool().release_unused()
            laps.lap("produce")
            if limit is not None and publisher.produced >= limit:
                break
        laps.lap(content_phase)
        if faults:
            faults.check_limit(producer, spark_partition, attempt, publisher.produced, limit)
        progress = publisher.finish()
        laps.lap("flush")
        _write_progress(producer, config.topic, progress)
        laps.lap("commit")
    except BaseException as exc:
        # Nothing of this attempt may land after its retry has read the partitions back, and
        # Spark schedules the retry only once this attempt has reported its failure.
        _retire_worker_producer(publisher.drained_at if publisher is not None else started, exc)
        raise
    if faults:
        faults.check_after_commit(spark_partition, attempt)
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


def _worker_producer(config: TaskConfig):
    global _WORKER_PRODUCER
    task_settings = producer_config(config)
    key = hashlib.sha256(json.dumps(task_settings, sort_keys=True, default=str).encode()).hexdigest()
    if _WORKER_PRODUCER is None or _WORKER_PRODUCER.key != key or _WORKER_PRODUCER.fatal:
        _drop_worker_producer()
        cached = _CachedProducer(key)
        cached_ref = weakref.ref(cached)  # no cycle: a dropped producer is destroyed at once

        def on_error(err) -> None:  # a fatal error (e.g. the broker forgot our producer id)
            entry = cached_ref()
            if err.fatal() and entry is not None:
                entry.fatal = True

        cached.producer = make_producer(config.settings, {**task_settings, "error_cb": on_error})
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
    remaining = producer.flush(SETTLE_TIMEOUT_S)
    if remaining:  # librdkafka did not give up on them: forget them and close
        producer.purge(in_queue=True, in_flight=True)
        producer.flush(1)
    producer.close()
    del producer
    oldest = time.monotonic() - drained_at
    if remaining or oldest >= FLUSH_TIMEOUT_S:
        raise UnsettledAttempt(
            f"the failed publishing attempt could not settle its messages ({remaining} still "
            f"outstanding; some were up to {oldest:.0f} s old, and those older than the "
            f"{FLUSH_TIMEOUT_S:.0f} s message timeout have an unknown fate): some may still land; "
            f"check the topic before re-running (attempt failed with {type(failure).__name__}: {failure})"
        ) from failure


def _flush(producer) -> None:
    from confluent_kafka import KafkaException

    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if remaining:
        raise KafkaException(f"{remaining} messages were not delivered within {FLUSH_TIMEOUT_S:.0f} s")


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
    from fink_pipeline.kafka.status import read_status

    return frozenset(read_status(settings, topic, timeout_s=30).completed_spark_partitions)


def _count_class_night(batch: pa.RecordBatch, config: TaskConfig, out: dict[str, dict[str, int]]) -> None:
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
