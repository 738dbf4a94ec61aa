"""fink_pipeline.avro.vector_decode: the numpy fast path of decode_batch.

Every decoded table is compared bit for bit (floats as their bit patterns, so NaN payloads
and -0.0 count) with two references: fastavro's records converted as decode.py converts them
(`pa.Table.from_pylist` with `arrow_schema_for_avro`), and decode.py's polars path. Hostile
bytes must give None (the caller then falls back to polars), never an exception or a hang.
"""

from __future__ import annotations

import gzip
import io
import time
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pytest

from fink_pipeline.avro import arrow_schema_for_avro, avro_schema_from_arrow, decode_batch, decode_batch_safe
from fink_pipeline.avro import decode as decode_module
from fink_pipeline.avro import encode_batch
from fink_pipeline.avro import vector_decode
from fink_pipeline.avro.schema import parse_schema
from fink_pipeline.avro.vector_decode import decode_columnar, supports
from fink_pipeline.surveys import get_survey
from fink_pipeline_tests.synthetic_topics import synthetic_alerts
from fink_pipeline_tests.test_avro import _fastavro_bytes

# one folder of sample alerts per schema the decoders support (the other samples use logical
# types, which decode.py rejects: see test_unsupported_schemas_fall_back), and whether polars
# reads them: it fails ("OutOfSpec") on the survey schemas, where decode_batch used to raise
# and decode_batch_safe fell back to fastavro message by message
REAL_SAMPLES = [
    ("ztf/fink/ftransfer_avro", True),
    ("lsst/fink/ftransfer_avro", True),
    ("lsst/alerts/rubin_v9_0_fink-ingested", True),
    ("ztf/alerts/v3.2_night-20181129", False),
    ("ztf/alerts/v3.3_night-20200101", False),
    ("ztf/alerts/v3.3_fink-client-samples", False),
    ("ztf/alerts/ztf-avro-alert-samples", False),
    ("ztf/alerts/pittgoogle-samples", False),
    ("lsst/alerts/lsst-alert-packet-samples/v7_4", False),
    ("lsst/alerts/lsst-alert-packet-samples/v9_0", False),
    ("elasticc/alerts", False),
]


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def step_arrays_whatever_the_batch(monkeypatch):
    """The samples are small batches with long arrays, which the fast path leaves to polars
    for speed: decode them anyway, to check the array code (test_long_arrays_in_few_rows_fall_back
    restores the default)."""
    monkeypatch.setattr(vector_decode, "_MIN_ROWS_PER_STEP", 0)
    monkeypatch.setattr(vector_decode, "_MIN_ROWS_WITH_HEAVY_ARRAYS", 0)


def _bits(array: pa.Array) -> pa.Array:
    """`array` with every float replaced by its bit pattern (Arrow's equals has NaN != NaN)."""
    if pa.types.is_floating(array.type):
        return array.view(pa.int64() if array.type == pa.float64() else pa.int32())
    if pa.types.is_struct(array.type):
        children = [_bits(array.field(i)) for i in range(array.type.num_fields)]
        fields = [array.type.field(i).with_type(c.type) for i, c in enumerate(children)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=array.is_null() if array.null_count else None)
    if pa.types.is_map(array.type):
        mask = array.is_null() if array.null_count else None
        return pa.MapArray.from_arrays(array.offsets, array.keys, _bits(array.items), mask=mask)
    if pa.types.is_list(array.type):
        mask = array.is_null() if array.null_count else None
        return pa.ListArray.from_arrays(array.offsets, _bits(array.values), mask=mask)
    return array


def assert_identical(got: pa.Table, want: pa.Table) -> None:
    """Same schema, same values (floats bit for bit), same null positions."""
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        a, b = got.column(name).combine_chunks(), want.column(name).combine_chunks()
        assert _bits(a).equals(_bits(b)), name


def _fast(messages: list[bytes], schema: dict) -> pa.Table | None:
    """decode_columnar on the joined messages."""
    offsets = np.zeros(len(messages) + 1, np.int64)
    np.cumsum([len(m) for m in messages], out=offsets[1:])
    return decode_columnar(b"".join(messages), offsets, parse_schema(schema))


def _fastavro_table(messages: list[bytes], schema: dict) -> pa.Table:
    """fastavro's records as decode.py converts them (its fastavro fallback)."""
    parsed = parse_schema(schema)
    records = [fastavro.schemaless_reader(io.BytesIO(m), parsed, None) for m in messages]
    return pa.Table.from_pylist(records, schema=arrow_schema_for_avro(schema))


