"""Topic administration: create-or-verify, existence, listing, deletion, config read-back.

Tansu (and a Kafka cluster with `auto.create.topics.enable`) creates a missing topic, with its
default partition count, when a producer's metadata request names it: create topics with
`ensure_topic` before producing.

Every function keeps its `AdminClient` referenced until the futures it returned are resolved:
a client garbage-collected early fails them with `_DESTROY` ("Broker handle destroyed").
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from fink_pipeline.kafka.defaults import DEFAULT_COMPRESSION, DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS
from fink_pipeline.transfer.request import validate_topic_name

if TYPE_CHECKING:
    from fink_pipeline.kafka.settings import KafkaSettings


class TopicMismatch(ValueError):
    """An existing topic does not have the requested layout (partition count)."""


def admin_client(settings: "KafkaSettings") -> AdminClient:
    """An AdminClient for `settings` (keep it referenced while using its futures).

    Metadata requests of this client never auto-create topics: librdkafka's admin and producer
    handles ask for auto-creation by default, and Tansu honours it (with 4 partitions), so a
    mere existence check would otherwise create the topic it looks for.
    """
    config = dict(settings.librdkafka_config())
    config.setdefault("allow.auto.create.topics", False)
    return AdminClient(config)


def partitions_in_metadata(client, name: str, timeout_s: float) -> int | None:
    """Partitions of topic `name` in the cluster metadata `client` (an admin client, consumer or
    producer) fetches, None when the broker says it does not exist; other errors raise."""
    metadata = client.list_topics(topic=name, timeout=timeout_s)
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None:
        if topic is not None and topic.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise KafkaException(topic.error)
        return None
    return len(topic.partitions)


def partition_count(settings: "KafkaSettings", name: str, timeout_s: float = 10.0) -> int | None:
    """Number of partitions of topic `name`, or None when it does not exist."""
    admin = admin_client(settings)
    return partitions_in_metadata(admin, validate_topic_name(name), timeout_s)


def topic_exists(settings: "KafkaSettings", name: str, timeout_s: float = 10.0) -> bool:
    """True when topic `name` exists."""
    return partition_count(settings, name, timeout_s) is not None


def list_topics(
    settings: "KafkaSettings",
    prefix: str | None = None,
    timeout_s: float = 10.0,
    include_internal: bool = False,
) -> list[str]:
    """Sorted topic names, optionally only those starting with `prefix`; internal topics
    (`__consumer_offsets`, ...) are left out unless `include_internal`."""
    admin = admin_client(settings)
    names = admin.list_topics(timeout=timeout_s).topics.keys()
    return sorted(
        n
        for n in names
        if (include_internal or not n.startswith("__")) and (prefix is None or n.startswith(prefix))
    )


def ensure_topic(
    settings: "KafkaSettings",
    name: str,
    partitions: int = DEFAULT_PARTITIONS,
    retention_ms: int | None = DEFAULT_RETENTION_MS,
    compression: str | None = DEFAULT_COMPRESSION,
    replication: int | None = None,
    *,
    config: dict[str, str] | None = None,
    timeout_s: float = 15.0,
) -> bool:
    """Create topic `name` or verify the existing one; True when this call created it.

    `replication=None` takes the broker default. An existing topic must have `partitions`
    partitions (TopicMismatch otherwise: the job spreads messages over exactly that many);
    its configs are left as they are. A concurrent creation by someone else counts as
    "existing".
    """
    validate_topic_name(name)
    if partitions < 1:
        raise ValueError(f"partitions must be >= 1, got {partitions}")
    topic_config: dict[str, str] = {}
    if retention_ms is not None:
        topic_config["retention.ms"] = str(int(retention_ms))
    if compression is not None:
        topic_config["compression.type"] = compression
    topic_config.update(config or {})

    admin = admin_client(settings)
    deadline = time.monotonic() + timeout_s
    existing = partitions_in_metadata(admin, name, timeout_s)
    created = False
    if existing is None:
        new = NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=-1 if replication is None else replication,
            config=topic_config,
        )
        futures = admin.create_topics([new], operation_timeout=timeout_s, request_timeout=timeout_s)
        try:
            futures[name].result(timeout=timeout_s)
            created = True
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        # Wait (bounded) until metadata shows the topic, so a producer right after us finds it;
        # on a real cluster creation propagates asynchronously. (A topic the first lookup
        # found needs no second one.)
        while True:
            existing = partitions_in_metadata(admin, name, max(0.5, deadline - time.monotonic()))
            if existing is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if existing is None:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, f"topic {name} not visible after {timeout_s} s")
            )
    if existing != partitions:
        raise TopicMismatch(
            f"topic {name} exists with {existing} partitions, expected {partitions}; "
            "delete it or use another topic name"
        )
    return created


def delete_topic(settings: "KafkaSettings", name: str, timeout_s: float = 15.0) -> bool:
    """Delete topic `name`; True when it existed, False when there was nothing to delete."""
    admin = admin_client(settings)
    futures = admin.delete_topics(
        [validate_topic_name(name)], operation_timeout=timeout_s, request_timeout=timeout_s
    )
    try:
        futures[name].result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return False
        raise
    return True


def topic_config(settings: "KafkaSettings", name: str, timeout_s: float = 10.0) -> dict[str, str]:
    """The topic's configuration as the broker describes it (name -> value)."""
    admin = admin_client(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, validate_topic_name(name))
    futures = admin.describe_configs([resource], request_timeout=timeout_s)
    entries = futures[resource].result(timeout=timeout_s)
    return {key: entry.value for key, entry in entries.items() if entry.value is not None}
