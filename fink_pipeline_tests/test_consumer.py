"""The consumer core and sinks on a real broker: exact tables, status-driven completion,
quarantine, concurrent writers, group offsets."""

from __future__ import annotations

import datetime as dt
import io
import multiprocessing as mp
import re
import threading
import time
import uuid

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fink_pipeline.consumer.core import consume_topic, kafka_consumer, read_quarantine
from fink_pipeline.consumer.delta_sink import DeltaSink
from fink_pipeline.consumer.parquet_sink import ParquetSink
from fink_pipeline.consumer.partitioning import add_time_partitions, Partitioning
from fink_pipeline.consumer.readers import read_delta_table, read_parquet_dataset
from fink_pipeline.consumer.sinks import ConcurrentConsumerError, Publication, PublicationMismatch
from fink_pipeline_tests.synthetic_topics import TopicWriter, publish_tables, synthetic_alerts
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.content import resolve_content
from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates

pytestmark = pytest.mark.kafka

ZTF = get_survey("ztf")


def unique_topic() -> str:
    return f"ftransfer_ztf_2024-03-01_{uuid.uuid4().hex[:10]}"


def delta_sink(path, mode: str = "finkclass") -> DeltaSink:
    return DeltaSink(str(path), Partitioning(mode, ZTF.time_column, ZTF.time_scale))


def parquet_sink(path, mode: str = "finkclass") -> ParquetSink:
    return ParquetSink(str(path), Partitioning(mode, ZTF.time_column, ZTF.time_scale))


def fastavro_rows(settings, topic: str, schema: dict, total: int) -> list[dict]:
    """Every message of `topic` decoded one by one with fastavro (the reference decoder)."""
    from confluent_kafka import TopicPartition

    parsed = fastavro.parse_schema(schema)
    consumer = kafka_consumer(settings, f"reference-{uuid.uuid4().hex}")
    consumer.assign([TopicPartition(topic, p, 0) for p in range(10)])
    rows: list[dict] = []
    deadline = time.monotonic() + 60
    while len(rows) < total and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None:
                rows.append(fastavro.schemaless_reader(io.BytesIO(m.value()), parsed, None))
    consumer.close()
    return rows


def nan_safe(value):
    """NaN compares unequal to itself: spell it as a string for row comparisons."""
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, dict):
        return {k: nan_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [nan_safe(v) for v in value]
    return value


def same_rows(table: pa.Table, reference: list[dict]) -> bool:
    """`table` holds exactly the fastavro-decoded records (built into Arrow with the table's own
    schema, so maps and records compare alike), whatever the row order."""
    expected = nan_safe(pa.Table.from_pylist(reference, schema=table.schema).sort_by("candid").to_pylist())
    got = nan_safe(table.sort_by("candid").to_pylist())
    for row, ref in zip(got, expected):
        differing = {k: (row[k], ref[k]) for k in row if row[k] != ref[k]}
        assert not differing, f"candid {row['candid']}: {str(differing)[:800]}"
    return len(got) == len(expected)


@pytest.fixture(scope="module")
def light_topic(kafka_broker):
    """3,000 light-packet alerts on 10 partitions, with status and schema companions."""
    from fink_pipeline.kafka.settings import KafkaSettings

    settings = KafkaSettings(bootstrap_servers=kafka_broker)
    topic = unique_topic()
    published = publish_tables(settings, topic, synthetic_alerts(ZTF, 3000, "light", seed=3, batch_size=1000))
    return topic, published


# ------------------------------------------------------------------------------------------
# exactness


def check_delta_equals_fastavro(settings, topic, published, path, quarantine):
    report = consume_topic(settings, topic, delta_sink(path), group_id="g", quarantine_dir=quarantine)
    assert report.complete and report.state == "finished"
    assert report.consumed == report.written == published.total and report.quarantined == 0
    table = read_delta_table(str(path))
    reference = fastavro_rows(settings, topic, published.avro_schema, published.total)
    assert table.num_rows == len(reference) == published.total
    # finkclass partitioning adds no column
    assert sorted(table.column_names) == sorted(f["name"] for f in published.avro_schema["fields"])
    assert same_rows(table, reference)


def test_delta_table_equals_fastavro_decoding_row_for_row_light(kafka_settings, light_topic, tmp_path):
    topic, published = light_topic
    check_delta_equals_fastavro(kafka_settings, topic, published, tmp_path / "t", tmp_path / "q")


def test_delta_table_equals_fastavro_decoding_row_for_row_full_packet(kafka_settings, tmp_path):
    """Cutouts, history arrays of records, maps, nested records."""
    topic = unique_topic()
    published = publish_tables(kafka_settings, topic, synthetic_alerts(ZTF, 60, "full", seed=11, batch_size=30))
    check_delta_equals_fastavro(kafka_settings, topic, published, tmp_path / "t", tmp_path / "q")


def test_parquet_dataset_equals_fastavro_decoding(kafka_settings, light_topic, tmp_path):
    topic, published = light_topic
    report = consume_topic(kafka_settings, topic, parquet_sink(tmp_path / "p", "none"), group_id="g",
                           quarantine_dir=tmp_path / "q", batch_size=700)
    assert report.complete and report.batches >= 5
    table = read_parquet_dataset(str(tmp_path / "p"))
    reference = fastavro_rows(kafka_settings, topic, published.avro_schema, published.total)
    assert table.num_rows == len(reference) == published.total
    assert table.column_names == [f["name"] for f in published.avro_schema["fields"]]
    assert same_rows(table, reference)


def test_resume_is_exact_after_partial_runs(kafka_settings, light_topic, tmp_path):
    """Stopping after any number of messages and starting again never loses or repeats one."""
    topic, published = light_topic
    for fmt, make in (("delta", lambda: delta_sink(tmp_path / "d")), ("parquet", lambda: parquet_sink(tmp_path / "p"))):
        total = 0
        for limit in (1, 777):
            total += consume_topic(kafka_settings, topic, make(), group_id="g", limit=limit, batch_size=250,
                                   quarantine_dir=tmp_path / "q").consumed
        report = consume_topic(kafka_settings, topic, make(), group_id="g", quarantine_dir=tmp_path / "q")
        assert report.complete and total + report.consumed == published.total
        again = consume_topic(kafka_settings, topic, make(), group_id="g", quarantine_dir=tmp_path / "q")
        assert again.consumed == 0 and again.complete
        table = read_delta_table(str(tmp_path / "d")) if fmt == "delta" else read_parquet_dataset(str(tmp_path / "p"))
        ids = table["candid"].to_pylist()
        assert len(ids) == len(set(ids)) == published.total, fmt
        assert set(ids) == set(published.ids)


def test_parquet_resume_removes_files_of_an_unfinished_batch(kafka_settings, light_topic, tmp_path):
    topic, published = light_topic
    root = tmp_path / "p"
    consume_topic(kafka_settings, topic, parquet_sink(root), group_id="g", limit=500, batch_size=500)
    # files in place without a marker (what older versions left after a crash between them)
    sink = parquet_sink(root)
    sink.resume_offsets(range(10))
    orphan = read_parquet_dataset(str(root)).slice(0, 50).drop_columns(["finkclass"])
    sink.write(orphan.append_column("finkclass", pa.array(["X"] * 50)), {0: 10_000}, {0: 9_000})
    next(iter((root / "_offsets").glob("batch-0-9000-10000.json"))).unlink()
    sink.close()
    assert list(root.glob("finkclass=X/part-0-9000-10000-*.parquet"))
    assert read_parquet_dataset(str(root)).num_rows == 500  # the reader skips them
    report = consume_topic(kafka_settings, topic, parquet_sink(root), group_id="g")
    assert report.complete
    ids = read_parquet_dataset(str(root))["candid"].to_pylist()
    assert len(ids) == len(set(ids)) == published.total


def test_parquet_resume_publishes_a_committed_batch_left_in_staging(kafka_settings, light_topic, tmp_path):
    topic, published = light_topic
    root = tmp_path / "p"
    consume_topic(kafka_settings, topic, parquet_sink(root), group_id="g", limit=500, batch_size=500)
    sink = parquet_sink(root)
    offsets = sink.resume_offsets(range(10))
    sink.close()
    # a crash after a batch's marker, before its files moved out of _staging
    marker = next((root / "_offsets").glob("batch-*.json"))
    batch_id = marker.stem.removeprefix("batch-")
    for path in list(root.glob(f"*/part-{batch_id}-*.parquet")):
        staged = root / "_staging" / batch_id / f"{path.relative_to(root)}.staged"
        staged.parent.mkdir(parents=True, exist_ok=True)
        path.rename(staged)
    assert read_parquet_dataset(str(root)).num_rows == 0
    sink = parquet_sink(root)
    assert sink.resume_offsets(range(10)) == offsets  # the batch is committed: it moves into place
    sink.close()
    assert read_parquet_dataset(str(root)).num_rows == 500 and not (root / "_staging" / batch_id).exists()
    report = consume_topic(kafka_settings, topic, parquet_sink(root), group_id="g")
    ids = read_parquet_dataset(str(root))["candid"].to_pylist()
    assert report.complete and len(ids) == len(set(ids)) == published.total


def test_kafka_group_offsets_follow_the_table(kafka_settings, light_topic, tmp_path):
    from confluent_kafka import TopicPartition

    topic, published = light_topic
    group = f"group-{uuid.uuid4().hex[:6]}"
    report = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "d"), group_id=group)
    consumer = kafka_consumer(kafka_settings, group)
    committed = consumer.committed([TopicPartition(topic, p) for p in range(10)], timeout=20)
    consumer.close()
    assert {tp.partition: tp.offset for tp in committed} == report.next_offsets
    assert report.next_offsets == {p: o["last_offset"] + 1 for p, o in published.per_partition.items()}


