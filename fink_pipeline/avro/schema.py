"""Avro schemas of Fink's Data Transfer stream, derived from Arrow schemas and back.

`avro_schema_from_arrow` follows fink_utils `schema_converter.to_avro` (reference section 4.3)
as applied by the transfer job after `sanitize_fields` (section 4.2):

* top record ``topLevelRecord.value``; every other record ``topLevelRecord.<fieldName>``
  (the name of the field holding the struct, or of the array holding struct items);
  records that are map values are named ``topLevelRecord`` (resolved by Avro namespace
  inheritance to ``topLevelRecord.topLevelRecord``);
* struct fields are plain records, never wrapped in a union (the job rebuilds them with
  ``struct(X.*)``, so a null struct is written as a record whose fields are all null, and
  the fields of a nullable struct are nullable);
* nullable primitives, arrays and maps are ``[T, "null"]`` (null second, like Spark's
  ``to_avro``); nullable array items and map values likewise, records included;
* Arrow int32 -> int, int64 -> long, float32 -> float, float64 -> double, bool -> boolean,
  binary -> bytes, string -> string, timestamps and dates -> string (the job casts them).

Beyond Fink (whose converter raises or emits an invalid schema there): lists of lists or of
maps are accepted, and a generated record name that is already taken (two nested structs with
the same field name, two maps of structs) gets a ``_2``, ``_3``... suffix, since Avro (and
fastavro) reject a redefined named type.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import fastavro
import pyarrow as pa

AvroType = Any  # str | list | dict, as in Avro's JSON form

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _leaf_avro_type(dtype: pa.DataType) -> str | None:
    """Avro primitive for an Arrow leaf type, None for nested types."""
    t = pa.types
    if t.is_dictionary(dtype):
        return _leaf_avro_type(dtype.value_type)
    if t.is_boolean(dtype):
        return "boolean"
    if t.is_int8(dtype) or t.is_int16(dtype) or t.is_int32(dtype) or t.is_uint8(dtype) or t.is_uint16(dtype):
        return "int"
    if t.is_int64(dtype) or t.is_uint32(dtype):
        return "long"
    if t.is_float16(dtype) or t.is_float32(dtype):
        return "float"
    if t.is_float64(dtype):
        return "double"
    if t.is_string(dtype) or t.is_large_string(dtype) or t.is_string_view(dtype):
        return "string"
    if t.is_binary(dtype) or t.is_large_binary(dtype) or t.is_binary_view(dtype):
        return "bytes"
    if t.is_fixed_size_binary(dtype):
        return "bytes"
    if t.is_timestamp(dtype) or t.is_date(dtype):
        return "string"
    if t.is_struct(dtype) or t.is_map(dtype) or is_list_type(dtype):
        return None
    raise TypeError(f"Arrow type {dtype} has no Avro equivalent in Fink's Data Transfer schemas")


def is_list_type(dtype: pa.DataType) -> bool:
    """True for every Arrow list layout (list, large_list, fixed_size_list, list views)."""
    t = pa.types
    kinds = (t.is_list, t.is_large_list, t.is_fixed_size_list, t.is_list_view, t.is_large_list_view)
    return any(kind(dtype) for kind in kinds)


class _Namer:
    """Hands out Fink-style record names, made unique when Fink's scheme would collide."""

    def __init__(self, record_name: str) -> None:
        self.record_name = record_name
        self.used: set[str] = set()

    def take(self, name: str, resolved: str) -> str:
        """Reserve `name` (whose fully qualified form is `resolved`), suffixing it if taken."""
        candidate, full, k = name, resolved, 1
        while full in self.used:
            k += 1
            candidate, full = f"{name}_{k}", f"{resolved}_{k}"
        self.used.add(full)
        return candidate


def _nullable(avro_type: AvroType, nullable: bool) -> AvroType:
    return [avro_type, "null"] if nullable else avro_type


def _record(struct: pa.StructType, name: str, namer: _Namer, null_parent: bool = False) -> dict:
    """Record of a struct; `null_parent`: the struct itself can be null, so are its fields
    (Spark's struct(X.*) makes X.y nullable when X is, and a null X is written that way)."""
    fields = [{"name": child.name, "type": _field_type(child, namer, null_parent)} for child in struct]
    # key order as in fink_utils' output: type, name, fields
    return {"type": "record", "name": name, "fields": fields}


def _named_record(struct: pa.StructType, field_name: str, namer: _Namer, null_parent: bool = False) -> dict:
    full = f"{namer.record_name}.{field_name}"
    return _record(struct, namer.take(full, full), namer, null_parent)


