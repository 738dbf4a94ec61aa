"""fink_pipeline.avro: Fink-style Avro schemas, columnar encoding and decoding.

Reference implementation for every byte: `fastavro.schemaless_writer` / `schemaless_reader`
with the same schema; reference data: the real ZTF and LSST Data Transfer samples.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from pathlib import Path

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fink_pipeline.avro import (
    AvroDecodeError,
    arrow_schema_for_avro,
    avro_schema_from_arrow,
    decode_batch,
    decode_batch_safe,
    encode_batch,
    schema_fingerprint,
    schema_json,
)
from fink_pipeline.avro import decode as decode_module

SAMPLES = {
    "ztf": ("ztf/fink/ftransfer_avro", "ftransfer_ztf_2026-03-23_11487", "part-3-305711.avro"),
    "lsst": ("lsst/fink/ftransfer_avro", "ftransfer_lsst_2026-03-18_803281", "part-2-918301.avro"),
}


def _sample(shared_data: Path, survey: str) -> tuple[dict, pa.Schema, list[dict]]:
    """(parsed Avro schema, Arrow footer schema, records) of a real Data Transfer sample."""
    folder, topic, part = SAMPLES[survey]
    base = shared_data / folder
    avro_schema = json.loads((base / f"avro_schema_{topic}.json").read_text())
    arrow_footer = pq.read_schema(base / f"arrow_schema_{topic}.metadata")
    with open(base / part, "rb") as f:
        records = list(fastavro.reader(f))
    return avro_schema, arrow_footer, records


def _fastavro_bytes(records: list[dict], avro_schema: dict) -> list[bytes]:
    parsed = fastavro.parse_schema(avro_schema)
    out = []
    for record in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        out.append(buf.getvalue())
    return out


def _comparable(value):
    """Python value with maps as dicts and NaN made comparable (NaN != NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        # an empty map: {} from fastavro, [] from Arrow (records are never empty here)
        return {k: _comparable(v) for k, v in value.items()} if value else []
    if isinstance(value, list):
        if value and isinstance(value[0], tuple):  # Arrow map -> list of (key, value)
            return {k: _comparable(v) for k, v in value}
        return [_comparable(v) for v in value]
    return value


def _as_fastavro_rows(table: pa.Table, avro_schema: dict) -> list[dict]:
    """Table rows as fastavro takes them: maps as dicts, a null non-nullable record as a
    record of nulls (what Spark's struct(X.*) writes)."""
    parsed = fastavro.parse_schema(avro_schema)
    named = parsed["__named_schemas"]

    def fix(value, avro_type):
        if isinstance(avro_type, str) and avro_type in named:
            avro_type = named[avro_type]
        if isinstance(avro_type, list):
            if value is None:
                return None
            avro_type = next(t for t in avro_type if t != "null")
            return fix(value, avro_type)
        if not isinstance(avro_type, dict):
            return value
        kind = avro_type["type"]
        if kind == "record":
            value = value or {}
            return {f["name"]: fix(value.get(f["name"]), f["type"]) for f in avro_type["fields"]}
        if kind == "array":
            return [fix(v, avro_type["items"]) for v in value]
        if kind == "map":
            return {k: fix(v, avro_type["values"]) for k, v in value}
        return value

    return [fix(row, parsed) for row in table.to_pylist()]


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize("survey", ["ztf", "lsst"])
def test_schema_from_arrow_reproduces_fink_schema(shared_data, survey):
    avro_schema, arrow_footer, _ = _sample(shared_data, survey)
    ours = avro_schema_from_arrow(arrow_footer)
    assert ours["name"] == "topLevelRecord.value" and ours["type"] == "record"
    # fastavro's parsed form is what the sample file holds: names, order, types, union order
    assert fastavro.parse_schema(ours) == avro_schema
    assert [f["name"] for f in ours["fields"]] == [f.name for f in arrow_footer]


def test_schema_naming_and_nullability_conventions():
    schema = pa.schema(
        [
            pa.field("candid", pa.int64()),
            pa.field("candidate", pa.struct([("jd", pa.float64()), ("fid", pa.int32())])),
            pa.field("prv", pa.list_(pa.struct([("magpsf", pa.float32())]))),
            pa.field("m", pa.map_(pa.string(), pa.struct([("x", pa.float64())]))),
            pa.field("tags", pa.list_(pa.field("item", pa.string(), nullable=False)), nullable=False),
            pa.field("ts", pa.timestamp("us")),
            pa.field("flag", pa.bool_()),
            pa.field("blob", pa.binary()),
            pa.field("small", pa.int16()),
        ]
    )
    avro = avro_schema_from_arrow(schema)
    types = {f["name"]: f["type"] for f in avro["fields"]}
    assert types["candid"] == ["long", "null"]
    # structs: plain records named topLevelRecord.<field>, never a union
    assert types["candidate"]["name"] == "topLevelRecord.candidate"
    assert types["candidate"]["fields"] == [
        {"name": "jd", "type": ["double", "null"]},
        {"name": "fid", "type": ["int", "null"]},
    ]
    items = types["prv"][0]["items"]
    assert items[0]["name"] == "topLevelRecord.prv" and items[1] == "null"
    assert types["m"][0]["values"][0]["name"] == "topLevelRecord"  # fink_utils' map-value record name
    assert types["tags"] == {"type": "array", "items": "string"}
    assert types["ts"] == ["string", "null"]
    assert types["flag"] == ["boolean", "null"]
    assert types["blob"] == ["bytes", "null"]
    assert types["small"] == ["int", "null"]
    fastavro.parse_schema(avro)  # valid Avro


def test_null_struct_is_written_as_a_record_of_nulls():
    inner = pa.struct([pa.field("jd", pa.float64(), False), pa.field("fid", pa.int32(), False)])
    table = pa.table({"candidate": pa.array([{"jd": 1.5, "fid": 1}, None], inner)})
    avro = avro_schema_from_arrow(table.schema)
    # the struct can be null, so its fields are nullable (as Spark's struct(X.*) derives them)
    assert avro["fields"][0]["type"]["fields"] == [
        {"name": "jd", "type": ["double", "null"]},
        {"name": "fid", "type": ["int", "null"]},
    ]
    assert encode_batch(table, avro).to_pylist() == _fastavro_bytes(
        [{"candidate": {"jd": 1.5, "fid": 1}}, {"candidate": {"jd": None, "fid": None}}], avro
    )
    strict = avro_schema_from_arrow(pa.schema([pa.field("candidate", inner, nullable=False)]))
    assert strict["fields"][0]["type"]["fields"][0]["type"] == "double"


def test_schema_record_name_collisions_are_made_unique():
    inner = pa.struct([("v", pa.int32())])
    schema = pa.schema([("a", pa.struct([("x", inner)])), ("b", pa.struct([("x", inner)]))])
    avro = avro_schema_from_arrow(schema)
    names = [f["type"]["fields"][0]["type"]["name"] for f in avro["fields"]]
    assert names == ["topLevelRecord.x", "topLevelRecord.x_2"]
    fastavro.parse_schema(avro)  # a redefined name would raise here


@pytest.mark.parametrize("survey", ["ztf", "lsst"])
def test_arrow_schema_for_avro_matches_fink_client_footer(shared_data, survey):
    avro_schema, arrow_footer, _ = _sample(shared_data, survey)
    ours = arrow_schema_for_avro(avro_schema)
    assert ours.names == arrow_footer.names
    # same types; the documented difference: records are non-nullable structs here
    assert [f.type for f in ours] == [f.type for f in arrow_footer]
    nullable = {f.name: f.nullable for f in ours}
    assert nullable["candid" if survey == "ztf" else "diaSourceId"] is True
    assert nullable["candidate" if survey == "ztf" else "diaSource"] is False


def test_schema_json_and_fingerprint():
    avro = avro_schema_from_arrow(pa.schema([("a", pa.int64()), ("b", pa.string())]))
    text = schema_json(avro)
    assert text == json.dumps(avro, indent=2) and json.loads(text) == avro
    reordered = json.loads(json.dumps(avro))
    reordered["fields"][0] = {"type": ["long", "null"], "name": "a"}  # same schema, other key order
    fingerprint = schema_fingerprint(avro)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert schema_fingerprint(reordered) == fingerprint
    other = avro_schema_from_arrow(pa.schema([("a", pa.int32()), ("b", pa.string())]))
    assert schema_fingerprint(other) != fingerprint


# --------------------------------------------------------------------------- real samples


@pytest.mark.parametrize("survey", ["ztf", "lsst"])
def test_real_sample_round_trip(shared_data, survey):
    avro_schema, _, records = _sample(shared_data, survey)
    expected = _fastavro_bytes(records, avro_schema)
    table = pa.Table.from_pylist(records, schema=arrow_schema_for_avro(avro_schema))

    encoded = encode_batch(table, avro_schema)
    assert len(encoded) == len(records)
    for i, message in enumerate(expected):
        assert encoded[i].as_py() == message, f"message {i} differs from fastavro"

    decoded = decode_batch(encoded, avro_schema)
    assert decoded.schema == arrow_schema_for_avro(avro_schema)
    assert decoded.num_rows == len(records)
    for record, row in zip(records, decoded.to_pylist()):
        for name, value in record.items():
            assert _comparable(row[name]) == _comparable(value), name
    # and the decoded table encodes back to the same bytes
    assert encode_batch(decoded, avro_schema).to_pylist() == expected


# --------------------------------------------------------------------------- synthetic edge cases

LC = pa.struct([("mean", pa.float64()), ("n", pa.int32())])
EDGE_SCHEMA = pa.schema(
    [
        pa.field("i32", pa.int32()),
        pa.field("i64", pa.int64()),
        pa.field("f32", pa.float32()),
        pa.field("f64", pa.float64()),
        pa.field("flag", pa.bool_()),
        pa.field("text", pa.string()),
        pa.field("long_text", pa.string()),
        pa.field("blob", pa.binary()),
        pa.field("all_null", pa.int64()),
        pa.field("all_null_text", pa.string()),
        pa.field("lc", LC),
        pa.field("nested", pa.struct([("inner", LC), ("tag", pa.string())])),
        pa.field("doubles", pa.list_(pa.float64())),
        pa.field("history", pa.list_(LC)),
        pa.field("labels", pa.map_(pa.string(), pa.string())),
        pa.field("features", pa.map_(pa.string(), LC)),
        pa.field("strict", pa.int64(), nullable=False),
    ]
)
I64 = np.iinfo(np.int64)
I32 = np.iinfo(np.int32)
EDGE_ROWS = [
    {
        "i32": I32.min, "i64": I64.min, "f32": float("nan"), "f64": float("nan"), "flag": True,
        "text": "", "long_text": "x" * 200, "blob": b"", "lc": {"mean": 1.5, "n": -1},
        "nested": {"inner": {"mean": None, "n": 3}, "tag": "é"}, "doubles": [], "history": [],
        "labels": [], "features": [], "strict": 0,
    },
    {
        "i32": I32.max, "i64": I64.max, "f32": float("inf"), "f64": float("-inf"), "flag": False,
        "text": "étoile ★ 星 🚀", "long_text": "ü" * 100, "blob": bytes(range(256)), "lc": None,
        "nested": None, "doubles": None, "history": None, "labels": None, "features": None,
        "strict": -1,
    },
    {
        "i32": None, "i64": None, "f32": -0.0, "f64": 5e-324, "flag": None, "text": None,
        "long_text": None, "blob": None, "lc": {"mean": None, "n": None},
        "nested": {"inner": None, "tag": None}, "doubles": [None, 1.0, float("nan"), None],
        "history": [None, {"mean": 2.0, "n": None}, None], "labels": [("k", None), ("", "v")],
        "features": [("g", None), ("r", {"mean": 0.5, "n": 7})], "strict": I64.max,
    },
    {
        "i32": 0, "i64": 1 << 35, "f32": 3.4028234663852886e38, "f64": 1.7976931348623157e308,
        "flag": True, "text": "x" * 64, "long_text": "", "blob": b"\x00\x02", "lc": {"mean": 0.0, "n": 0},
        "nested": {"inner": {"mean": 1.0, "n": 1}, "tag": ""}, "doubles": [0.0],
        "history": [{"mean": None, "n": None}] * 3, "labels": [("a", "b"), ("c", "d")], "features": [],
        "strict": I64.min,
    },
]  # fmt: skip


def _edge_table() -> pa.Table:
    rows = [dict(row, all_null=None, all_null_text=None) for row in EDGE_ROWS]
    return pa.Table.from_pylist(rows, schema=EDGE_SCHEMA)


def _assert_same_as_fastavro(table: pa.Table, avro_schema: dict) -> pa.LargeBinaryArray:
    encoded = encode_batch(table, avro_schema)
    expected = _fastavro_bytes(_as_fastavro_rows(table, avro_schema), avro_schema)
    assert encoded.to_pylist() == expected
    return encoded


def test_edge_cases_encode_like_fastavro_and_decode_back():
    table = _edge_table()
    avro_schema = avro_schema_from_arrow(table.schema)
    encoded = _assert_same_as_fastavro(table, avro_schema)

    decoded = decode_batch(encoded, avro_schema)
    assert decoded.schema == arrow_schema_for_avro(avro_schema)
    expected_rows = _as_fastavro_rows(table, avro_schema)  # null records come back as null fields
    for want, got in zip(expected_rows, decoded.to_pylist()):
        assert _comparable(got) == _comparable(want)
    negative_zero = decoded.column("f32")[2].as_py()
    assert negative_zero == 0.0 and math.copysign(1, negative_zero) == -1
    assert decoded.column("all_null").null_count == len(EDGE_ROWS)
    assert decoded.schema.field("all_null").type == pa.int64()  # declared type, not null type


def test_sliced_chunked_and_empty_batches():
    table = _edge_table()
    avro_schema = avro_schema_from_arrow(table.schema)
    full = encode_batch(table, avro_schema).to_pylist()
    # a slice (non-zero offsets in every buffer) and a multi-chunk table
    assert encode_batch(table.slice(1, 2), avro_schema).to_pylist() == full[1:3]
    assert encode_batch(table.to_batches()[0].slice(2), avro_schema).to_pylist() == full[2:]
    chunked = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    assert chunked.column("i32").num_chunks == 2
    assert encode_batch(chunked, avro_schema).to_pylist() == full

    empty = encode_batch(table.slice(0, 0), avro_schema)
    assert len(empty) == 0
    for values in ([], empty):
        decoded = decode_batch(values, avro_schema)
        assert decoded.num_rows == 0 and decoded.schema == arrow_schema_for_avro(avro_schema)
    table, bad, errors = decode_batch_safe([], avro_schema)
    assert (table.num_rows, bad, errors) == (0, [], [])


def test_light_packet_like_batch_with_random_nulls():
    rng = np.random.default_rng(3)
    n = 3000
    names = np.array(["ZTF26aaxyzab", "", "RRLyr", "(TNS) SN Ia", "étoile ★", "2026-03-22 11:06:52.0041"])
    masks = {name: rng.random(n) < 0.1 for name in ("a", "b", "c", "d", "e", "f", "s")}
    keys = pa.array(["HyperLEDA_name", "lum_dist"] * n)
    table = pa.table(
        {
            "objectId": pa.array(names[rng.integers(0, len(names), n)], mask=masks["s"]),
            "candid": pa.array(rng.integers(-(10**18), 4 * 10**18, n), mask=masks["a"]),
            "magpsf": pa.array(rng.normal(18, 2, n).astype(np.float32), mask=masks["b"]),
            "jd": pa.array(rng.normal(2.46e6, 100, n), mask=masks["c"]),
            "fid": pa.array(rng.integers(-300, 300, n).astype(np.int32), mask=masks["d"]),
            "from_upper": pa.array(rng.random(n) < 0.5, mask=masks["e"]),
            "lc_features_g": pa.StructArray.from_arrays(
                [pa.array(rng.normal(size=n), mask=rng.random(n) < 0.2) for _ in range(3)],
                ["mean", "skew", "chi2"],
                mask=pa.array(masks["f"]),
            ),
            "mangrove": pa.MapArray.from_arrays(
                pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                keys,
                pa.array(names[rng.integers(0, len(names), 2 * n)], mask=rng.random(2 * n) < 0.3),
            ),
        }
    )
    avro_schema = avro_schema_from_arrow(table.schema)
    encoded = _assert_same_as_fastavro(table, avro_schema)
    decoded = decode_batch(encoded, avro_schema)
    expected = _as_fastavro_rows(table, avro_schema)
    assert [_comparable(r) for r in decoded.to_pylist()] == [_comparable(r) for r in expected]


def test_timestamps_are_written_as_spark_strings():
    stamps = [
        dt.datetime(2026, 3, 22, 11, 6, 52, 4176),
        dt.datetime(2026, 3, 22, 11, 6, 52),
        dt.datetime(2026, 3, 22, 11, 6, 50, 100000),
        None,
    ]
    table = pa.table(
        {"timestamp": pa.array(stamps, pa.timestamp("us")), "night": pa.array([dt.date(2026, 3, 22)] * 4)}
    )
    avro_schema = avro_schema_from_arrow(table.schema)
    decoded = decode_batch(encode_batch(table, avro_schema), avro_schema)
    assert decoded.column("timestamp").to_pylist() == [
        "2026-03-22 11:06:52.004176",
        "2026-03-22 11:06:52",
        "2026-03-22 11:06:50.1",
        None,
    ]
    assert decoded.column("night").to_pylist() == ["2026-03-22"] * 4


def test_encode_errors():
    avro_schema = avro_schema_from_arrow(pa.schema([pa.field("x", pa.int64(), nullable=False)]))
    with pytest.raises(ValueError, match="non-nullable"):
        encode_batch(pa.table({"x": pa.array([1, None])}), avro_schema)
    with pytest.raises(KeyError, match="'x'"):
        encode_batch(pa.table({"y": pa.array([1])}), avro_schema)


# --------------------------------------------------------------------------- corrupt messages


@pytest.fixture(scope="module")
def ztf_messages(shared_data) -> tuple[dict, list[bytes], list[dict]]:
    avro_schema, _, records = _sample(shared_data, "ztf")
    return avro_schema, _fastavro_bytes(records, avro_schema), records


def _fastavro_decodes_exactly(message: bytes | None, parsed: dict) -> bool:
    if not message:
        return False
    buf = io.BytesIO(message)
    try:
        fastavro.schemaless_reader(buf, parsed, None)
    except Exception:  # noqa: BLE001 - any failure means undecodable
        return False
    return buf.tell() == len(message)


def test_corrupt_messages_are_isolated(ztf_messages):
    avro_schema, good, records = ztf_messages
    messages: list[bytes | None] = list(good) * 4  # 124 messages
    corrupt = {
        5: good[5][: len(good[5]) // 2],  # truncated
        17: b"",  # empty
        40: bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)),  # garbage
        41: good[10] + b"\x00\x00",  # decodes, but leaves bytes unread
        77: good[3] + good[4],  # two messages in one
        90: None,  # Kafka tombstone
        123: good[0][:-1],  # last message truncated
    }
    for index, message in corrupt.items():
        messages[index] = message

    with pytest.raises(AvroDecodeError):
        decode_batch(messages, avro_schema)

    table, bad, errors = decode_batch_safe(messages, avro_schema)
    assert bad == sorted(corrupt)
    assert len(errors) == len(bad) and all(errors)
    assert table.schema == arrow_schema_for_avro(avro_schema)
    kept = [i for i in range(len(messages)) if i not in corrupt]
    assert table.num_rows == len(kept)
    assert table.column("candid").to_pylist() == [records[i % len(records)]["candid"] for i in kept]
    # the good rows are complete: they encode back to their original bytes
    assert encode_batch(table, avro_schema).to_pylist() == [good[i % len(good)] for i in kept]


