"""Column-wise schemaless Avro encoding of Arrow record batches.

Every Avro value of a row is a short byte string, so a column encodes to one byte string per
row and a record to the row-wise concatenation of its fields. No Python runs per value; the
encoder handles two kinds of per-row byte strings ("segments"):

* `_Slot`: a fixed-width slot per row of which row i uses the first ``lengths[i]`` bytes
  (union tags, zig-zag varints, floats, booleans, short strings padded to the column's
  longest, array counts and terminators). Consecutive slots are written side by side into a
  (rows, width) byte matrix with strided numpy assignments and compacted by one filter with a
  bit-packed mask (Arrow's filter kernel), in row blocks that stay in the CPU cache.
* large_binary arrays: long strings/bytes (cutouts) and the encoded items of arrays and maps
  (regrouped per row by rebuilding offsets only).

The segments of a record are then joined row-wise with `binary_join_element_wise`. The bytes
equal `fastavro.schemaless_writer`'s for every row (tests compare them on the real ZTF and LSST
Data Transfer samples).
"""

from __future__ import annotations


from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.avro.schema import AvroType, is_list_type, parse_schema, resolve, split_nullable

# Strings up to this many bytes go through the byte matrix; longer ones are joined as arrays.
_MAX_PADDED_STRING = 64
# Rows per matrix block are chosen so that one block (data + mask) stays in the CPU cache.
_BLOCK_BYTES = 1 << 21
_UINTS = {1: np.dtype(np.uint8), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


@dataclass
class _Slot:
    """Row i is the first ``lengths[i]`` bytes (all `width` when lengths is None) of a
    `width`-byte slot made of `columns`: (byte offset in the slot, (n,) array of a fixed-size
    dtype), which together cover the slot exactly."""

    columns: list[tuple[int, np.ndarray]]
    width: int
    lengths: np.ndarray | None = None


Segment = _Slot | pa.LargeBinaryArray



@lru_cache(maxsize=1)
def _no_separator() -> pa.Scalar:
    # made on first use: building a scalar at import makes pyarrow import pandas (~0.4 CPU-s in
    # every process importing this module: Spark Python workers, consumers)
    return pa.scalar(b"", pa.large_binary())

def _chunks(width: int) -> list[tuple[int, int]]:
    """(offset, size) pieces of 8, 4, 2 or 1 bytes covering `width` bytes.

    numpy copies integers of those sizes fast, while other sizes take a slow generic path.
    """
    chunks, offset = [], 0
    while offset < width:
        size = next(c for c in (8, 4, 2, 1) if c <= width - offset)
        chunks.append((offset, size))
        offset += size
    return chunks


@lru_cache(maxsize=None)
def _mask_tables(width: int) -> tuple[tuple[int, np.ndarray], ...]:
    """Per chunk of a `width`-byte slot: (offset, table) with table[l] = that chunk's bytes of
    the mask of an l-byte prefix (ones then zeros), as an unsigned integer."""
    tables = []
    for offset, size in _chunks(width):
        used = np.clip(np.arange(width + 1) - offset, 0, size)
        ones = np.arange(size)[None, :] < used[:, None]
        tables.append((offset, np.ascontiguousarray(ones.astype(np.uint8)).view(_UINTS[size]).reshape(-1)))
    return tuple(tables)


def _row_view(block: np.ndarray, offset: int, dtype: np.dtype) -> np.ndarray:
    """Strided view of the `dtype` value at byte `offset` of every row of a 2-D byte array."""
    rows, stride = block.shape
    return np.ndarray((rows,), dtype, block, offset, (stride,))


def _compact(slots: list[_Slot], n: int) -> pa.LargeBinaryArray:
    """Concatenate the used bytes of every slot row-wise into one large_binary array."""
    width = sum(s.width for s in slots)
    lengths = np.zeros(n, np.int64)
    for s in slots:
        lengths += s.width if s.lengths is None else s.lengths
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.empty(int(offsets[-1]), np.uint8)
    block_rows = max(1, min(n, _BLOCK_BYTES // max(width, 1)))
    data = np.empty((block_rows, width), np.uint8)
    mask = np.ones((block_rows, width), np.uint8)  # slots without lengths keep these ones
    # the strided views are built once: the block loop only copies
    writes: list[tuple[np.ndarray, np.ndarray]] = []
    masks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    start = 0
    for s in slots:
        writes += [(_row_view(data, start + offset, v.dtype), v) for offset, v in s.columns]
        if s.lengths is not None:
            for offset, table in _mask_tables(s.width):
                masks.append((_row_view(mask, start + offset, table.dtype), table, s.lengths))
        start += s.width
    for r0 in range(0, n, block_rows):
        r1 = min(n, r0 + block_rows)
        rows = r1 - r0
        for view, values in writes:
            view[:rows] = values[r0:r1]
        if masks:
            for view, table, used in masks:
                view[:rows] = table[used[r0:r1]]
            bits = np.packbits(mask[:rows].reshape(-1).view(bool), bitorder="little")
            size = rows * width
            kept = pc.filter(
                pa.UInt8Array.from_buffers(pa.uint8(), size, [None, pa.py_buffer(data[:rows])]),
                pa.BooleanArray.from_buffers(pa.bool_(), size, [None, pa.py_buffer(bits)]),
            ).to_numpy()
        else:
            kept = data[:rows].reshape(-1)
        out[offsets[r0] : offsets[r1]] = kept
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)]
    )


