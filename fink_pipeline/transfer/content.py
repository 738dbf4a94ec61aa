"""Output content: which columns a transfer publishes, and how they are made Avro-safe.

Packets follow Fink (reference section 4.1): `full` = every column, `medium` = all but cutouts,
`light` = a few candidate fields flattened to the root plus every root column except cutouts
and history. A list of fields selects exactly those, plus the survey's time column that clients
partition on. Serialisation fixes follow section 4.2: struct columns are rebuilt as non-nullable
structs and timestamps become strings, so the bytes match the published schema.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import pyarrow as pa

from fink_pipeline.surveys.base import Survey, flatten_schema

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

PARTITION_COLUMNS = ("year", "month", "day")


class ContentError(ValueError):
    """A content selection that names unknown or conflicting fields."""


@dataclass(frozen=True)
class ContentPlan:
    """Resolved output: (source expression, output name) pairs in publication order."""

    packet: str | None
    columns: tuple[tuple[str, str], ...]

    @property
    def output_names(self) -> list[str]:
        return [name for _, name in self.columns]

    @property
    def source_fields(self) -> list[str]:
        """Dotted source fields read (for column pruning and size estimates)."""
        return [source for source, _ in self.columns]


def available_fields(survey: Survey, computed: Sequence[str]) -> dict[str, pa.DataType]:
    """Every selectable dotted field: archive columns, nested fields, computed class columns."""
    fields = flatten_schema(survey.archive_schema)
    for name in computed:
        fields.setdefault(name, pa.string())
    for name in PARTITION_COLUMNS:
        fields.setdefault(name, pa.int32())
    return fields


def resolve_content(survey: Survey, content: Sequence[str], computed: Sequence[str] = ()) -> ContentPlan:
    """Turn a request's content into an ordered list of (source, output name)."""
    # dict.fromkeys: a class column may also be stored (ELAsTiCC's classId), list it once
    root = list(dict.fromkeys([f.name for f in survey.archive_schema] + list(computed) + list(PARTITION_COLUMNS)))
    choice = content[0].lower() if len(content) == 1 else None
    if choice == "full":
        return ContentPlan("full", tuple((c, c) for c in root))
    if choice == "medium":
        return ContentPlan("medium", tuple((c, c) for c in root if not c.startswith("cutout")))
    if choice == "light":
        flattened = [(field, field.rsplit(".", 1)[-1]) for field in survey.light_fields]
        excluded = set(survey.light_excludes) | set(PARTITION_COLUMNS)
        rest = [(c, c) for c in root if c not in excluded]
        return ContentPlan("light", tuple(flattened + rest))
    return _custom_content(survey, list(content), computed)


def _custom_content(survey: Survey, fields: list[str], computed: Sequence[str]) -> ContentPlan:
    known = available_fields(survey, computed)
    map_roots = {name for name, dtype in known.items() if pa.types.is_map(dtype)}
    columns: list[tuple[str, str]] = []
    for field in fields:
        root = field.split(".", 1)[0]
        # `mangrove.HyperLEDA_name` reads one key of a map column, as Fink allows
        if field not in known and not (root in map_roots and "." in field):
            match = difflib.get_close_matches(field, list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {match[0]!r}?" if match else "; use light, medium, full or schema fields"
            raise ContentError(f"content: unknown field {field!r} for survey {survey.name}{hint}")
        columns.append((field, field.rsplit(".", 1)[-1]))
    time_name = survey.time_column.rsplit(".", 1)[-1]
    if survey.time_column not in {source for source, _ in columns}:
        # clients partition by time: Fink appends it "for the Kafka client partitionment"
        columns.append((survey.time_column, time_name))
    names = [name for _, name in columns]
    duplicates = sorted(name for name, n in Counter(names).items() if n > 1)
    if duplicates:
        raise ContentError(
            f"content: several fields would be published under the same name {duplicates}; "
            "select only one of them"
        )
    return ContentPlan(None, tuple(columns))


def project(df: "DataFrame", plan: ContentPlan) -> "DataFrame":
    """Select the plan's columns from `df`, made safe for schemaless Avro."""
    return df.select(*[avro_safe(df, source, name) for source, name in plan.columns])


def avro_safe(df: "DataFrame", source: str, name: str) -> "Column":
    """One output column: structs rebuilt non-nullable, timestamps cast to strings."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    dtype = field_type(df.schema, source)
    column = F.col(source) if _is_plain_path(df.schema, source) else F.expr(source)
    if isinstance(dtype, T.StructType):
        # struct(X.*) is never null: the schema publishes records without a null branch
        column = F.struct(*[F.col(source)[child.name].alias(child.name) for child in dtype.fields])
    elif isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        column = column.cast("string")
    return column.alias(name)


def _is_plain_path(schema, path: str) -> bool:
    return field_type(schema, path) is not None


def field_type(schema, path: str):
    """The Spark type of dotted `path` in `schema`, or None when it is not a plain field path."""
    from pyspark.sql import types as T

    dtype = schema
    for part in path.split("."):
        if not isinstance(dtype, T.StructType) or part not in dtype.fieldNames():
            return None
        dtype = dtype[part].dataType
    return dtype