def test_misframed_block_is_detected_even_when_polars_succeeds():
    """Nothing delimits records in a container block: with a schema under which any bytes
    decode, a message with one byte too many or too few makes polars return wrong values for
    every later row without raising. The sentinels catch it."""
    avro_schema = avro_schema_from_arrow(pa.schema([pa.field("v", pa.int64(), nullable=False)]))
    table = pa.table({"v": pa.array(np.arange(100, 110), pa.int64())})
    messages = encode_batch(table, avro_schema).to_pylist()
    messages[4] += b"\x06"  # a trailing varint
    messages[7] = b""  # nothing at all
    framing = decode_module._build_framing(avro_schema)
    rows, error, first_bad = decode_module._read(pa.array(messages, pa.large_binary()), framing)
    assert rows.height == 10  # polars itself saw nothing wrong
    assert error is not None and first_bad == 4
    assert rows.get_column("v").to_list()[:4] == [100, 101, 102, 103]

    with pytest.raises(AvroDecodeError, match="message 4"):
        decode_batch(messages, avro_schema)
    decoded, bad, errors = decode_batch_safe(messages, avro_schema)
    assert bad == [4, 7]
    assert "trailing" in errors[0] and errors[1] == "empty message"
    assert decoded.column("v").to_pylist() == [100, 101, 102, 103, 105, 106, 108, 109]


