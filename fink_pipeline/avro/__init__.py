"""Schemaless Avro for the Data Transfer stream: Fink-style schemas, columnar encode/decode.

Pure Python on numpy/pyarrow/polars/fastavro (no Spark, no Dagster), usable on Spark
executors (`mapInArrow`) as well as in the Kafka consumer.
"""

from fink_pipeline.avro.decode import AvroDecodeError, decode_batch, decode_batch_safe
from fink_pipeline.avro.encode import encode_batch
from fink_pipeline.avro.schema import (
    arrow_schema_for_avro,
    avro_schema_from_arrow,
    schema_fingerprint,
    schema_json,
)

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
