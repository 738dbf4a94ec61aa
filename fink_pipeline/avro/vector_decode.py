"""Vectorised decoding of schemaless Avro messages that share one schema, with numpy.

The messages of a batch are decoded field by field for all of them at once: `pos` holds the
current byte offset of every message in one buffer, and each field of the schema (walked once,
in order) reads its bytes at `pos` for every row with a few numpy operations, then advances
`pos`. After the walk every message must end exactly at its boundary.

The result is exactly the table `decode.py`'s polars path gives (`arrow_schema_for_avro`).
Anything unusual gives None instead, so that the caller falls back to polars, which also
isolates bad messages: a type this module does not handle (enum, fixed, logical types,
unions other than ``[T, "null"]``/``["null", T]``, items that can be zero bytes long), or any
malformed message (truncated, an invalid union branch, an over-long varint, an out-of-range
int, a boolean other than 0/1, a negative length, invalid UTF-8, bytes left over), or arrays
too long for the batch's row count to step through quickly (see `_MIN_ROWS_PER_STEP`).

Sizes read from the data (string lengths, item counts) are checked against the message's end
before use; fixed-width values and varints are read unchecked (a message that overran its end
fails the final check, positions never decreasing), from a buffer padded with at least
`_PAD` bytes (a chunk too close to the end of the data is copied into a zero-padded one), and
numpy's indexing is bounds-checked anyway.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from fink_pipeline.avro.schema import AvroType, arrow_schema_for_avro, memoized, resolve

# Bytes after the last message of a chunk that unchecked reads may touch (a varint: 10).
_PAD = 64
# Messages are decoded in chunks of about this many bytes: each field's pass over a chunk then
# mostly stays in the CPU cache, and Python's per-field overhead (a few ms per chunk) is paid
# once per chunk (measured on light packets: 4 MiB 176k, 16 MiB 221k, 32 MiB 204k msg/s).
_CHUNK_BYTES = 16 << 20
# An array or map whose items are not all decoded within this many item steps falls back.
_MAX_ITEM_STEPS = 4096
# Arrays and maps are decoded one item step at a time across rows; a step costs ~10 numpy calls
# per item field whatever its row count, so with fewer rows per step than this (long arrays in
# few messages: full packets' histories) polars is faster and the batch falls back to it
# (measured: 310 ZTF full packets, ~20 prv_candidates each: 0.26 s stepping, polars 0.12 s).
_MIN_ROWS_PER_STEP = 512
# Arrays whose items weigh this many nodes (records: ZTF prv_candidates, Rubin histories)...
_HEAVY_ITEMS = 16
# ...are only stepped through in chunks of at least this many messages; smaller chunks go to
# polars at once, before a partial walk is wasted (measured: 1000 ZTF medium packets, 66 ms
# with polars, +11 ms for a walk that then fell back).
_MIN_ROWS_WITH_HEAVY_ARRAYS = 4096
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1


class _Malformed(Exception):
    """A message does not decode exactly; internal, turned into a None result."""


class _TooSlow(Exception):
    """The batch's arrays are too long for too few rows: polars decodes it faster."""


class _Unsupported(Exception):
    """A schema type this module does not decode; internal, turned into a None plan."""


class _Buffer:
    """The bytes of one chunk, with the unaligned views the leaf decoders gather from."""

    def __init__(self, data: np.ndarray) -> None:
        self.u8 = data
        size = len(data)
        self.f8 = np.ndarray((size - 7,), "<f8", data, strides=(1,))
        self.f4 = np.ndarray((size - 3,), "<f4", data, strides=(1,))
        # the value after a union's one-byte branch, gathered without computing pos + 1
        self.f8_after_branch = np.ndarray((size - 8,), "<f8", data, offset=1, strides=(1,))
        self.f4_after_branch = np.ndarray((size - 4,), "<f4", data, offset=1, strides=(1,))
        self.arrow = pa.py_buffer(data)


