"""Checking that a night's Parquet files can be read with the survey's archive schema.

The job reads every night with the unified archive schema (missing columns and fields read as
null, which is how older schema versions coexist). A file that stores a column with another
*kind* of type (a map written as Arrow's `null` type by a tool that saw only nulls, a struct
where the archive has a number) cannot be read that way: Spark fails in the middle of the job
with a JVM trace. This check reads only the footers, so a request fails before Spark starts,
naming the file, the column and the fix.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, Mapping

import pyarrow as pa

from fink_pipeline.archive.footers import FooterSchema, FooterSummary


class ArchiveFileSchemaError(ValueError):
    """A night's file stores a column with a type the archive schema cannot read it as."""


# Kinds of Arrow types the job can read as one another (a file's int32 under the archive's
# int64 reads fine; a map written as `null` does not), in the order they are tried.
_KINDS = (
    ("null", (pa.types.is_null,)),
    ("struct", (pa.types.is_struct,)),
    ("map", (pa.types.is_map,)),
    ("list", (pa.types.is_list, pa.types.is_large_list)),
    ("string", (pa.types.is_string, pa.types.is_large_string)),
    ("binary", (pa.types.is_binary, pa.types.is_large_binary)),
    ("boolean", (pa.types.is_boolean,)),
    ("number", (pa.types.is_integer, pa.types.is_floating)),
    ("time", (pa.types.is_timestamp, pa.types.is_date)),
)


def _kind(dtype: pa.DataType) -> str:
    return next((kind for kind, tests in _KINDS if any(test(dtype) for test in tests)), str(dtype))


def type_mismatch(stored: pa.DataType, wanted: pa.DataType, path: str) -> str | None:
    """The dotted path of the first field of `stored` whose kind differs from `wanted`
    (fields present on one side only are fine: they read as null or are not read)."""
    kind, wanted_kind = _kind(stored), _kind(wanted)
    if kind != wanted_kind:
        return path
    if kind == "struct":
        for child in stored:
            index = wanted.get_field_index(child.name)
            if index >= 0:
                found = type_mismatch(child.type, wanted.field(index).type, f"{path}.{child.name}")
                if found:
                    return found
    elif kind == "map":
        return type_mismatch(stored.item_type, wanted.item_type, f"{path}.<value>")
    elif kind == "list":
        return type_mismatch(stored.value_type, wanted.value_type, f"{path}.<element>")
    return None


def check_night_files(footers_by_night: Iterable[tuple[dt.date, Mapping[str, FooterSummary]]],
                      archive_schema: pa.Schema) -> None:
    """Raise ArchiveFileSchemaError for the first file whose footer (path -> summary per night,
    `archive.stats.night_footers`) stores a column of the archive schema with another kind of
    type (see the module docstring). Files sharing the Parquet schema of a file already checked
    (one `FooterSchema` per distinct schema) are not walked again (a night of 100 files has one
    schema: 3.1 s -> 0.01 s)."""
    checked: set[FooterSchema] = set()
    for night, footers in footers_by_night:
        for path, footer in footers.items():
            if footer.schema in checked:
                continue
            checked.add(footer.schema)
            stored = footer.schema.arrow
            for field in stored:
                index = archive_schema.get_field_index(field.name)
                if index < 0:
                    continue  # a column the archive schema does not know is never read
                wanted = archive_schema.field(index).type
                found = type_mismatch(field.type, wanted, field.name)
                if found:
                    raise ArchiveFileSchemaError(
                        f"archive: night {night.isoformat()}: file {path} stores {found!r} as "
                        f"{_describe(stored, found)} where the archive schema has {_describe(archive_schema, found)}, "
                        "so no request can read this night: rewrite it with the archive schema "
                        "(`fink-pipeline archive import` conforms files) or leave the night out of the dates"
                    )


def _field_at(dtype: pa.DataType, parts: list[str]) -> pa.DataType:
    for part in parts:
        if part == "<value>":
            dtype = dtype.item_type
        elif part == "<element>":
            dtype = dtype.value_type
        else:
            dtype = dtype.field(dtype.get_field_index(part)).type
    return dtype


def _describe(schema: pa.Schema, path: str) -> str:
    head, *rest = path.split(".")
    return str(_field_at(schema.field(head).type, rest))
