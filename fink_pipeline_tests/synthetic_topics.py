"""Synthetic transfer topics for consumer tests and benchmarks, published without Spark.

The alerts come from the survey's generator and are projected in Arrow the way the transfer
job projects them (light or full packet, class columns added, timestamps as strings), then
published in the wire format `fink_datatransfer` and fink-client read: schemaless Avro values
on `<topic>`, the schema as the key of `<topic>_schema` messages, and start/end records on
`<topic>_status`. The Spark publisher (`kafka.publish`) is the production path; this one
exists because consumer tests need topics of 10^4..10^6 alerts in seconds. The wire format
(companion topic names, schema message, partitioner, hold-back-last) is the publisher's own,
from `kafka.wire`.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.avro import avro_schema_from_arrow, encode_batch, schema_fingerprint, schema_json
from fink_pipeline.kafka.clients import make_producer
from fink_pipeline.kafka.defaults import DEFAULT_PARTITIONS
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import StatusWriter, publication_id_for, read_status
from fink_pipeline.kafka.topics import ensure_topic
from fink_pipeline.kafka.wire import hold_back_last, kafka_partition_of, schema_message_value, schema_topic
from fink_pipeline.surveys.base import Survey
from fink_pipeline.transfer.arrow_content import spark_timestamp_strings
from fink_pipeline.transfer.content import resolve_content

def synthetic_alerts(
    survey: Survey, n_alerts: int, packet: str = "light", seed: int = 0,
    night: dt.date = dt.date(2024, 3, 1), batch_size: int = 5000,
) -> Iterator[pa.Table]:
    """`n_alerts` generated alerts of one night, projected as `packet` (one of the survey's,
    e.g. light, medium, full), in tables of at most `batch_size` rows (memory stays bounded at
    any size)."""
    if packet not in survey.packets:
        raise ValueError(f"packet {packet!r}: choose one of {', '.join(survey.packets)}")
    plan = resolve_content(survey, [packet], computed=survey.class_columns)
    with_cutouts = any(name.startswith("cutout") for name in plan.output_names)
    for batch in survey.generate_night(night, n_alerts, seed, with_cutouts, batch_size=batch_size):
        table = pa.Table.from_batches([batch])
        if survey.classify_arrow is not None:
            for name, values in survey.classify_arrow(table).items():
                table = table.append_column(name, values)
        yield project_arrow(table, plan.columns, survey, night)


def project_arrow(table: pa.Table, columns: Iterable[tuple[str, str]], survey: Survey, night: dt.date) -> pa.Table:
    """Arrow version of the job's projection: dotted sources flattened, structs non-nullable,
    timestamps cast to strings (as Spark's `cast(... as string)`), year/month/day of the night."""
    out: dict[str, pa.ChunkedArray | pa.Array] = {}
    for source, name in columns:
        if source in ("year", "month", "day"):
            value = {"year": night.year, "month": night.month, "day": night.day}[source]
            out[name] = pa.array(np.full(table.num_rows, value, dtype=np.int32))
            continue
        parts = source.split(".")
        column = table[parts[0]]
        for part in parts[1:]:
            column = pc.struct_field(column, part)
        if pa.types.is_timestamp(column.type):
            column = spark_timestamp_strings(column.combine_chunks())
        out[name] = column
    fields = [
        pa.field(name, values.type, nullable=not pa.types.is_struct(values.type)) for name, values in out.items()
    ]
    return pa.Table.from_arrays(list(out.values()), schema=pa.schema(fields))


@dataclass
class PublishedTopic:
    """What `publish_tables` wrote."""

    topic: str
    avro_schema: dict
    total: int = 0
    per_partition: dict[int, dict[str, int]] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    seconds: float = 0.0


class TopicWriter:
    """Publishes Arrow tables to a transfer topic with its `_schema` and `_status` companions.

    `start()` creates the topics and writes the schema and the start record, `write()` sends
    tables, `end()` writes the end record with the final offsets (`finish=False` in tests that
    need a topic still "running"). Offsets are taken from delivery reports, so they are exact
    whatever the broker's watermarks say.
    """

    def __init__(self, settings: KafkaSettings, topic: str, arrow_schema: pa.Schema, *,
                 partitions: int = DEFAULT_PARTITIONS, key_column: str = "candid", keep_ids: bool = True,
                 with_status: bool = True) -> None:
        self.settings = settings
        self.topic = topic
        self.partitions = partitions
        self.key_column = key_column
        self.keep_ids = keep_ids
        self.with_status = with_status
        self.avro_schema = avro_schema_from_arrow(arrow_schema)
        self.fingerprint = schema_fingerprint(self.avro_schema)
        self.request_id = f"synthetic-{topic}"
        self.result = PublishedTopic(topic=topic, avro_schema=self.avro_schema)
        self._counts = np.zeros(partitions, dtype=np.int64)
        self._last = np.full(partitions, -1, dtype=np.int64)
        self._failed: list[str] = []
        self._producer = None
        self._status: StatusWriter | None = None
        self._started = 0.0

    def start(self) -> "TopicWriter":
        self._started = time.monotonic()
        ensure_topic(self.settings, self.topic, partitions=self.partitions)
        ensure_topic(self.settings, schema_topic(self.topic), partitions=1)
        if self.with_status:
            # as the Spark publisher: the status topic exists before the schema is published (a
            # consumer that finds the schema but no status topic takes the topic for one published
            # without status, then sees a start record appear: "published again")
            self._status = StatusWriter(self.settings, self.topic)
        self._publish_schema()
        if self.with_status:
            # as the Spark publisher: a fresh publication id, or the previous one on resume
            previous = read_status(self.settings, self.topic)
            self._status.start(self.request_id, self.partitions, self.fingerprint,
                               publication_id=publication_id_for(previous))
        self._producer = make_producer(self.settings, {
            "linger.ms": 20, "compression.type": "lz4", "batch.num.messages": 10_000,
            "queue.buffering.max.messages": 500_000, "queue.buffering.max.kbytes": 1024 * 1024,
        })
        return self

    def _publish_schema(self, copies: int = 3) -> None:
        producer = make_producer(self.settings)
        key, value = schema_json(self.avro_schema).encode(), schema_message_value()
        for _ in range(copies):
            producer.produce(schema_topic(self.topic), key=key, value=value)
        if producer.flush(30):
            raise RuntimeError(f"could not write the schema to {schema_topic(self.topic)}")

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._failed.append(str(err))
            return
        p = msg.partition()
        self._counts[p] += 1
        if msg.offset() > self._last[p]:
            self._last[p] = msg.offset()

    def write(self, table: pa.Table, last: bool = False) -> None:
        """Encode and send one table (messages spread over partitions by alert id).

        `last=True` sends the final message of each partition in a produce request of its own:
        brokers such as Tansu report the high watermark from the last record batch's base
        offset, and fink-client trusts watermarks, so this keeps them exact for comparisons.
        """
        values = encode_batch(table, self.avro_schema).to_pylist()
        ids = table[self.key_column].to_numpy()
        if last:
            held = hold_back_last(self.partition_of(ids))
            tails = np.flatnonzero(held).tolist()
            keep = ~held
            self.send_raw([v for v, k in zip(values, keep) if k], ids[keep])
            self.flush()
            for i in tails:
                self.send_raw([values[i]], ids[i:i + 1])
                self.flush()
        else:
            self.send_raw(values, ids)
        if self.keep_ids:
            self.result.ids.extend(ids.tolist())

    def partition_of(self, ids: np.ndarray) -> np.ndarray:
        """Kafka partition of each alert id (the publisher's spread, over every partition)."""
        return kafka_partition_of(ids, np.arange(self.partitions))

    def send_raw(self, values: list[bytes], ids: np.ndarray) -> None:
        """Send raw message values (e.g. garbage for quarantine tests), keyed and spread by `ids`."""
        parts = self.partition_of(ids)
        producer = self._producer
        for value, key, part in zip(values, ids.tolist(), parts.tolist()):
            while True:
                try:
                    producer.produce(self.topic, value=value, key=str(key), partition=part, on_delivery=self._on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0)

    def flush(self) -> None:
        """Wait until every message sent so far is delivered."""
        if self._producer.flush(120):
            raise RuntimeError(f"messages to {self.topic} not delivered within 120 s")
        if self._failed:
            raise RuntimeError(f"{len(self._failed)} messages to {self.topic} failed: {self._failed[0]}")

    def end(self) -> PublishedTopic:
        """Flush and write the end record (final offsets per partition)."""
        self.flush()
        per_partition = {int(p): {"count": int(self._counts[p]), "last_offset": int(self._last[p])}
                         for p in range(self.partitions) if self._counts[p]}
        self.result.per_partition = per_partition
        self.result.total = int(self._counts.sum())
        if self._status is not None:
            self._status.end(self.request_id, self.result.total, per_partition, self.fingerprint)
            self._status.close()
        self.result.seconds = time.monotonic() - self._started
        return self.result

    def fail(self, error: str) -> None:
        """Write a failed record (the job gave up)."""
        self.flush()
        if self._status is not None:
            self._status.failed(error, request_id=self.request_id)


def publish_tables(settings: KafkaSettings, topic: str, tables: Iterable[pa.Table], *, partitions: int = DEFAULT_PARTITIONS,
                   with_status: bool = True, keep_ids: bool = True, key_column: str = "candid") -> PublishedTopic:
    """Publish every table to `topic` (schema from the first one) and write the end record;
    `key_column` holds the alert ids (ZTF's candid, Rubin's diaSourceId)."""
    iterator = iter(tables)
    first = next(iterator)
    writer = TopicWriter(settings, topic, first.schema, partitions=partitions, keep_ids=keep_ids,
                         with_status=with_status, key_column=key_column).start()
    previous = first
    for table in iterator:
        writer.write(previous)
        previous = table
    writer.write(previous, last=True)
    return writer.end()


def publish_synthetic_topic(settings: KafkaSettings, topic: str, survey: Survey, n_alerts: int, *,
                            packet: str = "light", seed: int = 0, partitions: int = DEFAULT_PARTITIONS,
                            with_status: bool = True, keep_ids: bool = True) -> PublishedTopic:
    """Generate `n_alerts` alerts of `survey` as `packet` and publish them to `topic`."""
    return publish_tables(settings, topic, synthetic_alerts(survey, n_alerts, packet, seed),
                          partitions=partitions, with_status=with_status, keep_ids=keep_ids)