# ------------------------------------------------------------------------------------------
# partitioning


def test_time_partitions_are_vectorised_zero_padded_and_right(tmp_path):
    import datetime as dt

    jd = np.array([2460370.5, 2460371.49999, 2460400.75, 2451544.5])  # 2024-03-01 00:00 ... 2000-01-01
    table = pa.table({"jd": jd, "year": pa.array([1, 1, 1, 1], pa.int32())})
    out = add_time_partitions(table, "candidate.jd", "jd")
    assert out.column_names == ["jd", "year", "month", "day"]
    expected = [dt.datetime(1970, 1, 1) + dt.timedelta(days=float(v) - 2440587.5) for v in jd]
    assert out["year"].to_pylist() == [f"{d.year:04d}" for d in expected]
    assert out["month"].to_pylist() == [f"{d.month:02d}" for d in expected]
    assert out["day"].to_pylist() == [f"{d.day:02d}" for d in expected]
    assert out["month"].to_pylist()[:2] == ["03", "03"]


def test_time_partitioning_writes_fink_client_hive_layout(kafka_settings, light_topic, tmp_path):
    topic, published = light_topic
    consume_topic(kafka_settings, topic, parquet_sink(tmp_path / "p", "time"), group_id="g")
    folders = sorted({str(p.parent.relative_to(tmp_path / "p")) for p in (tmp_path / "p").rglob("*.parquet")})
    assert folders == ["year=2024/month=03/day=01"]
    delta_path = tmp_path / "d"
    consume_topic(kafka_settings, topic, delta_sink(delta_path, "time"), group_id="g")
    assert (delta_path / "year=2024" / "month=03" / "day=01").is_dir()
    assert read_delta_table(str(delta_path)).num_rows == published.total


def test_partitioning_errors_name_the_field_and_the_fix():
    schema = pa.schema([("candid", pa.int64()), ("magpsf", pa.float32())])
    with pytest.raises(ValueError, match="no 'finkclass' field; choose time, none"):
        Partitioning("finkclass").check(schema)
    with pytest.raises(ValueError, match="needs the time column 'candidate.jd'"):
        Partitioning("time", "candidate.jd").check(schema)
    with pytest.raises(ValueError, match="-partitionby 'day/../x' is not a field name"):
        Partitioning("day/../x")
    Partitioning("time", "candidate.jd").check(pa.schema([("jd", pa.float64())]))  # flattened: fine


