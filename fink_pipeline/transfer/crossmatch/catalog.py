"""The user catalogue of a cross-match request (Fink's fxmatch_ service): a CSV or Parquet file of
sources, each with a position, an id and a match radius, read and checked before any Spark runs.

`read_catalog` returns a `Catalog` whose table has exactly the columns `ra`, `dec` (float64
degrees, RA in [0, 360), Dec in [-90, 90]), `radius_arcsec` (float64, in (0, 3600]) and `id`
(int64 or string, unique). Coordinates are decimal degrees or sexagesimal text (RA in hours:
`12:34:56.7`, `12 34 56.7`, `12h34m56.7s`; Dec in degrees: `-00:30:00`, `-12 34 56`,
`12d34m56.7s`), mixed freely in one column, parsed with vectorised string operations.

Every problem raises `CatalogError` with one line: the file name, the column and the 1-based data
row (blank lines of a CSV are not rows), the offending value (shortened) and the fix. The format is
decided by the extension (.csv, .tsv, optionally .gz; .parquet, .pq), else by the Parquet magic.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import hashlib
import io
import math
import os
import re
import stat
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from fink_pipeline.transfer.request import MAX_RADIUS_ARCSEC, RequestError

if TYPE_CHECKING:  # polars is imported by the functions that read a catalogue's text (~30 MiB)
    import polars as pl

MAX_CATALOG_ROWS = 10_000_000
CHUNK_BYTES = 1 << 20
SHOWN_CHARS = 40  # a value echoed in a message is cut to this many characters
SHOWN_COLUMNS = 30  # the columns listed when one is missing
FLAGS = {"ra": "--ra-col", "dec": "--dec-col", "id": "--id-col", "radius_arcsec": "--radius-col"}
RA_FORMS = "decimal degrees or sexagesimal hours like 12:34:56.7, 12 34 56.7 or 12h34m56.7s"
DEC_FORMS = "decimal degrees or sexagesimal degrees like -12:34:56.7, -12 34 56.7 or -12d34m56.7s"
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_INT64_MAX = 2**63 - 1
# A plain integer id of a CSV: no sign other than '-', no leading zero ('00123' stays text).
_PLAIN_INTEGER = r"^(?:0|-?[1-9][0-9]{0,18})$"


def _sexagesimal_pattern(unit: str, minute: str, second: str) -> str:
    """Colon, space or letter separated `[+-]D M S[.s]`, one alternative per form (named groups
    sign0..2, d0..2, m0..2, s0..2); the same text for Polars (Rust) and Python regexes."""
    sec = r"[0-9]{1,2}(?:\.[0-9]*)?"
    forms = (
        rf"(?P<sign0>[+-]?)(?P<d0>[0-9]{{1,3}}):(?P<m0>[0-9]{{1,2}}):(?P<s0>{sec})",
        rf"(?P<sign1>[+-]?)(?P<d1>[0-9]{{1,3}})\s+(?P<m1>[0-9]{{1,2}})\s+(?P<s1>{sec})",
        rf"(?P<sign2>[+-]?)(?P<d2>[0-9]{{1,3}})\s*{unit}\s*(?P<m2>[0-9]{{1,2}})\s*{minute}\s*(?P<s2>{sec})\s*{second}?",
    )
    return "(?i)^(?:" + "|".join(forms) + ")$"


RA_PATTERN = _sexagesimal_pattern("h", "m", "s")
DEC_PATTERN = _sexagesimal_pattern("[d°]", "[m'′]", "(?:s|\"|″)")


class CatalogError(RequestError):
    """A catalogue that cannot be cross-matched: one line naming the file, column, row and fix."""


@dataclass(frozen=True)
class Catalog:
    """A checked catalogue: `table` has exactly ra, dec, radius_arcsec (float64) and id."""

    table: pa.Table
    path: str
    sha256: str
    id_col: str

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def file_sha256(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while size := stream.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def read_catalog(path, *, ra_col: str = "ra", dec_col: str = "dec", id_col: str = "id",
                 radius_arcsec: float | None = None, radius_col: str | None = None,
                 max_rows: int = MAX_CATALOG_ROWS) -> Catalog:
    """Read and check a user catalogue (CSV or Parquet); CatalogError on any problem."""
    name = _display_name(path)
    columns = {"ra": ra_col, "dec": dec_col, "id": id_col}
    _check_arguments(name, columns, radius_arcsec, radius_col)
    if radius_col is not None:
        columns["radius_arcsec"] = radius_col
    kind = _file_kind(path, name)
    if kind == "parquet":
        raw, sha256 = _read_parquet(path, name, columns, max_rows)
    else:
        raw, sha256 = _read_csv(path, name, columns, "\t" if kind == "tsv" else ",", max_rows)
    text = kind != "parquet"
    ra = _coordinates(name, ra_col, raw["ra"], hours=True)
    dec = _coordinates(name, dec_col, raw["dec"], hours=False)
    if radius_col is None:
        radius = pa.array(np.full(len(ra), float(radius_arcsec), dtype=np.float64))
    else:
        radius = _radii(name, radius_col, raw["radius_arcsec"])
    ids = _ids(name, id_col, raw["id"], text=text)
    table = pa.table({"ra": ra, "dec": dec, "radius_arcsec": radius, "id": ids})
    return Catalog(table=table, path=os.fspath(path), sha256=sha256, id_col=id_col)


# --------------------------------------------------------------------------------------------
# messages


def _display_name(path) -> str:
    full = os.fspath(path)
    return _printable(os.path.basename(full.rstrip("/" + os.sep)) or full)[:200]


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _show(value) -> str:
    """A value as echoed in a message: text quoted and cut to SHOWN_CHARS, numbers as they are."""
    if isinstance(value, str):
        return repr(value if len(value) <= SHOWN_CHARS else value[:SHOWN_CHARS - 3] + "...")
    return str(value)


def _error(name: str, message: str) -> CatalogError:
    return CatalogError(f"{name}: {message}")


def _at(name: str, column: str, index: int, message: str) -> CatalogError:
    """An error on one value: `index` is 0-based, shown as the 1-based data row."""
    return CatalogError(f"{name}: column {_show(column)}, row {index + 1}: {message}")


def _reason(error: BaseException) -> str:
    lines = str(error).strip().splitlines() or [type(error).__name__]
    first = lines[0]
    return first if len(first) <= 120 else first[:117] + "..."


# --------------------------------------------------------------------------------------------
# arguments and files


def _check_arguments(name: str, columns: dict[str, str], radius_arcsec, radius_col) -> None:
    if radius_arcsec is None and radius_col is None:
        raise _error(name, "give the match radius: --radius-arcsec R or --radius-col C")
    if radius_arcsec is not None and radius_col is not None:
        raise _error(name, f"give one match radius, not both: --radius-arcsec {radius_arcsec} "
                           f"or --radius-col {radius_col}")
    roles = dict(columns, **({"radius_arcsec": radius_col} if radius_col is not None else {}))
    for role, column in roles.items():
        if not isinstance(column, str) or not column.strip():
            raise _error(name, f"{FLAGS[role]} must name a column, got {_show(column)}")
    seen: dict[str, str] = {}
    for role, column in roles.items():
        if column in seen:
            raise _error(name, f"{FLAGS[seen[column]]} and {FLAGS[role]} both name column {_show(column)}; "
                               "give a different column for each")
        seen[column] = role
    if radius_arcsec is not None:
        if isinstance(radius_arcsec, bool) or not isinstance(radius_arcsec, (int, float)):
            raise _error(name, f"--radius-arcsec must be a number of arcseconds, got {_show(radius_arcsec)}")
        problem = _radius_problem(float(radius_arcsec), None)
        if problem:
            raise _error(name, f"--radius-arcsec: {problem}")


def _file_kind(path, name: str) -> str:
    """'csv', 'tsv' or 'parquet', after checking the path is a readable, non-empty regular file."""
    full = os.fspath(path)
    try:
        info = os.stat(full)
    except FileNotFoundError:
        shown = full if len(full) <= 2 * SHOWN_CHARS else "..." + full[-2 * SHOWN_CHARS:]  # the end says most
        raise _error(name, f"no such file ({_printable(shown)}); check the catalogue path") from None
    except OSError as error:
        raise _error(name, f"cannot be read ({error.strerror}); check the path and its permissions") from None
    if stat.S_ISDIR(info.st_mode):
        raise _error(name, "is a directory, not a catalogue file; give the path of a CSV or Parquet file")
    if not stat.S_ISREG(info.st_mode):
        raise _error(name, "is not a regular file; give the path of a CSV or Parquet file")
    try:
        with open(full, "rb") as stream:
            head = stream.read(4)
    except OSError as error:
        raise _error(name, f"cannot be read ({error.strerror}); check the file's permissions") from None
    if not head:
        raise _error(name, "the file is empty; give a CSV with a header line and one row per source, "
                           "or a Parquet file")
    lower = name.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith((".tsv", ".tsv.gz")):
        return "tsv"
    if lower.endswith((".csv", ".csv.gz")):
        return "csv"
    return "parquet" if head == _PARQUET_MAGIC else "csv"


def _check_columns(name: str, available: list[str], wanted: dict[str, str], separator: str | None = None) -> None:
    """Every wanted column exists exactly once, else the columns there are and the closest one."""
    counts = Counter(available)
    for role, column in wanted.items():
        if counts[column] > 1:
            raise _error(name, f"column {_show(column)} appears {counts[column]} times; rename the copies")
        if counts[column]:
            continue
        listing = ", ".join(c[:SHOWN_CHARS] or "''" for c in available[:SHOWN_COLUMNS])
        if len(available) > SHOWN_COLUMNS:
            listing += f", ... ({len(available) - SHOWN_COLUMNS} more)"
        lowered = {c.lower(): c for c in available}
        close = difflib.get_close_matches(column.lower(), list(lowered), n=1, cutoff=0.6)
        hint = f"did you mean {_show(lowered[close[0]])}? Give" if close else "give"
        if separator and len(available) == 1:
            found = [s for s in ";\t|" if s in available[0]]
            if found:
                hint = f"is the file separated by {found[0]!r} rather than {separator!r}? Else give"
        raise _error(name, f"no column {_show(column)} (columns: {listing}); {hint} the right one with {FLAGS[role]}")


# --------------------------------------------------------------------------------------------
# Parquet


def _read_parquet(path, name: str, wanted: dict[str, str], max_rows: int) -> tuple[dict[str, pa.ChunkedArray], str]:
    """The wanted columns as stored (types checked from the schema, the row count from the
    metadata, both before any data is read) and the file's sha256."""
    try:
        parquet = pq.ParquetFile(os.fspath(path))
    except (pa.ArrowException, OSError) as error:
        raise _error(name, f"not a readable Parquet file ({_reason(error)}); "
                           "give a Parquet file or a UTF-8 CSV") from None
    schema = parquet.schema_arrow
    _check_columns(name, schema.names, wanted)
    for role, column in wanted.items():
        _check_type(name, role, column, schema.field(column).type)
    _check_row_count(name, parquet.metadata.num_rows, max_rows, tuple(wanted.values()))
    try:
        table = parquet.read(columns=list(wanted.values()), use_threads=True)
    except (pa.ArrowException, OSError) as error:
        raise _error(name, f"not a readable Parquet file ({_reason(error)}); check the file is complete") from None
    return {role: table.column(column) for role, column in wanted.items()}, file_sha256(path)


