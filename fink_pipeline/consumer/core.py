"""Reading a transfer topic into a table: batch decoding, exact resume, completion from status.

The consumer assigns partitions explicitly (no group join, which is slow on the embedded
broker), starts each at the offset the sink says comes next, decodes whole batches into Arrow,
and commits data and offsets together through the sink. It knows it is done from the job's
`<topic>_status` end record (final offset per partition), not from watermarks or time-outs;
time-outs are only the fallback for topics published without a status topic.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from fink_pipeline.avro import decode_batch_safe
from fink_pipeline.consumer.sinks import Sink
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import TransferStatus, read_status

LOGGER = logging.getLogger("fink_pipeline.consumer")


class SchemaNotFound(RuntimeError):
    """The `<topic>_schema` companion topic had no schema within the time-out."""


@dataclass
class ConsumeReport:
    """What one consumer run did."""

    topic: str
    consumed: int = 0
    written: int = 0
    quarantined: int = 0
    batches: int = 0
    seconds: float = 0.0
    state: str = "unknown"
    expected_total: int | None = None
    complete: bool = False
    per_partition: dict[int, int] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)

    @property
    def alerts_per_second(self) -> float:
        return self.consumed / self.seconds if self.seconds > 0 else 0.0


def _consumer(settings: KafkaSettings, group_id: str, extra: dict | None = None):
    from confluent_kafka import Consumer

    return Consumer(
        {
            **settings.librdkafka_config(),
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            **(extra or {}),
        }
    )


def fetch_schema(settings: KafkaSettings, topic: str, timeout_s: float = 30.0) -> dict:
    """Read the Avro schema of `topic` from `<topic>_schema` (key = schema JSON), without committing."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(settings, f"fink-pipeline-schema-{topic}")
    try:
        metadata = consumer.list_topics(f"{topic}_schema", timeout=10)
        info = metadata.topics.get(f"{topic}_schema")
        if info is None or info.error is not None or not info.partitions:
            raise SchemaNotFound(f"no schema topic {topic}_schema: is the topic name right, and has the job started?")
        consumer.assign([TopicPartition(f"{topic}_schema", p, 0) for p in info.partitions])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            return json.loads(msg.key())
        raise SchemaNotFound(f"No schema found in {topic}_schema within {timeout_s:.0f} s -- wait a few seconds and relaunch")
    finally:
        consumer.close()


def topic_partitions(settings: KafkaSettings, topic: str) -> list[int]:
    """Partition ids of `topic` (error naming the topic when it does not exist)."""
    consumer = _consumer(settings, "fink-pipeline-metadata")
    try:
        info = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise RuntimeError(f"topic {topic} does not exist on {settings.bootstrap_servers}")
        return sorted(info.partitions)
    finally:
        consumer.close()


