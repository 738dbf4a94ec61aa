"""Schemaless Avro for the Data Transfer stream: Fink-style schemas, columnar encode/decode.

Pure Python on numpy/pyarrow/polars/fastavro (no Spark, no Dagster), usable on Spark
executors (`mapInArrow`) as well as in the Kafka consumer.
"""

from fink_pipeline.avro.encode import encode_batch
from fink_pipeline.avro.schema import (
    arrow_schema_for_avro,
    avro_schema_from_arrow,
    schema_fingerprint,
    schema_json,
)

# The decoder imports polars (~30 MiB, 0.2 s): loaded when first used, so that the publishing
# Python workers, which only encode, never import it.
_DECODE_NAMES = ("AvroDecodeError", "decode_batch", "decode_batch_safe")


def __getattr__(name: str):
    if name in _DECODE_NAMES:
        from fink_pipeline.avro import decode

        return getattr(decode, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AvroDecodeError",
    "arrow_schema_for_avro",
    "avro_schema_from_arrow",
    "decode_batch",
    "decode_batch_safe",
    "encode_batch",
    "schema_fingerprint",
    "schema_json",
]
