"""The settings of one publication: topic layout and producer batching."""

from __future__ import annotations

from dataclasses import dataclass

from fink_pipeline.kafka.defaults import DEFAULT_COMPRESSION, DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS

COMPRESSION_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True)
class PublishOptions:
    """Topic and producer settings of one publication (test failures: `kafka.faults`)."""

    partitions: int = DEFAULT_PARTITIONS  # as on Fink's cluster; fink-client assumes 10 unless told otherwise
    retention_ms: int = DEFAULT_RETENTION_MS  # "available for download for 7 days"
    compression: str = DEFAULT_COMPRESSION
    # fink-client consumes one schema message per run with a committing group: keep copies
    schema_copies: int = 100
    linger_ms: int = 20
    batch_bytes: int = 1_000_000
    # how long the driver waits for the cluster to create/describe topics and return status
    admin_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {self.partitions}")
        if self.retention_ms < 1 and self.retention_ms != -1:
            raise ValueError(f"retention_ms must be positive (or -1: forever), got {self.retention_ms}")
        if self.compression not in COMPRESSION_CODECS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSION_CODECS)}, got {self.compression!r}")
        if self.schema_copies < 1:
            raise ValueError(f"schema_copies must be >= 1 (fink-client needs the schema), got {self.schema_copies}")
        if self.linger_ms < 0 or self.batch_bytes < 1:
            raise ValueError("linger_ms must be >= 0 and batch_bytes >= 1")
        if self.admin_timeout_s <= 0:
            raise ValueError(f"admin_timeout_s must be positive, got {self.admin_timeout_s}")