def _polars_table(messages: list[bytes], schema: dict) -> pa.Table | None:
    """decode.py's polars path (None when polars cannot read the messages)."""
    framing = decode_module._build_framing(schema)
    df, error, _ = decode_module._read(pa.array(messages, pa.large_binary()), framing)
    return None if error is not None else decode_module._to_arrow(df, framing)


def _assert_matches_references(messages: list[bytes], schema: dict, polars_reads: bool = True) -> pa.Table:
    table = _fast(messages, schema)
    assert table is not None, "the fast path fell back"
    assert table.schema == arrow_schema_for_avro(schema)
    assert_identical(table, _fastavro_table(messages, schema))
    polars = _polars_table(messages, schema)
    assert (polars is not None) == polars_reads
    if polars is not None:
        assert_identical(table, polars)
    return table


def _decodes_exactly(message: bytes, parsed: dict) -> bool:
    buf = io.BytesIO(message)
    try:
        fastavro.schemaless_reader(buf, parsed, None)
    except Exception:  # noqa: BLE001 - any failure means undecodable
        return False
    return bool(message) and buf.tell() == len(message)


def _zigzag_varint(value: int) -> bytes:
    z = (value << 1) ^ (value >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _real_sample(shared_data: Path, folder: str, limit: int = 40) -> tuple[dict, list[bytes]]:
    """(writer schema, schemaless messages) of the records of the container files of a folder."""
    schema, records = None, []
    for path in sorted((shared_data / folder).iterdir()):
        if ".avro" not in path.name:
            continue
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            reader = fastavro.reader(f)
            if schema is None:
                schema = reader.writer_schema
            elif reader.writer_schema != schema:
                continue
            records += list(reader)
        if len(records) >= limit:
            break
    assert schema is not None and records
    return schema, _fastavro_bytes(records[:limit], schema)


# --------------------------------------------------------------------------- real and generated schemas


@pytest.mark.parametrize(("folder", "polars_reads"), REAL_SAMPLES)
def test_real_alerts_match_fastavro_and_polars(shared_data, folder, polars_reads):
    schema, messages = _real_sample(shared_data, folder)
    table = _assert_matches_references(messages, schema, polars_reads)
    assert table.num_rows == len(messages)
    # and through the public API, on both of its input paths
    assert_identical(decode_batch(messages, schema), table)
    decoded, bad, errors = decode_batch_safe(list(messages), schema)
    assert (bad, errors) == ([], [])
    assert_identical(decoded, table)


def test_real_ztf_alerts_hold_arrays_of_records_and_cutouts(shared_data):
    schema, messages = _real_sample(shared_data, "ztf/alerts/v3.3_night-20200101")
    table = _assert_matches_references(messages, schema, polars_reads=False)
    history = table.column("prv_candidates").combine_chunks()
    assert pa.types.is_struct(history.type.value_type) and len(history.values) > len(messages)
    cutout = table.column("cutoutScience").combine_chunks()
    assert cutout.type.field("stampData").type == pa.binary()
    assert min(len(v) for v in cutout.field("stampData").to_pylist()) > 1000


@pytest.mark.parametrize(
    ("survey", "packet"),
    [(s, p) for s in ("ztf", "lsst", "elasticc") for p in ("light", "medium", "full")],
)
def test_generated_packets_match_fastavro_and_polars(survey, packet):
    table = next(synthetic_alerts(get_survey(survey), 60, packet, seed=5, batch_size=60))
    schema = avro_schema_from_arrow(table.schema)
    messages = encode_batch(table, schema).to_pylist()
    _assert_matches_references(messages, schema)


def _light_like(n: int, null_rate: float, seed: int = 0) -> pa.Table:
    """A light-packet-like table: every nullable kind, a map, nested records, NaN and -0.0."""
    rng = np.random.default_rng(seed)

    def mask(size=n):
        return rng.random(size) < null_rate

    words = np.array(["", "ZTF26aaxyzab", "étoile ★", "x" * 40, "星" * 20, "(TNS) SN Ia"])
    doubles = rng.normal(0, 1e3, n)
    doubles[::7] = np.nan
    doubles[1::11] = -0.0
    children = [pa.array(rng.normal(size=n), mask=mask()) for _ in range(4)]
    return pa.table({
        "objectId": pa.array(words[rng.integers(0, len(words), n)], mask=mask()),
        "candid": pa.array(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64), mask=mask()),
        "fid": pa.array(rng.integers(-(2**31), 2**31 - 1, n, dtype=np.int32), mask=mask()),
        "small": pa.array(rng.integers(-60, 60, n, dtype=np.int32), mask=mask()),
        "jd": pa.array(doubles, mask=mask()),
        "magpsf": pa.array(doubles.astype(np.float32), mask=mask()),
        "flag": pa.array(rng.random(n) < 0.5, mask=mask()),
        "blob": pa.array([bytes(rng.integers(0, 256, int(k), dtype=np.uint8)) for k in rng.integers(0, 300, n)],
                         pa.binary(), mask=mask()),
        "lc": pa.StructArray.from_arrays(children, ["a", "b", "c", "d"], mask=pa.array(mask())),
        "mangrove": pa.MapArray.from_arrays(
            pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
            pa.array(["HyperLEDA_name", "lum_dist"] * n),
            pa.array(words[rng.integers(0, len(words), 2 * n)], mask=mask(2 * n)),
            mask=pa.array(mask()),
        ),
        "history": pa.array(
            [[float(v) for v in rng.normal(size=int(k))] for k in rng.integers(0, 5, n)],
            pa.list_(pa.float64()), mask=mask(),
        ),
    })


