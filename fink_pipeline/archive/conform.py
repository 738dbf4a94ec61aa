"""Conforming record batches of any schema version to a survey's unified archive schema.

Fields are matched by name at every nesting level, fields the input lacks become null (never
dropped from the archive), compatible types are cast (float -> double, int -> long, string or
nanosecond timestamps -> UTC microsecond timestamps, ...), and values that cannot become the
archive type are stored as null and described. Used by the importer and the generators.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa

from fink_pipeline.archive.sources import ImportFileError


def unknown_fields(source: pa.Schema, target: pa.Schema, ignore: Iterable[str] = ()) -> tuple[str, ...]:
    """Dotted paths of the input that the archive schema has no place for (reported as dropped).

    List items and map values are entered as if transparent (`prv_candidates.fp_flux`).
    """
    ignored = set(ignore)
    out: list[str] = []

    def visit(path: str, src: pa.DataType, tgt: pa.DataType | None) -> None:
        src, tgt = _element(src), _element(tgt) if tgt is not None else None
        if not pa.types.is_struct(src) or tgt is None or not pa.types.is_struct(tgt):
            return
        names = {f.name for f in tgt}
        for child in src:
            child_path = f"{path}.{child.name}"
            if child.name not in names:
                out.append(child_path)
            else:
                visit(child_path, child.type, tgt.field(child.name).type)

    for f in source:
        if f.name in ignored:
            continue
        if target.get_field_index(f.name) < 0:
            out.append(f.name)
        else:
            visit(f.name, f.type, target.field(f.name).type)
    return tuple(out)


def _element(dtype: pa.DataType) -> pa.DataType:
    """The struct inside lists and map values (what a dotted path descends into)."""
    while True:
        if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
            dtype = dtype.value_type
        elif pa.types.is_map(dtype):
            dtype = dtype.item_type
        else:
            return dtype


def conform_batch(batch: pa.RecordBatch, target: pa.Schema, issues: list[str] | None = None) -> pa.RecordBatch:
    """`batch` with exactly the `target` schema: columns matched by name, missing ones null.

    A field whose values cannot become the archive type (e.g. Fink's 2021 `mulens` record where
    the archive has the later `mulens` score) is stored as null and described in `issues`.
    """
    columns = []
    for f in target:
        index = batch.schema.get_field_index(f.name)
        if index < 0:
            columns.append(pa.nulls(batch.num_rows, f.type))
        else:
            columns.append(conform_array(batch.column(index), f.type, f.name, issues))
    return pa.RecordBatch.from_arrays(columns, schema=target)


def conform_array(arr: pa.Array, target: pa.DataType, path: str, issues: list[str] | None = None) -> pa.Array:
    """One array cast to `target`, recursively through structs, lists and maps.

    Incompatible values become nulls, described in `issues` (raises ImportFileError if None).
    """
    try:
        return _conform(arr, target, path, issues)
    except ImportFileError as exc:
        if issues is None:
            raise
        issues.append(f"{exc} (stored as null)")
        return pa.nulls(len(arr), target)


def _conform(arr: pa.Array, target: pa.DataType, path: str, issues: list[str] | None) -> pa.Array:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    src = arr.type
    if src == target:
        return arr
    if pa.types.is_null(src):
        return pa.nulls(len(arr), target)
    if pa.types.is_dictionary(src):
        return _conform(arr.dictionary_decode(), target, path, issues)
    mask = arr.is_null() if arr.null_count else None
    if pa.types.is_struct(target):
        if not pa.types.is_struct(src):
            raise ImportFileError(f"field {path!r}: {src} cannot become the archive's {target}")
        names = [f.name for f in src]
        children = []
        for child in target:
            if child.name in names:
                children.append(conform_array(arr.field(child.name), child.type, f"{path}.{child.name}", issues))
            else:
                children.append(pa.nulls(len(arr), child.type))
        return pa.StructArray.from_arrays(children, fields=list(target), mask=mask)
    if pa.types.is_list(target):
        if pa.types.is_large_list(src) or pa.types.is_fixed_size_list(src) or pa.types.is_list_view(src):
            arr = arr.cast(pa.list_(src.value_field))
            src = arr.type
        if not pa.types.is_list(src):
            raise ImportFileError(f"field {path!r}: {src} cannot become the archive's {target}")
        values = _conform(arr.values, target.value_type, path, issues)
        return pa.ListArray.from_arrays(arr.offsets, values, type=target, mask=mask)
    if pa.types.is_map(target):
        if pa.types.is_struct(src):
            return _struct_to_map(arr, target, path, issues)
        if not pa.types.is_map(src):
            raise ImportFileError(f"field {path!r}: {src} cannot become the archive's {target}")
        keys = _conform(arr.keys, target.key_type, path, issues)
        items = _conform(arr.items, target.item_type, path, issues)
        return pa.MapArray.from_arrays(arr.offsets, keys, items, type=target, mask=mask)
    return _cast_leaf(arr, target, path)


def _struct_to_map(arr: pa.StructArray, target: pa.MapType, path: str, issues: list[str] | None) -> pa.MapArray:
    """A record of named values as a map {field name: value} (older Fink `mangrove`)."""
    n, k = len(arr), arr.type.num_fields
    names = [f.name for f in arr.type]
    values = [_conform(arr.field(i), target.item_type, f"{path}.{names[i]}", issues) for i in range(k)]
    # row-major interleave: entry j of row r is field j
    order = (np.arange(n)[:, None] + np.arange(k)[None, :] * n).ravel()
    items = pa.concat_arrays(values).take(pa.array(order)) if k else pa.nulls(0, target.item_type)
    keys = pa.array(np.tile(np.array(names, dtype=object), n), target.key_type)
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * k)
    mask = arr.is_null() if arr.null_count else None
    return pa.MapArray.from_arrays(offsets, keys, items, type=target, mask=mask)


def _cast_leaf(arr: pa.Array, target: pa.DataType, path: str) -> pa.Array:
    src = arr.type
    nested = pa.types.is_struct(src) or pa.types.is_list(src) or pa.types.is_map(src) or pa.types.is_large_list(src)
    if nested:
        raise ImportFileError(f"field {path!r}: {src} cannot become the archive's {target}")
    try:
        if pa.types.is_timestamp(target) and (pa.types.is_string(src) or pa.types.is_large_string(src)):
            # Spark's string form of a timestamp ("2026-03-22 11:06:52.004176"), in UTC
            return arr.cast(pa.timestamp(target.unit)).cast(target)
        if pa.types.is_timestamp(target) and pa.types.is_timestamp(src):
            if src.tz is None and target.tz is not None:
                arr = arr.cast(pa.timestamp(src.unit, tz="UTC"))  # naive Spark timestamps are UTC
            # ns -> us drops sub-microsecond digits: intended
            return arr.cast(target, safe=False)
        if pa.types.is_integer(target) and pa.types.is_timestamp(src):
            return arr.cast(pa.int64()).cast(target)  # the raw long of a timestamp logical type
        return arr.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ImportFileError(f"field {path!r}: cannot convert {src} to the archive's {target}: {exc}") from exc