def used_prefixes(matrix: np.ndarray, lengths: np.ndarray) -> pa.LargeBinaryArray:
    """Row i = the first ``lengths[i]`` bytes of row i of the (rows, width) uint8 `matrix`."""
    rows, width = matrix.shape
    columns = [(offset, _row_view(matrix, offset, _UINTS[size])) for offset, size in _chunks(width)]
    return _compact([_Slot(columns, width, lengths.astype(np.int64, copy=False))], rows)


def _materialize(segments: list[Segment], n: int) -> pa.LargeBinaryArray:
    """One large_binary array whose row i is the concatenation of row i of every segment."""
    pieces: list[pa.Array] = []
    slots: list[_Slot] = []
    for seg in segments:
        if isinstance(seg, _Slot):
            if seg.width:
                slots.append(seg)
            continue
        if slots:
            pieces.append(_compact(slots, n))
            slots = []
        pieces.append(seg)
    if slots or not pieces:
        pieces.append(_compact(slots, n))
    if len(pieces) == 1:
        return pieces[0]
    return pc.binary_join_element_wise(*pieces, _no_separator())


def _offsets(arr: pa.Array) -> np.ndarray:
    """The n+1 int64 offsets of a large_binary array, relative to its data buffer."""
    return np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]


def _data(arr: pa.Array) -> np.ndarray:
    """The data buffer of a binary array as bytes (empty when it has none)."""
    buf = arr.buffers()[2]
    return np.frombuffer(buf, np.uint8) if buf is not None else np.empty(0, np.uint8)


def _regroup(items: pa.LargeBinaryArray, counts: np.ndarray) -> pa.LargeBinaryArray:
    """Row i = concatenation of the next counts[i] items (zero copy: only offsets are built)."""
    bounds = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=bounds[1:])
    data = items.buffers()[2] or pa.py_buffer(b"")
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(counts), [None, pa.py_buffer(_offsets(items)[bounds]), data]
    )


def _zigzag(values: np.ndarray) -> np.ndarray:
    v = values.astype(np.int64, copy=False)
    return ((v << np.int64(1)) ^ (v >> np.int64(63))).view(np.uint64)


def _varint_slot(z: np.ndarray, valid: np.ndarray | None = None) -> _Slot:
    """Avro varints of the unsigned (already zig-zagged) `z`; rows where `valid` is False are
    empty (their union tag, in the slot before, is all they hold)."""
    n = len(z)
    width = 1
    top = int(z.max()) if n else 0
    while width < 10 and top >> (7 * width):
        width += 1
    mat = np.empty((n, width), np.uint8)
    lengths = np.ones(n, np.int64)
    for k in range(width):
        byte = (z >> np.uint64(7 * k)) & np.uint64(0x7F)
        if k < width - 1:
            more = z >= np.uint64(1 << (7 * (k + 1)))
            byte |= more.astype(np.uint64) << np.uint64(7)
            lengths += more
        mat[:, k] = byte
    if valid is not None:
        lengths *= valid
    columns = [(offset, _row_view(mat, offset, _UINTS[size])) for offset, size in _chunks(width)]
    return _Slot(columns, width, lengths)


def _validity(arr: pa.Array) -> np.ndarray | None:
    """Boolean numpy mask of valid rows, None when the array has no null."""
    if arr.null_count == 0:
        return None
    bitmap = arr.buffers()[0]
    if bitmap is None:  # types without a validity bitmap (e.g. unions) know nulls otherwise
        return arr.is_valid().to_numpy(zero_copy_only=False)
    bits = np.unpackbits(np.frombuffer(bitmap, np.uint8), count=arr.offset + len(arr), bitorder="little")
    return bits[arr.offset :].view(bool)