def _value_kind(data_type: pa.DataType) -> str:
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_integer(data_type):
        return "integer"
    if pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return "float"
    if pa.types.is_string(data_type) or pa.types.is_large_string(data_type) or pa.types.is_string_view(data_type):
        return "text"
    return "other"


def _check_type(name: str, role: str, column: str, data_type: pa.DataType) -> None:
    kind = _value_kind(data_type)
    if role == "id" and kind not in ("integer", "text"):
        raise _error(name, f"column {_show(column)} has type {data_type}; ids must be integers or text: "
                           "store the ids as int64 or string")
    if role != "id" and kind == "other":
        what = "a radius in arcseconds" if role == "radius_arcsec" else "coordinates"
        raise _error(name, f"column {_show(column)} has type {data_type}; {what} must be numbers or text")


def _check_row_count(name: str, rows: int, max_rows: int, columns: tuple[str, ...]) -> None:
    if rows == 0:
        raise _error(name, f"no rows, only the columns ({', '.join(c[:SHOWN_CHARS] for c in columns)}); "
                           "add one row per source")
    if rows > max_rows:
        raise _error(name, f"{rows:,} rows, more than the limit of {max_rows:,}; split the catalogue "
                           "into smaller files")


# --------------------------------------------------------------------------------------------
# CSV