def _bitmap(valid: np.ndarray | None) -> pa.Buffer | None:
    """Arrow validity buffer of a boolean mask (None: all valid)."""
    if valid is None:
        return None
    return pa.py_buffer(np.packbits(valid, bitorder="little"))


def _read_varints(u8: np.ndarray, pos: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(zig-zag decoded int64 values, positions after them); rows not `valid` read nothing
    (their value is undefined). At most 10 bytes, the 10th at most 1 (64 bits), as the Avro
    spec. Reads may run past a message's end (never past the padded buffer): the caller's
    final position check rejects such messages."""
    first = u8[pos]
    more = first >= 0x80
    if valid is not None:
        more &= valid
    if not more.any():  # one-byte varints: the common case
        small = first.astype(np.int64)
        return (small >> 1) ^ -(small & 1), pos + (1 if valid is None else valid)
    raw = (first & 0x7F).astype(np.uint64)
    length = np.ones(len(pos), np.int64) if valid is None else valid.astype(np.int64)
    rows = np.flatnonzero(more)
    for k in range(1, 10):
        byte = u8[pos[rows] + k]
        raw[rows] |= (byte & 0x7F).astype(np.uint64) << np.uint64(7 * k)
        length[rows] += 1
        if k == 9:
            if (byte > 1).any():
                raise _Malformed  # more than 64 bits, or more than 10 bytes
            break
        cont = byte >= 0x80
        if not cont.any():
            break
        if not cont.all():
            rows = rows[cont]
    values = (raw >> np.uint64(1)).view(np.int64) ^ -(raw & np.uint64(1)).view(np.int64)
    return values, pos + length


class _Node:
    """One Avro type of the compiled schema walk.

    Positions may run past a message's end by a few bytes within a field (fixed-width values
    and varints are read unchecked: the buffer is padded, and positions never decrease, so the
    final ``pos == end`` check rejects the message); reads whose size comes from the data
    (strings, array items) are checked first."""

    dtype: pa.DataType
    #: decode() accepts a `valid` mask (rows outside it read nothing) instead of a row subset
    masked = False
    #: fewest bytes one value takes: bounds array item counts
    min_size = 1
    #: nodes in this type's tree: the Python calls one item step costs
    weight = 1

    def decode(self, buf: _Buffer, pos: np.ndarray, end: np.ndarray, valid: np.ndarray | None = None
               ) -> tuple[pa.Array, np.ndarray]:
        """(Arrow array of len(pos) values, positions after them)."""
        raise NotImplementedError


class _Fixed(_Node):
    """double, float: little-endian IEEE bytes (nullable ones are decoded by `_Nullable`)."""

    def __init__(self, dtype: pa.DataType, width: int) -> None:
        self.dtype, self.width, self.min_size = dtype, width, width

    def decode(self, buf, pos, end, valid=None):
        assert valid is None
        values = (buf.f8 if self.width == 8 else buf.f4)[pos]
        return pa.Array.from_buffers(self.dtype, len(pos), [None, pa.py_buffer(values)]), pos + self.width


class _Boolean(_Node):
    masked = True
    dtype = pa.bool_()

    def decode(self, buf, pos, end, valid=None):
        byte = buf.u8[pos]
        if valid is None:
            if (byte > 1).any():
                raise _Malformed
            return pa.Array.from_buffers(self.dtype, len(pos), [None, _bitmap(byte == 1)]), pos + 1
        if (valid & (byte > 1)).any():
            raise _Malformed
        bits = _bitmap(valid & (byte == 1))
        return pa.Array.from_buffers(self.dtype, len(pos), [_bitmap(valid), bits]), pos + valid


class _Integer(_Node):
    """int, long: zig-zag varints (ints must fit 32 bits)."""

    masked = True

    def __init__(self, dtype: pa.DataType) -> None:
        self.dtype = dtype

    def decode(self, buf, pos, end, valid=None):
        values, new_pos = _read_varints(buf.u8, pos, valid)
        if self.dtype == pa.int32():
            out_of_range = (values < _I32_MIN) | (values > _I32_MAX)
            if (out_of_range if valid is None else out_of_range & valid).any():
                raise _Malformed
            values = values.astype(np.int32)
        return pa.Array.from_buffers(self.dtype, len(pos), [_bitmap(valid), pa.py_buffer(values)]), new_pos


class _Binary(_Node):
    """string, bytes: varint length, then the bytes (strings must be valid UTF-8).

    The bytes are gathered by Arrow: an array whose even elements are the values and odd
    elements the bytes between them (offsets start, start + length, next start...: never
    decreasing, as rows are in buffer order) is built over the buffer without copying, and
    `take` of its even elements copies the values out."""

    masked = True

    def __init__(self, dtype: pa.DataType) -> None:
        self.dtype = dtype

    def decode(self, buf, pos, end, valid=None):
        lengths, start = _read_varints(buf.u8, pos, valid)
        if valid is not None:
            lengths = np.where(valid, lengths, 0)
        # also rejects a start past the end; keeps start + lengths within the buffer
        if ((lengths < 0) | (lengths > end - start)).any():
            raise _Malformed
        n = len(pos)
        stop = start + lengths
        if not n:
            return pa.array([], self.dtype), stop
        bounds = np.empty(2 * n + 1, np.int32)
        bounds[0:2 * n:2] = start
        bounds[1::2] = stop
        bounds[2 * n] = stop[-1]
        # never decreasing: rows are in buffer order (row subsets stay sorted), messages do not
        # overlap (checked by decode_columnar) and 0 <= length <= end - start (checked above)
        interleaved = pa.Array.from_buffers(self.dtype, 2 * n, [None, pa.py_buffer(bounds), buf.arrow])
        values = interleaved.take(_even_indices(n))
        _, offsets, data = values.buffers()
        array = pa.Array.from_buffers(self.dtype, n, [_bitmap(valid), offsets, data])
        if self.dtype == pa.string() and data is not None and np.frombuffer(data, np.uint8).max(initial=0) >= 0x80:
            # valid UTF-8 as a whole, and no value starts inside a character: each is valid
            whole_offsets = pa.py_buffer(np.array([0, data.size], np.int32))
            whole = pa.Array.from_buffers(pa.string(), 1, [None, whole_offsets, data])
            try:
                whole.validate(full=True)
            except pa.ArrowInvalid:
                raise _Malformed from None
            if (((buf.u8[start] & 0xC0) == 0x80) & (lengths > 0)).any():
                raise _Malformed
        return array, stop


_EVEN: list[pa.Array] = [pa.array(np.arange(0, 2 << 14, 2, dtype=np.int32))]


def _even_indices(n: int) -> pa.Array:
    """Arrow int32 array 0, 2, ..., 2(n - 1) (a slice of a cached one)."""
    if n > len(_EVEN[0]):
        _EVEN[0] = pa.array(np.arange(0, 2 * max(n, 2 * len(_EVEN[0])), 2, dtype=np.int32))
    return _EVEN[0].slice(0, n)


def _expand_offsets(offsets: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Offsets of the valid rows' lists -> offsets of all rows (empty at null rows)."""
    lengths = np.zeros(len(valid), np.int64)
    lengths[valid] = np.diff(offsets)
    full = np.zeros(len(valid) + 1, np.int32)
    np.cumsum(lengths, out=full[1:])
    return full