def _tag_slot(valid: np.ndarray | None, n: int, null_index: int) -> _Slot:
    """The union branch byte of [T, "null"] (or ["null", T]): zig-zag 0 -> 0x00, 1 -> 0x02."""
    if valid is None:
        return _Slot([(0, np.full(n, 0 if null_index == 1 else 2, np.uint8))], 1)
    is_null_branch = ~valid if null_index == 1 else valid  # the rows taking branch 1
    return _Slot([(0, is_null_branch.view(np.uint8) << np.uint8(1))], 1)


def _numpy_values(arr: pa.Array, dtype: type) -> np.ndarray:
    """The values of a numeric/boolean column as `dtype`, whatever sits under its nulls.

    Null rows are written as their union tag alone, so their value bytes are never used:
    numbers are read straight from the Arrow buffer.
    """
    if pa.types.is_boolean(arr.type):
        if arr.null_count:
            arr = pc.fill_null(arr, False)
        return arr.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    native = np.dtype(arr.type.to_pandas_dtype())
    values = np.frombuffer(arr.buffers()[1], native, count=len(arr), offset=arr.offset * native.itemsize)
    return values.astype(dtype, copy=False)


def _as_binary(arr: pa.Array) -> pa.Array:
    """string/bytes/timestamp/date column -> large_binary payloads (timestamps in Spark's form)."""
    dtype = arr.type
    if pa.types.is_timestamp(dtype):
        if dtype.tz is not None:
            arr = arr.cast(pa.timestamp(dtype.unit))  # Spark prints session-local time; we use UTC
        text = pc.strftime(arr, format="%Y-%m-%d %H:%M:%S")
        # Spark's cast(timestamp as string) drops trailing zeros of the fraction
        text = pc.replace_substring_regex(text, r"(\.[0-9]*[1-9])0+$", r"\1")
        arr = pc.replace_substring_regex(text, r"\.0+$", "")
    elif pa.types.is_date(dtype):
        arr = pc.strftime(arr, format="%Y-%m-%d")
    return arr.cast(pa.large_binary())


def _payload_segment(payload: pa.LargeBinaryArray, sizes: np.ndarray) -> Segment | None:
    """The bytes of a string/bytes column: padded slot when short, else the array itself."""
    width = int(sizes.max()) if len(sizes) else 0
    if width == 0:
        return None
    if width > _MAX_PADDED_STRING:
        return pc.fill_null(payload, b"") if payload.null_count else payload
    offsets = _offsets(payload)
    padded = np.concatenate([_data(payload)[offsets[0] : offsets[-1]], np.zeros(width, np.uint8)])
    # element j = the `width` bytes from byte j: one gather copies the (padded) value of each row
    windows = np.ndarray((len(padded) - width + 1,), np.dtype((np.void, width)), padded, 0, (1,))
    return _Slot([(0, windows[offsets[:-1] - offsets[0]])], width, sizes)


_FIXED = {"float": np.dtype("<f4"), "double": np.dtype("<f8"), "boolean": np.dtype(np.uint8)}


def _encode_leaf(arr: pa.Array, avro_type: str, null_index: int | None, path: str) -> list[Segment]:
    n = len(arr)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    valid = _validity(arr)
    if valid is not None and null_index is None:
        raise ValueError(f"{path}: null value in a non-nullable Avro field of type {avro_type}")
    segments: list[Segment] = [] if null_index is None else [_tag_slot(valid, n, null_index)]
    if avro_type in ("int", "long"):
        segments.append(_varint_slot(_zigzag(_numpy_values(arr, np.int64)), valid))
    elif avro_type in _FIXED:
        values = _numpy_values(arr, _FIXED[avro_type])
        width = values.dtype.itemsize
        segments.append(_Slot([(0, values)], width, None if valid is None else valid * width))
    elif avro_type in ("string", "bytes"):
        payload = _as_binary(arr)
        sizes = np.diff(_offsets(payload))
        if valid is not None:
            sizes *= valid  # a null slot may still span bytes
        segments.append(_varint_slot(_zigzag(sizes), valid))
        body = _payload_segment(payload, sizes)
        if body is not None:
            segments.append(body)
    else:
        raise NotImplementedError(f"{path}: Avro type {avro_type!r} is not supported")
    return segments


def _encode_record(arr: pa.StructArray, record: dict, named: dict, path: str) -> list[Segment]:
    # flatten() merges the struct's validity into its children: a null struct value becomes a
    # record of null fields, as Spark's struct(X.*) writes it
    children = dict(zip((f.name for f in arr.type), arr.flatten()))
    segments: list[Segment] = []
    for field in record["fields"]:
        name = field["name"]
        if name not in children:
            raise KeyError(f"{path}: no field {name!r} in Arrow type {arr.type}")
        segments += _encode(children[name], field["type"], named, f"{path}.{name}")
    return segments