def _read_csv(path, name: str, wanted: dict[str, str], separator: str,
              max_rows: int) -> tuple[dict[str, pa.ChunkedArray], str]:
    """The wanted columns as text (pyarrow's reader: quoted fields, ragged rows found) and the
    sha256 of the file's bytes (gzip-compressed files are hashed as stored)."""
    with open(os.fspath(path), "rb") as stream:
        stored = stream.read()
    sha256 = hashlib.sha256(stored).hexdigest()
    data = stored
    if stored.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(stored)
        except (OSError, EOFError, zlib.error) as error:
            raise _error(name, f"not a valid gzip file ({_reason(error)}); give a CSV, a gzipped CSV "
                               "or a Parquet file") from None
    _check_text(name, data)
    data = data.removeprefix(_BOM)
    if not data.strip():
        raise _error(name, "the file is empty; give a CSV with a header line and one row per source, "
                           "or a Parquet file")
    header = _csv_header(data, separator)
    _check_columns(name, [h.strip() for h in header], wanted, separator)
    raw_names = {h.strip(): h for h in header}
    include = [raw_names[column] for column in wanted.values()]
    table = _parse_csv(name, data, separator, {h: pa.string() for h in header}, include)
    _check_row_count(name, table.num_rows, max_rows, tuple(wanted.values()))
    return {role: table.column(raw_names[column]) for role, column in wanted.items()}, sha256


