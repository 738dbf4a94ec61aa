"""Columnar decoding of schemaless Avro messages with polars.

A schemaless message is exactly the body of one record in an Avro container block, so a batch
of messages becomes a container file once framed: header (written by fastavro for the framing
schema), record count, byte length, the bodies, sync marker. `polars.read_avro` decodes it at
columnar speed. Two changes to the writer schema make up the framing schema:

* maps become ``array<record{key: string, value: V}>`` (same bytes; polars panics on maps) and
  are turned back into Arrow maps afterwards;
* the top record gets a trailing ``long`` field, and a distinct sentinel value is written
  after every message. Nothing in a container block delimits its records, so a corrupt
  message can decode "successfully" while shifting every following record (and polars does not
  check that the block was consumed exactly). Reading back sentinel i in row i proves that
  every record started and ended at its message's boundaries.

When the fast path fails (polars raises or a sentinel is misplaced), `decode_batch_safe`
isolates the undecodable messages by bisection and validates small groups message by message
with `fastavro.schemaless_reader` (requiring it to consume every byte).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import fastavro
import numpy as np
import polars as pl
import pyarrow as pa

from fink_pipeline.avro.encode import _materialize, _offsets, _varint_slot, _zigzag
from fink_pipeline.avro.schema import AvroType, arrow_schema_for_avro, memoized, parse_schema, resolve

_FRAME_FIELD = "__fink_frame"
# Sentinels have 9-byte varints: misaligned bytes reproduce the expected one with odds ~2^-63.
_FRAME_BASE = 1 << 60
# Keeps every column of a decoded chunk under Arrow's 2 GiB limit for 32-bit offsets.
_MAX_CHUNK_BYTES = 1 << 30
# Failing groups at most this large are checked message by message with fastavro.
_SMALL_GROUP = 16
_DECODE_ERRORS = (Exception, pl.exceptions.PanicException)  # polars panics are BaseExceptions


class AvroDecodeError(ValueError):
    """A batch holds messages that do not decode with the schema."""


@dataclass(frozen=True)
class _Framing:
    header: bytes  # container header of the framing schema, ends with the sync marker
    sync: bytes
    writer: dict  # the parsed writer schema, for fastavro
    arrow_schema: pa.Schema


def _framing_type(avro_type: AvroType, named: dict, state: dict) -> AvroType:
    """Copy of a parsed type with maps rewritten as arrays of key/value records."""
    if isinstance(avro_type, list):
        return [_framing_type(t, named, state) for t in avro_type]
    if isinstance(avro_type, str):
        if avro_type in named and avro_type not in state["seen"]:
            return _framing_type(named[avro_type], named, state)
        return avro_type
    avro_type = resolve(avro_type, named)
    if isinstance(avro_type, str):
        return avro_type
    kind = avro_type["type"]
    if kind == "record":
        state["seen"].add(avro_type["name"])
        fields = [{"name": f["name"], "type": _framing_type(f["type"], named, state)} for f in avro_type["fields"]]
        return {"type": "record", "name": avro_type["name"], "fields": fields}
    if kind == "array":
        return {"type": "array", "items": _framing_type(avro_type["items"], named, state)}
    if kind == "map":
        state["maps"] += 1
        entry = {
            "type": "record",
            "name": f"__fink_map_entry_{state['maps']}",
            "fields": [
                {"name": "key", "type": "string"},
                {"name": "value", "type": _framing_type(avro_type["values"], named, state)},
            ],
        }
        return {"type": "array", "items": entry}
    raise NotImplementedError(f"Avro type {kind!r} is not supported")


def _build_framing(avro_schema: dict) -> _Framing:
    writer = parse_schema(avro_schema)
    framing = _framing_type(writer, writer["__named_schemas"], {"seen": set(), "maps": 0})
    framing["fields"].append({"name": _FRAME_FIELD, "type": "long"})
    buf = io.BytesIO()
    fastavro.writer(buf, fastavro.parse_schema(framing), [], codec="null")
    header = buf.getvalue()
    return _Framing(header, header[-16:], writer, arrow_schema_for_avro(writer))


def _messages(values: Sequence[bytes] | pa.Array) -> pa.LargeBinaryArray:
    """Messages as one large_binary array; a null message (Kafka tombstone) becomes b""."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    arr = values if isinstance(values, pa.Array) else pa.array(values, pa.large_binary())
    if arr.type != pa.large_binary():
        arr = arr.cast(pa.large_binary())
    if arr.null_count:
        arr = arr.fill_null(b"")
    return arr


def _byte_chunks(arr: pa.LargeBinaryArray) -> list[tuple[int, int]]:
    """[lo, hi) ranges of at most _MAX_CHUNK_BYTES of messages (at least one message each)."""
    offsets = _offsets(arr) - _offsets(arr)[0]
    bounds, lo = [], 0
    while lo < len(arr):
        hi = int(np.searchsorted(offsets, offsets[lo] + _MAX_CHUNK_BYTES, side="right")) - 1
        hi = max(hi, lo + 1)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def _varint(value: int) -> bytes:
    return _materialize([_varint_slot(_zigzag(np.array([value], np.int64)))], 1)[0].as_py()


