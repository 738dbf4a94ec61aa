"""Columnar decoding of schemaless Avro messages: numpy fast path, polars fallback.

The fast path is `vector_decode.decode_columnar`, which decodes a batch field by field for all
messages at once with numpy (about 2x polars' speed on light packets). It returns None for a
schema type it does not handle, when any message does not decode exactly, or when the batch's
arrays of records are too long for its row count (medium and full packets in the consumer's
slices); then the polars path below decodes the batch, and isolates the bad messages.

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

When the polars read fails too (polars raises or a sentinel is misplaced), `decode_batch_safe`
isolates the undecodable messages by bisection with polars reads and checks small groups
message by message with `fastavro.schemaless_reader` (which must consume every byte), then
decodes the good messages in one more read.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import fastavro
import numpy as np
import pyarrow as pa

from fink_pipeline.avro.encode import _materialize, _offsets, _varint_slot, _zigzag
from fink_pipeline.avro.schema import AvroType, arrow_schema_for_avro, memoized, parse_schema, resolve
from fink_pipeline.avro.vector_decode import decode_columnar

if TYPE_CHECKING:
    import polars as pl

_FRAME_FIELD = "__fink_frame"
# Sentinels have 9-byte varints: misaligned bytes reproduce the expected one with odds ~2^-63.
_FRAME_BASE = 1 << 60
# Keeps every column of a decoded chunk under Arrow's 2 GiB limit for 32-bit offsets.
_MAX_CHUNK_BYTES = 1 << 30
# Failing groups at most this large are checked message by message with fastavro.
_SMALL_GROUP = 16


def _polars():
    """polars, imported on first use: the numpy path decodes most batches, and the import
    costs ~30 MiB of memory in every consumer process."""
    import polars

    return polars


def _decode_errors() -> tuple[type[BaseException], ...]:
    return (Exception, _polars().exceptions.PanicException)  # polars panics are BaseExceptions


class AvroDecodeError(ValueError):
    """A batch holds messages that do not decode with the schema."""


@dataclass(frozen=True)
class _Framing:
    header: bytes  # container header of the framing schema, ends with the sync marker
    sync: bytes
    writer: dict  # the parsed writer schema, for fastavro
    arrow_schema: pa.Schema
    columns: list[tuple[str, pa.DataType, pa.DataType]]  # name, type polars gives (cast), final type


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
        fields = [
            {"name": f["name"], "type": _framing_type(f["type"], named, state)} for f in avro_type["fields"]
        ]
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
    schema = arrow_schema_for_avro(writer)
    columns = [(f.name, _storage_type(f.type), f.type) for f in schema]
    return _Framing(header, header[-16:], writer, schema, columns)


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
    """Avro long of one (non-negative) int: the block count and size of the framing."""
    z, out = value << 1, bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _to_arrow(df: pl.DataFrame, framing: _Framing) -> pa.Table:
    """polars output -> the declared schema (32-bit offsets, nullability, maps from key/value
    lists), dropping the sentinel column."""
    table = df.to_arrow(compat_level=_polars().CompatLevel.oldest())
    columns = []
    for name, storage, dtype in framing.columns:
        chunks = [c if c.type == dtype else c.cast(storage).view(dtype) for c in table.column(name).chunks]
        columns.append(pa.chunked_array(chunks, dtype))
    return pa.Table.from_arrays(columns, schema=framing.arrow_schema)


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


def _read_fast(arr: pa.LargeBinaryArray, framing: _Framing) -> pa.Table | None:
    """The numpy fast path on `arr` (None: fall back to polars)."""
    data = arr.buffers()[2]
    if data is None or not len(arr):
        return None
    return decode_columnar(data, _offsets(arr), framing.writer)


def _read(arr: pa.LargeBinaryArray, framing: _Framing) -> tuple[pl.DataFrame | None, str | None, int]:
    """Decode `arr` with one polars call and check the sentinels.

    Returns (df, None, n) when every record was framed exactly; otherwise (df, error, k) with
    k the first misframed message (rows before it are exact) when polars returned rows, or
    (None, error, -1) when polars raised.
    """
    n = len(arr)
    sentinels = _FRAME_BASE + np.arange(n, dtype=np.int64)
    body = _materialize([arr, _varint_slot(_zigzag(sentinels))], n)
    data = body.buffers()[2]
    block = b"".join((framing.header, _varint(n), _varint(len(data)), memoryview(data), framing.sync))
    try:
        df = _polars().read_avro(io.BytesIO(block))
    except _decode_errors() as exc:
        return None, f"{type(exc).__name__}: {exc}".strip(), -1
    got = df.get_column(_FRAME_FIELD).to_numpy()
    m = min(len(got), n)
    wrong = np.flatnonzero(got[:m] != sentinels[:m])
    if len(wrong) or len(got) != n:
        k = int(wrong[0]) if len(wrong) else m
        return df, f"record framing lost at message {k} of {n}", k
    return df, None, n


_SENTINEL_BYTES = 9  # every sentinel's varint (zig-zag of 2^60 + i, i < 2^59) is 9 bytes long


def _sentinel_varints(n: int) -> bytes:
    """The n sentinels' Avro varints, 9 bytes each, back to back."""
    z = _zigzag(_FRAME_BASE + np.arange(n, dtype=np.int64))
    out = np.empty((n, _SENTINEL_BYTES), np.uint8)
    for k in range(_SENTINEL_BYTES - 1):
        out[:, k] = ((z >> np.uint64(7 * k)) & np.uint64(0x7F)) | np.uint64(0x80)
    out[:, -1] = z >> np.uint64(7 * (_SENTINEL_BYTES - 1))
    return out.tobytes()