def _list_parts(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(flat items, item count per row with 0 for null rows) of a list or map array."""
    if pa.types.is_map(arr.type):
        # a map is laid out as a list of {key, value} structs
        entries = pa.struct([arr.type.key_field, arr.type.item_field])
        arr = arr.view(pa.list_(pa.field("entries", entries, nullable=False)))
    counts = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return arr.flatten(), counts


def _encode_blocks(
    arr: pa.Array,
    encode_items: Callable[[pa.Array], list[Segment]],
    null_index: int | None,
    path: str,
) -> list[Segment]:
    """Array/map layout: [tag] count items 0, or [tag] 0 when empty, or the null tag alone."""
    n = len(arr)
    valid = _validity(arr)
    if valid is not None and null_index is None:
        raise ValueError(f"{path}: null value in a non-nullable Avro array/map")
    items, counts = _list_parts(arr)
    segments: list[Segment] = [] if null_index is None else [_tag_slot(valid, n, null_index)]
    encoded_items = _materialize(encode_items(items), len(items))
    terminator = _Slot([(0, np.zeros(n, np.uint8))], 1, (counts > 0).astype(np.int64))
    return segments + [_varint_slot(_zigzag(counts), valid), _regroup(encoded_items, counts), terminator]


def _encode(arr: pa.Array, avro_type: AvroType, named: dict, path: str) -> list[Segment]:
    """Segments (one byte string per row each) encoding `arr` as `avro_type`."""
    inner, null_index = split_nullable(resolve(avro_type, named))
    inner = resolve(inner, named)
    if isinstance(inner, str):
        return _encode_leaf(arr, inner, null_index, path)
    kind = inner["type"]
    if kind == "record":
        if not pa.types.is_struct(arr.type):
            raise TypeError(f"{path}: Avro record needs an Arrow struct, got {arr.type}")
        if null_index is None:
            return _encode_record(arr, inner, named, path)
        valid = _validity(arr)
        tag = _tag_slot(valid, len(arr), null_index)
        if valid is None:
            return [tag] + _encode_record(arr, inner, named, path)
        # nullable record (array items, map values): encode the valid rows, then give null rows
        # empty bytes after their tag by rebuilding offsets
        kept = arr.filter(pa.array(valid))
        body = _materialize(_encode_record(kept, inner, named, path), len(kept))
        return [tag, _regroup(body, valid.astype(np.int64))]
    if kind == "array":
        if not is_list_type(arr.type):
            raise TypeError(f"{path}: Avro array needs an Arrow list, got {arr.type}")
        return _encode_blocks(arr, lambda a: _encode(a, inner["items"], named, f"{path}[]"), null_index, path)
    if kind == "map":
        if not pa.types.is_map(arr.type):
            raise TypeError(f"{path}: Avro map needs an Arrow map, got {arr.type}")

        def encode_entries(entries: pa.StructArray) -> list[Segment]:
            keys, values = entries.flatten()
            return _encode(keys, "string", named, f"{path}.key") + _encode(
                values, inner["values"], named, f"{path}.value"
            )

        return _encode_blocks(arr, encode_entries, null_index, path)
    raise NotImplementedError(f"{path}: Avro type {kind!r} is not supported")


def encode_batch(batch: pa.RecordBatch | pa.Table, avro_schema: dict) -> pa.LargeBinaryArray:
    """Encode every row of `batch` as one schemaless Avro record of `avro_schema`.

    Row i of the result is byte-identical to ``fastavro.schemaless_writer`` applied to row i
    with the same schema. Columns are matched to the record fields by name (extra columns are
    ignored); Arrow types follow `avro_schema_from_arrow`, and a timestamp or date column
    written as an Avro string is formatted like Spark's ``cast(... as string)`` (timezone-aware
    timestamps in UTC). Raises KeyError for a missing column, ValueError for a null in a
    non-nullable field.
    """
    parsed = parse_schema(avro_schema)
    named = parsed["__named_schemas"]
    if isinstance(batch, pa.Table):
        columns = {name: batch.column(name).combine_chunks() for name in batch.column_names}
    else:
        columns = dict(zip(batch.schema.names, batch.columns))
    segments: list[Segment] = []
    for field in parsed["fields"]:
        name = field["name"]
        if name not in columns:
            raise KeyError(f"column {name!r} of the Avro schema is missing from the batch")
        segments += _encode(columns[name], field["type"], named, name)
    return _materialize(segments, batch.num_rows)
