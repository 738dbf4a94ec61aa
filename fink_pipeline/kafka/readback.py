"""Reading back what earlier attempts published to a task's Kafka partitions, before it produces.

Every task attempt - first try, Spark retry or re-run of a failed job - reads the alert ids
already in its Kafka partitions and where each partition ends (`read_existing`), then publishes
only the other rows. A partition holding anything this publisher does not write (messages not
keyed by an alert id, transaction markers) is a `PublicationConflict`.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass

import numpy as np

from fink_pipeline.kafka.settings import KafkaSettings

LOGGER = logging.getLogger("fink_pipeline.publish")
# How long a task may take to read back what earlier attempts published.
READ_BACK_TIMEOUT_S = 120.0
# A retry or resumed run re-checks its partitions' ends this long after reading them back: a
# late message of a killed attempt, still in the broker's socket buffers, must show before it
# produces.
SETTLE_CHECK_S = 1.0


class PublicationConflict(RuntimeError):
    """The topic holds data this publication did not write or cannot account for."""


@dataclass
class PartitionState:
    """One owned Kafka partition during a task attempt."""

    existing_ids: np.ndarray  # sorted alert ids found in the partition when the attempt started
    end_offset: int  # where the attempt's first message will land
    sent: int = 0  # messages this attempt produced to it
    pending: tuple[bytes, str] | None = None  # held back: the partition's last message so far
    last_offset: int = -1  # delivery report of the final message


def read_existing(settings: KafkaSettings, topic: str, owned: list[int], settle: bool = False) -> dict[int, PartitionState]:
    """Alert ids already published in the `owned` partitions and where each partition ends.

    Empty partitions (high watermark 0) cost one watermark query; others are read from the
    beginning up to the end-of-partition event, which reports the real end (a broker's high
    watermark may be too low for batched records, see the embedded broker notes).

    With `settle` (a retry, or a run resuming a publication: earlier attempts may have written),
    the watermarks are queried again `SETTLE_CHECK_S` after the read and the partitions read
    again until they did not move: a message of a killed attempt that a stalled broker still
    held in its socket buffers lands as soon as the broker answers again, and must be seen
    before this attempt produces. (Any new record batch moves the watermark, exact or not.)
    """
    from confluent_kafka import Consumer

    deadline = time.monotonic() + READ_BACK_TIMEOUT_S
    while True:
        # one consumer per read-back, its settle check included
        consumer = Consumer(
            settings.consumer_config(
                group_id=f"fink-publish-readback-{uuid.uuid4().hex}",  # assign() only, never committed
                enable_auto_commit=False,
                enable_partition_eof=True,
                fetch_wait_max_ms=10,
            )
        )
        try:
            marks, states = _read_existing_once(consumer, topic, owned, deadline)
            if not settle:
                return states
            time.sleep(SETTLE_CHECK_S)
            if _watermarks(consumer, topic, owned) == marks:
                return states
        finally:
            consumer.close()
        if time.monotonic() > deadline:
            raise TimeoutError(f"Kafka partitions {owned} of {topic} kept growing while this attempt "
                               "read them back: another writer is still active")
        LOGGER.warning(f"Kafka partitions {owned} of {topic} grew while being read back: reading again")


def _watermarks(consumer, topic: str, owned: list[int]) -> dict[int, int]:
    """The high watermark of each `owned` partition, asked of the broker (not cached)."""
    from confluent_kafka import TopicPartition

    return {k: consumer.get_watermark_offsets(TopicPartition(topic, k), timeout=READ_BACK_TIMEOUT_S,
                                              cached=False)[1] for k in owned}


def _read_existing_once(consumer, topic: str, owned: list[int],
                        deadline: float) -> tuple[dict[int, int], dict[int, PartitionState]]:
    """One read-back with `consumer`: (high watermarks queried before reading, partition states)."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

    states = {k: PartitionState(np.empty(0, np.int64), 0) for k in owned}
    marks = _watermarks(consumer, topic, owned)
    to_read = [k for k in owned if marks[k] > 0]
    if not to_read:
        return marks, states
    consumer.assign([TopicPartition(topic, k, OFFSET_BEGINNING) for k in to_read])
    keys: dict[int, list[bytes]] = {k: [] for k in to_read}
    first: dict[int, int] = {}
    last: dict[int, int] = {k: -1 for k in to_read}
    ends: dict[int, int] = {}
    while len(ends) < len(to_read):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(
                f"could not read back Kafka partitions {sorted(set(to_read) - set(ends))} of "
                f"{topic} within {READ_BACK_TIMEOUT_S:.0f} s"
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
                f"Kafka partition {k} of {topic} holds messages not keyed by an alert id: "
                "it was not written by this publisher (publish to a new topic name)"
            ) from None
        span = ends[k] - first.get(k, ends[k])
        if len(ids) != span or (len(ids) and last[k] + 1 != ends[k]):
            raise PublicationConflict(
                f"Kafka partition {k} of {topic} holds {len(ids)} messages between offsets "
                f"{first.get(k)} and {ends[k]}: it holds records this publisher does not write "
                "(e.g. transaction markers); publish to a new topic name"
            )
        ids.sort()
        states[k] = PartitionState(ids, ends[k])
    return marks, states