@pytest.mark.parametrize("seed", range(4))
def test_random_corruption_against_fastavro(ztf_messages, seed):
    """No decodable message is rejected; every length defect (random bytes, truncation,
    trailing bytes) is caught. Known leniency: polars reads an out-of-range union branch as
    null, so a flipped byte that keeps the record length may pass where fastavro raises."""
    avro_schema, good, records = ztf_messages
    parsed = fastavro.parse_schema(avro_schema)
    rng = np.random.default_rng(seed)
    messages = list(good) * 2
    kinds = {}
    for index in rng.choice(len(messages), 8, replace=False):
        message = bytearray(messages[index])
        kinds[int(index)] = kind = int(rng.integers(0, 4))
        if kind == 0:  # random bytes
            message = bytearray(rng.integers(0, 256, int(rng.integers(1, 500)), dtype=np.uint8).tobytes())
        elif kind == 1:  # truncation
            message = message[: int(rng.integers(0, len(message)))]
        elif kind == 2:  # trailing bytes
            message += rng.integers(0, 256, int(rng.integers(1, 20)), dtype=np.uint8).tobytes()
        else:  # a few flipped bytes
            for position in rng.integers(0, len(message), 3):
                message[position] = int(rng.integers(0, 256))
        messages[index] = bytes(message)

    table, bad, errors = decode_batch_safe(messages, avro_schema)
    fastavro_bad = {i for i, m in enumerate(messages) if not _fastavro_decodes_exactly(m, parsed)}
    assert set(bad) <= fastavro_bad  # nothing decodable is dropped
    assert {i for i, kind in kinds.items() if kind in (0, 1, 2)} & fastavro_bad <= set(bad)
    assert set(bad) >= {i for i, kind in kinds.items() if kind == 2}  # never decodable as is
    assert table.num_rows == len(messages) - len(bad) and len(errors) == len(bad)
    untouched = [i for i in range(len(messages)) if i not in kinds]
    kept = [i for i in range(len(messages)) if i not in bad]
    candids = dict(zip(kept, table.column("candid").to_pylist()))
    assert all(candids[i] == records[i % len(records)]["candid"] for i in untouched)


def test_decoding_in_several_chunks(ztf_messages, monkeypatch):
    avro_schema, good, _ = ztf_messages
    monkeypatch.setattr(decode_module, "_MAX_CHUNK_BYTES", 3 * max(len(m) for m in good))
    chunked = decode_batch(pa.array(good, pa.binary()), avro_schema)
    assert chunked.column("candid").num_chunks > 1
    assert chunked.schema == arrow_schema_for_avro(avro_schema)
    assert encode_batch(chunked, avro_schema).to_pylist() == good