def _read_values(values: list, nbytes: int, framing: _Framing) -> pa.Table | None:
    """Decode a list of message values with the numpy fast path (values joined once), else
    with one polars call, framed straight from the list (one copy, no intermediate Arrow
    array); None when anything is off (a null value, a misframed record, polars raising, too
    many bytes for one chunk), so that the caller takes the array path, which isolates bad
    messages."""
    n = len(values)
    if not n:
        return None
    try:
        data = b"".join(values)
    except TypeError:  # a null value (Kafka tombstone)
        return None
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.fromiter(map(len, values), np.int64, n), out=offsets[1:])
    table = decode_columnar(data, offsets, framing.writer)
    del data
    if table is not None:
        return table
    if nbytes + _SENTINEL_BYTES * n > _MAX_CHUNK_BYTES:
        return None
    body = nbytes + _SENTINEL_BYTES * n
    head = [framing.header, _varint(n), _varint(body)]
    sentinels = _sentinel_varints(n)
    parts = head + [b""] * (2 * n) + [framing.sync]
    parts[3:-1:2] = values
    parts[4:-1:2] = [sentinels[i:i + _SENTINEL_BYTES] for i in range(0, len(sentinels), _SENTINEL_BYTES)]
    try:
        block = b"".join(parts)
    except TypeError:  # a null value (Kafka tombstone)
        return None
    del parts
    if len(block) != sum(map(len, head)) + body + len(framing.sync):
        return None  # `nbytes` was not the values' size: the block's byte count would be wrong
    try:
        df = _polars().read_avro(io.BytesIO(block))
    except _decode_errors():
        return None
    del block
    got = df.get_column(_FRAME_FIELD).to_numpy()
    if len(got) != n or not np.array_equal(got, _FRAME_BASE + np.arange(n, dtype=np.int64)):
        return None
    return _to_arrow(df, framing)


def _check_one(message: bytes, framing: _Framing) -> str | None:
    """Why fastavro cannot decode `message` exactly (consuming every byte), or None."""
    if not message:
        return "empty message"
    buf = io.BytesIO(message)
    try:
        fastavro.schemaless_reader(buf, framing.writer, None)
    except Exception as exc:  # noqa: BLE001 - any decoding failure marks the message bad
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if buf.tell() != len(message):
        return f"{len(message) - buf.tell()} trailing bytes after the record"
    return None