def _to_arrow(df: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    """polars output -> `schema` (32-bit offsets, declared nullability, maps from key/value lists)."""
    table = df.to_arrow(compat_level=pl.CompatLevel.oldest())
    columns = []
    for field in schema:
        column = table.column(field.name)
        storage = _storage_type(field.type)
        chunks = [chunk.cast(storage).view(field.type) for chunk in column.chunks]
        columns.append(pa.chunked_array(chunks, field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _storage_type(dtype: pa.DataType) -> pa.DataType:
    """`dtype` with every map spelled as the list of key/value structs that polars returns."""
    if pa.types.is_map(dtype):
        entries = pa.struct([dtype.key_field, dtype.item_field.with_type(_storage_type(dtype.item_type))])
        return pa.list_(pa.field("element", entries))
    if pa.types.is_list(dtype):
        return pa.list_(dtype.value_field.with_type(_storage_type(dtype.value_type)))
    if pa.types.is_struct(dtype):
        return pa.struct([f.with_type(_storage_type(f.type)) for f in dtype])
    return dtype


def _fast_decode(arr: pa.LargeBinaryArray, framing: _Framing) -> tuple[pa.Table | None, str | None, int]:
    """Decode `arr` in one polars call.

    Returns (table, None, n) on success, else (partial, error, k): when polars returned rows but
    a sentinel is misplaced, k is the first misframed row and `partial` its k correct rows;
    when polars raised, partial is None and k is -1.
    """
    n = len(arr)
    if n == 0:
        return framing.arrow_schema.empty_table(), None, 0
    sentinels = _FRAME_BASE + np.arange(n, dtype=np.int64)
    body = _materialize([arr, _varint_slot(_zigzag(sentinels))], n)
    data = body.buffers()[2]
    block = b"".join((framing.header, _varint(n), _varint(len(data)), memoryview(data), framing.sync))
    try:
        df = pl.read_avro(io.BytesIO(block))
    except _DECODE_ERRORS as exc:
        return None, f"{type(exc).__name__}: {exc}".strip(), -1
    got = df.get_column(_FRAME_FIELD).to_numpy()
    m = min(len(got), n)
    wrong = np.flatnonzero(got[:m] != sentinels[:m])
    if len(wrong) or len(got) != n:
        k = int(wrong[0]) if len(wrong) else m
        partial = _to_arrow(df.head(k).drop(_FRAME_FIELD), framing.arrow_schema)
        return partial, f"record framing lost at message {k} of {n}", k
    return _to_arrow(df.drop(_FRAME_FIELD), framing.arrow_schema), None, n


def _decode_one(message: bytes, framing: _Framing) -> tuple[pa.Table | None, str | None]:
    """fastavro decode of one message; it must consume the message exactly."""
    buf = io.BytesIO(message)
    try:
        record = fastavro.schemaless_reader(buf, framing.writer, None)
    except Exception as exc:  # noqa: BLE001 - any decoding failure marks the message bad
        return None, f"{type(exc).__name__}: {exc}".strip() if str(exc) else type(exc).__name__
    if buf.tell() != len(message):
        return None, f"{len(message) - buf.tell()} trailing bytes after the record"
    return pa.Table.from_pylist([record], schema=framing.arrow_schema), None


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def decode_batch(values: Sequence[bytes] | pa.Array, avro_schema: dict) -> pa.Table:
    """Decode schemaless Avro messages (e.g. Kafka values) of `avro_schema` into one table.

    The table schema is always `arrow_schema_for_avro(avro_schema)`, whatever the batch holds;
    row i is message i. Raises AvroDecodeError if any message does not decode (use
    `decode_batch_safe` to keep the good ones).
    """
    framing: _Framing = memoized(avro_schema, "framing", _build_framing)
    arr = _messages(values)
    tables = []
    for lo, hi in _byte_chunks(arr):
        table, error, k = _fast_decode(arr.slice(lo, hi - lo), framing)
        if error is not None:
            where = f"message {lo + k}" if k >= 0 else f"messages {lo}..{hi - 1}"
            raise AvroDecodeError(f"{where}: {error} (decode_batch_safe isolates bad messages)")
        tables.append(table)
    return _concat(tables, framing.arrow_schema)


def decode_batch_safe(
    values: Sequence[bytes] | pa.Array, avro_schema: dict
) -> tuple[pa.Table, list[int], list[str]]:
    """Like `decode_batch`, but undecodable messages are isolated instead of failing the batch.

    Returns (table, bad_indices, errors): the table holds the decodable messages in input
    order (len(values) - len(bad_indices) rows), `bad_indices` the sorted positions of the
    others and `errors` one reason per bad index. A message is bad when fastavro cannot decode
    it or leaves bytes unread; empty and null messages are bad. The fast path costs nothing
    more when every message is good.
    """
    framing: _Framing = memoized(avro_schema, "framing", _build_framing)
    arr = _messages(values)
    done: list[tuple[int, pa.Table]] = []
    bad: dict[int, str] = {}

    def check_each(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            table, error = _decode_one(arr[i].as_py(), framing)
            if error is None:
                done.append((i, table))
            else:
                bad[i] = error

    pending = list(reversed(_byte_chunks(arr)))
    while pending:
        lo, hi = pending.pop()
        table, error, k = _fast_decode(arr.slice(lo, hi - lo), framing)
        if error is None:
            done.append((lo, table))
        elif hi - lo <= _SMALL_GROUP:
            check_each(lo, hi)
        elif k >= 0:
            # rows before the first misplaced sentinel were framed exactly: keep them
            done.append((lo, table))
            check_each(lo + k, lo + k + 1)
            pending.append((lo + k + 1, hi))
        else:
            mid = (lo + hi) // 2
            pending += [(mid, hi), (lo, mid)]
    done.sort(key=lambda item: item[0])
    indices = sorted(bad)
    return _concat([t for _, t in done], framing.arrow_schema), indices, [bad[i] for i in indices]
