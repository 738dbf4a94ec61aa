"""Reading a transfer topic into a table: batch decoding, exact resume, completion from status.

The consumer assigns partitions explicitly (no group join, which is slow on the embedded
broker), starts each at the offset the sink says comes next, decodes whole batches into Arrow,
and commits data and offsets together through the sink; the Kafka group offsets follow each
table commit (informational: the table is the source of truth). It knows it is done from the
job's `<topic>_status` end record (final offset per partition), not from watermarks or
time-outs; time-outs are only the fallback for topics published without a status topic.
Messages that do not decode go to a quarantine file with their partition and offset.

The table holds one publication (topic + publication id of the status start record): the
consumer claims it before resuming, and stops with `PublicationMismatch` when the table holds
another one or when the topic is published again while it reads (see `sinks`).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from fink_pipeline.avro import arrow_schema_for_avro
from fink_pipeline.consumer.batches import (  # noqa: F401 (DECODE_SLICE_BYTES, read_quarantine: API)
    DECODE_SLICE_BYTES,
    DecodedBatch,
    FetchedBatch,
    TableWriter,
    decode_in_slices,
    fetch_batch,
    quarantine,
    read_quarantine,
)
from fink_pipeline.consumer.sinks import Publication, PublicationMismatch, Sink
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import TransferStatus, read_records, read_status

LOGGER = logging.getLogger("fink_pipeline.consumer")
# librdkafka's own log lines (connection retries are logged as errors, several per second)
# go through this logger, so that a command can keep them out of the user's terminal.
LIBRDKAFKA_LOGGER = logging.getLogger("fink_pipeline.librdkafka")

# A batch closes at this many message bytes even below -batchsize: bounds memory for the
# full packet (55 KB/alert) while keeping light batches large (per-alert write cost falls
# with batch size: every batch writes one file per partition value).
DEFAULT_MAX_BATCH_BYTES = 32 * 1024 * 1024
# librdkafka fetch sizing: fetches of a few MB and a prefetch queue of one batch (32 MB), which
# fills while the previous batch is decoded and written. Measured on the embedded broker, one
# consumer: a 16 MB queue left each 32 MB batch waiting ~0.5 s for the broker (full packets
# 574 vs 870 alerts/s, light 27,300 vs 33,000) for 10-20 MB less peak RSS; 64 MB gained little
# more for 50 MB. Defaults only: the user's librdkafka options (KafkaSettings.extra) win.
FETCH_CONFIG = {
    "fetch.max.bytes": 16 * 1024 * 1024,
    "max.partition.fetch.bytes": 4 * 1024 * 1024,
    "fetch.min.bytes": 1,
    "fetch.wait.max.ms": 100,
    "queued.max.messages.kbytes": DEFAULT_MAX_BATCH_BYTES // 1024,
    "queued.min.messages": 100_000,  # librdkafka default; lower values stall fetches (measured 15x slower)
}
# The status topic is read at most this often once the consumer has caught up with the
# messages published so far (the end record can only follow the last message), and at most
# every STATUS_POLL_BUSY_SECONDS while batches come full (to see a failed or new publication).
STATUS_POLL_SECONDS = 1.0
STATUS_POLL_BUSY_SECONDS = 5.0
# How often a consumer started before the publication looks for its topics.
TOPIC_WAIT_POLL_SECONDS = 0.5


# After this long without a message, the consumer asks the broker whether its topic still
# exists (a broker restarted on memory storage, or a topic deleted, would otherwise leave it
# waiting forever); a broker that does not answer (paused, unreachable) is waited for.
TOPIC_CHECK_AFTER_S = 5.0


class SchemaNotFound(RuntimeError):
    """The `<topic>_schema` companion topic had no schema within the time-out."""


class TopicGone(RuntimeError):
    """The topic being consumed no longer exists on the broker."""


# Phases of a consumer run, in the order of a batch (see PhaseClock).
PHASES = ("fetch", "decode", "write", "status", "other")


class PhaseClock:
    """Wall and CPU seconds per phase, from laps: each `lap(phase)` charges the time since the
    previous lap to `phase`. CPU is the process's (`time.process_time`): it includes the helper
    threads a phase starts (polars, delta-rs) and librdkafka's background fetching, which is
    charged to whichever phase runs meanwhile."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(PHASES, 0.0)
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self._wall_mark, self._cpu_mark = time.monotonic(), time.process_time()

    def lap(self, phase: str) -> None:
        wall, cpu = time.monotonic(), time.process_time()
        self.wall[phase] += wall - self._wall_mark
        self.cpu[phase] += cpu - self._cpu_mark
        self._wall_mark, self._cpu_mark = wall, cpu