@pytest.mark.parametrize("null_rate", [0.0, 0.3, 1.0])
def test_nulls_nowhere_some_everywhere(null_rate):
    table = _light_like(500, null_rate)
    schema = avro_schema_from_arrow(table.schema)
    messages = encode_batch(table, schema).to_pylist()
    decoded = _assert_matches_references(messages, schema)
    if null_rate == 1.0:
        assert decoded.column("objectId").null_count == 500
    elif null_rate == 0.0:
        assert sum(decoded.column(name).null_count for name in decoded.column_names) == 0


def test_single_message_empty_batch_and_several_chunks(monkeypatch):
    table = _light_like(300, 0.2, seed=1)
    schema = avro_schema_from_arrow(table.schema)
    messages = encode_batch(table, schema).to_pylist()
    _assert_matches_references(messages[:1], schema)
    empty = decode_columnar(b"", np.zeros(1, np.int64), parse_schema(schema))
    assert empty.num_rows == 0 and empty.schema == arrow_schema_for_avro(schema)
    # chunks of a few messages: the last one of each run is copied into a padded buffer
    whole = _fast(messages, schema)
    monkeypatch.setattr(vector_decode, "_CHUNK_BYTES", 3000)
    chunked = _fast(messages, schema)
    assert chunked.column("jd").num_chunks > 10
    assert_identical(chunked, whole)


def test_messages_inside_a_larger_buffer():
    """Offsets need not start at 0 nor end at the buffer's end (an Arrow slice)."""
    table = _light_like(50, 0.2, seed=2)
    schema = avro_schema_from_arrow(table.schema)
    messages = encode_batch(table, schema).to_pylist()
    data = b"\xff" * 5 + b"".join(messages) + b"\xff" * 3
    offsets = 5 + np.concatenate([[0], np.cumsum([len(m) for m in messages])])
    assert_identical(decode_columnar(data, offsets, parse_schema(schema)), _fastavro_table(messages, schema))


def test_blocks_with_negative_counts_and_several_blocks():
    """fastavro writes one block per array; other writers may write several, or negative
    counts followed by the block's byte size (Avro spec)."""
    schema = {"type": "record", "name": "r", "fields": [
        {"name": "xs", "type": {"type": "array", "items": "long"}},
        {"name": "m", "type": [{"type": "map", "values": "string"}, "null"]},
    ]}
    one = (
        _zigzag_varint(-2) + _zigzag_varint(2) + _zigzag_varint(7) + _zigzag_varint(-8)  # block of 2, sized
        + _zigzag_varint(1) + _zigzag_varint(300) + _zigzag_varint(0)  # block of 1, end
        + b"\x00" + _zigzag_varint(1) + _zigzag_varint(1) + b"k" + _zigzag_varint(2) + b"vv" + _zigzag_varint(0)
    )
    two = _zigzag_varint(0) + b"\x02"  # empty array, null map
    messages = [one, two, one]
    assert all(_decodes_exactly(m, fastavro.parse_schema(schema)) for m in messages)
    table = _assert_matches_references(messages, schema)
    assert table.column("xs").to_pylist() == [[7, -8, 300], [], [7, -8, 300]]
    assert table.column("m").to_pylist() == [[("k", "vv")], None, [("k", "vv")]]


