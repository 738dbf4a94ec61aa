"""What the table consumer does with one batch of messages: fetch it under a byte cap, decode
it in slices, keep what does not decode in a quarantine file, and commit it through the sink
(in a background thread, one batch at a time: `TableWriter`). `consumer.core` runs the loop."""

from __future__ import annotations

import gc
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa

from fink_pipeline.avro import decode_batch_safe
from fink_pipeline.consumer.sinks import Sink

# A batch is decoded a slice of this many bytes at a time (see decode_in_slices).
DECODE_SLICE_BYTES = 8 * 1024 * 1024
# Kafka error codes meaning the topic or partition does not exist (any more).
UNKNOWN_TOPIC_CODES = ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION")


_PROBE_MESSAGES = 10  # 0.5 MB of full packets: below any sensible cap
_MAX_MESSAGES_PER_CONSUME = 20_000


@dataclass
class FetchedBatch:
    """Values and coordinates of fetched messages (the librdkafka messages are not kept:
    their buffers are freed as soon as the values are copied out)."""

    values: list = field(default_factory=list)
    keys: list = field(default_factory=list)
    partitions: list = field(default_factory=list)
    offsets: list = field(default_factory=list)
    nbytes: int = 0
    topic_unknown: bool = False  # the broker reported the topic unknown

    def __len__(self) -> int:
        return len(self.offsets)  # values are freed once decoded; coordinates stay


def fetch_batch(consumer, want: int, max_bytes: int, log, topic: str) -> tuple[FetchedBatch, bool]:
    """Up to `want` messages (fewer once `max_bytes` of values are in hand or the wait ends),
    and whether the broker reported the topic unknown. Other Kafka errors are logged and
    dropped from the batch."""
    from confluent_kafka import KafkaError

    unknown_codes = {getattr(KafkaError, name) for name in UNKNOWN_TOPIC_CODES if hasattr(KafkaError, name)}
    batch = FetchedBatch()
    deadline = time.monotonic() + 1.0
    # One consume() call gathers messages as librdkafka fetches them, far beyond its prefetch
    # queue: the byte cap must bound each call, not only be checked between calls. A first
    # small call measures the message size; later calls ask for what fits in the room left.
    per_call = _PROBE_MESSAGES
    # No cyclic garbage is made here, but tens of thousands of Message objects would trigger
    # collections that walk every object of the process (pyarrow, polars, deltalake...).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _fetch_into(consumer, batch, want, max_bytes, per_call, deadline, unknown_codes, log, topic)
    finally:
        if gc_was_enabled:
            gc.enable()
    return batch, batch.topic_unknown


def _fetch_into(consumer, batch: "FetchedBatch", want: int, max_bytes: int, per_call: int, deadline: float,
                unknown_codes: set, log, topic: str) -> None:
    """The consume() calls of `_fetch_batch`."""
    from confluent_kafka import KafkaError

    values, keys, partitions, offsets = batch.values, batch.keys, batch.partitions, batch.offsets
    while len(values) < want and batch.nbytes < max_bytes:
        left = deadline - time.monotonic()
        n = min(want - len(values), _MAX_MESSAGES_PER_CONSUME, per_call)
        chunk = consumer.consume(num_messages=n, timeout=max(0.0, left) if values else 1.0)
        if not chunk:
            break
        for m in chunk:
            err = m.error()
            if err is None:
                value = m.value()
                values.append(value)
                keys.append(m.key())
                partitions.append(m.partition())
                offsets.append(m.offset())
                batch.nbytes += len(value) if value is not None else 0
            elif err.code() in unknown_codes:
                batch.topic_unknown = True
            elif err.code() != KafkaError._PARTITION_EOF:
                log.warning(f"Kafka error on {topic}: {err}")
        del chunk
        if values and batch.nbytes:
            per_call = max(1, int((max_bytes - batch.nbytes) * len(values) / batch.nbytes))
        if time.monotonic() >= deadline:
            break