@dataclass
class ConsumeReport:
    """What one consumer run did; `phase_wall_seconds` and `phase_cpu_seconds` split the run
    into PHASES: fetch (librdkafka consume, values copied out), decode (Avro -> Arrow), write
    (the sink: partition split, files, commit with offsets; with overlapped writes, only the
    wait for the writer thread, whose CPU goes to the phases it overlaps), status (status topic
    reads) and other (schema, claim and resume before the loop, group offsets, close)."""

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
    quarantine_files: list[str] = field(default_factory=list)
    phase_wall_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    phase_cpu_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    @property
    def alerts_per_second(self) -> float:
        return self.consumed / self.seconds if self.seconds > 0 else 0.0


# What exactly-once reading relies on: user options cannot change these (offsets come from the
# table, and aborted transactions of the publisher must stay invisible).
REQUIRED_CONSUMER_CONFIG = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "auto.offset.reset": "earliest",
    "isolation.level": "read_committed",
    "allow.auto.create.topics": False,
}


def exact_consumer_config(settings: KafkaSettings, group_id: str, extra: dict | None = None) -> dict:
    """The librdkafka configuration of `kafka_consumer`, in increasing precedence: connection,
    FETCH_CONFIG defaults, the user's options (`settings.extra`, from the credentials file or
    the environment), `extra`, then REQUIRED_CONSUMER_CONFIG (a user value for one of those is
    ignored with a warning)."""
    user = {**settings.extra, **(extra or {})}
    ignored = sorted(k for k in user if k in REQUIRED_CONSUMER_CONFIG
                     and str(user[k]).lower() != str(REQUIRED_CONSUMER_CONFIG[k]).lower())
    if ignored:
        LOGGER.warning(f"Kafka options {ignored} ignored: the consumer needs "
                       + ", ".join(f"{k}={REQUIRED_CONSUMER_CONFIG[k]}" for k in ignored) + " to stay exact")
    return {
        **settings.librdkafka_config(),
        **FETCH_CONFIG,
        **user,
        "group.id": group_id,
        **REQUIRED_CONSUMER_CONFIG,
        "logger": LIBRDKAFKA_LOGGER,
    }


def kafka_consumer(settings: KafkaSettings, group_id: str, extra: dict | None = None):
    """A confluent-kafka consumer for `assign()` use: manual commits, read_committed."""
    from confluent_kafka import Consumer

    return Consumer(exact_consumer_config(settings, group_id, extra))


def _wait_for_topic(consumer, name: str, deadline: float, on_wait: Callable[[str], None] | None,
                    waiting_for: str) -> int | None:
    """Partitions of topic `name` once it exists, looked for until `deadline` (monotonic); None
    when it still does not exist then. `on_wait` gets one line the first time it is missing."""
    from fink_pipeline.kafka.topics import partitions_in_metadata

    told = False
    while True:
        count = partitions_in_metadata(consumer, name, 10)
        if count or time.monotonic() >= deadline:
            return count or None
        if not told and on_wait is not None:
            on_wait(waiting_for)
            told = True
        time.sleep(min(TOPIC_WAIT_POLL_SECONDS, max(0.0, deadline - time.monotonic())))


def fetch_schema(settings: KafkaSettings, topic: str, timeout_s: float = 30.0,
                 on_wait: Callable[[str], None] | None = None) -> dict:
    """Read the Avro schema of `topic` from `<topic>_schema` (key = schema JSON), without
    committing. A consumer may start with the transfer job, before the job creates its topics:
    the schema topic is waited for up to `timeout_s` (`on_wait` gets one line saying so), then
    its first message for at least 5 s more."""
    from confluent_kafka import TopicPartition

    consumer = kafka_consumer(settings, f"fink-pipeline-schema-{topic}")
    try:
        deadline = time.monotonic() + timeout_s
        name = f"{topic}_schema"
        count = _wait_for_topic(consumer, name, deadline, on_wait, (
            f"{topic}: waiting up to {timeout_s:.0f} s for the publication to start (no {name} on "
            f"{settings.bootstrap_servers} yet)"))
        if count is None:
            raise SchemaNotFound(
                f"the publication of {topic} did not start within {timeout_s:.0f} s: no schema topic {name} on "
                f"{settings.bootstrap_servers}; check the topic name (tab `Get your data` of the portal) and that "
                "the transfer job has started (-maxtimeout waits longer)"
            )
        consumer.assign([TopicPartition(name, p, 0) for p in range(count)])
        deadline = max(deadline, time.monotonic() + 5.0)  # the job writes the schema right after creating it
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() or not msg.key():
                continue
            return json.loads(msg.key())
        raise SchemaNotFound(f"No schema found in {topic}_schema within {timeout_s:.0f} s -- wait a few seconds and relaunch")
    finally:
        consumer.close()