def test_long_arrays_in_few_rows_fall_back(shared_data, monkeypatch):
    """Item steps cost the same for 7 rows as for 7000: the LSST sample (7 messages, arrays of
    hundreds of records) is left to polars, which decode_batch then uses, with the same result;
    at once when the batch is small (arrays of records), else once the first counts are read."""
    schema, messages = _real_sample(shared_data, "lsst/fink/ftransfer_avro")
    stepped = _fast(messages, schema)
    assert stepped is not None
    monkeypatch.setattr(vector_decode, "_MIN_ROWS_PER_STEP", 512)
    assert _fast(messages, schema) is None  # stopped at the first long array
    monkeypatch.setattr(vector_decode, "_MIN_ROWS_WITH_HEAVY_ARRAYS", 4096)
    start = time.perf_counter()
    assert _fast(messages, schema) is None
    assert time.perf_counter() - start < 0.05  # no walk at all
    assert_identical(decode_batch(messages, schema), stepped)
    # short maps of strings are stepped whatever the row count
    table = _light_like(3, 0.0)
    light = avro_schema_from_arrow(table.schema)
    assert _fast(encode_batch(table, light).to_pylist(), light) is not None


def test_unsupported_schemas_fall_back(shared_data):
    enum = {"type": "record", "name": "r", "fields": [
        {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}}]}
    stamp = {"type": "record", "name": "r", "fields": [
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}]}
    several = {"type": "record", "name": "r", "fields": [{"name": "u", "type": ["null", "long", "string"]}]}
    for schema in (enum, stamp, several):
        assert not supports(parse_schema(schema))
        assert decode_columnar(b"\x02", np.array([0, 1]), parse_schema(schema)) is None
    # the samples with logical types: decode_batch fails exactly as before the fast path
    schema, messages = _real_sample(shared_data, "ztf/fink/distribution_avro", limit=3)
    assert not supports(parse_schema(schema))
    with pytest.raises(NotImplementedError):
        decode_batch(messages, schema)


# --------------------------------------------------------------------------- hostile messages


@pytest.fixture(scope="module")
def light_messages() -> tuple[dict, list[bytes]]:
    table = _light_like(40, 0.2, seed=4)
    schema = avro_schema_from_arrow(table.schema)
    return schema, encode_batch(table, schema).to_pylist()


def test_every_truncation_is_rejected(light_messages, shared_data):
    """A proper prefix of a message never decodes (decoding is deterministic on the bytes):
    every cut of a few light messages, and 160 cuts of a real ZTF one (its cutouts make it
    too long to try them all)."""
    schema, good = light_messages
    for message in good[:3]:
        for cut in range(len(message)):  # within a batch and at its end (a padded copy)
            batch = [good[5], message[:cut], good[5]] if cut % 2 else [good[5], message[:cut]]
            assert _fast(batch, schema) is None, cut
    ztf_schema, ztf = _real_sample(shared_data, "ztf/fink/ftransfer_avro", limit=2)
    cuts = np.unique(np.concatenate([np.arange(60), np.random.default_rng(0).integers(0, len(ztf[0]), 100)]))
    for cut in cuts:
        assert _fast([ztf[1], ztf[0][:cut]], ztf_schema) is None, cut


def test_flipped_bytes_decode_like_fastavro_or_fall_back(light_messages):
    schema, messages = light_messages
    parsed = fastavro.parse_schema(schema)
    rng = np.random.default_rng(0)
    accepted = rejected = 0
    for _ in range(400):
        index = int(rng.integers(0, len(messages)))
        message = bytearray(messages[index])
        message[int(rng.integers(0, len(message)))] = int(rng.integers(0, 256))
        message = bytes(message)
        table = _fast([message], schema)
        if table is None:
            rejected += 1
            continue
        accepted += 1
        assert _decodes_exactly(message, parsed)  # never accepts what fastavro rejects
        assert_identical(table, _fastavro_table([message], schema))
    assert accepted and rejected  # both outcomes were exercised


def _one_field(avro_type) -> dict:
    return {"type": "record", "name": "r", "fields": [{"name": "v", "type": avro_type}]}


