"""The `<topic>_status` companion topic: how the transfer job tells consumers where it stands.

Records are JSON (pydantic models below), keyed by their type (`start`, `progress`, `end`,
`failed`), on a 1-partition topic so their order is total:

* `start`    the job begins (or resumes) publishing request `request_id` to `<topic>`; its
             `publication_id` is fresh for a new publication and kept when one resumes, so a
             topic re-created under the same name (a broker that lost its data, a deleted
             topic published again) is told apart from the one a table already holds;
* `progress` one Spark partition's messages are all delivered (per Kafka partition: count and
             last offset); a task retry writes another record with a higher `attempt`;
* `end`      every message is delivered: totals and final offsets per Kafka partition. A
             consumer that has read up to these offsets has everything, whatever the broker's
             high watermark says (Tansu under-reports it for batched produce requests);
* `failed`   the job gave up, with the error message.

Reading strategy (chosen for exactness and speed, no idle-poll timeout):

* the writer sends every status record in a produce request of its own (`linger.ms=0`,
  `batch.num.messages=1`, flushed before `append` returns), which keeps the status topic's
  offsets and high watermark exact on Tansu too, and orders records totally;
* the reader `assign()`s partition 0 from the beginning (no consumer group, no join) with
  `enable.partition.eof`, and stops at the end-of-partition event reported by a fetch at its
  position. That event comes from a fetch issued after the call started, so every record
  written before the call is included; the high watermark (`get_watermark_offsets`) is only
  used to detect an empty topic and to size the reads, never to decide completeness.
  Typical cost: a few tens of milliseconds.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping, Union

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, TypeAdapter, field_validator

from fink_pipeline.kafka.clients import make_producer
from fink_pipeline.kafka.defaults import DEFAULT_RETENTION_MS
from fink_pipeline.kafka.topics import TopicMismatch, ensure_topic, partitions_in_metadata
from fink_pipeline.kafka.wire import status_topic

if TYPE_CHECKING:
    from fink_pipeline.kafka.settings import KafkaSettings

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 20_000  # keeps a failed record far below Kafka's 1 MB message limit

TransferState = Literal["unknown", "running", "finished", "failed"]


def new_publication_id() -> str:
    """A fresh publication id (written in the start record of a new publication)."""
    return uuid.uuid4().hex


def publication_id_for(previous: "TransferStatus") -> str | None:
    """The publication id of the next start record: a fresh one when the publication begins
    (no start record yet), the previous one when it resumes (None when an older writer began
    it: a resumed publication keeps its identity)."""
    if previous.state == "unknown":
        return new_publication_id()
    return previous.publication_id


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------------------------
# records


class PartitionOffsets(BaseModel):
    """Messages written to one Kafka partition: how many, and the offset of the last one
    (-1 when none)."""

    model_config = ConfigDict(frozen=True)

    count: int = Field(ge=0)
    last_offset: int = Field(ge=-1)


def _offsets(value: Mapping[Any, Any] | None) -> dict[int, PartitionOffsets]:
    """Accept {partition: PartitionOffsets | {"count", "last_offset"} | (count, last_offset)}."""
    out: dict[int, PartitionOffsets] = {}
    for key, item in (value or {}).items():
        if isinstance(item, (tuple, list)):
            item = {"count": item[0], "last_offset": item[1]}
        out[int(key)] = PartitionOffsets.model_validate(item)
    return out


# {partition: PartitionOffsets}, also accepted as {partition: {"count", "last_offset"}} or
# {partition: (count, last_offset)}
OffsetsByPartition = Annotated[
    dict[int, PartitionOffsets], BeforeValidator(lambda value: _offsets(value) if isinstance(value, Mapping) else value)
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer writers may add fields


class StartRecord(_Record):
    """The job starts (or restarts) publishing a request to `topic`."""

    type: Literal["start"] = "start"
    request_id: str
    topic: str
    partitions: int = Field(ge=1, description="Kafka partitions of the data topic")
    expected_total: int | None = Field(default=None, ge=0)
    schema_fingerprint: str
    publication_id: str | None = Field(
        default=None, description="fresh per publication, kept when it resumes (None: older writers)")
    # how the publishing job split its rows among Spark partitions (None: Spark's file splits,
    # as every writer before the row-group layout): a resume must split them the same way
    selection_layout: str | None = None
    started_at: dt.datetime = Field(default_factory=_now)


class ProgressRecord(_Record):
    """All messages of one Spark partition (one task attempt) are delivered."""

    type: Literal["progress"] = "progress"
    spark_partition: int = Field(ge=0)
    attempt: int = Field(default=0, ge=0)
    produced: int = Field(ge=0)
    partitions: OffsetsByPartition = Field(default_factory=dict)
    request_id: str | None = None
    bytes: int = Field(default=0, ge=0, description="Avro payload bytes produced")
    class_night: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="alerts per class label and night (YYYY-MM-DD)"
    )
    at: dt.datetime = Field(default_factory=_now)


class EndRecord(_Record):
    """Every message is delivered; `partitions` holds the final offsets per Kafka partition."""

    type: Literal["end"] = "end"
    state: Literal["finished"] = "finished"
    total: int = Field(ge=0)
    partitions: OffsetsByPartition = Field(default_factory=dict)
    request_id: str
    schema_fingerprint: str
    finished_at: dt.datetime = Field(default_factory=_now)


class FailedRecord(_Record):
    """The job failed; `error` is the (truncated) error message."""

    type: Literal["failed"] = "failed"
    error: str
    request_id: str | None = None
    failed_at: dt.datetime = Field(default_factory=_now)

    @field_validator("error", mode="before")
    @classmethod
    def _truncate(cls, value: Any) -> Any:
        text = str(value)
        return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


StatusRecord = Annotated[
    Union[StartRecord, ProgressRecord, EndRecord, FailedRecord], Field(discriminator="type")
]
_RECORD_ADAPTER: TypeAdapter[StatusRecord] = TypeAdapter(StatusRecord)


def parse_record(value: bytes | str) -> StartRecord | ProgressRecord | EndRecord | FailedRecord:
    """Decode one status message value."""
    return _RECORD_ADAPTER.validate_json(value)


# --------------------------------------------------------------------------------------------
# summary


class TransferStatus(BaseModel):
    """What the status topic says about the current run of a transfer."""

    topic: str
    state: TransferState = "unknown"
    request_id: str | None = None
    publication_id: str | None = Field(default=None, description="of the latest start record")
    schema_fingerprint: str | None = None
    selection_layout: str | None = Field(default=None, description="of the latest start record")
    partitions: int | None = None
    expected_total: int | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    total: int | None = Field(default=None, description="delivered messages (end record)")
    final_offsets: dict[int, PartitionOffsets] = Field(default_factory=dict)
    completed_spark_partitions: set[int] = Field(default_factory=set)
    produced: int = Field(default=0, description="sum over completed Spark partitions")
    error: str | None = None
    records: int = Field(default=0, description="status records read")
    ignored_records: int = Field(default=0, description="records of another request")
    _progress: dict[int, ProgressRecord] = PrivateAttr(default_factory=dict)

    def apply(self, record: StartRecord | ProgressRecord | EndRecord | FailedRecord) -> None:
        """Fold one record into the summary (records must be applied in topic order)."""
        self.records += 1
        if isinstance(record, StartRecord):
            same_run = (
                record.request_id == self.request_id
                and record.schema_fingerprint == self.schema_fingerprint
            )
            if not same_run:
                # A new request (or new content) on this topic: nothing before it counts.
                self.completed_spark_partitions = set()
                self._progress = {}
                self.produced = 0
            self.state = "running"
            self.request_id = record.request_id
            self.publication_id = record.publication_id
            self.schema_fingerprint = record.schema_fingerprint
            self.selection_layout = record.selection_layout
            self.partitions = record.partitions
            self.expected_total = record.expected_total
            self.started_at = record.started_at
            self.finished_at = None
            self.total = None
            self.final_offsets = {}
            self.error = None
            return
        if (
            record.request_id is not None
            and self.request_id is not None
            and record.request_id != self.request_id
        ):
            self.ignored_records += 1  # a late writer of a previous request
            return
        if isinstance(record, ProgressRecord):
            previous = self._progress.get(record.spark_partition)
            # A retried task reports again: the latest attempt replaces the earlier one.
            if previous is None or record.attempt >= previous.attempt:
                self._progress[record.spark_partition] = record
            self.completed_spark_partitions.add(record.spark_partition)
            self.produced = sum(p.produced for p in self._progress.values())
            if self.state == "unknown":
                self.state = "running"
        elif isinstance(record, EndRecord):
            self.state = "finished"
            self.request_id = self.request_id or record.request_id
            self.schema_fingerprint = self.schema_fingerprint or record.schema_fingerprint
            self.total = record.total
            self.final_offsets = dict(record.partitions)
            self.finished_at = record.finished_at
            self.error = None
        elif isinstance(record, FailedRecord):
            self.state = "failed"
            self.error = record.error

    @property
    def progress_by_spark_partition(self) -> dict[int, ProgressRecord]:
        """Latest progress record of every completed Spark partition."""
        return dict(self._progress)


# --------------------------------------------------------------------------------------------
# writing


class StatusWriteError(RuntimeError):
    """A status record could not be delivered."""


class StatusWriter:
    """Appends status records for data topic `topic` to `<topic>_status`.

    Each `append` is one produce request, flushed before returning (exact watermarks on any
    broker, total order on the 1-partition topic). `create=False` when the status topic exists
    already (the publishing driver ensures it with the data topic; tasks write their progress
    records through their own producer, `kafka.publish_task`).
    """

    def __init__(
        self,
        settings: "KafkaSettings",
        topic: str,
        *,
        create: bool = True,
        retention_ms: int | None = DEFAULT_RETENTION_MS,
        timeout_s: float = 10.0,
    ):
        self.settings = settings
        self.topic = topic
        self.status_topic = status_topic(topic)
        self.timeout_s = timeout_s
        if create:
            ensure_topic(
                settings, self.status_topic, partitions=1, retention_ms=retention_ms,
                compression=None, timeout_s=timeout_s,
            )
        self._producer: Producer | None = make_producer(settings, {
            "linger.ms": 0,
            "batch.num.messages": 1,  # one record per produce request: exact watermarks
            "acks": "all",
            "message.timeout.ms": max(1000, int(timeout_s * 1000)),
            "max.in.flight.requests.per.connection": 1,
        })

    def append(self, record: StartRecord | ProgressRecord | EndRecord | FailedRecord) -> int:
        """Write `record` and wait for its delivery; return its offset."""
        if self._producer is None:
            raise StatusWriteError("this StatusWriter is closed")
        outcome: dict[str, Any] = {}

        def on_delivery(err: KafkaError | None, msg: Any) -> None:
            outcome["error"] = err
            outcome["offset"] = None if err else msg.offset()

        self._producer.produce(
            self.status_topic,
            key=record.type.encode(),
            value=record.model_dump_json().encode(),
            partition=0,
            on_delivery=on_delivery,
        )
        remaining = self._producer.flush(self.timeout_s)
        if remaining or "error" not in outcome:
            raise StatusWriteError(
                f"status record {record.type!r} to {self.status_topic} not delivered within "
                f"{self.timeout_s} s"
            )
        if outcome["error"] is not None:
            raise StatusWriteError(
                f"status record {record.type!r} to {self.status_topic} failed: {outcome['error']}"
            )
        return int(outcome["offset"])

    def start(
        self,
        request_id: str,
        partitions: int,
        schema_fingerprint: str,
        expected_total: int | None = None,
        publication_id: str | None = None,
        selection_layout: str | None = None,
    ) -> int:
        """Append a StartRecord for this writer's topic (`publication_id`: a fresh
        `new_publication_id()` for a new publication, the previous start record's on resume)."""
        return self.append(
            StartRecord(
                request_id=request_id,
                topic=self.topic,
                partitions=partitions,
                expected_total=expected_total,
                schema_fingerprint=schema_fingerprint,
                publication_id=publication_id,
                selection_layout=selection_layout,
            )
        )

    def end(
        self,
        request_id: str,
        total: int,
        partitions: Mapping[int, Any],
        schema_fingerprint: str,
    ) -> int:
        """Append the EndRecord with the final offsets per Kafka partition."""
        return self.append(
            EndRecord(
                request_id=request_id,
                total=total,
                partitions=partitions,
                schema_fingerprint=schema_fingerprint,
            )
        )

    def failed(self, error: str | BaseException, request_id: str | None = None) -> int:
        """Append a FailedRecord."""
        message = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else error
        return self.append(FailedRecord(error=message, request_id=request_id))

    def close(self) -> None:
        """Flush and release the producer; idempotent."""
        if self._producer is not None:
            self._producer.flush(self.timeout_s)
            self._producer = None

    def __enter__(self) -> "StatusWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# reading


