"""Output content: which columns a transfer publishes, and how they are made Avro-safe.

Packets are the survey's (`Survey.packets`, `surveys/packets.py`), named as Fink's portals
name them ("Full packet", "Light SSO packet", any case) or by their short names (full,
medium, light, light_sso): a packet's fields flattened to root names, then every root column
but the packet's exclusions (reference sections 4.1, 9.1). A list of fields selects exactly
those, plus the survey's time column that clients partition on. Serialisation fixes follow
section 4.2: struct columns are rebuilt as non-nullable structs and timestamps become strings,
so the bytes match the published schema.

Content items are untrusted text, like conditions: each one is parsed as a field path (a packet
name, `root`, `root.field...`, or `mapcolumn.key` with the key one the survey declares) and
everything else is refused with the item and the fix. Spark columns are then built from the
parsed path with `F.col(...)` and a literal map key, never from the text with `F.expr`.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import pyarrow as pa

from fink_pipeline.surveys.base import Survey, flatten_schema
from fink_pipeline.surveys.packets import NIGHT_COLUMNS, Packet, closest_packet, find_packet

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

PARTITION_COLUMNS = NIGHT_COLUMNS
# A field path: names of letters, digits and underscores joined by dots (map keys such as
# `2MASS_name` may start with a digit). Nothing else reaches Spark.
_FIELD_PATH = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
_SHOWN_CHARS = 80  # a hostile item is quoted in errors only this far
# A packet name: words ending in "packet" ("Light SSO packet"); a plain word ("full") is
# looked up as a packet before it is taken for a field.
_PACKET_NAME = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)* packet", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")


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
    items = _joined_packet_words(survey, [str(item) for item in content])
    packets = [(item, find_packet(survey.packets, item)) for item in items]
    named = [(item, packet) for item, packet in packets if packet is not None]
    if named and len(items) > 1:
        raise ContentError(
            f"content: the packet {_shown(named[0][0])} cannot be combined with other fields; "
            "use either one packet or a list of fields"
        )
    if named:
        return _packet_content(survey, named[0][1], computed)
    for item in items:
        if _PACKET_NAME.fullmatch(item):
            match = closest_packet(survey.packets, item)
            hint = (f"did you mean {match!r}?" if match else
                    f"{survey.name} packets: {', '.join(p.label for p in survey.packets.values())}")
            raise ContentError(f"content: unknown packet {_shown(item)} for survey {survey.name}; {hint}")
    return _custom_content(survey, items, computed)


def _packet_content(survey: Survey, packet: Packet, computed: Sequence[str]) -> ContentPlan:
    """A packet's columns: its fields under their last names, then the root columns it keeps."""
    columns = [(source, source.rsplit(".", 1)[-1]) for source in packet.fields]
    if packet.all_but is not None:
        # dict.fromkeys: a class column may also be stored (ELAsTiCC's classId), list it once
        root = dict.fromkeys([f.name for f in survey.archive_schema] + list(computed) + list(PARTITION_COLUMNS))
        columns += [(c, c) for c in root if c not in set(packet.all_but)]
    return ContentPlan(packet.name, tuple(columns))


def _joined_packet_words(survey: Survey, items: list[str]) -> list[str]:
    """Items with a packet name split into words put back together: a flat request's content
    string is split on spaces ("Light SSO packet" -> Light, SSO, packet). The words before
    each `packet` join it, as many as name a known packet (one when none does)."""
    out: list[str] = []
    for item in items:
        if item.lower() != "packet" or not out or not _WORD.fullmatch(out[-1]):
            out.append(item)
            continue
        words = 1
        for n in (3, 2):
            if len(out) >= n and all(_WORD.fullmatch(w) for w in out[-n:]) and find_packet(
                    survey.packets, " ".join([*out[-n:], item])):
                words = n
                break
        phrase = " ".join([*out[-words:], item])
        del out[-words:]
        out.append(phrase)
    return out


def _shown(item: str) -> str:
    return repr(item if len(item) <= _SHOWN_CHARS else item[:_SHOWN_CHARS] + "...")