def _check_text(name: str, data: bytes) -> None:
    """UTF-8 text, else what the file seems to be."""
    head = data[:65536]
    for magic, what in ((_PARQUET_MAGIC, "a Parquet file: name it with the .parquet extension"),
                        (b"PK\x03\x04", "a ZIP archive (an Excel workbook?): export the sheet as CSV"),
                        (b"SIMPLE  =", "a FITS file: convert it to CSV or Parquet")):
        if head.startswith(magic):
            raise _error(name, f"not a CSV file but {what}")
    if b"\x00" in head:
        raise _error(name, "not a CSV or Parquet file (binary content); give a UTF-8 CSV with a header line, "
                           "or a Parquet file")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise _error(name, f"not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}); "
                           "save the file as UTF-8 CSV") from None


def _csv_header(data: bytes, separator: str) -> list[str]:
    text = data[:CHUNK_BYTES].decode("utf-8", errors="replace")
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=separator):
        if row:
            return row
    return []


def _parse_csv(name: str, data: bytes, separator: str, types: dict[str, pa.DataType],
               include: list[str]) -> pa.Table:
    ragged: list = []

    def on_ragged(row) -> str:
        ragged.append(row)
        return "skip"

    def parse(threads: bool) -> pa.Table:
        return pcsv.read_csv(
            pa.BufferReader(data),
            read_options=pcsv.ReadOptions(use_threads=threads),
            parse_options=pcsv.ParseOptions(delimiter=separator, newlines_in_values=b'"' in data,
                                            invalid_row_handler=on_ragged),
            convert_options=pcsv.ConvertOptions(column_types=types, include_columns=include,
                                                strings_can_be_null=False),
        )

    try:
        table = parse(threads=True)
        if ragged:  # the row numbers are known only to a single-threaded read
            ragged.clear()
            parse(threads=False)
    except pa.ArrowException as error:
        raise _error(name, f"malformed CSV ({_reason(error)}); check the quotes and separators") from None
    if ragged:
        row = ragged[0]
        # pyarrow numbers the records from 1 with the header, blank lines not counted: the data row
        where = f", row {row.number - 1}" if row.number is not None else ""
        raise _error(name, f"malformed CSV{where}: {row.actual_columns} fields where the header has "
                           f"{row.expected_columns} ({_show(row.text)}); fix the row, and quote values "
                           f"containing {separator!r}")
    return table


