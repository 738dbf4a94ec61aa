"""The small type system of conditions: Arrow types reduced to the kinds Spark compares, and the
checked sub-expressions (`Out`) the checker builds."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp


class Kind(enum.Enum):
    NUMERIC = "numeric"
    STRING = "string"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    BINARY = "binary"
    NULL = "null"
    STRUCT = "struct"
    ARRAY = "array"
    MAP = "map"
    OTHER = "other"


SCALAR = {Kind.NUMERIC, Kind.STRING, Kind.BOOLEAN, Kind.TIMESTAMP, Kind.DATE}
NO_VALUE = object()


@dataclass(frozen=True)
class SqlType:
    kind: Kind
    arrow: pa.DataType | None = None

    def __str__(self) -> str:
        return self.kind.value


def arrow_kind(dtype: pa.DataType) -> Kind:
    t = pa.types
    if t.is_dictionary(dtype):
        return arrow_kind(dtype.value_type)
    if t.is_integer(dtype) or t.is_floating(dtype) or t.is_decimal(dtype):
        return Kind.NUMERIC
    if t.is_string(dtype) or t.is_large_string(dtype) or getattr(t, "is_string_view", lambda _: False)(dtype):
        return Kind.STRING
    if t.is_boolean(dtype):
        return Kind.BOOLEAN
    if t.is_timestamp(dtype):
        return Kind.TIMESTAMP
    if t.is_date(dtype):
        return Kind.DATE
    if t.is_binary(dtype) or t.is_large_binary(dtype) or t.is_fixed_size_binary(dtype):
        return Kind.BINARY
    if t.is_struct(dtype):
        return Kind.STRUCT
    if t.is_list(dtype) or t.is_large_list(dtype) or t.is_fixed_size_list(dtype):
        return Kind.ARRAY
    if t.is_map(dtype):
        return Kind.MAP
    if t.is_null(dtype):
        return Kind.NULL
    return Kind.OTHER


def type_of(dtype: pa.DataType) -> SqlType:
    return SqlType(arrow_kind(dtype), dtype)


NUMERIC = SqlType(Kind.NUMERIC)
STRING = SqlType(Kind.STRING)
BOOLEAN = SqlType(Kind.BOOLEAN)
NULL = SqlType(Kind.NULL)


class Lazy:
    """The user's SQL for a node, rendered only when a message needs it (keeps validation linear)."""

    __slots__ = ("node", "_sql")

    def __init__(self, node: exp.Expr) -> None:
        self.node = node
        self._sql: str | None = None

    def __str__(self) -> str:
        if self._sql is None:
            self._sql = self.node.sql(dialect="spark")
        return self._sql

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class Out:
    """A validated sub-expression: the rebuilt sqlglot node, its type, its literal value."""

    __slots__ = ("node", "type", "_text", "value", "path")

    def __init__(self, node: exp.Expr, type: SqlType, text: "str | Lazy", value: object = NO_VALUE,
                 path: str | None = None) -> None:
        self.node = node
        self.type = type
        self._text = text  # how the user wrote it (rendered only for messages)
        self.value = value  # Python value when the node is a literal
        self.path = path  # the `fields` key when the node is exactly a known field

    @property
    def text(self) -> str:
        """How the user wrote this sub-expression (for messages)."""
        return str(self._text)

    @property
    def is_literal(self) -> bool:
        return self.value is not NO_VALUE


def describe(t: SqlType) -> str:
    return {
        Kind.NUMERIC: "a number", Kind.STRING: "a string", Kind.BOOLEAN: "a boolean",
        Kind.TIMESTAMP: "a timestamp", Kind.DATE: "a date", Kind.BINARY: "binary data",
        Kind.NULL: "NULL", Kind.STRUCT: "a struct", Kind.ARRAY: "an array", Kind.MAP: "a map",
    }.get(t.kind, f"of type {t.arrow}")


def function_node(name: str, *args: exp.Expr) -> exp.Expr:
    """A call of the Spark function `name` (emitted as written, never renamed by sqlglot)."""
    return exp.Anonymous(this=name, expressions=list(args))