def topic_partitions(settings: KafkaSettings, topic: str, wait_s: float = 0.0) -> list[int]:
    """Partition ids of `topic`, waited for up to `wait_s` (the job creates it with its schema
    topic); error naming the topic when it does not exist."""
    from fink_pipeline.kafka.topics import partition_count

    deadline = time.monotonic() + wait_s
    while not (count := partition_count(settings, topic)) and time.monotonic() < deadline:
        time.sleep(TOPIC_WAIT_POLL_SECONDS)
    if not count:
        raise RuntimeError(f"topic {topic} does not exist on {settings.bootstrap_servers}: check -topic")
    return list(range(count))  # Kafka numbers a topic's partitions 0 .. count - 1


def read_publication_status(settings: KafkaSettings, topic: str, wait_s: float) -> TransferStatus:
    """The topic's status, once it names the publication: a status topic without its start
    record yet (the publisher writes the schema first) is read again for up to `wait_s`
    seconds, so that a download started at that moment does not take the publication for one
    without status. Topics without a status topic are returned at once (state "unknown")."""
    deadline = time.monotonic() + wait_s
    while True:
        records = read_records(settings, topic)  # None: no status topic (one read tells both)
        status = TransferStatus(topic=topic)
        for record in records or []:
            status.apply(record)
        if records is None or status.state != "unknown" or time.monotonic() >= deadline:
            return status
        time.sleep(STATUS_POLL_SECONDS)


def publication_of(status: TransferStatus) -> Publication:
    """The publication a status describes (no id for a topic published without status)."""
    return Publication(status.topic, status.publication_id)


def check_same_publication(status: TransferStatus, claimed: Publication, location: str) -> None:
    """Raise when the status now describes another publication than the one being read."""
    if status.state == "unknown" or status.publication_id == claimed.publication_id:
        return
    raise PublicationMismatch(
        f"{status.topic} was published again while {location} was being downloaded (publication id "
        f"{claimed.publication_id or 'none'}, now {status.publication_id or 'none'}): stopped; the table keeps the "
        "batches of the earlier publication, so download the new one into a new output folder "
        "(fink_datatransfer: another -outdir, or --restart_from_beginning)")


def partition_done(status: TransferStatus, partition: int, next_offset: int) -> bool:
    """True when the end record says nothing of `partition` is left at or after `next_offset`."""
    return status.state == "finished" and messages_left(status, partition, next_offset) == 0


def messages_left(status: TransferStatus, partition: int, next_offset: int) -> int:
    """How many messages `partition` holds at or after `next_offset`, by the end record of a
    finished publication (offsets are dense: the data topic holds data messages only)."""
    final = status.final_offsets.get(partition)
    return 0 if final is None or final.count == 0 else max(0, final.last_offset + 1 - next_offset)