# --------------------------------------------------------------------------------------------
# values


def _as_float(array: pa.ChunkedArray) -> tuple[pl.Series, pl.Series | None]:
    """Numbers as float64 (null where empty or not a decimal number) and, for text, the
    stripped text (null where empty)."""
    import polars as pl

    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    if _value_kind(array.type) != "text":
        return pl.from_arrow(array.cast(pa.float64()), rechunk=False), None
    text = pl.from_arrow(array, rechunk=False).str.strip_chars()
    text = pl.select(pl.when(text.str.len_bytes() > 0).then(text)).to_series()
    return text.cast(pl.Float64, strict=False), text


def _sexagesimal(text: pl.Series, hours: bool) -> pl.Series:
    """Sexagesimal text as degrees (null where not sexagesimal or minutes/seconds >= 60)."""
    import polars as pl

    parts = text.str.extract_groups(RA_PATTERN if hours else DEC_PATTERN).struct.unnest()

    def part(group: str, cast=pl.Float64) -> pl.Expr:
        return pl.coalesce(*(pl.col(f"{group}{i}") for i in range(3))).cast(cast)

    degrees = (part("d") + part("m") / 60.0 + part("s") / 3600.0) * (15.0 if hours else 1.0)
    signed = pl.when(part("sign", pl.String) == "-").then(-degrees).otherwise(degrees)
    valid = (part("m") < 60.0) & (part("s") < 60.0)
    return parts.select(pl.when(valid).then(signed)).to_series()


def _first(bad: pl.Series) -> int | None:
    return bad.arg_true()[0] if bad.any() else None


def _coordinates(name: str, column: str, array: pa.ChunkedArray, hours: bool) -> pa.ChunkedArray | pa.Array:
    """RA (hours when sexagesimal, [0, 360], 360 becomes 0) or Dec ([-90, 90]) as float64 degrees."""
    import polars as pl

    values, text = _as_float(array)
    if text is not None:
        unparsed = values.is_null() & text.is_not_null()
        if unparsed.any():
            where = unparsed.arg_true()
            values.scatter(where, _sexagesimal(text.gather(where), hours))
    low, high = (0.0, 360.0) if hours else (-90.0, 90.0)
    index = _first(values.is_null() | values.is_nan() | (values < low) | (values > high))
    if index is not None:
        shown = None if text is None else text[index]
        raise _at(name, column, index, _coordinate_problem(values[index], shown, hours))
    if hours and (values == 360.0).any():
        return pl.select(pl.when(values == 360.0).then(0.0).otherwise(values)).to_series().to_arrow()
    if array.type == pa.float64():
        return array  # as read: no copy
    return values.to_arrow()


def _coordinate_problem(value: float | None, text: str | None, hours: bool) -> str:
    axis, forms = ("RA", RA_FORMS) if hours else ("Dec", DEC_FORMS)
    if value is None:
        if text is None:
            return f"empty value; every source needs an RA and a Dec, in {forms}"
        match = re.match(RA_PATTERN if hours else DEC_PATTERN, text)
        if match:
            groups = {k[:-1]: v for k, v in match.groupdict().items() if v is not None}
            unit = "minutes" if float(groups["m"]) >= 60 else "seconds"
            return f"{unit} of {_show(text)} must be below 60"
        return f"cannot read {_show(text)} as {axis}; give {forms}"
    shown = _show(text if text is not None else value)
    sexagesimal = text is not None and re.match(RA_PATTERN if hours else DEC_PATTERN, text)
    degrees = f" ({value:.9g} degrees)" if sexagesimal else ""
    if math.isnan(value):
        return f"{shown} is not a number; give {axis} in {forms}"
    if math.isinf(value):
        return f"{shown} is infinite; give {axis} in {forms}"
    if not hours:
        return f"{shown}{degrees} is outside [-90, 90]; Dec is in degrees from -90 to 90"
    if value < 0:
        return (f"{shown}{degrees} is negative; RA is in degrees from 0 to 360: add 360 "
                f"({value:.9g} + 360 = {value + 360:.9g})")
    return f"{shown}{degrees} is above 360; RA is in degrees from 0 to 360 (hours from 0 to 24)"