def check_content_item(survey: Survey, item: str, known: dict[str, pa.DataType]) -> str:
    """`item` when it names a selectable field of `survey`; ContentError naming it and the fix
    otherwise (any expression, quote, space or function call included)."""
    if not isinstance(item, str) or not _FIELD_PATH.fullmatch(item):
        raise ContentError(
            f"content: {_shown(str(item))} is not a field name: write light, medium, full or dotted "
            "schema fields such as candidate.magpsf (expressions are not allowed in content; select "
            "rows with conditions)"
        )
    if item in known:
        return item
    root, dot, key = item.partition(".")
    if dot and root in known and pa.types.is_map(known[root]):
        keys = survey.map_keys.get(root, ())
        if key in keys:
            return item
        match = difflib.get_close_matches(key, list(keys), n=1, cutoff=0.6)
        hint = f"did you mean {root}.{match[0]}?" if match else f"keys of {root}: {', '.join(keys) or 'none known'}"
        raise ContentError(f"content: {_shown(item)} is not a key of the {survey.name} map {root!r}; {hint}")
    match = difflib.get_close_matches(item, [*survey.packets, *known], n=1, cutoff=0.6)
    hint = f"; did you mean {match[0]!r}?" if match else "; use light, medium, full or schema fields"
    raise ContentError(f"content: unknown field {_shown(item)} for survey {survey.name}{hint}")


def _custom_content(survey: Survey, fields: list[str], computed: Sequence[str]) -> ContentPlan:
    known = available_fields(survey, computed)
    columns = [(check_content_item(survey, field, known), field.rsplit(".", 1)[-1]) for field in fields]
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
    """One output column: structs rebuilt non-nullable, timestamps cast to strings.

    `source` is a plain field path of `df` or `mapcolumn.key`; the column is built from its
    parts (`F.col`, a literal key), never parsed as SQL, so no content text reaches Spark's
    parser even if a caller skipped `resolve_content`.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    dtype = field_type(df.schema, source)
    if dtype is not None:
        column = F.col(source)
    else:
        root, dot, key = source.partition(".")
        if not (dot and _FIELD_PATH.fullmatch(source) and isinstance(field_type(df.schema, root), T.MapType)):
            raise ContentError(f"content: {_shown(source)} is neither a field nor a map key of the selection")
        column = F.col(root)[key]  # a literal key: UnresolvedExtractValue, no parsing
    if isinstance(dtype, T.StructType):
        # struct(X.*) is never null: the schema publishes records without a null branch
        column = F.struct(*[F.col(source)[child.name].alias(child.name) for child in dtype.fields])
    elif isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
        column = column.cast("string")
    return column.alias(name)


def projected_schema(schema, plan: ContentPlan):
    """The Spark schema `project(df, plan)` gives a DataFrame of schema `schema`, worked out
    without Spark (its analyzer costs ~2 s on a cold JVM, in front of every transfer), by the
    rules `avro_safe` meets: a nested field is nullable when it or any parent is; a rebuilt
    struct is never null, its fields nullable as their path is; a timestamp becomes a string.
    None when a source is not a plain field path (a map key: only Spark resolves those).
    Tests compare it with Spark's own schema for every packet and field of each survey."""
    from pyspark.sql import types as T

    fields = []
    for source, name in plan.columns:
        resolved = _path_field(schema, source)
        if resolved is None:
            return None
        dtype, nullable = resolved
        if isinstance(dtype, T.StructType):
            dtype = T.StructType([T.StructField(child.name, child.dataType, child.nullable or nullable)
                                  for child in dtype.fields])
            nullable = False
        elif isinstance(dtype, (T.TimestampType, T.TimestampNTZType)):
            dtype = T.StringType()
        fields.append(T.StructField(name, dtype, nullable))
    return T.StructType(fields)


def _path_field(schema, path: str):
    """(type, nullable) of dotted `path` in `schema` as Spark resolves it, or None."""
    from pyspark.sql import types as T

    dtype, nullable = schema, False
    for part in path.split("."):
        if not isinstance(dtype, T.StructType) or part not in dtype.fieldNames():
            return None
        field = dtype[part]
        dtype, nullable = field.dataType, nullable or field.nullable
    return dtype, nullable


def field_type(schema, path: str):
    """The Spark type of dotted `path` in `schema`, or None when it is not a plain field path."""
    resolved = _path_field(schema, path)
    return None if resolved is None else resolved[0]
