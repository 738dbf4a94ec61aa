"""How output rows are grouped into folders (`-partitionby`): the survey's time (year/month/day
as fink-client writes them), none, or any scalar field of the topic, and the Hive folder of
each group.

A field is named as the topic has it: a root column (`finkclass`, `tns_type_recomputed`,
`classId`) partitions as it is; a nested one (`pred.main_label_classifier`) is copied into a
root partition column named with underscores (`pred_main_label_classifier`: a dot is not a
valid Delta, Parquet or Hive partition column name), its record published unchanged. Rows whose
value is null land in `<column>=__HIVE_DEFAULT_PARTITION__`, as pyarrow's dataset writer (and so
fink-client) and delta-rs write them, and read back as nulls.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.surveys.base import JD_UNIX_EPOCH, MJD_UNIX_EPOCH, schema_field_type

# Named modes; any other -partitionby is a field path of the topic (fink-client: finkclass,
# tnsclass and classId).
PARTITION_MODES = ("time", "none")

TIME_COLUMNS = ("year", "month", "day")

_FIELD_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_SHOWN_CHARS = 60


def _shown_type(dtype: pa.DataType) -> str:
    text = str(dtype)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...>"


@dataclass(frozen=True)
class Partitioning:
    """How output rows are grouped into folders (`-partitionby`): time, none or a field path."""

    mode: str
    time_column: str | None = None
    time_scale: str = "jd"

    def __post_init__(self) -> None:
        if self.mode not in PARTITION_MODES and not _FIELD_PATH.fullmatch(str(self.mode)):
            shown = repr(str(self.mode)[:_SHOWN_CHARS])
            raise ValueError(f"-partitionby {shown} is not a field name: write time, none or a field of the topic "
                             "such as finkclass or pred.main_label_classifier")

    @property
    def column(self) -> str | None:
        """The partition column of a field mode (`pred.main_label_classifier` ->
        `pred_main_label_classifier`); None for time and none."""
        return None if self.mode in PARTITION_MODES else self.mode.replace(".", "_")

    @property
    def columns(self) -> list[str]:
        if self.mode == "none":
            return []
        if self.mode == "time":
            return list(TIME_COLUMNS)
        return [self.column]

    def check(self, schema: pa.Schema) -> None:
        """Fail early, in one line naming the field and the fix, when the content cannot be
        partitioned this way."""
        if self.mode == "none":
            return
        if self.mode == "time":
            if _time_field(schema, self.time_column) is None:
                raise ValueError(
                    f"-partitionby time needs the time column {self.time_column!r} in the topic's content; "
                    "use -partitionby none (or a class column) for this topic"
                )
            return
        dtype = schema_field_type(schema, self.mode)
        if dtype is None:
            raise ValueError(f"-partitionby {self.mode}: the topic has no {self.mode!r} field; "
                             + _field_hint(schema, self.mode))
        if pa.types.is_nested(dtype) or pa.types.is_binary(dtype) or pa.types.is_floating(dtype):
            kind = "values too many to name folders" if pa.types.is_floating(dtype) else "not one value per alert"
            raise ValueError(f"-partitionby {self.mode}: {self.mode!r} is a {_shown_type(dtype)} ({kind}); "
                             "choose time, none or a scalar field such as a class or a flag")
        if "." in self.mode and self.column in schema.names:
            raise ValueError(f"-partitionby {self.mode}: the topic already has a root field {self.column!r}, the "
                             f"partition column of {self.mode}; partition by {self.column} instead")

    def apply(self, table: pa.Table) -> pa.Table:
        """Add the partition columns (vectorised): year/month/day of the time, or the root copy
        of a nested field; root fields are kept as they are."""
        if self.mode == "time":
            return add_time_partitions(table, self.time_column, self.time_scale)
        if self.mode != "none" and "." in self.mode and self.column not in table.column_names:
            root, *rest = self.mode.split(".")
            values = table[root]
            for part in rest:
                values = pc.struct_field(values, part)
            return table.append_column(self.column, values)
        return table

    def output_schema(self, schema: pa.Schema) -> pa.Schema:
        """Schema of the rows written for decoded rows of `schema`."""
        return self.apply(schema.empty_table()).schema




def default_partitioning(default_mode: str, time_column: str | None, time_scale: str,
                         schema: pa.Schema) -> tuple[Partitioning, str | None]:
    """The survey's default partitioning when the topic's content allows it, else by time, else
    none (a ZTF topic without finkclass, such as an fxmatch_ topic's objectId, candid, jd and
    id: by night); with the reason when the default had to be changed."""
    for mode in (default_mode, "time", "none"):
        partitioning = Partitioning(mode, time_column, time_scale)
        try:
            partitioning.check(schema)
        except ValueError:
            continue
        note = None if mode == default_mode else f"the topic has no {default_mode!r} field: partitioned by {mode}"
        return partitioning, note
    raise AssertionError("partitioning 'none' always applies")


def _field_hint(schema: pa.Schema, path: str) -> str:
    """The fix for a field the topic lacks: its flattened name, a close field, or the choices."""
    last = path.rsplit(".", 1)[-1]
    if "." in path and last in schema.names:
        return f"it has {last!r} (flattened by the packet): -partitionby {last}"
    paths: list[str] = []

    def visit(prefix: str, dtype: pa.DataType) -> None:
        paths.append(prefix)
        if pa.types.is_struct(dtype):
            for child in dtype:
                visit(f"{prefix}.{child.name}", child.type)

    for f in schema:
        visit(f.name, f.type)
    match = difflib.get_close_matches(path, paths, n=1, cutoff=0.6)
    if match:
        return f"did you mean {match[0]!r}?"
    classes = [n for n in schema.names if "class" in n.lower()][:5]
    return "choose time, none or a scalar field" + (f" such as {', '.join(classes)}" if classes else "")


def _time_field(schema_or_table, time_column: str | None):
    """Dotted path of the time column as it exists in the content (root name when flattened)."""
    if not time_column:
        return None
    names = schema_or_table.schema.names if isinstance(schema_or_table, pa.Table) else schema_or_table.names
    for candidate in (time_column, time_column.rsplit(".", 1)[-1]):
        if candidate.split(".")[0] in names:
            schema = schema_or_table.schema if isinstance(schema_or_table, pa.Table) else schema_or_table
            dtype = schema.field(candidate.split(".")[0]).type
            ok = True
            for part in candidate.split(".")[1:]:
                if not pa.types.is_struct(dtype) or dtype.get_field_index(part) < 0:
                    ok = False
                    break
                dtype = dtype.field(part).type
            if ok:
                return candidate
    return None


def add_time_partitions(table: pa.Table, time_column: str | None, time_scale: str = "jd") -> pa.Table:
    """year/month/day of the survey's time column as zero-padded strings (`month=03`, the
    layout fink-client writes), replacing any existing year/month/day columns."""
    path = _time_field(table, time_column)
    if path is None:
        raise ValueError(f"-partitionby time needs the time column {time_column!r} in the content")
    parts = path.split(".")
    times = table[parts[0]]
    for part in parts[1:]:
        times = pc.struct_field(times, part)
    epoch = JD_UNIX_EPOCH if time_scale == "jd" else MJD_UNIX_EPOCH
    seconds = pc.multiply(pc.subtract(pc.cast(times, pa.float64()), epoch), 86400.0)
    stamps = pc.cast(pc.cast(pc.floor(seconds), pa.int64()), pa.timestamp("s"))
    table = table.drop_columns([c for c in TIME_COLUMNS if c in table.column_names])
    for name, fmt in zip(TIME_COLUMNS, ("%Y", "%m", "%d")):
        table = table.append_column(pa.field(name, pa.string()), pc.strftime(stamps, format=fmt))
    return table


def hive_groups(table: pa.Table, columns: list[str]):
    """(Hive folder, rows without the partition columns) per partition value, as pyarrow's
    dataset writer names them (`finkclass=SN%20candidate`, `__HIVE_DEFAULT_PARTITION__` for
    null). One sort and zero-copy slices: cheaper than the dataset writer's per-group takes."""
    if not columns:
        yield ".", table
        return
    ordered = table.sort_by([(c, "ascending") for c in columns])
    if len(columns) == 1:
        key = ordered[columns[0]].combine_chunks()
    else:
        key = pc.binary_join_element_wise(
            *[pc.fill_null(pc.cast(ordered[c], pa.string()), "\x00") for c in columns], "/").combine_chunks()
    import pyarrow.dataset as ds  # here: it imports pandas, which Delta-only processes never need

    runs = pc.run_end_encode(key)
    naming = ds.partitioning(pa.schema([ordered.schema.field(c) for c in columns]), flavor="hive")
    body = ordered.drop_columns(columns)
    start = 0
    for end in runs.run_ends.to_pylist():
        expression = None
        for c in columns:
            value = ordered[c][start]
            term = pc.field(c).is_null() if not value.is_valid else pc.field(c) == value
            expression = term if expression is None else expression & term
        yield naming.format(expression)[0], body.slice(start, end - start)
        start = end
