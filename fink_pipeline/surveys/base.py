"""What the pipeline needs to know about a survey; one `Survey` per module in this package."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Literal

import pyarrow as pa

if TYPE_CHECKING:  # pyspark is heavy; only the Spark-side callables need it
    from pyspark.sql import Column, DataFrame

TimeScale = Literal["jd", "mjd"]

# Julian date of the Unix epoch, and MJD = JD - 2400000.5
JD_UNIX_EPOCH = 2440587.5
MJD_UNIX_EPOCH = 40587.0


@dataclass(frozen=True)
class ContentPacket:
    """A pre-defined output content: `columns` are select expressions in Fink's notation."""

    name: str
    description: str
    bytes_per_alert_hint: int


@dataclass(frozen=True)
class Survey:
    """A survey's archive schema, time axis, identifiers and classification."""

    name: str
    description: str
    # Unified archive schema: every column any schema version ever had, without the
    # year/month/day partition columns (those come from the directory names).
    archive_schema: pa.Schema
    # Dotted path of the observation time and its scale (ZTF candidate.jd is a JD,
    # Rubin diaSource.midpointMjdTai and ELAsTiCC diaSource.midPointTai are MJDs).
    time_column: str
    time_scale: TimeScale
    alert_id: str
    object_id: str
    # Columns holding the classification labels the class filter and partitioning use.
    class_columns: tuple[str, ...]
    default_partitionby: str
    topic_prefix: str
    first_night: dt.date
    # Light packet: these nested fields flattened to root names, plus every root column
    # except `light_excludes` (Fink's "all but cutouts and history").
    light_fields: tuple[str, ...] = ()
    light_excludes: tuple[str, ...] = ()
    # Adds the class columns (native Spark expressions, no Python UDF).
    classify: Callable[["DataFrame"], "DataFrame"] | None = None
    # The same classification in pure Arrow, for tests and the consumer side.
    classify_arrow: Callable[[pa.Table], dict[str, pa.Array]] | None = None
    # Synthetic alerts of one night: (night, n_alerts, seed, with_cutouts) -> record batches
    # matching `archive_schema`, produced lazily so memory stays bounded at any scale.
    generate_night: Callable[..., Iterator[pa.RecordBatch]] | None = None
    # Labels a class filter may name when the classes are stored, not computed (ELAsTiCC's
    # classIds as text) -> their descriptions; empty where the survey has no fixed label set.
    class_labels: dict[str, str] = field(default_factory=dict)
    # Keys a content item or condition may read from each map column (`mangrove.HyperLEDA_name`):
    # map keys are case-sensitive and a wrong one reads null silently, so only these are accepted.
    map_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def time_to_unix_seconds(self, values):
        """Vectorised: observation time values (numpy/Arrow float) -> Unix seconds."""
        epoch = JD_UNIX_EPOCH if self.time_scale == "jd" else MJD_UNIX_EPOCH
        return (values - epoch) * 86400.0

    def night_of(self, time_value: float) -> dt.date:
        """UTC night (calendar date) of one observation time value."""
        seconds = self.time_to_unix_seconds(time_value)
        return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).date()

    def spark_time_seconds(self) -> "Column":
        """Spark column: the observation time as Unix seconds (double)."""
        from pyspark.sql import functions as F

        epoch = JD_UNIX_EPOCH if self.time_scale == "jd" else MJD_UNIX_EPOCH
        return (F.col(self.time_column) - F.lit(epoch)) * F.lit(86400.0)

    @property
    def field_paths(self) -> dict[str, pa.DataType]:
        """Every column and nested struct field as a dotted path -> Arrow type."""
        return flatten_schema(self.archive_schema)


def flatten_schema(schema: pa.Schema) -> dict[str, pa.DataType]:
    """Dotted paths of every field, descending into structs (not into lists or maps)."""
    out: dict[str, pa.DataType] = {}

    def visit(prefix: str, dtype: pa.DataType) -> None:
        out[prefix] = dtype
        if pa.types.is_struct(dtype):
            for child in dtype:
                visit(f"{prefix}.{child.name}", child.type)

    for f in schema:
        visit(f.name, f.type)
    return out