# ------------------------------------------------------------------------------------------
# LSST: time by default, any scalar field on request (nested ones flattened), nulls readable

LSST = get_survey("lsst")
LSST_NIGHTS = [dt.date(2026, 6, 1), dt.date(2026, 6, 2)]


def lsst_tables(packet: str, n: int = 300, seed: int = 4) -> list[pa.Table]:
    """`n` LSST alerts of each of two nights as `packet`; in the light packet some
    tns_type_recomputed and pred.main_label_classifier values are set to null or to a type
    with a space, so that partitions hold nulls and escaped names."""
    tables = [table for i, night in enumerate(LSST_NIGHTS)
              for table in synthetic_alerts(LSST, n, packet, seed=seed + i, night=night, batch_size=n)]
    if packet != "light":
        return tables
    out = []
    for table in tables:
        rows = np.arange(table.num_rows)
        tns = pa.array(np.where(rows % 5 == 0, None, np.where(rows % 5 == 1, "SN Ia", "Unknown")).tolist(), pa.string())
        pred = table["pred"].combine_chunks()
        labels = pc.if_else(pa.array(rows % 7 == 0), pa.scalar(None, pa.int32()), pc.struct_field(pred, "main_label_classifier"))
        children = [labels if f.name == "main_label_classifier" else pred.field(i) for i, f in enumerate(pred.type)]
        pred = pa.StructArray.from_arrays(children, fields=list(pred.type))
        out.append(table.set_column(table.schema.get_field_index("tns_type_recomputed"), "tns_type_recomputed", tns)
                   .set_column(table.schema.get_field_index("pred"), table.schema.field("pred"), pred))
    return out


@pytest.fixture(scope="module")
def lsst_topics(kafka_broker):
    """An LSST light-packet topic and a medium one (diaSource nested), two nights each."""
    from fink_pipeline.kafka.settings import KafkaSettings

    settings = KafkaSettings(bootstrap_servers=kafka_broker)
    topics = {}
    for packet in ("light", "medium"):
        topic = f"ftransfer_lsst_2026-06-02_{uuid.uuid4().hex[:10]}"
        tables = lsst_tables(packet)
        publish_tables(settings, topic, tables, key_column="diaSourceId")
        topics[packet] = (topic, pa.concat_tables(tables))
    return topics


def lsst_sink(fmt: str, path, mode: str):
    partitioning = Partitioning(mode, LSST.time_column, LSST.time_scale)
    return (DeltaSink if fmt == "delta" else ParquetSink)(str(path), partitioning)


def read_back(fmt: str, path) -> pa.Table:
    return read_delta_table(str(path)) if fmt == "delta" else read_parquet_dataset(str(path))


def folders(path) -> set[str]:
    return {str(p.parent.relative_to(path)) for p in path.rglob("*.parquet") if not p.parent.name.startswith("_")}


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
@pytest.mark.parametrize("packet", ["light", "medium"])
def test_lsst_topics_are_partitioned_by_night_by_default(kafka_settings, lsst_topics, tmp_path, fmt, packet):
    """diaSource.midpointMjdTai (nested, or flattened by the light packet) gives year/month/day."""
    from fink_pipeline.avro import arrow_schema_for_avro
    from fink_pipeline.cli.datatransfer import choose_partitioning
    from fink_pipeline.consumer.core import fetch_schema

    topic, sent = lsst_topics[packet]
    partitioning, note = choose_partitioning(None, LSST, arrow_schema_for_avro(fetch_schema(kafka_settings, topic)))
    assert (partitioning.mode, note) == ("time", None)
    report = consume_topic(kafka_settings, topic, lsst_sink(fmt, tmp_path / "t", "time"), group_id="g")
    assert report.complete and report.written == sent.num_rows
    assert folders(tmp_path / "t") == {"year=2026/month=06/day=01", "year=2026/month=06/day=02"}
    table = read_back(fmt, tmp_path / "t")
    assert sorted(table["diaSourceId"].to_pylist()) == sorted(sent["diaSourceId"].to_pylist())
    times = table["midpointMjdTai"] if packet == "light" else pc.struct_field(table["diaSource"], "midpointMjdTai")
    nights = {(dt.date(1858, 11, 17) + dt.timedelta(days=float(t))).isoformat() for t in times.to_pylist()}
    by_row = {f"{y}-{m}-{d}" for y, m, d in zip(*(table[c].cast(pa.string()).to_pylist() for c in ("year", "month", "day")))}
    assert nights == {n.isoformat() for n in LSST_NIGHTS}
    assert {n.replace("-0", "-") for n in nights} == {n.replace("-0", "-") for n in by_row}


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
@pytest.mark.parametrize(("field", "column", "folder"), [
    ("pred.main_label_classifier", "pred_main_label_classifier", "pred_main_label_classifier=11"),
    ("tns_type_recomputed", "tns_type_recomputed", "tns_type_recomputed=SN%20Ia"),
])
def test_any_scalar_field_partitions_lsst_tables_with_nulls_readable(kafka_settings, lsst_topics, tmp_path, fmt,
                                                                     field, column, folder):
    """A nested field becomes a root partition column named with underscores (valid for Delta,
    Parquet and Hive); null values land in `__HIVE_DEFAULT_PARTITION__` and read back as nulls."""
    topic, sent = lsst_topics["light"]
    report = consume_topic(kafka_settings, topic, lsst_sink(fmt, tmp_path / "t", field), group_id="g")
    assert report.complete and report.written == sent.num_rows
    found = folders(tmp_path / "t")
    assert folder in found and f"{column}=__HIVE_DEFAULT_PARTITION__" in found
    table = read_back(fmt, tmp_path / "t")
    parts = field.split(".")
    expected = sent[parts[0]] if len(parts) == 1 else pc.struct_field(sent[parts[0]], parts[1])
    want = dict(zip(sent["diaSourceId"].to_pylist(), expected.to_pylist()))
    got = dict(zip(table["diaSourceId"].to_pylist(), table[column].to_pylist()))
    assert got == want and None in got.values()
    if len(parts) > 1:  # the record itself is published unchanged
        assert dict(zip(table["diaSourceId"].to_pylist(), pc.struct_field(table["pred"], parts[1]).to_pylist())) == want