class _Record(_Node):
    def __init__(self, dtype: pa.StructType, children: list[_Node]) -> None:
        self.dtype, self.children = dtype, children
        self.fields = [dtype.field(i) for i in range(dtype.num_fields)]
        self.min_size = sum(child.min_size for child in children)
        self.weight = 1 + sum(child.weight for child in children)

    def decode(self, buf, pos, end, valid=None):
        assert valid is None
        arrays = []
        for child in self.children:
            array, pos = child.decode(buf, pos, end)
            arrays.append(array)
        return pa.StructArray.from_arrays(arrays, fields=self.fields), pos


class _Nullable(_Node):
    """A ``[T, "null"]`` or ``["null", T]`` union: branch varint (one byte, 0 or 2), then T."""

    def __init__(self, inner: _Node, null_index: int) -> None:
        self.inner, self.dtype, self.weight = inner, inner.dtype, 1 + inner.weight
        self.null_byte, self.value_byte = 2 * null_index, 2 * (1 - null_index)
        # nullable doubles and floats are most fields of a packet: decoded in one node
        self.fixed = isinstance(inner, _Fixed)

    def _decode_fixed(self, buf, pos):
        branch = buf.u8[pos]
        present = branch == self.value_byte
        count = int(np.count_nonzero(present))
        values = (buf.f8_after_branch if self.inner.width == 8 else buf.f4_after_branch)[pos]
        if count == len(pos):
            validity = None
            new_pos = pos + (1 + self.inner.width)
        else:
            if count + np.count_nonzero(branch == self.null_byte) != len(pos):
                raise _Malformed  # a branch other than 0 and 1
            validity = _bitmap(present)
            # 1 + width bytes for a value, 1 for a null (uint8 arithmetic: cheaper than int64)
            new_pos = pos + (present.view(np.uint8) * np.uint8(self.inner.width) + np.uint8(1))
        return pa.Array.from_buffers(self.dtype, len(pos), [validity, pa.py_buffer(values)]), new_pos

    def decode(self, buf, pos, end, valid=None):
        assert valid is None
        if self.fixed:
            return self._decode_fixed(buf, pos)
        branch = buf.u8[pos]
        pos = pos + 1
        present = branch == self.value_byte
        count = int(np.count_nonzero(present))
        if count == len(pos):
            return self.inner.decode(buf, pos, end)
        if count + np.count_nonzero(branch == self.null_byte) != len(pos):
            raise _Malformed  # a branch other than 0 and 1
        if count == 0:
            return pa.nulls(len(pos), self.dtype), pos
        if self.inner.masked:
            return self.inner.decode(buf, pos, end, present)
        rows = np.flatnonzero(present)
        values, rows_pos = self.inner.decode(buf, pos[rows], end[rows])
        pos[rows] = rows_pos
        if isinstance(values, (pa.ListArray, pa.MapArray)):
            offsets = _expand_offsets(values.offsets.to_numpy(), present)
            children = (values.keys, values.items) if isinstance(values, pa.MapArray) else (values.values,)
            array = type(values).from_arrays(offsets, *children, type=self.dtype, mask=pa.array(~present))
            return array, pos
        index = np.cumsum(present, dtype=np.int64) - 1
        return values.take(pa.array(index, mask=~present)), pos