def decode_in_slices(values: list, nbytes: int, avro_schema: dict,
                     slice_bytes: int = DECODE_SLICE_BYTES) -> tuple[pa.Table, list[int], list[str]]:
    """`decode_batch_safe` of `values` (`nbytes` in all), a slice of about `slice_bytes` at a
    time: polars' working memory while decoding is several times its input, so slices bound
    it (measured: 150 MB less peak per consumer for 32 MB light batches, same speed)."""
    n_slices = max(1, -(-nbytes // slice_bytes))
    if n_slices == 1 or len(values) < 2 * n_slices:
        return decode_batch_safe(values, avro_schema, nbytes)
    step = -(-len(values) // n_slices)  # messages of one topic have similar sizes
    tables, bad, errors = [], [], []
    for lo in range(0, len(values), step):
        table, slice_bad, slice_errors = decode_batch_safe(values[lo:lo + step], avro_schema)
        tables.append(table)
        bad.extend(lo + i for i in slice_bad)
        errors.extend(slice_errors)
    return pa.concat_tables(tables), bad, errors


@dataclass
class DecodedBatch:
    """A fetched batch decoded: its rows, and the offsets its commit moves the table to."""

    table: pa.Table
    next_offsets: dict[int, int]  # partition -> offset after the batch's last message
    start_offsets: dict[int, int]  # partition -> offset the table must be at before the commit
    per_partition: dict[int, int]  # messages of the batch per partition
    messages: int


class TableWriter:
    """Commits decoded batches to the sink one after the other, in a background thread when
    `overlap` is set: delta-rs and pyarrow write without holding the GIL, so the next batch is
    fetched and decoded meanwhile (the consumer's CPU is otherwise one core: a topic published
    on 2 cores left it ~9 s behind at 1M alerts). One write at a time, in fetch order: the next
    batch is handed over once the previous one is committed, so the sink sees exactly the
    sequence of a single thread, and a failed write is raised before any later batch is written.
    `written` callbacks run in the caller's thread."""

    def __init__(self, sink: Sink, overlap: bool) -> None:
        self.sink = sink
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="table-writer") if overlap else None
        self._pending: tuple[Future, Callable[[], None]] | None = None

    def submit(self, decoded: DecodedBatch, written: Callable[[], None], clock) -> None:
        """Write `decoded` (after the batch before it is committed), then call `written`."""
        self.wait(clock)
        if self._executor is None:
            self.sink.write(decoded.table, decoded.next_offsets, decoded.start_offsets)
            clock.lap("write")
            written()
            return
        future = self._executor.submit(self.sink.write, decoded.table, decoded.next_offsets, decoded.start_offsets)
        self._pending = (future, written)

    def wait(self, clock) -> None:
        """Wait for the batch being written; raise its error, or call its `written`."""
        if self._pending is None:
            return
        future, written = self._pending
        self._pending = None
        future.result()
        clock.lap("write")
        written()

    def close(self, log) -> None:
        """Let a write still running finish (the sink is closed next), without raising."""
        if self._pending is not None:
            future, _ = self._pending
            self._pending = None
            try:
                future.result()
            except Exception as exc:  # the caller is already failing with its own error
                log.error(f"writing a batch failed too: {exc}")
        if self._executor is not None:
            self._executor.shutdown(wait=True)


def quarantine(quarantine_dir, topic: str, batch: FetchedBatch, bad: list[int], errors: list[str], log) -> str:
    """Keep undecodable messages with their coordinates; names derive from the first message's
    (partition, offset), so a batch replayed after a crash rewrites the same file."""
    import pyarrow.parquet as pq

    if quarantine_dir is None:
        raise RuntimeError(f"{len(bad)} undecodable messages in {topic} and no quarantine directory")
    directory = Path(quarantine_dir)
    directory.mkdir(parents=True, exist_ok=True)
    first = bad[0]
    path = directory / f"{topic}-p{batch.partitions[first]}-o{batch.offsets[first]}.parquet"
    table = pa.table(
        {
            "topic": pa.array([topic] * len(bad), pa.string()),
            "partition": pa.array([batch.partitions[i] for i in bad], pa.int32()),
            "offset": pa.array([batch.offsets[i] for i in bad], pa.int64()),
            "key": pa.array([batch.keys[i] for i in bad], pa.binary()),
            "value": pa.array([batch.values[i] for i in bad], pa.binary()),
            "error": pa.array(errors, pa.string()),
        }
    )
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    log.warning(f"{len(bad)} undecodable messages of {topic} quarantined in {path}")
    return str(path)


def read_quarantine(quarantine_dir: str | Path) -> pa.Table:
    """Every quarantined message (topic, partition, offset, key, value, error)."""
    import pyarrow.parquet as pq

    files = sorted(Path(quarantine_dir).glob("*.parquet")) if Path(quarantine_dir).exists() else []
    if not files:
        return pa.table({"topic": pa.array([], pa.string()), "partition": pa.array([], pa.int32()),
                         "offset": pa.array([], pa.int64())})
    return pa.concat_tables([pq.read_table(f) for f in files])