@pytest.mark.parametrize(("mode", "message"), [
    ("pred.main_label_clasifier", "-partitionby pred.main_label_clasifier: the topic has no "
                                  "'pred.main_label_clasifier' field; did you mean 'pred.main_label_classifier'?"),
    ("nope", "-partitionby nope: the topic has no 'nope' field; choose time, none or a scalar field"),
    ("pred", "-partitionby pred: 'pred' is a struct<"),
    ("prvDiaSources", "-partitionby prvDiaSources: 'prvDiaSources' is a list<"),
    ("lc_features", "-partitionby lc_features: 'lc_features' is a map<"),
    ("diaSource.band", "-partitionby diaSource.band: the topic has no 'diaSource.band' field; it has 'band' "
                       "(flattened by the packet): -partitionby band"),
    ("midpointMjdTai", "-partitionby midpointMjdTai: 'midpointMjdTai' is a double"),
    ("pred.is_sso; rm -rf /", "-partitionby 'pred.is_sso; rm -rf /' is not a field name"),
])
def test_partitioning_by_an_unknown_or_non_scalar_field_is_one_line_naming_it(mode, message):
    columns = [*resolve_content(LSST, ["light"]).columns, ("prvDiaSources", "prvDiaSources")]
    schema = pa.schema([(name, LSST.field_paths[source]) for source, name in columns])
    with pytest.raises(ValueError) as info:
        Partitioning(mode, LSST.time_column, LSST.time_scale).check(schema)
    text = str(info.value)
    assert "\n" not in text and len(text) < 400 and text.startswith("-partitionby ")
    assert message in text, text


# ------------------------------------------------------------------------------------------
# completion from the status topic


def test_consumer_started_before_the_end_stops_exactly_at_the_end_record(kafka_settings, tmp_path):
    topic = unique_topic()
    chunks = list(synthetic_alerts(ZTF, 1000, "light", seed=5, batch_size=250))
    writer = TopicWriter(kafka_settings, topic, chunks[0].schema).start()
    ended_at: list[float] = []

    def publish_slowly():
        for chunk in chunks:
            writer.write(chunk)
            writer.flush()
            time.sleep(0.3)
        time.sleep(1.0)  # the consumer has read everything and waits for the status
        writer.end()
        ended_at.append(time.monotonic())

    thread = threading.Thread(target=publish_slowly)
    thread.start()
    try:
        report = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "d"), group_id="g",
                               batch_size=300, max_timeout=0.5)
        returned_at = time.monotonic()
    finally:
        thread.join()
    # max_timeout is ignored while the status says "running": only the end record ends it
    assert report.complete and report.state == "finished" and report.expected_total == 1000
    assert report.consumed == 1000 and read_delta_table(str(tmp_path / "d")).num_rows == 1000
    assert 0 <= returned_at - ended_at[0] < 10


class _RecordingConsumer:
    """A Kafka consumer that records, for each consume() call, how many messages it asked for
    and how many it got."""

    def __init__(self, consumer) -> None:
        self._consumer, self.calls = consumer, []

    def consume(self, num_messages=1, timeout=-1):
        chunk = self._consumer.consume(num_messages=num_messages, timeout=timeout)
        self.calls.append((num_messages, len(chunk)))
        return chunk

    def __getattr__(self, name):
        return getattr(self._consumer, name)


def test_consumer_of_a_finished_publication_does_not_wait_for_more_than_it_says(kafka_settings, tmp_path,
                                                                                 monkeypatch):
    """Once the end record is read, a fetch asks for the messages it says are left and returns
    with them: no consume() call asks for more, which would wait out its timeout for messages
    that cannot come (1 s at the end of every table filled while its topic was written)."""
    import fink_pipeline.consumer.core as core

    topic = unique_topic()
    publish_tables(kafka_settings, topic, list(synthetic_alerts(ZTF, 700, "light", seed=8, batch_size=350)))
    data_consumers = []
    real = core.kafka_consumer

    def recording(settings, group_id, *args, **kwargs):
        consumer = real(settings, group_id, *args, **kwargs)
        if group_id != "g":  # the schema's reader
            return consumer
        data_consumers.append(_RecordingConsumer(consumer))
        return data_consumers[-1]

    monkeypatch.setattr(core, "kafka_consumer", recording)
    report = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "d"), group_id="g", batch_size=5000)
    assert report.complete and report.consumed == 700 and read_delta_table(str(tmp_path / "d")).num_rows == 700
    [consumer] = data_consumers
    assert sum(got for _, got in consumer.calls) == 700
    assert all(asked == got for asked, got in consumer.calls), consumer.calls


def test_failed_job_stops_the_consumer_with_what_was_published(kafka_settings, tmp_path):
    topic = unique_topic()
    chunks = list(synthetic_alerts(ZTF, 400, "light", seed=6, batch_size=200))
    writer = TopicWriter(kafka_settings, topic, chunks[0].schema).start()
    writer.write(chunks[0])
    writer.fail("Spark job lost its executors")
    report = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "d"), group_id="g", max_timeout=1)
    assert report.state == "failed" and not report.complete


def test_topic_without_status_falls_back_to_the_timeout(kafka_settings, tmp_path):
    topic = unique_topic()
    published = publish_tables(kafka_settings, topic, synthetic_alerts(ZTF, 500, "light", seed=7), with_status=False)
    started = time.monotonic()
    report = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "d"), group_id="g", max_timeout=2)
    assert report.state == "unknown" and report.consumed == published.total == 500
    assert time.monotonic() - started < 30


# ------------------------------------------------------------------------------------------
# quarantine


