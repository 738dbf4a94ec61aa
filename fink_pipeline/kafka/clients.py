"""Building confluent-kafka clients: one place that joins a connection (`KafkaSettings`, SASL
included) with what a client needs, and keeps topics from being created by accident."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from fink_pipeline.kafka.settings import KafkaSettings


def make_producer(settings: "KafkaSettings", config: Mapping[str, Any] | None = None) -> "Producer":
    """A Producer on `settings`' connection with `config` (librdkafka names) on top.

    Topics are created by the driver with their layout: a producer never auto-creates one (a
    typo would otherwise give a topic of the broker's default partition count)."""
    from confluent_kafka import Producer

    return Producer({**settings.librdkafka_config(), "allow.auto.create.topics": False, **(config or {})})