def consume_topic(
    settings: KafkaSettings,
    topic: str,
    sink: Sink,
    *,
    group_id: str,
    partitions: Sequence[int] | None = None,
    batch_size: int = 50_000,
    max_timeout: float = 10.0,
    limit: int | None = None,
    quarantine_dir: str | Path | None = None,
    progress: Callable[[int, TransferStatus], None] | None = None,
    avro_schema: dict | None = None,
    commit_group_offsets: bool = True,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    log: logging.Logger | None = None,
    replace_other_publication: bool = False,
    wait_for_topic_s: float | None = None,
    stop: "threading.Event | None" = None,
    overlap_writes: bool = True,
) -> ConsumeReport:
    """Consume `topic` (all or the given partitions) into `sink`, exactly once, until done.

    Done means: every partition reached the final offset of the `<topic>_status` end record,
    or the job failed (report.state == "failed"), or `limit` messages were read, or -- only for
    topics without a status -- nothing arrived for `max_timeout` seconds. `progress` is called
    after each committed batch with the number of messages and the latest status.

    A sink holding another publication raises PublicationMismatch, unless
    `replace_other_publication` (a Delta table owned by the caller alone): its rows are then
    deleted and the table restarts with the topic's current publication.

    Started before the publication, it waits up to `wait_for_topic_s` (default: `max_timeout`,
    at least 5 s) for the topic, its schema and start record, then reads messages as they come.
    `stop` (an event) ends the run between batches, the table exact (`consumer.follow`). With
    `overlap_writes`, a batch is written in a background thread while the next one is fetched
    and decoded (`batches.TableWriter`; "write" is then the wait for it).
    """
    from confluent_kafka import TopicPartition

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    log = log or LOGGER
    started = time.monotonic()
    clock = PhaseClock()
    report = ConsumeReport(topic=topic, phase_wall_seconds=clock.wall, phase_cpu_seconds=clock.cpu)
    wait_s = max(max_timeout, 5.0) if wait_for_topic_s is None else wait_for_topic_s
    avro_schema = avro_schema or fetch_schema(settings, topic, timeout_s=wait_s, on_wait=log.info)
    partitions = list(partitions) if partitions is not None else topic_partitions(settings, topic, wait_s)
    clock.lap("other")
    status = read_publication_status(settings, topic, wait_s=max_timeout)
    clock.lap("status")
    publication = publication_of(status)
    next_offsets = _claim(sink, publication, avro_schema, partitions, replace_other_publication, log)
    last_status_read = time.monotonic()
    _note(report, status)
    active = [p for p in partitions if not partition_done(status, p, next_offsets[p])]
    # offsets after the batches handed to the writer (next_offsets: after those committed)
    planned, fetched, writer, consumer = dict(next_offsets), 0, TableWriter(sink, overlap_writes), None
    try:
        if active:
            consumer = kafka_consumer(settings, group_id)
            consumer.assign([TopicPartition(topic, p, next_offsets[p]) for p in active])
        last_message_at = last_topic_check = time.monotonic()
        while active and status.state != "failed" and not (stop is not None and stop.is_set()):
            want = _messages_wanted(batch_size if limit is None else min(batch_size, limit - fetched),
                                    status, active, planned)
            if want <= 0:
                break
            messages, topic_unknown = fetch_batch(consumer, want, max_batch_bytes, log, topic)
            clock.lap("fetch")
            got_messages = bool(messages)
            # a batch closed before it was full: every message published so far is read
            caught_up = len(messages) < want and messages.nbytes < max_batch_bytes
            now = time.monotonic()
            if not got_messages and (topic_unknown or now - last_message_at > TOPIC_CHECK_AFTER_S) \
                    and now - last_topic_check > TOPIC_CHECK_AFTER_S:
                last_topic_check = now
                _check_topic_exists(consumer, topic, settings)
            if got_messages:
                last_message_at = now
                fetched += len(messages)
                decoded = _decode_batch(messages, avro_schema, planned, report, quarantine_dir, log)
                messages = None  # decoded: the raw values are no longer needed while writing
                clock.lap("decode")
                planned.update(decoded.next_offsets)
                writer.submit(decoded, functools.partial(
                    _written, decoded, next_offsets, report, consumer if commit_group_offsets else None,
                    progress, status, log), clock)
                clock.lap("other")
            since_status = now - last_status_read
            if status.state in ("running", "unknown") and since_status > STATUS_POLL_SECONDS \
                    and (caught_up or since_status > STATUS_POLL_BUSY_SECONDS):
                status = read_status(settings, topic)
                last_status_read = time.monotonic()
                clock.lap("status")
                check_same_publication(status, publication, sink.location)
                _note(report, status)
                if progress is not None and status.state != "running":
                    progress(0, status)
            finished_now = [p for p in active if partition_done(status, p, planned[p])]
            if finished_now:
                consumer.incremental_unassign([TopicPartition(topic, p) for p in finished_now])
                active = [p for p in active if p not in finished_now]
            if status.state == "unknown" and not got_messages and now - last_message_at > max_timeout:
                log.info(f"no status for {topic} and no message for {max_timeout:.0f} s: stopping")
                break
        writer.wait(clock)
        if status.state == "failed":
            log.error(f"the publishing job of {topic} failed: {status.error}")
    finally:
        writer.close(log)
        if consumer is not None:
            consumer.close()
        sink.close()
        clock.lap("other")
    report.complete = status.state == "finished" and all(partition_done(status, p, next_offsets[p]) for p in partitions)
    report.next_offsets = dict(next_offsets)
    report.seconds = time.monotonic() - started
    return report