@pytest.mark.reliability
def test_undecodable_messages_are_quarantined_with_coordinates_and_counted(kafka_settings, tmp_path,
                                                                           reliability_record):
    topic = unique_topic()
    chunks = list(synthetic_alerts(ZTF, 1200, "light", seed=8, batch_size=400))
    writer = TopicWriter(kafka_settings, topic, chunks[0].schema).start()
    rng = np.random.default_rng(1)
    garbage = [b"", b"\x00", b"not avro at all", rng.bytes(300), rng.bytes(5000)]
    for i, chunk in enumerate(chunks):
        writer.write(chunk)
        writer.send_raw(garbage, np.arange(len(garbage)) + 10 * i)
        writer.flush()
    valid = chunks[0].slice(0, 1)
    from fink_pipeline.avro import encode_batch

    truncated = encode_batch(valid, writer.avro_schema).to_pylist()[0][:-7]
    writer.send_raw([truncated], np.array([99]))
    published = writer.end()
    n_bad = 3 * len(garbage) + 1
    valid_ids = [c for t in chunks for c in t["candid"].to_pylist()]  # the ground truth

    # both runs and the count first; the checks of each after the record
    report = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "d"), group_id="g",
                           quarantine_dir=tmp_path / "q", batch_size=500)
    table = read_delta_table(str(tmp_path / "d"))
    quarantine = read_quarantine(tmp_path / "q")
    # a second run must neither re-read nor re-quarantine them
    second = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "d"), group_id="g",
                           quarantine_dir=tmp_path / "q")
    lost, duplicates = count_lost_and_duplicates(read_delta_table(str(tmp_path / "d"))["candid"].to_pylist(),
                                                 valid_ids)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

    assert published.total == 1200 + n_bad
    assert report.complete and report.quarantined == n_bad and report.written == 1200
    assert sorted(table["candid"].to_pylist()) == sorted(valid_ids)
    assert quarantine.num_rows == n_bad
    assert sorted(quarantine["value"].to_pylist()) == sorted(garbage * 3 + [truncated])
    assert set(zip(quarantine["partition"].to_pylist(), quarantine["offset"].to_pylist())) <= {
        (p, o) for p, e in published.per_partition.items() for o in range(e["last_offset"] + 1)}
    assert all(quarantine["error"].to_pylist())
    assert second.consumed == 0
    assert read_quarantine(tmp_path / "q").num_rows == n_bad
    assert lost == duplicates == 0


# ------------------------------------------------------------------------------------------
# two consumers on one table by mistake


def test_delta_rs_rejects_a_commit_whose_app_id_moved_since_its_snapshot(tmp_path):
    """The delta-rs behaviour DeltaSink relies on (ConcurrentTransaction on the same app_id)."""
    from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake
    from deltalake.exceptions import CommitFailedError

    uri = str(tmp_path / "t")
    data = pa.table({"a": [1]})
    DeltaTable.create(uri, schema=data.schema)
    stale, fresh = DeltaTable(uri), DeltaTable(uri)

    def commit(table, app, version):
        write_deltalake(table, data, mode="append",
                        commit_properties=CommitProperties(app_transactions=[Transaction(app_id=app, version=version)]))

    commit(fresh, "x:0", 10)
    commit(stale, "x:1", 10)  # another partition: a plain append conflict, retried and accepted
    stale_again = DeltaTable(uri)
    commit(fresh, "x:0", 20)
    with pytest.raises(CommitFailedError, match="Concurrent transaction"):
        commit(stale_again, "x:0", 20)
    assert DeltaTable(uri).transaction_version("x:0") == 20


@pytest.mark.reliability
def test_delta_sink_refuses_when_another_writer_moved_its_offsets(tmp_path, reliability_record):
    first, second = delta_sink(tmp_path / "d"), delta_sink(tmp_path / "d")
    schema = pa.schema([("candid", pa.int64()), ("finkclass", pa.string())])
    resumed = []
    for sink in (first, second):
        sink.prepare(schema)
        sink.claim(Publication("t", "publication-1"))
        resumed.append(sink.resume_offsets([0, 1]))
    rows = pa.table({"candid": [1, 2], "finkclass": ["a", "b"]})
    first.write(rows, {0: 2}, {0: 0})
    try:
        second.write(rows, {0: 2}, {0: 0})  # the same messages again, from a stale snapshot
        refusal = None
    except Exception as exc:  # checked below
        refusal = exc
    second.write(pa.table({"candid": [3], "finkclass": ["a"]}), {1: 1}, {1: 0})  # its other partition is fine
    table_ids = read_delta_table(str(tmp_path / "d"))["candid"].to_pylist()
    lost, duplicates = count_lost_and_duplicates(table_ids, [1, 2, 3])  # the ids the messages hold
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

    assert resumed == [{0: 0, 1: 0}, {0: 0, 1: 0}]
    assert isinstance(refusal, ConcurrentConsumerError), repr(refusal)
    assert re.search("another consumer is writing the same topic partitions", str(refusal)), str(refusal)
    assert sorted(table_ids) == [1, 2, 3]


@pytest.mark.reliability(failures_survived=1)
def test_parquet_sink_locks_its_partitions(tmp_path):
    first, second = parquet_sink(tmp_path / "p"), parquet_sink(tmp_path / "p")
    first.resume_offsets([0, 1])
    with pytest.raises(ConcurrentConsumerError, match="partition 1 of this topic is being written by another consumer"):
        second.resume_offsets([1, 2])
    second.resume_offsets([2, 3])  # disjoint partitions: parallel consumers of one run
    first.close()
    second.close()
    third = parquet_sink(tmp_path / "p")
    third.resume_offsets([0, 1, 2, 3])  # locks die with their holder
    third.close()


def _consume_in_process(servers: str, topic: str, path: str, fmt: str, out) -> None:
    from fink_pipeline.kafka.settings import KafkaSettings

    sink = delta_sink(path) if fmt == "delta" else parquet_sink(path)
    try:
        report = consume_topic(KafkaSettings(bootstrap_servers=servers), topic, sink, group_id="g", batch_size=100)
        out.put(("ok", report.consumed))
    except ConcurrentConsumerError as exc:
        out.put(("refused", str(exc)))