class _Repeated(_Node):
    """array and map: blocks of (count, [byte size if count < 0], items), ending with count 0.

    Items are decoded one step at a time for every row that still has one (item j of all
    rows at step j), then put back in row order."""

    def __init__(self, dtype: pa.DataType, items: list[_Node]) -> None:
        if sum(item.min_size for item in items) == 0:
            raise _Unsupported("items that take no bytes")  # their count would be unbounded
        self.dtype, self.items = dtype, items
        self.item_size = sum(item.min_size for item in items)
        self.item_weight = sum(item.weight for item in items)
        self.weight = 1 + self.item_weight

    def _read_headers(self, buf, pos, end, rows, left) -> None:
        """Read the next block header of `rows` (which have no items left in their block).
        Counts are capped by the bytes left (every item takes at least `item_size` bytes)."""
        counts, after = _read_varints(buf.u8, pos[rows], None)
        negative = counts < 0
        if negative.any():  # a negative count is followed by the block's byte size
            sized = np.flatnonzero(negative)
            _, after[sized] = _read_varints(buf.u8, after[sized], None)
            counts = np.abs(counts)
        # -2^63 stays negative; a start past the end leaves no room for any item
        if ((counts < 0) | (counts > (end[rows] - after) // self.item_size)).any():
            raise _Malformed
        pos[rows] = after
        left[rows] = counts

    def decode(self, buf, pos, end, valid=None):
        assert valid is None
        n = len(pos)
        pos = pos.copy()
        left = np.zeros(n, np.int64)  # items left in each row's current block
        lengths = np.zeros(n, np.int64)
        rows = np.arange(n)  # rows whose array has not ended
        step_rows: list[np.ndarray] = []
        step_values: list[list[pa.Array]] = [[] for _ in self.items]
        for step in range(_MAX_ITEM_STEPS + 1):
            between = rows[left[rows] == 0]
            if len(between):
                # a header with count 0 ends the array, any other one holds items
                self._read_headers(buf, pos, end, between, left)
                rows = rows[left[rows] > 0]
                if step == 0 and len(rows):
                    longest = int(left.max())
                    # cheap anyway (short maps): under ~64 item-field steps
                    slow = longest * self.item_weight > 64
                    if slow and left.sum() < _MIN_ROWS_PER_STEP * longest:
                        raise _TooSlow
            if not len(rows):
                break
            item_pos, item_end = pos[rows], end[rows]
            for values, item in zip(step_values, self.items):
                array, item_pos = item.decode(buf, item_pos, item_end)
                values.append(array)
            pos[rows] = item_pos
            left[rows] -= 1
            lengths[rows] += 1
            step_rows.append(rows)
        else:
            raise _Malformed  # too many items for a vectorised walk: let the fallback decode it
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        order = None
        if len(step_rows) > 1:  # step-major -> row-major (stable: item j before item j + 1)
            order = pa.array(np.argsort(np.concatenate(step_rows), kind="stable"))
        children = []
        for values, item in zip(step_values, self.items):
            child = pa.concat_arrays(values) if values else pa.array([], item.dtype)
            children.append(child.take(order) if order is not None else child)
        if pa.types.is_map(self.dtype):
            return pa.MapArray.from_arrays(offsets, *children, type=self.dtype), pos
        return pa.ListArray.from_arrays(offsets, children[0], type=self.dtype), pos


def _compile(avro_type: AvroType, dtype: pa.DataType, named: dict) -> _Node:
    """Decoder of `avro_type`, producing arrays of `dtype` (from arrow_schema_for_avro)."""
    if isinstance(avro_type, list):
        if len(avro_type) != 2 or "null" not in avro_type or avro_type[0] == avro_type[1]:
            raise _Unsupported(f"union {avro_type}")
        null_index = avro_type.index("null")
        return _Nullable(_compile(avro_type[1 - null_index], dtype, named), null_index)
    avro_type = resolve(avro_type, named)
    kind = avro_type if isinstance(avro_type, str) else avro_type["type"]
    if isinstance(avro_type, dict) and kind not in ("record", "array", "map"):
        raise _Unsupported(f"type {avro_type}")  # enum, fixed, logical types, ...
    if kind == "double" and dtype == pa.float64():
        return _Fixed(dtype, 8)
    if kind == "float" and dtype == pa.float32():
        return _Fixed(dtype, 4)
    if kind == "boolean" and dtype == pa.bool_():
        return _Boolean()
    if (kind, dtype) in (("int", pa.int32()), ("long", pa.int64())):
        return _Integer(dtype)
    if (kind, dtype) in (("string", pa.string()), ("bytes", pa.binary())):
        return _Binary(dtype)
    if kind == "record" and pa.types.is_struct(dtype):
        fields = avro_type["fields"]
        if len(fields) != dtype.num_fields:
            raise _Unsupported("record")
        return _Record(dtype, [_compile(f["type"], dtype.field(i).type, named) for i, f in enumerate(fields)])
    if kind == "array" and pa.types.is_list(dtype):
        return _Repeated(dtype, [_compile(avro_type["items"], dtype.value_type, named)])
    if kind == "map" and pa.types.is_map(dtype):
        return _Repeated(dtype, [_Binary(pa.string()), _compile(avro_type["values"], dtype.item_type, named)])
    raise _Unsupported(f"type {kind} as {dtype}")


def _has_heavy_arrays(node: _Node) -> bool:
    if isinstance(node, _Repeated):
        return node.item_weight >= _HEAVY_ITEMS or any(_has_heavy_arrays(item) for item in node.items)
    if isinstance(node, _Record):
        return any(_has_heavy_arrays(child) for child in node.children)
    if isinstance(node, _Nullable):
        return _has_heavy_arrays(node.inner)
    return False


class _Plan:
    def __init__(self, writer_schema: dict) -> None:
        self.arrow_schema = arrow_schema_for_avro(writer_schema)
        named = writer_schema.get("__named_schemas", {})
        self.root = _compile(writer_schema, pa.struct(list(self.arrow_schema)), named)
        self.heavy_arrays = _has_heavy_arrays(self.root)


def _build_plan(writer_schema: dict) -> _Plan | None:
    try:
        return _Plan(writer_schema)
    except (_Unsupported, ValueError, NotImplementedError, KeyError, TypeError):
        return None


def supports(writer_schema: dict) -> bool:
    """Whether `decode_columnar` can decode messages of this (fastavro-parsed) schema."""
    return memoized(writer_schema, "vector_plan", _build_plan) is not None


def _decode_chunk(plan: _Plan, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Table:
    if plan.heavy_arrays and len(starts) < _MIN_ROWS_WITH_HEAVY_ARRAYS:
        raise _TooSlow
    base = int(starts[0])
    stop = int(ends[-1])
    if stop - base + _PAD > _I32_MAX:
        raise _Malformed  # string offsets are int32: a chunk this large is left to the fallback
    if len(data) - stop >= _PAD:
        chunk = data[base:stop + _PAD]  # the following messages serve as padding
    else:
        chunk = np.zeros(stop - base + _PAD, np.uint8)
        chunk[: stop - base] = data[base:stop]
    buf = _Buffer(chunk)
    end = ends - base
    struct, pos = plan.root.decode(buf, starts - base, end)
    if (pos != end).any():
        raise _Malformed
    return pa.Table.from_arrays(struct.flatten(), schema=plan.arrow_schema)


def decode_columnar(data: Any, offsets: np.ndarray, writer_schema: dict) -> pa.Table | None:
    """Decode the schemaless Avro messages data[offsets[i]:offsets[i + 1]], i < len(offsets) - 1.

    `data` is a bytes-like object (or uint8 array) holding the messages back to back, `offsets`
    their n + 1 boundaries (int64, non-decreasing, within `data`), `writer_schema` the
    fastavro-parsed schema (`parse_schema`; the decoder compiled for it is cached per schema
    object). Returns the table `decode_batch` gives (schema `arrow_schema_for_avro`, row i =
    message i; one chunk per ~16 MiB of messages), or None when the schema has a type this
    decoder does not handle, when any message does not decode exactly (empty, truncated,
    invalid, bytes left over), or when its arrays are too long for its row count
    (`_MIN_ROWS_PER_STEP`): the caller then falls back to polars. Never raises on malformed
    bytes.
    """
    plan: _Plan | None = memoized(writer_schema, "vector_plan", _build_plan)
    if plan is None:
        return None
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1):
        data = np.frombuffer(data, np.uint8)
    offsets = np.asarray(offsets, np.int64)
    n = len(offsets) - 1
    if n <= 0:
        return plan.arrow_schema.empty_table()
    sizes = np.diff(offsets)
    if (sizes <= 0).any() or offsets[0] < 0 or offsets[-1] > len(data):
        return None  # empty messages are bad, as for the fallback
    tables = []
    lo = 0
    # chunks of even byte sizes: a small last chunk would decode arrays inefficiently
    size = (offsets[-1] - offsets[0]) / max(1, round((offsets[-1] - offsets[0]) / _CHUNK_BYTES))
    try:
        while lo < n:
            hi = int(np.searchsorted(offsets, offsets[lo] + size, side="right")) - 1
            hi = n if n - hi < 2 else min(max(hi, lo + 1), n)
            tables.append(_decode_chunk(plan, data, offsets[lo:hi], offsets[lo + 1:hi + 1]))
            lo = hi
    except (_Malformed, _TooSlow, pa.ArrowException, IndexError, ValueError, OverflowError, TypeError):
        return None
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