def read_records(
    settings: "KafkaSettings", topic: str, timeout_s: float = 5.0
) -> list[StartRecord | ProgressRecord | EndRecord | FailedRecord] | None:
    """Every status record of data topic `topic`, in order; None when there is no status topic.

    Raises TimeoutError when the end of the status partition cannot be reached in time.
    """
    name = status_topic(topic)
    deadline = time.monotonic() + timeout_s
    consumer = Consumer(
        settings.consumer_config(
            # Never committed and never used to join a group (assign() only): a throwaway id.
            group_id=f"fink-status-reader-{uuid.uuid4().hex}",
            enable_auto_commit=False,
            enable_partition_eof=True,
            fetch_wait_max_ms=10,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
    )
    try:
        partitions = partitions_in_metadata(consumer, name, timeout_s)
        if partitions is None:
            return None
        if partitions != 1:
            raise TopicMismatch(f"status topic {name} must have 1 partition, has {partitions}")
        tp = TopicPartition(name, 0)

        def high_watermark() -> int:
            left = max(0.1, deadline - time.monotonic())
            return consumer.get_watermark_offsets(tp, timeout=left, cached=False)[1]

        high = high_watermark()
        records: list[StartRecord | ProgressRecord | EndRecord | FailedRecord] = []
        if high <= 0:
            return records
        consumer.assign([TopicPartition(name, 0, OFFSET_BEGINNING)])
        position = 0  # next offset to read
        eof_at = -1  # offset at which the broker last reported the end of the partition
        # Done when a fetch (issued after the watermark query above, so covering every record
        # written before this call) reports the end of the partition at our position. The
        # watermark only sizes the reads: on Tansu it can be too low for batched records.
        while eof_at != position:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"read {len(records)} status records of {name} up to offset {position} "
                    f"(high watermark {high}) without reaching its end within {timeout_s} s"
                )
            # Block for the first message or event, then drain what is already queued without
            # waiting (consume() with a timeout would sit it out for a full batch).
            first = consumer.poll(timeout=min(left, 0.5))
            batch = [first] if first is not None else []
            if first is not None:
                batch.extend(consumer.consume(num_messages=10_000, timeout=0))
            for msg in batch:
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof_at = msg.offset()
                        position = max(position, eof_at)
                        continue
                    raise KafkaException(err)
                try:
                    records.append(parse_record(msg.value()))
                except ValueError as exc:  # a foreign or corrupt record: skip, say so
                    log.warning(
                        "skipping undecodable status record %s@%s: %s", name, msg.offset(), exc
                    )
                position = msg.offset() + 1
        return records
    finally:
        consumer.close()


def read_status(settings: "KafkaSettings", topic: str, timeout_s: float = 5.0) -> TransferStatus:
    """Summary of data topic `topic`'s status records: state "unknown" (no status topic or no
    record), "running", "finished" or "failed", expected totals, final offsets per Kafka
    partition and the Spark partitions already completed."""
    status = TransferStatus(topic=topic)
    for record in read_records(settings, topic, timeout_s) or []:
        status.apply(record)
    return status