@pytest.mark.reliability
@pytest.mark.parametrize("fmt", ["delta", pytest.param("parquet", marks=pytest.mark.slow)])
def test_two_concurrent_consumers_on_one_table_stay_exact(kafka_settings, light_topic, tmp_path, fmt,
                                                          reliability_record):
    topic, published = light_topic
    context = mp.get_context("spawn")
    out = context.Queue()
    procs = [context.Process(target=_consume_in_process,
                             args=(kafka_settings.bootstrap_servers, topic, str(tmp_path / "t"), fmt, out))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    table = read_delta_table(str(tmp_path / "t")) if fmt == "delta" else read_parquet_dataset(str(tmp_path / "t"))
    ids = table["candid"].to_pylist()
    lost, duplicates = count_lost_and_duplicates(ids, published.ids)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
    outcomes = sorted(kind for kind, _ in results)
    assert outcomes in (["ok", "refused"], ["ok", "ok"]), results
    # whether one refused or both went on, every message is in the table exactly once
    assert len(ids) == len(set(ids)) == published.total
    assert pc.all(pc.is_in(table["candid"], value_set=pa.array(published.ids))).as_py()


def test_parquet_folders_are_named_like_pyarrows_dataset_writer(tmp_path):
    """fink-client writes with pyarrow's dataset writer: same Hive folder names, nulls included."""
    import pyarrow.dataset as ds

    from fink_pipeline.consumer.partitioning import hive_groups

    table = pa.table({"candid": [1, 2, 3, 4, 5], "finkclass": ["SN candidate", None, "(TNS) SN Ia", "a/b", "SN candidate"],
                      "year": ["2024", "2024", "2023", "2024", None]})
    for columns in (["finkclass"], ["year", "finkclass"]):
        ds.write_dataset(table, tmp_path / "ref", format="parquet", partitioning=columns, partitioning_flavor="hive",
                         existing_data_behavior="delete_matching")
        reference = {str(p.parent.relative_to(tmp_path / "ref")) for p in (tmp_path / "ref").rglob("*.parquet")}
        groups = list(hive_groups(table, columns))
        assert {folder for folder, _ in groups} == reference
        assert sum(rows.num_rows for _, rows in groups) == 5
        assert all(set(rows.column_names) == set(table.column_names) - set(columns) for _, rows in groups)
        (tmp_path / "ref").rename(tmp_path / f"done-{len(columns)}")



# ------------------------------------------------------------------------------------------
# decoding in slices, user Kafka options


def test_decoding_in_slices_equals_one_decode_and_keeps_bad_positions():
    """A batch decoded slice by slice gives the same rows, and bad messages keep their
    positions in the whole batch (quarantine coordinates depend on them)."""
    from fink_pipeline.avro import avro_schema_from_arrow, decode_batch, encode_batch
    from fink_pipeline.consumer.core import decode_in_slices

    table = pa.concat_tables(list(synthetic_alerts(ZTF, 900, "light", seed=5, batch_size=300)))
    schema = avro_schema_from_arrow(table.schema)
    values = encode_batch(table, schema).to_pylist()
    whole = decode_batch(values, schema)
    nbytes = sum(map(len, values))
    sliced, bad, errors = decode_in_slices(values, nbytes, schema, slice_bytes=nbytes // 7)
    assert bad == [] and sliced.schema == whole.schema
    assert nan_safe(sliced.to_pylist()) == nan_safe(whole.to_pylist())  # same rows, same order
    broken = list(values)
    for i in (3, 450, 899):
        broken[i] = b"\x00garbage"
    sliced, bad, errors = decode_in_slices(broken, nbytes, schema, slice_bytes=nbytes // 7)
    assert bad == [3, 450, 899] and len(errors) == 3 and all(errors)
    keep = [i for i in range(900) if i not in (3, 450, 899)]
    assert nan_safe(sliced.to_pylist()) == nan_safe(whole.take(keep).to_pylist())


def test_user_kafka_options_win_over_the_fetch_defaults(tmp_path, caplog):
    from fink_pipeline.consumer.core import FETCH_CONFIG, REQUIRED_CONSUMER_CONFIG, exact_consumer_config
    from fink_pipeline.kafka.settings import KafkaSettings, write_credentials_file

    assert FETCH_CONFIG["fetch.max.bytes"] != "1048576"
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9092",
                             extra={"fetch.max.bytes": 1048576, "queued.max.messages.kbytes": 2048})
    config = exact_consumer_config(settings, "g")
    assert config["fetch.max.bytes"] == "1048576" and config["queued.max.messages.kbytes"] == "2048"
    assert config["max.partition.fetch.bytes"] == FETCH_CONFIG["max.partition.fetch.bytes"]  # default kept
    # options exactly once depends on stay, and the user is told
    with caplog.at_level("WARNING", logger="fink_pipeline.consumer"):
        config = exact_consumer_config(KafkaSettings(bootstrap_servers="127.0.0.1:9092",
                                               extra={"isolation.level": "read_uncommitted"}), "g")
    assert {k: config[k] for k in REQUIRED_CONSUMER_CONFIG} == REQUIRED_CONSUMER_CONFIG
    assert "isolation.level" in caplog.text and "ignored" in caplog.text
    # from the credentials file (an optional `extra:` mapping next to fink-client's keys)
    path = write_credentials_file(tmp_path / "ztf_credentials.yml", servers="127.0.0.1:9092")
    path.write_text(path.read_text() + "extra:\n  fetch.wait.max.ms: 250\n  socket.timeout.ms: 7000\n")
    config = exact_consumer_config(KafkaSettings.from_credentials_file(path), "g")
    assert config["fetch.wait.max.ms"] == "250" and config["socket.timeout.ms"] == "7000"


def test_consumer_with_user_fetch_options_stays_exact(kafka_settings, light_topic, tmp_path):
    """Small fetches and prefetch queue set by the user, on the real broker: same table."""
    from fink_pipeline.kafka.settings import KafkaSettings

    topic, published = light_topic
    settings = KafkaSettings(bootstrap_servers=kafka_settings.bootstrap_servers,
                             extra={"fetch.max.bytes": 1_048_576, "max.partition.fetch.bytes": 16384,
                                    "queued.max.messages.kbytes": 512})
    report = consume_topic(settings, topic, delta_sink(tmp_path / "d"), group_id="g", batch_size=400)
    assert report.complete and report.consumed == published.total
    ids = read_delta_table(str(tmp_path / "d"))["candid"].to_pylist()
    assert len(ids) == len(set(ids)) == published.total


def test_batches_stay_within_the_byte_cap_for_full_packets(kafka_settings, tmp_path):
    """One consume() call can gather far more than the prefetch queue: the byte cap must bound
    the batch itself (full-packet batches reached 330 MB, 1.7 GB per consumer, before)."""
    from fink_pipeline.avro import encode_batch

    topic = unique_topic()
    tables = list(synthetic_alerts(ZTF, 120, "full", seed=12, batch_size=60))
    published = publish_tables(kafka_settings, topic, tables)
    sizes = [len(v) for t in tables for v in encode_batch(t, published.avro_schema).to_pylist()]
    cap = 12 * max(sizes)
    batches: list[int] = []
    report = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "d"), group_id="g", max_batch_bytes=cap,
                           progress=lambda n, status: batches.append(n) if n else None)
    assert report.complete and report.consumed == published.total == 120
    # a batch closes at the first message reaching the cap
    assert max(batches) <= cap // min(sizes) + 1, batches
    assert len(batches) >= sum(sizes) // (cap + max(sizes)), batches