def _messages_wanted(most: int, status: TransferStatus, active: list[int], planned: dict[int, int]) -> int:
    """How many messages the next fetch asks for (at most `most`): once the end record says how
    many are left, no more, so that the fetch returns as soon as it holds them instead of
    waiting out its deadline for more (1 s at the end of every publication followed while it
    was written)."""
    if status.state != "finished":
        return most
    return min(most, sum(messages_left(status, p, planned[p]) for p in active))


def _note(report: ConsumeReport, status: TransferStatus) -> None:
    """The publication's state (and its total, once finished) as the consumer last read it."""
    report.state = status.state
    report.expected_total = status.total if status.state == "finished" else None


def _claim(sink: Sink, publication: Publication, avro_schema: dict, partitions: list[int],
           replace_other_publication: bool, log) -> dict[int, int]:
    """Prepare `sink` for the schema, claim it for `publication` and return where each
    partition resumes (the sink's offsets: this publication's, whatever the group id)."""
    sink.prepare(arrow_schema_for_avro(avro_schema))
    if replace_other_publication and (held := sink.held_publication()) not in (None, publication):
        log.warning(f"{sink.location} holds another publication of {held.topic} (id {held.publication_id}); "
                    f"the topic was published again (id {publication.publication_id}): restarting the table")
    sink.claim(publication, replace_other=replace_other_publication)
    return sink.resume_offsets(partitions)


def _check_topic_exists(consumer, topic: str, settings: KafkaSettings) -> None:
    """Raise TopicGone when the broker answers that `topic` does not exist."""
    if not _topic_exists(consumer, topic):
        raise TopicGone(
            f"topic {topic} no longer exists on {settings.bootstrap_servers} (deleted, expired or "
            "the broker lost it): the table keeps every batch committed so far; run again once "
            "the topic is published again to resume")


def _topic_exists(consumer, topic: str) -> bool:
    """False only when the broker answers that `topic` does not exist."""
    from confluent_kafka import KafkaException

    from fink_pipeline.kafka.topics import partitions_in_metadata

    try:
        return partitions_in_metadata(consumer, topic, TOPIC_CHECK_AFTER_S) is not None
    except KafkaException:
        return True  # no answer (or another error): cannot tell, keep waiting for the broker


def _decode_batch(batch: FetchedBatch, avro_schema, planned: dict[int, int], report: ConsumeReport,
                  quarantine_dir, log) -> DecodedBatch:
    """Decode one batch, quarantine what does not decode; `planned` holds the offsets the table
    will be at once the batches before this one are written."""
    table, bad, errors = decode_in_slices(batch.values, batch.nbytes, avro_schema)
    batch_next: dict[int, int] = {}
    per_partition: dict[int, int] = {}
    for p, o in zip(batch.partitions, batch.offsets):
        batch_next[p] = o + 1  # offsets grow within a partition
        per_partition[p] = per_partition.get(p, 0) + 1
    if bad:
        path = quarantine(quarantine_dir, report.topic, batch, bad, errors, log)
        report.quarantined += len(bad)
        report.quarantine_files.append(path)
    batch.values.clear()
    return DecodedBatch(table, batch_next, {p: planned[p] for p in batch_next}, per_partition, len(batch))


def _written(decoded: DecodedBatch, next_offsets: dict[int, int], report: ConsumeReport, group_consumer,
             progress: Callable[[int, TransferStatus], None] | None, status: TransferStatus, log) -> None:
    """The batch is committed: the table's offsets and the report move past it, the Kafka group
    offsets follow (`group_consumer`, None: not committed) and `progress` hears of it."""
    next_offsets.update(decoded.next_offsets)
    for p, n in decoded.per_partition.items():
        report.per_partition[p] = report.per_partition.get(p, 0) + n
    report.consumed += decoded.messages
    report.written += decoded.table.num_rows
    report.batches += 1
    # free the memory pool's unused pages: peak memory stays that of a batch or two, whatever
    # the topic's size
    pa.default_memory_pool().release_unused()
    if group_consumer is not None:
        _commit_group(group_consumer, report.topic, next_offsets, set(decoded.next_offsets), log)
    if progress is not None:
        progress(decoded.messages, status)


def _commit_group(consumer, topic: str, next_offsets: dict[int, int], touched: set[int], log) -> None:
    """Kafka group offsets follow the table commit, for tools that read lag from the group."""
    from confluent_kafka import KafkaException, TopicPartition

    try:
        consumer.commit(offsets=[TopicPartition(topic, p, next_offsets[p]) for p in sorted(touched)], asynchronous=True)
    except KafkaException as exc:  # informational only: the table holds the real progress
        log.debug(f"group offset commit failed: {exc}")