def _radius_problem(value: float | None, text: str | None) -> str | None:
    shown = _show(text if text is not None else value)
    if value is None:
        if text is None:
            return "empty radius; give a radius in arcseconds on every row, or one for all with --radius-arcsec"
        return f"cannot read {shown} as a radius in arcseconds; give a number like 1.5"
    if math.isnan(value):
        return f"radius {shown} is not a number; give a radius in arcseconds like 1.5"
    if value <= 0:
        return f"radius {shown} must be > 0 arcsec; give a radius in arcseconds like 1.5"
    if value > MAX_RADIUS_ARCSEC:
        return (f"radius {shown} is above the limit of {MAX_RADIUS_ARCSEC:g} arcsec (1 degree); "
                "give the radius in arcseconds")
    return None


def _radii(name: str, column: str, array: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """Per-row match radii in arcseconds, in (0, MAX_RADIUS_ARCSEC]."""
    values, text = _as_float(array)
    index = _first(values.is_null() | values.is_nan() | (values <= 0.0) | (values > MAX_RADIUS_ARCSEC))
    if index is not None:
        shown = None if text is None else text[index]
        raise _at(name, column, index, _radius_problem(values[index], shown))
    return array if array.type == pa.float64() else values.to_arrow()


def _ids(name: str, column: str, array: pa.ChunkedArray, text: bool) -> pa.ChunkedArray | pa.Array:
    """Unique, non-empty ids: int64 (integer columns; a CSV column of plain integers only) or string."""
    import polars as pl

    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    kind = _value_kind(array.type)
    if kind == "integer":
        ids = pl.from_arrow(array, rechunk=False)
        index = _first(ids.is_null())
        if index is not None:
            raise _at(name, column, index, "empty id; every source needs a unique id")
        if pa.types.is_uint64(array.type):
            index = _first(ids > _INT64_MAX)
            if index is not None:
                raise _at(name, column, index, f"id {ids[index]} is beyond int64; store the ids as int64 or string")
        output = array if array.type == pa.int64() else array.cast(pa.int64())
    else:
        ids = pl.from_arrow(array, rechunk=False)
        if text:
            ids = ids.str.strip_chars()
        index = _first(ids.is_null() | (ids.str.len_bytes() == 0))
        if index is not None:
            raise _at(name, column, index, "empty id; every source needs a unique id")
        output = None
        if text and ids.str.contains(_PLAIN_INTEGER).all():
            integers = ids.cast(pl.Int64, strict=False)
            if integers.null_count() == 0:
                ids, output = integers, integers.to_arrow()
        if output is None:
            output = array if array.type == pa.string() and not text else ids.to_arrow().cast(pa.string())
    _check_unique(name, column, ids)
    return output


def _check_unique(name: str, column: str, ids: pl.Series) -> None:
    """No id twice, else the first repeated one (in row order) and the row it first appeared on.
    Distinct 64-bit hashes prove distinct ids: counting them is several times faster than
    counting 10M strings (and is_first_distinct takes seconds); a collision only means the exact
    check below runs."""
    import polars as pl

    if (ids.hash(seed=0) if ids.dtype == pl.String else ids).n_unique() == len(ids):
        return
    ordered = pl.DataFrame({"id": ids}).with_row_index("row").sort("id", "row")  # equal ids in row order
    repeated = (ordered["id"] == ordered["id"].shift(1)).fill_null(False)
    later = ordered["row"].filter(repeated).min()
    value = ids[later]
    earlier = (ids == value).arg_true()[0]
    raise _error(name, f"id {_show(value)} appears on rows {earlier + 1} and {later + 1}; ids must be unique "
                       f"(column {_show(column)})")