@pytest.mark.reliability
def test_delta_sinks_claiming_a_new_table_at_once_both_go_on(tmp_path, reliability_record):
    """Two consumers started together on a new table both read it unclaimed, then both record
    the publication: the second commit is rejected (metadata changed since its snapshot). The
    late one looks again, finds its own publication recorded, and goes on."""
    first, second = delta_sink(tmp_path / "d"), delta_sink(tmp_path / "d")
    schema = pa.schema([("candid", pa.int64()), ("finkclass", pa.string())])
    publication = Publication("t", "publication-1")
    for sink in (first, second):
        sink.prepare(schema)
        sink._snapshot()  # both read the table before either records the publication
    first.claim(publication)
    second._table.update_incremental = lambda *args, **kwargs: None  # its snapshot stays the old one, once
    second.claim(publication)
    assert second.publication == publication and first.held_publication() == publication
    first.write(pa.table({"candid": [1], "finkclass": ["a"]}), {0: 1}, {0: 0})
    other = delta_sink(tmp_path / "d")
    other.prepare(schema)
    with pytest.raises(PublicationMismatch):  # a table holding another publication's rows is still refused
        other.claim(Publication("t", "publication-2"))
    reliability_record(cases=0, failures_survived=1)


def test_consumer_started_before_the_topic_exists_follows_the_publication(kafka_settings, tmp_path):
    """A consumer started with the transfer, before any of its topics exists, waits for the
    publication to start, reads while it is written and stops within seconds of its end record."""
    topic = unique_topic()
    tables = list(synthetic_alerts(ZTF, 6000, "light", seed=17, batch_size=2000))
    outcome: dict = {}

    def consume() -> None:
        try:
            outcome["report"] = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "t"), group_id="early",
                                              max_timeout=10, wait_for_topic_s=60, batch_size=1500)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = exc
        outcome["finished"] = time.monotonic()

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(3)  # the consumer is waiting: no topic, no schema, no status yet
    assert thread.is_alive(), outcome.get("error")
    writer = TopicWriter(kafka_settings, topic, tables[0].schema).start()
    for table in tables[:-1]:
        writer.write(table)
        writer.flush()
        time.sleep(1.5)  # the consumer reads the first messages while the rest is written
    writer.write(tables[-1], last=True)
    published = writer.end()
    ended = time.monotonic()
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report.complete and report.consumed == published.total == 6000
    assert report.batches >= 2  # it did not wait for the end to read
    assert outcome["finished"] - ended < 5, f"noticed the end after {outcome['finished'] - ended:.1f} s"
    table = read_delta_table(str(tmp_path / "t"))
    assert sorted(table["candid"].to_pylist()) == sorted(published.ids)


def test_consumer_without_a_publication_gives_up_after_its_wait(kafka_settings, tmp_path):
    """No topic within the wait: the error names the topic and says the publication did not start."""
    from fink_pipeline.consumer.core import SchemaNotFound

    started = time.monotonic()
    with pytest.raises(SchemaNotFound, match="did not start"):
        consume_topic(kafka_settings, unique_topic(), delta_sink(tmp_path / "t"), group_id="none",
                      max_timeout=1, wait_for_topic_s=2)
    assert 1.5 < time.monotonic() - started < 15


def test_consume_report_splits_cpu_and_wall_by_phase(kafka_settings, tmp_path):
    topic = unique_topic()
    publish_tables(kafka_settings, topic, synthetic_alerts(ZTF, 3000, "light", seed=4, batch_size=1000))
    report = consume_topic(kafka_settings, topic, delta_sink(tmp_path / "t"), group_id="phases", batch_size=1000)
    assert report.complete and report.batches == 3
    assert set(report.phase_cpu_seconds) == set(report.phase_wall_seconds) == {"fetch", "decode", "write", "status",
                                                                               "other"}
    assert report.phase_cpu_seconds["decode"] > 0 and report.phase_cpu_seconds["write"] > 0
    assert sum(report.phase_wall_seconds.values()) <= report.seconds + 0.05