@pytest.mark.parametrize(
    ("avro_type", "message"),
    [
        (["double", "null"], b"\x04" + b"\x00" * 8),  # union branch 2 of 2
        (["double", "null"], b"\x01" + b"\x00" * 8),  # branch -1
        (["null", "long"], b"\x82\x00\x02"),  # branch as a 2-byte varint
        ("string", _zigzag_varint(-1)),  # negative length
        ("string", _zigzag_varint(1 << 40) + b"abc"),  # huge length
        ("bytes", _zigzag_varint(4) + b"abc"),  # length past the end
        ("string", _zigzag_varint(1) + b"\xff"),  # invalid UTF-8
        ("string", _zigzag_varint(2) + b"\xc3("),  # invalid continuation
        ("long", b"\xff" * 10 + b"\x01"),  # 11-byte varint
        ("long", b"\xff" * 9 + b"\x02"),  # 65 bits
        ("int", _zigzag_varint(1 << 31)),  # out of int32
        ("boolean", b"\x02"),
        ({"type": "array", "items": "double"}, _zigzag_varint(1 << 40) + b"\x00" * 16),  # huge count
        ({"type": "array", "items": "double"}, _zigzag_varint(-(1 << 63))),  # count -2^63
        ({"type": "array", "items": "long"}, _zigzag_varint(3) + b"\x02\x02"),  # fewer items than counted
        ({"type": "map", "values": "long"}, _zigzag_varint(1) + b"\x02k"),  # no value
        ("double", b"\x00" * 8 + b"\x00"),  # trailing byte
        ("double", b""),  # empty message
    ],
)
def test_invalid_messages_give_none(avro_type, message):
    schema = _one_field(avro_type)
    start = time.perf_counter()
    assert _fast([message], schema) is None
    good = _fastavro_bytes([{"v": None if isinstance(avro_type, list) else _sample_value(avro_type)}], schema)[0]
    assert _fast([good, message, good], schema) is None
    assert _fast([good, good], schema) is not None
    assert time.perf_counter() - start < 1.0


def _sample_value(avro_type):
    if isinstance(avro_type, dict):
        return [1.0] if avro_type["type"] == "array" and avro_type["items"] == "double" else (
            [1] if avro_type["type"] == "array" else {"k": 1})
    return {"string": "é", "bytes": b"\x00", "long": -5, "int": 7, "boolean": True, "double": 0.5}[avro_type]


def test_a_character_split_across_values_is_invalid():
    """Each string must be valid UTF-8 by itself, not only the column's bytes as a whole."""
    schema = _one_field("string")
    halves = [_zigzag_varint(1) + "é".encode()[:1], _zigzag_varint(1) + "é".encode()[1:]]
    assert _fast(halves, schema) is None
    assert _fast([_zigzag_varint(2) + "é".encode()] * 2, schema).column("v").to_pylist() == ["é", "é"]
    assert _fast([_zigzag_varint(2) + b"a\xc3", _zigzag_varint(1) + b"b"], schema) is None


def test_decode_batch_safe_reports_the_same_bad_indices(light_messages, shared_data):
    schema, good = light_messages
    messages: list[bytes | None] = list(good)
    corrupt = {
        2: good[2][:-1],  # truncated
        7: b"",  # empty
        11: good[11] + b"\x00",  # trailing byte
        19: None,  # Kafka tombstone
        23: b"\x09" + good[23][1:],  # first union branch out of range
        31: good[3] + good[4],  # two messages in one
    }
    for index, message in corrupt.items():
        messages[index] = message
    for values in (messages, pa.array(messages, pa.large_binary())):
        table, bad, errors = decode_batch_safe(values, schema)
        assert bad == sorted(corrupt) and len(errors) == len(bad) and all(errors)
        kept = [i for i in range(len(good)) if i not in corrupt]
        assert_identical(table, _fastavro_table([good[i] for i in kept], schema))
    # and a clean batch takes the fast path (the polars path would agree anyway: check it is not used)
    table, bad, _ = decode_batch_safe(list(good), schema)
    assert bad == [] and table.num_rows == len(good)


def test_the_fast_path_is_used(light_messages, monkeypatch):
    schema, good = light_messages

    def no_polars(*args, **kwargs):
        raise AssertionError("polars path used")

    monkeypatch.setattr(decode_module, "_read", no_polars)
    monkeypatch.setattr(decode_module, "_polars", no_polars)
    assert decode_batch(good, schema).num_rows == len(good)
    assert decode_batch(pa.array(good, pa.binary()), schema).num_rows == len(good)
    assert decode_batch_safe(list(good), schema)[0].num_rows == len(good)
