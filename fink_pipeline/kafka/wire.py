"""The Data Transfer wire format, as fink-client reads it: one home for the publisher, the
consumer and the test helpers.

* `<topic>`: schemaless Avro values keyed by the alert id; a row goes to one of its Spark
  partition's Kafka partitions by a Fibonacci hash of the id (`kafka_partition_of`), and the
  last message of each partition goes out alone after a flush (`hold_back_last`), so brokers
  that compute the high watermark from the last batch's base offset (Tansu) report it exactly;
* `<topic>_schema`: the Avro schema as the message key, the value an Avro record naming it
  (`{"schema": "new_schema_<time>.avsc"}`), as Fink writes it; several copies, since
  fink-client consumes one per run with a committing group;
* `<topic>_status`: start, progress, end and failed records (`kafka.status`).
"""

from __future__ import annotations

import io
import time

import numpy as np

SCHEMA_SUFFIX = "_schema"
STATUS_SUFFIX = "_status"
# The value of a `<topic>_schema` message: Fink's Spark writes it as a one-field record.
SCHEMA_MESSAGE_SCHEMA = {
    "type": "record",
    "name": "topLevelRecord",
    "fields": [{"name": "schema", "type": ["string", "null"]}],
}
_FIBONACCI = np.uint64(11400714819323198485)


def schema_topic(topic: str) -> str:
    """The companion topic fink-client reads the Avro schema from."""
    return f"{topic}{SCHEMA_SUFFIX}"


def status_topic(topic: str) -> str:
    """The companion topic carrying start, progress, end and failure records."""
    return f"{topic}{STATUS_SUFFIX}"


def schema_message_value() -> bytes:
    """The value of a `<topic>_schema` message (its key is the schema JSON)."""
    import fastavro

    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(SCHEMA_MESSAGE_SCHEMA),
                               {"schema": f"new_schema_{time.time()}.avsc"})
    return buffer.getvalue()


def owned_kafka_partitions(spark_partition: int, spark_partitions: int, kafka_partitions: int) -> list[int]:
    """The Kafka partitions that Spark partition `spark_partition` alone writes (k % S == s)."""
    return list(range(spark_partition, kafka_partitions, spark_partitions))


def kafka_partition_of(ids: np.ndarray, owned: np.ndarray) -> np.ndarray:
    """Deterministic spread of alert ids over the `owned` Kafka partitions (Fibonacci hashing)."""
    mixed = (ids.astype(np.uint64) * _FIBONACCI) >> np.uint64(33)
    return owned[(mixed % np.uint64(len(owned))).astype(np.int64)]


def hold_back_last(parts: np.ndarray) -> np.ndarray:
    """Mask of the last row of each Kafka partition in `parts` (rows in produce order)."""
    mask = np.zeros(len(parts), dtype=bool)
    if len(parts):
        _, first_in_reversed = np.unique(parts[::-1], return_index=True)
        mask[len(parts) - 1 - first_in_reversed] = True
    return mask