def consume_topic(
    settings: KafkaSettings,
    topic: str,
    sink: Sink,
    *,
    group_id: str,
    partitions: Sequence[int] | None = None,
    batch_size: int = 5000,
    max_timeout: float = 10.0,
    limit: int | None = None,
    quarantine_dir: str | Path | None = None,
    progress: Callable[[int, TransferStatus], None] | None = None,
    avro_schema: dict | None = None,
    commit_group_offsets: bool = True,
    log: logging.Logger | None = None,
) -> ConsumeReport:
    """Consume `topic` (all or the given partitions) into `sink`, exactly once, until done."""
    from confluent_kafka import KafkaError, TopicPartition

    log = log or LOGGER
    started = time.monotonic()
    report = ConsumeReport(topic=topic)
    avro_schema = avro_schema or fetch_schema(settings, topic, timeout_s=max(max_timeout, 5.0))
    partitions = list(partitions) if partitions is not None else topic_partitions(settings, topic)
    next_offsets = sink.resume_offsets(partitions)
    status = read_status(settings, topic)
    report.state, report.expected_total = status.state, status.total if status.state == "finished" else None

    def done(p: int) -> bool:
        if status.state != "finished":
            return False
        final = status.final_offsets.get(p)
        return final is None or final.count == 0 or next_offsets[p] > final.last_offset

    active = [p for p in partitions if not done(p)]
    if not active:
        report.complete = status.state == "finished"
        report.next_offsets = dict(next_offsets)
        report.seconds = time.monotonic() - started
        return report

    consumer = _consumer(settings, group_id)
    consumer.assign([TopicPartition(topic, p, next_offsets[p]) for p in active])
    last_message_at = time.monotonic()
    last_status_check = time.monotonic()
    try:
        while active:
            want = batch_size if limit is None else min(batch_size, limit - report.consumed)
            if want <= 0:
                break
            messages = consumer.consume(num_messages=want, timeout=1.0)
            good = [m for m in messages if m.error() is None]
            for m in messages:
                if m.error() is not None and m.error().code() != KafkaError._PARTITION_EOF:
                    log.warning(f"Kafka error on {topic}: {m.error()}")
            now = time.monotonic()
            if good:
                last_message_at = now
                _write_batch(good, avro_schema, sink, next_offsets, report, quarantine_dir, log)
                if commit_group_offsets:
                    _commit_group(consumer, topic, next_offsets, good, log)
                if progress:
                    progress(len(good), status)
            if now - last_status_check > 2.0 or not good:
                if status.state in ("running", "unknown") and now - last_status_check > 1.0:
                    status = read_status(settings, topic)
                    report.state = status.state
                    report.expected_total = status.total if status.state == "finished" else None
                    last_status_check = now
            if status.state == "failed":
                log.error(f"the publishing job failed: {status.error}")
                break
            finished_now = [p for p in active if done(p)]
            if finished_now:
                consumer.incremental_unassign([TopicPartition(topic, p) for p in finished_now])
                active = [p for p in active if p not in finished_now]
            if status.state == "unknown" and not good and now - last_message_at > max_timeout:
                log.info(f"no status for {topic} and no message for {max_timeout:.0f} s: stopping")
                break
    finally:
        consumer.close()
    report.complete = status.state == "finished" and all(done(p) for p in partitions)
    report.next_offsets = dict(next_offsets)
    report.seconds = time.monotonic() - started
    return report


def _write_batch(messages, avro_schema, sink: Sink, next_offsets, report: ConsumeReport, quarantine_dir, log) -> None:
    values = [m.value() for m in messages]
    table, bad, errors = decode_batch_safe(values, avro_schema)
    first_offsets: dict[int, int] = {}
    batch_next: dict[int, int] = {}
    for m in messages:
        p, o = m.partition(), m.offset()
        first_offsets.setdefault(p, o)
        batch_next[p] = max(batch_next.get(p, 0), o + 1)
        report.per_partition[p] = report.per_partition.get(p, 0) + 1
    if bad:
        _quarantine(quarantine_dir, report.topic, [messages[i] for i in bad], errors, log)
        report.quarantined += len(bad)
    sink.write(table, batch_next, first_offsets)
    next_offsets.update(batch_next)
    report.consumed += len(messages)
    report.written += table.num_rows
    report.batches += 1


def _quarantine(quarantine_dir, topic: str, messages, errors: list[str], log) -> None:
    """Keep undecodable messages with their coordinates; file names make rewrites idempotent."""
    import pyarrow.parquet as pq

    if quarantine_dir is None:
        raise RuntimeError(f"{len(messages)} undecodable messages in {topic} and no quarantine directory")
    directory = Path(quarantine_dir)
    directory.mkdir(parents=True, exist_ok=True)
    first = messages[0]
    path = directory / f"{topic}-p{first.partition()}-o{first.offset()}.parquet"
    table = pa.table(
        {
            "topic": [topic] * len(messages),
            "partition": [m.partition() for m in messages],
            "offset": [m.offset() for m in messages],
            "key": [m.key() for m in messages],
            "value": [m.value() for m in messages],
            "error": errors,
        }
    )
    pq.write_table(table, path)
    log.warning(f"{len(messages)} undecodable messages quarantined in {path}")


def _commit_group(consumer, topic: str, next_offsets: dict[int, int], messages, log) -> None:
    """Kafka group offsets follow the table commit, for tools that read lag from the group."""
    from confluent_kafka import KafkaException, TopicPartition

    touched = {m.partition() for m in messages}
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, next_offsets[p]) for p in touched], asynchronous=True)
    except KafkaException as exc:  # informational only: the table holds the real progress
        log.debug(f"group offset commit failed: {exc}")