def test_parquet_resume_walks_past_the_other_consumers_staging(tmp_path, monkeypatch):
    """`fink_datatransfer -nconsumers 2 -format parquet`: a consumer resuming while the other one
    publishes a staged batch (its folder under _staging removed as it is walked) neither fails
    (it did: FileNotFoundError from a folder that vanished under Path.rglob) nor touches the
    other's files, and still removes its own part files that have no marker."""
    import json
    import os

    from fink_pipeline.consumer.parquet_sink import MARKER_DIR, STAGING_DIR

    root = tmp_path / "table"
    (root / MARKER_DIR).mkdir(parents=True)
    (root / MARKER_DIR / "batch-0-0-10.json").write_text(json.dumps({"ranges": {"0": [0, 10]}, "rows": 10}))
    committed = root / "finkclass=SN candidate" / "part-0-0-10-0.parquet"
    uncommitted = root / "finkclass=SN candidate" / "part-0-10-20-0.parquet"
    others = root / "finkclass=Unknown" / "part-1-0-10-0.parquet"
    for path in (committed, uncommitted, others):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"PAR1")
    other_staging = root / STAGING_DIR / "1-10-20" / "finkclass=Solar%20System%20candidate"
    other_staging.mkdir(parents=True)
    (other_staging / "part-1-10-20-0.parquet.staged").write_bytes(b"PAR1")

    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).startswith(str(root / STAGING_DIR / "1-10-20")):
            raise FileNotFoundError(2, "No such file or directory", str(path))  # published meanwhile
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    sink = parquet_sink(root)
    try:
        assert sink.resume_offsets([0, 2]) == {0: 10, 2: 0}
    finally:
        sink.close()
    assert committed.exists() and others.exists() and not uncommitted.exists()
    assert (other_staging / "part-1-10-20-0.parquet.staged").exists()


def test_next_batch_is_decoded_while_the_previous_one_is_written(kafka_settings, light_topic, tmp_path, monkeypatch):
    """The writer thread commits batch k while batch k+1 is fetched and decoded: batch 1's write
    waits until batch 2's decode has begun (a consumer that decodes only after each write
    returns would wait out the 20 s and fail). The table stays exact."""
    import fink_pipeline.consumer.core as core

    topic, published = light_topic
    decodes: list[int] = []
    second_decode = threading.Event()
    original_decode = core.decode_in_slices

    def counting_decode(*args, **kwargs):
        decodes.append(len(args[0]))
        if len(decodes) == 2:
            second_decode.set()
        return original_decode(*args, **kwargs)

    class WaitingSink(DeltaSink):
        writes = 0

        def write(self, table, next_offsets, start_offsets):
            WaitingSink.writes += 1
            if WaitingSink.writes == 1:
                assert second_decode.wait(20), "batch 2 was not decoded while batch 1 was written"
            super().write(table, next_offsets, start_offsets)

    monkeypatch.setattr(core, "decode_in_slices", counting_decode)
    sink = WaitingSink(str(tmp_path / "t"), Partitioning("finkclass"))
    report = consume_topic(kafka_settings, topic, sink, group_id="overlap", batch_size=500,
                           quarantine_dir=tmp_path / "q")
    assert report.complete and report.consumed == report.written == published.total
    assert report.batches == WaitingSink.writes == len(decodes) >= 3
    ids = read_delta_table(str(tmp_path / "t"))["candid"].to_pylist()
    assert len(ids) == len(set(ids)) == published.total


@pytest.mark.parametrize("overlap", [True, False])
def test_a_failed_background_write_stops_the_consumer_before_any_later_batch(kafka_settings, light_topic,
                                                                             tmp_path, overlap):
    """Batch 3's write fails: the error reaches the caller, batches 4+ (already fetched and
    decoded meanwhile) are never written, and a new run resumes exactly after batch 2."""
    topic, published = light_topic

    class FailingSink(DeltaSink):
        writes = 0

        def write(self, table, next_offsets, start_offsets):
            FailingSink.writes += 1
            if FailingSink.writes == 3:
                time.sleep(0.3)  # batch 4 is fetched and decoded meanwhile
                raise OSError("disk gone")
            super().write(table, next_offsets, start_offsets)

    path = str(tmp_path / "t")
    with pytest.raises(OSError, match="disk gone"):
        consume_topic(kafka_settings, topic, FailingSink(path, Partitioning("finkclass")), group_id="fail",
                      batch_size=300, quarantine_dir=tmp_path / "q", overlap_writes=overlap)
    assert FailingSink.writes == 3
    assert len(read_delta_table(path)["candid"].to_pylist()) == 600
    report = consume_topic(kafka_settings, topic, delta_sink(path), group_id="other-group",
                           quarantine_dir=tmp_path / "q", overlap_writes=overlap)
    assert report.complete and report.consumed == published.total - 600
    ids = read_delta_table(path)["candid"].to_pylist()
    assert len(ids) == len(set(ids)) == published.total and set(ids) == set(published.ids)


@pytest.mark.parametrize("ids, distinct", [([1, 2, 3, 4], 4), ([1, 1, 7, 9], 3), ([5, 6, 6, 6], 2),
                                           ([1, 7, 9, None], 3)])
def test_delta_table_counts_see_duplicate_and_null_ids(tmp_path, ids, distinct):
    """The table checks' counts (rows, distinct ids) over the files of several commits: a
    repeated id, or a null one, leaves fewer distinct ids than rows; one id column or two."""
    from deltalake import write_deltalake

    from fink_pipeline.consumer.readers import delta_table_counts

    uri = str(tmp_path / "t")
    for part in (ids[:2], ids[2:]):  # two commits, two files
        write_deltalake(uri, pa.table({"candid": pa.array(part, pa.int64()), "source": pa.array([1] * len(part))}),
                        mode="append")
    assert delta_table_counts(uri, "candid") == (4, distinct)
    if None not in ids:
        assert delta_table_counts(uri, ["candid", "source"]) == (4, distinct)
    # the same id with another source: one more row, a new pair, no new id
    write_deltalake(uri, pa.table({"candid": pa.array([ids[0]], pa.int64()), "source": pa.array([2])}), mode="append")
    assert delta_table_counts(uri, "candid") == (5, distinct)
    if None not in ids:
        assert delta_table_counts(uri, ["candid", "source"]) == (5, distinct + 1)