def _isolate(arr: pa.LargeBinaryArray, framing: _Framing, k: int) -> dict[int, str]:
    """Positions (in `arr`) and reasons of the undecodable messages, given that reading the
    whole of `arr` failed with first misframed message k (-1: polars raised). Failing groups
    are bisected with polars reads (or resumed after a misframed message) down to small
    groups, which fastavro checks message by message."""
    bad: dict[int, str] = {}
    pending: list[tuple[int, int]] = []  # groups still to read
    failed: tuple[int, int, int] | None = (0, len(arr), k)  # (lo, hi, k) of a failed read
    while failed is not None or pending:
        if failed is None:
            lo, hi = pending.pop()
            _, error, k = _read(arr.slice(lo, hi - lo), framing)
            if error is None:
                continue
            failed = (lo, hi, k)
        lo, hi, k = failed
        failed = None
        if hi - lo <= _SMALL_GROUP:
            for i in range(lo, hi):
                reason = _check_one(arr[i].as_py(), framing)
                if reason is not None:
                    bad[i] = reason
        elif k >= 0:
            # messages before the misframed one decoded exactly: check it, resume after it
            reason = _check_one(arr[lo + k].as_py(), framing)
            if reason is not None:
                bad[lo + k] = reason
            if lo + k + 1 < hi:
                pending.append((lo + k + 1, hi))
        else:
            mid = (lo + hi) // 2
            pending += [(mid, hi), (lo, mid)]
    return bad


def _decode_checked(arr: pa.LargeBinaryArray, framing: _Framing) -> pa.Table:
    """Decode messages that fastavro accepts; polars first, fastavro if polars disagrees."""
    if len(arr) == 0:
        return framing.arrow_schema.empty_table()
    table = _read_fast(arr, framing)
    if table is not None:
        return table
    df, error, _ = _read(arr, framing)
    if error is None:
        return _to_arrow(df, framing)
    records = [fastavro.schemaless_reader(io.BytesIO(m), framing.writer, None) for m in arr.to_pylist()]
    return pa.Table.from_pylist(records, schema=framing.arrow_schema)


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
        table = _read_fast(arr.slice(lo, hi - lo), framing)
        if table is not None:
            tables.append(table)
            continue
        df, error, k = _read(arr.slice(lo, hi - lo), framing)
        if error is not None:
            where = f"message {lo + k}" if k >= 0 else f"messages {lo}..{hi - 1}"
            raise AvroDecodeError(f"{where}: {error} (decode_batch_safe isolates bad messages)")
        tables.append(_to_arrow(df, framing))
    return _concat(tables, framing.arrow_schema)


def decode_batch_safe(
    values: Sequence[bytes] | pa.Array, avro_schema: dict, nbytes: int | None = None
) -> tuple[pa.Table, list[int], list[str]]:
    """Like `decode_batch`, but undecodable messages are isolated instead of failing the batch.

    Returns (table, bad_indices, errors): the table holds the other messages in input order
    (len(values) - len(bad_indices) rows), `bad_indices` the sorted positions of the bad ones
    and `errors` one reason per bad index. A message is bad when it does not decode or leaves
    bytes unread; empty and null messages are bad. When every message is good this costs the
    same as `decode_batch`; otherwise the good ones are decoded again after isolation.
    `nbytes`, the total size of a list of values when the caller knows it, saves a pass.
    """
    framing: _Framing = memoized(avro_schema, "framing", _build_framing)
    if isinstance(values, list):
        if nbytes is None:
            nbytes = sum(len(v) for v in values if v is not None)
        table = _read_values(values, nbytes, framing)
        if table is not None:
            return table, [], []
    arr = _messages(values)
    tables: list[pa.Table] = []
    bad: dict[int, str] = {}
    for lo, hi in _byte_chunks(arr):
        chunk = arr.slice(lo, hi - lo)
        table = _read_fast(chunk, framing)
        if table is not None:
            tables.append(table)
            continue
        df, error, k = _read(chunk, framing)
        if error is None:
            tables.append(_to_arrow(df, framing))
            continue
        chunk_bad = _isolate(chunk, framing, k)
        keep = np.ones(len(chunk), bool)
        keep[list(chunk_bad)] = False
        tables.append(_decode_checked(chunk.filter(pa.array(keep)), framing))
        bad.update((lo + i, reason) for i, reason in chunk_bad.items())
    indices = sorted(bad)
    return _concat(tables, framing.arrow_schema), indices, [bad[i] for i in indices]
