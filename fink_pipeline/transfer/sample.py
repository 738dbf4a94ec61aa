"""Samples of archive nights read with pyarrow, and the Avro size of their projected content.

`read_sample` reads a deterministic random sample of a night (only the row groups holding
sampled rows, only the columns asked for); `avro_bytes_per_alert` projects sample rows on a
request's content exactly as the job does (light-packet flattening, class columns, map keys,
Spark's nullability) and measures the schemaless Avro payload. Used by `transfer.estimate`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fink_pipeline.archive.footers import FooterSummary
from fink_pipeline.archive.layout import resolve
from fink_pipeline.archive.stats import classify_table, night_footers
from fink_pipeline.surveys.base import Survey
from fink_pipeline.transfer.content import PARTITION_COLUMNS, ContentPlan
from fink_pipeline.transfer.metrics import parquet_leaf_paths

if TYPE_CHECKING:
    from fink_pipeline.transfer.plan import TransferPlan


def _sample_indices(total: int, size: int, seed: int, night: dt.date) -> np.ndarray:
    """Sorted row numbers of a deterministic random sample of one night (all rows if smaller)."""
    if size >= total:
        return np.arange(total)
    rng = np.random.default_rng([seed, night.toordinal()])
    return np.sort(rng.choice(total, size=size, replace=False))


def read_sample(root: str, survey: Survey, night: dt.date, fields: Sequence[str], size: int,
                seed: int = 0, *, footers: Mapping[str, FooterSummary] | None = None,
                one_group: bool = False) -> tuple[pa.Table, int]:
    """(sample, rows in the night): `size` random rows of the night with only `fields` (nested
    as in the archive), plus the partition columns year/month/day. Reads only the row groups
    holding sampled rows, and within them only the columns of `fields`. `footers`: the night's
    files and footer summaries already made (`TransferPlan.footers`), else listed and read here.

    `one_group`: the first `size` rows of one row group drawn at random instead, decoded alone
    (a random sample of a few hundred rows touches every row group of a night, i.e. reads
    the whole night): enough for typical rows, such as the Avro size of a content."""
    if footers is None:
        footers = night_footers(root, survey.name, night)
    fs, _ = resolve(root)
    groups = [(footer, g, int(n)) for footer in footers.values() for g, n in enumerate(footer.row_group_rows)]
    total = sum(n for _, _, n in groups)
    pieces = []
    with contextlib.ExitStack() as stack:
        current: dict[str, pq.ParquetFile] = {}

        def handle_of(footer: FooterSummary) -> pq.ParquetFile:
            # only files holding sampled rows are opened, their footer read again (summaries do
            # not keep it), one at a time: row groups come file by file
            if footer.path not in current:
                stack.close()
                current.clear()
                current[footer.path] = pq.ParquetFile(stack.enter_context(fs.open_input_file(footer.path)))
            return current[footer.path]

        if one_group:
            filled = [group for group in groups if group[2]]
            if filled and size > 0:
                rng = np.random.default_rng([seed, night.toordinal()])
                footer, g, _ = filled[int(rng.integers(len(filled)))]
                batches = handle_of(footer).iter_batches(batch_size=size, row_groups=[g],
                                                         columns=parquet_leaf_paths(footer.schema, fields),
                                                         use_threads=False)
                pieces.append(pa.Table.from_batches([next(batches)]))
        else:
            wanted = _sample_indices(total, size, seed, night)
            start = 0
            for footer, g, n in groups:
                lo, hi = np.searchsorted(wanted, [start, start + n])
                if hi > lo:
                    table = handle_of(footer).read_row_group(g, columns=parquet_leaf_paths(footer.schema, fields))
                    pieces.append(table.take(pa.array(wanted[lo:hi] - start)))
                start += n
    sample = pa.concat_tables(pieces, promote_options="permissive") if pieces else pa.table({})
    rows = sample.num_rows
    for name, value in zip(PARTITION_COLUMNS, (night.year, night.month, night.day)):
        sample = sample.append_column(name, pa.array([value] * rows, pa.int32()))
    return sample, total


def sample_classes(survey: Survey, table: pa.Table, tns_catalog) -> dict[str, list]:
    labels = classify_table(survey, table, tns_catalog)
    return {c: pc.cast(labels[c], pa.string()).to_pylist() for c in survey.class_columns}


def _nullable_type(dtype: pa.DataType) -> pa.DataType:
    """`dtype` with every nested field nullable, as Spark reads any file (`asNullable`)."""
    if pa.types.is_struct(dtype):
        return pa.struct([pa.field(f.name, _nullable_type(f.type), True) for f in dtype])
    if pa.types.is_map(dtype):
        return pa.map_(dtype.key_type, pa.field(dtype.item_field.name, _nullable_type(dtype.item_type), True))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        return pa.list_(pa.field(dtype.value_field.name, _nullable_type(dtype.value_type), True))
    return dtype


def _struct_path(table: pa.Table, path: str) -> pa.Array | None:
    head, *rest = path.split(".")
    if head not in table.column_names:
        return None
    arr = table.column(head).combine_chunks()
    for name in rest:
        if not pa.types.is_struct(arr.type) or arr.type.get_field_index(name) < 0:
            return None
        arr = pc.struct_field(arr, name)
    return arr


def project_arrow(table: pa.Table, content: ContentPlan, classes: Mapping[str, pa.Array],
                  field_types: Mapping[str, pa.DataType] | None = None) -> pa.Table:
    """The job's projection (`content.project`) of archive rows, in Arrow, with the schema Spark
    publishes: every field nullable except whole struct columns and the always-set tnsclass.
    A field the rows lack (a night of an older schema) is null with its type in `field_types`
    (the survey's `field_paths`), as Spark reads it."""
    arrays, fields = [], []
    for source, name in content.columns:
        if source in classes:
            arr = classes[source]
            nullable = source != "tnsclass"  # coalesce(..., "Unknown") in the job: never null
        else:
            arr = _content_path(table, source, field_types or {})
            nullable = not pa.types.is_struct(arr.type)
        dtype = _nullable_type(arr.type)
        arrays.append(arr.cast(dtype) if dtype != arr.type else arr)
        fields.append(pa.field(name, dtype, nullable))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _content_path(table: pa.Table, source: str, field_types: Mapping[str, pa.DataType]) -> pa.Array:
    """One content field of `table`: a plain field, a map key (`mangrove.HyperLEDA_name`), or
    nulls of its archive type when the rows lack it."""
    arr = _struct_path(table, source)
    if arr is not None and not pa.types.is_null(arr.type):
        return arr
    root, _, key = source.rpartition(".")
    maps = _struct_path(table, root) if root else None
    if arr is None and maps is not None and pa.types.is_map(maps.type):
        return pc.map_lookup(maps, pa.scalar(key, pa.string()), "first")
    dtype = field_types.get(source)
    if dtype is None and pa.types.is_map(field_types.get(root, pa.null())):
        dtype = field_types[root].item_type
    return pa.nulls(table.num_rows, dtype if dtype is not None else pa.string())


def avro_bytes_per_alert(table: pa.Table, content: ContentPlan, classes: Mapping[str, pa.Array],
                         field_types: Mapping[str, pa.DataType] | None = None) -> float:
    """Mean schemaless Avro payload of the rows once projected on `content`."""
    from fink_pipeline.avro import avro_schema_from_arrow, encode_batch

    if table.num_rows == 0:
        return 0.0
    projected = project_arrow(table, content, classes, field_types)
    payloads = encode_batch(projected, avro_schema_from_arrow(projected.schema))
    return float(pc.sum(pc.binary_length(payloads)).as_py()) / table.num_rows


def size_sample(plan: "TransferPlan", nights: Sequence[dt.date], size_rows: int, seed: int) -> tuple[pa.Table, dict]:
    """A few alerts from up to three nights (first, middle, last) with every column the content needs."""
    survey = plan.survey
    fields = plan.read_fields(selection=False)
    chosen = sorted({nights[0], nights[len(nights) // 2], nights[-1]}) if nights else []
    pieces = []
    for night in chosen:
        per_night = max(size_rows // len(chosen), 1)
        sample, _ = read_sample(plan.archive_root, survey, night, fields, per_night, seed + 1,
                                footers=plan.footers.get(night), one_group=True)
        pieces.append(sample)
    if not pieces:
        return pa.table({}), {}
    table = pa.concat_tables(pieces, promote_options="permissive")
    return table, classify_table(survey, table, plan.class_tns_catalog)
