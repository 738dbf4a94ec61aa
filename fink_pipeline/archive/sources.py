"""Reading alert files of any writer for `archive.importer`: discovery, format sniffing and
lazy record batches in each file's own (writer) schema.

Inputs are recognised by their first bytes, not their names: Avro container files (plain or
gzip), Parquet files, and Confluent-framed Kafka message bodies when a folder of the survey's
Avro schemas is given (`SchemaRegistry`).
"""

from __future__ import annotations

import gzip
import io
import os
import struct
from typing import Iterable, Iterator

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from fink_pipeline.avro.schema import UnsupportedAvroType, arrow_schema_for_avro

#: Records decoded per chunk (Avro) or per Parquet read batch.
CHUNK_ROWS = 1000

_AVRO_MAGIC = b"Obj\x01"
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"


class ImportFileError(ValueError):
    """One input file cannot be imported (unknown format, unreadable, incompatible schema)."""


def discover_files(paths: Iterable[str | os.PathLike]) -> list[tuple[str, bool]]:
    """Input files as (path, given explicitly): each file as given, each directory walked
    recursively (sorted).

    Entries whose name starts with `.` or `_` (`_SUCCESS`, `.crc` files, staging folders) are
    ignored inside directories. Raises FileNotFoundError naming a path that does not exist.
    """
    out: list[tuple[str, bool]] = []
    for raw in paths:
        path = os.fspath(raw)
        if os.path.isfile(path):
            out.append((path, True))
        elif os.path.isdir(path):
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
                out.extend((os.path.join(folder, f), False) for f in sorted(files) if not f.startswith((".", "_")))
        else:
            raise FileNotFoundError(f"import: no such file or directory {path!r}")
    return out


def sniff_format(path: str) -> str:
    """`avro`, `avro.gz`, `parquet`, `confluent` or `unknown`, from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(5)
    if head.startswith(_AVRO_MAGIC):
        return "avro"
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if head.startswith(_GZIP_MAGIC):
        with gzip.open(path, "rb") as fh:
            try:
                inner = fh.read(4)
            except (OSError, EOFError):
                return "unknown"
        return "avro.gz" if inner == _AVRO_MAGIC else "unknown"
    if len(head) == 5 and head[0] == 0:
        return "confluent"
    return "unknown"


class SchemaRegistry:
    """Avro writer schemas by Confluent schema id, loaded from a folder of `.avsc` files.

    Every `*.alert.avsc` below `folder` is loaded with fastavro (its named sub-schemas are found
    next to it by full name). The id of a schema in a folder called `vM_m` (Rubin's
    `lsst-alert-packet` layout) is M * 100 + m, as Rubin's registry numbers them (v9_0 -> 900,
    v11_1 -> 1101).
    """

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = os.fspath(folder) if folder else None
        self._schemas: dict[int, dict] | None = None

    def get(self, schema_id: int) -> dict:
        if self.folder is None:
            raise ImportFileError(
                f"Confluent-framed message with schema id {schema_id}: pass the folder of the "
                "survey's Avro schemas (--schemas DIR) to decode it"
            )
        if self._schemas is None:
            self._schemas = self._load()
        if schema_id not in self._schemas:
            known = ", ".join(str(k) for k in sorted(self._schemas)) or "none"
            raise ImportFileError(f"schema id {schema_id} not found under {self.folder} (known ids: {known})")
        return self._schemas[schema_id]

    def _load(self) -> dict[int, dict]:
        import re

        out: dict[int, dict] = {}
        for folder, _, files in os.walk(self.folder):
            match = re.fullmatch(r"v(\d+)_(\d+)", os.path.basename(folder))
            if not match:
                continue
            for name in files:
                if name.endswith(".alert.avsc"):
                    schema = fastavro.schema.load_schema(os.path.join(folder, name))
                    out[int(match.group(1)) * 100 + int(match.group(2))] = schema
        return out


def read_source(path: str, fmt: str, registry: SchemaRegistry, chunk_rows: int = CHUNK_ROWS
                ) -> tuple[str, pa.Schema, Iterator[pa.RecordBatch]]:  # fmt: skip
    """(writer schema name, source Arrow schema, lazy record batches in that schema).

    Raises ImportFileError for an unknown format or a schema with no Arrow equivalent.
    """
    if fmt in ("avro", "avro.gz"):
        return _read_avro(path, fmt == "avro.gz", chunk_rows)
    if fmt == "parquet":
        try:
            parquet = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ImportFileError(f"unreadable Parquet file: {exc}") from exc
        schema = parquet.schema_arrow
        return "parquet", schema, parquet.iter_batches(batch_size=chunk_rows)
    if fmt == "confluent":
        with open(path, "rb") as fh:
            body = fh.read()
        schema_id = struct.unpack(">I", body[1:5])[0]
        writer = fastavro.parse_schema(registry.get(schema_id))
        arrow_schema = arrow_schema_of_avro(writer)
        record = fastavro.schemaless_reader(io.BytesIO(body[5:]), writer, None)
        batch = pa.RecordBatch.from_pylist([record], schema=arrow_schema)
        return f"{writer.get('name')} (schema id {schema_id})", arrow_schema, iter([batch])
    raise ImportFileError("not an alert file: neither Avro (plain or gzip), Parquet nor a Confluent-framed message")


def _read_avro(path: str, gzipped: bool, chunk_rows: int) -> tuple[str, pa.Schema, Iterator[pa.RecordBatch]]:
    opener = gzip.open if gzipped else open
    fh = opener(path, "rb")
    try:
        reader = fastavro.reader(fh)
        writer = fastavro.parse_schema(reader.writer_schema)
        arrow_schema = arrow_schema_of_avro(writer)
    except Exception as exc:
        fh.close()
        if isinstance(exc, ImportFileError):
            raise
        raise ImportFileError(f"unreadable Avro container: {type(exc).__name__}: {exc}") from exc

    def batches() -> Iterator[pa.RecordBatch]:
        with fh:
            chunk: list[dict] = []
            for record in reader:
                chunk.append(record)
                if len(chunk) >= chunk_rows:
                    yield pa.RecordBatch.from_pylist(chunk, schema=arrow_schema)
                    chunk = []
            if chunk:
                yield pa.RecordBatch.from_pylist(chunk, schema=arrow_schema)

    return str(writer.get("name", "")), arrow_schema, batches()


def arrow_schema_of_avro(parsed: dict) -> pa.Schema:
    """Arrow schema of the records of a fastavro-parsed record schema, as fastavro decodes them
    (`arrow_schema_for_avro(..., any_writer=True)`); ImportFileError for a type Arrow lacks."""
    try:
        return arrow_schema_for_avro(parsed, any_writer=True)
    except UnsupportedAvroType as exc:
        raise ImportFileError(str(exc)) from None