def _value_type(dtype: pa.DataType, field_name: str, namer: _Namer) -> AvroType:
    """Avro type of a list item or map value (struct items named after the holding field)."""
    if pa.types.is_struct(dtype):
        return _named_record(dtype, field_name, namer)
    return _container_or_leaf(dtype, field_name, namer)


def _container_or_leaf(dtype: pa.DataType, field_name: str, namer: _Namer) -> AvroType:
    if pa.types.is_dictionary(dtype):
        return _container_or_leaf(dtype.value_type, field_name, namer)
    if pa.types.is_map(dtype):
        key = dtype.key_type
        if not (pa.types.is_string(key) or pa.types.is_large_string(key) or pa.types.is_string_view(key)):
            raise TypeError(f"Avro maps need string keys, got {dtype.key_type}")
        item = dtype.item_field
        if pa.types.is_struct(item.type):
            # fink_utils names map-value records plain "topLevelRecord" (no field name)
            name = namer.take(namer.record_name, f"{namer.record_name}.{namer.record_name}")
            values = _record(item.type, name, namer)
        else:
            values = _container_or_leaf(item.type, field_name, namer)
        return {"type": "map", "values": _nullable(values, item.nullable)}
    if is_list_type(dtype):
        item = dtype.value_field
        return {"type": "array", "items": _nullable(_value_type(item.type, field_name, namer), item.nullable)}
    leaf = _leaf_avro_type(dtype)
    assert leaf is not None  # structs are handled by the callers
    return leaf


def _field_type(field: pa.Field, namer: _Namer, null_parent: bool = False) -> AvroType:
    nullable = field.nullable or null_parent
    if pa.types.is_struct(field.type):
        # never a union: see the module docstring
        return _named_record(field.type, field.name, namer, nullable)
    return _nullable(_container_or_leaf(field.type, field.name, namer), nullable)


def avro_schema_from_arrow(
    schema: pa.Schema, record_name: str = "topLevelRecord", top_name: str = "value"
) -> dict:
    """Avro schema (JSON-able dict) of the Data Transfer stream for rows of `schema`.

    The result is what fink_utils' ``schema_converter.to_avro`` gives for the equivalent Spark
    schema once the job has made every struct column non-nullable (see the module docstring).
    """
    namer = _Namer(record_name)
    top = f"{record_name}.{top_name}"
    namer.used.add(top)
    fields = [{"name": f.name, "type": _field_type(f, namer)} for f in schema]
    return {"type": "record", "name": top, "fields": fields}


def schema_json(avro_schema: dict) -> str:
    """The schema as published in the ``<topic>_schema`` key (``json.dumps(..., indent=2)``)."""
    return json.dumps(avro_schema, indent=2)


