"""Defaults of transfer topics, written once: the publisher, the topics module and the
settings (`FINK_KAFKA_PARTITIONS`, `FINK_KAFKA_RETENTION_MS`) all use these."""

from __future__ import annotations

DEFAULT_PARTITIONS = 10  # as on the Fink Kafka cluster (fink-client assumes 10)
DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000  # "available for download for 7 days"
DEFAULT_COMPRESSION = "lz4"  # producer and topic compression