def schema_fingerprint(avro_schema: dict) -> str:
    """Short sha256 hex digest (16 chars) of the schema's canonical JSON (sorted keys, compact).

    Parsed (fastavro) and raw forms of one schema get different fingerprints; compare like
    with like.
    """
    canonical = json.dumps(avro_schema, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


_MEMO: dict[tuple[int, str], tuple[dict, Any]] = {}


def memoized(avro_schema: dict, kind: str, build: Callable[[dict], Any]) -> Any:
    """`build(avro_schema)`, cached per schema object: a batch codec is called again and again
    with the same schema, and parsing it (or writing a framing header) costs milliseconds.
    Schemas are therefore treated as immutable once used."""
    key = (id(avro_schema), kind)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is avro_schema:
        return hit[1]
    value = build(avro_schema)
    if len(_MEMO) >= 64:
        _MEMO.clear()
    _MEMO[key] = (avro_schema, value)  # the strong reference keeps id() from being reused
    return value


def parse_schema(avro_schema: dict) -> dict:
    """fastavro-parsed form of a raw or already parsed schema (names fully qualified)."""
    return memoized(avro_schema, "parsed", fastavro.parse_schema)


def resolve(avro_type: AvroType, named: dict[str, dict]) -> AvroType:
    """Replace a reference to a named type by its definition."""
    if isinstance(avro_type, str) and avro_type not in _PRIMITIVES:
        return named[avro_type]
    if isinstance(avro_type, dict) and avro_type.get("type") in _PRIMITIVES and len(avro_type) == 1:
        return avro_type["type"]
    return avro_type


def split_nullable(avro_type: AvroType) -> tuple[AvroType, int | None]:
    """For a union ``[T, "null"]`` / ``["null", T]`` return (T, index of "null"); else (type, None)."""
    if not isinstance(avro_type, list):
        return avro_type, None
    if len(avro_type) == 2 and "null" in avro_type:
        null_index = avro_type.index("null")
        return avro_type[1 - null_index], null_index
    raise NotImplementedError(f"only [T, 'null'] unions are supported, got {avro_type}")


#: Avro primitive type name -> Arrow type (shared with the archive importer)
AVRO_PRIMITIVE_TO_ARROW = {
    "boolean": pa.bool_(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "bytes": pa.binary(),
    "string": pa.string(),
}


class UnsupportedAvroType(ValueError):
    """An Avro type with no Arrow column equivalent (e.g. a union of several non-null types)."""


#: Avro logical types read as Arrow temporal types when importing any writer's files
_AVRO_LOGICAL = {
    "timestamp-millis": pa.timestamp("ms", tz="UTC"),
    "timestamp-micros": pa.timestamp("us", tz="UTC"),
    "local-timestamp-millis": pa.timestamp("ms"),
    "local-timestamp-micros": pa.timestamp("us"),
    "date": pa.date32(),
}


def _arrow_type(avro_type: AvroType, named: dict[str, dict], path: str, any_writer: bool) -> pa.DataType:
    if isinstance(avro_type, str) and avro_type not in _PRIMITIVES and avro_type not in named:
        raise UnsupportedAvroType(f"field {path!r}: unknown Avro type {avro_type!r}")
    avro_type = resolve(avro_type, named)
    if isinstance(avro_type, str):
        if avro_type in AVRO_PRIMITIVE_TO_ARROW:
            return AVRO_PRIMITIVE_TO_ARROW[avro_type]
        if avro_type == "null" and any_writer:
            return pa.null()
        raise UnsupportedAvroType(f"field {path!r}: Avro type {avro_type!r} is not supported")
    kind = avro_type["type"]
    if any_writer and avro_type.get("logicalType") in _AVRO_LOGICAL:
        return _AVRO_LOGICAL[avro_type["logicalType"]]
    if kind == "record":
        return pa.struct([_arrow_field(f["name"], f["type"], named, f"{path}.{f['name']}", any_writer)
                          for f in avro_type["fields"]])
    if kind == "array":
        item = _arrow_field("element", avro_type["items"], named, path, any_writer)
        return pa.list_(item.type) if any_writer else pa.list_(item)
    if kind == "map":
        value = _arrow_field("value", avro_type["values"], named, path, any_writer)
        return pa.map_(pa.field("key", pa.string(), nullable=False), value)
    if any_writer and kind == "enum":
        return pa.string()
    if any_writer and kind == "fixed":
        return pa.binary()
    if kind in AVRO_PRIMITIVE_TO_ARROW:
        return AVRO_PRIMITIVE_TO_ARROW[kind]
    raise UnsupportedAvroType(f"field {path!r}: Avro type {kind!r} is not supported")


def _arrow_field(name: str, avro_type: AvroType, named: dict[str, dict], path: str, any_writer: bool) -> pa.Field:
    if not (isinstance(avro_type, str) and avro_type not in _PRIMITIVES and avro_type not in named):
        avro_type = resolve(avro_type, named)
    if any_writer and isinstance(avro_type, list):
        branches = [b for b in avro_type if b != "null"]
        if len(branches) != 1:
            raise UnsupportedAvroType(f"field {path!r}: union {avro_type} of several types is not supported")
        return pa.field(name, _arrow_type(branches[0], named, path, any_writer))
    try:
        inner, null_index = split_nullable(avro_type)
    except NotImplementedError as exc:
        raise UnsupportedAvroType(f"field {path!r}: {exc}") from None
    dtype = _arrow_type(inner, named, path, any_writer)
    return pa.field(name, dtype, nullable=any_writer or null_index is not None)


def arrow_schema_for_avro(avro_schema: dict, *, any_writer: bool = False) -> pa.Schema:
    """Arrow schema of the rows of a record schema (raw or fastavro-parsed).

    Default (what `decode_batch` produces for our publications): ``[T, "null"]`` gives a
    nullable field, anything else a non-nullable one (so Fink's records become non-nullable
    structs); int -> int32, long -> int64, float -> float32, double -> float64, boolean -> bool,
    string -> string, bytes -> binary, array -> list with item field ``element``, map ->
    map<string, V> with fields ``key`` / ``value``.

    `any_writer` (the archive importer, for files of any writer, as fastavro decodes them):
    every field nullable, ``["null", T]`` and ``[T, "null"]`` unions become T, enums become
    strings, fixed becomes binary, timestamp/date logical types become Arrow timestamps/dates.
    A type with no Arrow equivalent (a union of several non-null types) raises
    UnsupportedAvroType naming the field.
    """
    parsed = parse_schema(avro_schema)
    named = parsed.get("__named_schemas", {})
    return pa.schema([_arrow_field(f["name"], f["type"], named, f["name"], any_writer) for f in parsed["fields"]])
