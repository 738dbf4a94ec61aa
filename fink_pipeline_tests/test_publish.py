"""Kafka publishing: fink-client wire format, exactly once under failures, topic settings,
status records and secrets.

Every test publishes a real Spark selection (generated archive -> transfer job) to the embedded
broker and reads the topics back with plain confluent-kafka consumers (`read_committed`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import io
import json
import logging
import math
import pickle
import re
import uuid
from collections import Counter

import fastavro
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.kafka.faults import PublishFaults
from fink_pipeline.kafka.options import PublishOptions
from fink_pipeline.kafka.publish import PublicationTarget, publish_dataframe
from fink_pipeline.kafka.publish_task import TaskConfig, producer_config
from fink_pipeline.kafka.readback import PublicationConflict
from fink_pipeline.kafka.wire import owned_kafka_partitions, schema_topic
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import EndRecord, FailedRecord, ProgressRecord, StartRecord, read_records, read_status
from fink_pipeline.kafka.topics import topic_config, partition_count
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.base import JD_UNIX_EPOCH
from fink_pipeline.transfer.plan import plan_transfer
from fink_pipeline.transfer.select import build_transfer_dataframe
from fink_pipeline.transfer.request import TransferRequest
from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

START = dt.date(2024, 3, 1)
CUSTOM_CONTENT = ["candid", "objectId", "candidate.magpsf", "mangrove.HyperLEDA_name", "lc_features_g", "finkclass"]


# --------------------------------------------------------------------------------------------
# helpers


def new_topic() -> str:
    return f"ftransfer_ztf_test_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def cutout_archive(tmp_path_factory) -> str:
    """2 nights x 120 ZTF alerts with cutouts (the full packet publishes them)."""
    root = str(tmp_path_factory.mktemp("archive_cutouts"))
    generate_archive(get_survey("ztf"), root, START, nights=2, alerts_per_night=120, seed=21, with_cutouts=True)
    return root


@pytest.fixture(scope="module")
def light_archive(tmp_path_factory) -> str:
    """2 nights x 1,200 ZTF alerts without cutouts: one file, hence one Spark partition, per night."""
    root = str(tmp_path_factory.mktemp("archive_light"))
    generate_archive(get_survey("ztf"), root, START, nights=2, alerts_per_night=1200, seed=22, with_cutouts=False)
    return root


@pytest.fixture(scope="module")
def light(spark, light_archive):
    """The light selection of `light_archive`, its sorted alert ids and its Spark partition sizes."""
    df = selection(spark, light_archive)
    sizes = df.rdd.glom().map(len).collect()
    return df, sorted(df.select("candid").toArrow()["candid"].to_pylist()), sizes


@pytest.fixture(scope="module")
def published_light(kafka_broker, light):
    """`light` published once with the default options: (topic, report)."""
    topic = new_topic()
    return topic, publish(light[0], topic, KafkaSettings(bootstrap_servers=kafka_broker))


def selection(spark, root: str, content: list[str] | str = "light"):
    """The projected DataFrame of a 2-night request, as the transfer job builds it."""
    content = [content] if isinstance(content, str) else content
    request = TransferRequest(survey="ztf", start=START.isoformat(),
                              stop=(START + dt.timedelta(days=1)).isoformat(), content=content)
    plan = plan_transfer(request, root, list_nights(root, "ztf"))
    return build_transfer_dataframe(spark, plan)


FAULTS = {f.name for f in dataclasses.fields(PublishFaults)}


def ztf_target(topic: str, request_id: str = "req-1") -> PublicationTarget:
    """Where a test publishes ZTF alerts: keyed by candid, summarised by finkclass and night."""
    return PublicationTarget(topic=topic, request_id=request_id, time_column="candidate.jd", time_epoch=JD_UNIX_EPOCH)


def publish(df, topic: str, settings: KafkaSettings, request_id: str = "req-1", **options):
    """`publish_dataframe` with PublishOptions fields, and PublishFaults fields as injected failures."""
    faults = {k: options.pop(k) for k in list(options) if k in FAULTS}
    return publish_dataframe(df, ztf_target(topic, request_id), settings, options=PublishOptions(**options),
                             faults=PublishFaults(**faults) if faults else None)


def read_topic(settings: KafkaSettings, topic: str) -> list:
    """Every message of every partition of `topic` (read_committed), up to each partition's end."""
    consumer = Consumer(settings.consumer_config(
        group_id=f"test-{uuid.uuid4().hex}", enable_partition_eof=True, isolation_level="read_committed",
    ))
    try:
        partitions = partition_count(settings, topic)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
        messages, finished = [], set()
        while len(finished) < partitions:
            for msg in consumer.consume(10_000, timeout=0.5):  # returns early only at 10,000
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        finished.add(msg.partition())
                        continue
                    raise KafkaException(msg.error())
                messages.append(msg)
        return messages
    finally:
        consumer.close()


def schema_from_topic(settings: KafkaSettings, topic: str) -> dict:
    """The Avro schema as fink-client finds it: the key of a `<topic>_schema` message."""
    messages = read_topic(settings, schema_topic(topic))
    assert messages, f"{schema_topic(topic)} is empty"
    assert len({m.key() for m in messages}) == 1
    value = fastavro.schemaless_reader(io.BytesIO(messages[0].value()), {
        "type": "record", "name": "topLevelRecord", "fields": [{"name": "schema", "type": ["string", "null"]}]})
    assert value["schema"].startswith("new_schema_") and value["schema"].endswith(".avsc")
    return json.loads(messages[0].key())


def candids(messages) -> list[int]:
    return [int(m.key()) for m in messages]


def normalize(value):
    """Comparable Python values: Arrow maps (lists of pairs) as dicts, NaN as a marker."""
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        if value and all(isinstance(item, tuple) and len(item) == 2 for item in value):
            return {k: normalize(v) for k, v in value}
        return [normalize(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# 1. wire format: every message decodes to its source row


@pytest.mark.parametrize("content", [
    "light", "custom", pytest.param("medium", marks=pytest.mark.slow), pytest.param("full", marks=pytest.mark.slow),
])
def test_every_message_decodes_to_its_source_row(spark, kafka_settings, request, content):
    # medium and full carry the history (and full the cutouts): heavier, in the slow suite
    root = request.getfixturevalue("cutout_archive" if content in ("medium", "full") else "light_archive")
    df = selection(spark, root, CUSTOM_CONTENT if content == "custom" else content)
    expected = {row["candid"]: row for row in df.toArrow().to_pylist()}
    assert len(expected) > 20
    topic = new_topic()
    report = publish(df, topic, kafka_settings)
    assert report.total == len(expected)

    schema = schema_from_topic(kafka_settings, topic)
    assert [f["name"] for f in schema["fields"]] == df.columns
    parsed = fastavro.parse_schema(schema)
    messages = read_topic(kafka_settings, topic)
    assert len(messages) == len(expected)
    decoded = {}
    for msg in messages:
        record = fastavro.schemaless_reader(io.BytesIO(msg.value()), parsed)
        assert msg.key() == str(record["candid"]).encode()
        decoded[record["candid"]] = record
    assert decoded.keys() == expected.keys()
    for candid, row in expected.items():
        assert normalize(decoded[candid]) == normalize(row), f"candid {candid} differs"

    types = {f["name"]: f["type"] for f in schema["fields"]}
    if content == "custom":
        assert df.columns == ["candid", "objectId", "magpsf", "HyperLEDA_name", "lc_features_g", "finkclass", "jd"]
        # a struct is published as a plain (non-nullable) record, as Fink's struct-wrapping does
        assert isinstance(types["lc_features_g"], dict) and types["lc_features_g"]["type"] == "record"
        assert any(row["HyperLEDA_name"] not in (None, "None") for row in expected.values())
    if content == "full":
        assert {"cutoutScience", "prv_candidates", "candidate"} <= set(types)
        assert all(decoded[c]["cutoutScience"]["stampData"] for c in decoded)
    if content in ("light", "medium"):
        timestamps = [f for f in ("brokerIngestTimestamp", "timestamp") if f in types]
        assert timestamps and all("string" in json.dumps(types[f]) for f in timestamps)


# --------------------------------------------------------------------------------------------
# 3. exactly once


def topic_counts(settings, topic, source: list[int]) -> tuple[list, int, int]:
    """The topic's messages, and its lost and duplicated alerts against the selected `source`."""
    messages = read_topic(settings, topic)
    return (messages, *count_lost_and_duplicates(candids(messages), source))


def assert_exactly_once(settings, topic, source: list[int], messages: list | None = None) -> list:
    messages = read_topic(settings, topic) if messages is None else messages
    published = Counter(candids(messages))
    assert max(published.values()) == 1, [c for c, n in published.items() if n > 1][:5]
    assert sorted(published) == source
    return messages


@pytest.mark.reliability
def test_retried_task_after_partial_output_publishes_each_alert_once(kafka_settings, light, reliability_record):
    df, source, sizes = light
    topic = new_topic()
    report = publish(df, topic, kafka_settings, fail_first_attempt_after=150)
    messages, lost, duplicates = topic_counts(kafka_settings, topic, source)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
    non_empty = sum(1 for n in sizes if n)
    assert report.retried_tasks == len(sizes) and non_empty >= 2
    # the retries found the failed attempts' messages and did not send them again
    assert report.already_published == 150 * non_empty
    assert report.total == report.already_published + report.published_now == len(source)
    assert_exactly_once(kafka_settings, topic, source, messages)
    assert len(messages) == report.total
    # offsets are dense (no transaction markers), which is what fink-client counts on
    for partition, entry in report.per_partition.items():
        assert entry["last_offset"] == entry["count"] - 1
        assert max(m.offset() for m in messages if m.partition() == partition) == entry["last_offset"]


@pytest.mark.reliability
def test_failure_right_after_commit_is_retried_and_skipped(kafka_settings, light, reliability_record):
    df, source, sizes = light
    topic = new_topic()
    report = publish(df, topic, kafka_settings, fail_first_attempt_after_commit=True)
    messages, lost, duplicates = topic_counts(kafka_settings, topic, source)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
    assert report.retried_tasks == report.skipped_spark_partitions == len(sizes)
    assert report.published_now == 0 and report.total == len(source)
    assert_exactly_once(kafka_settings, topic, source, messages)


def test_rerun_of_finished_topic_publishes_nothing(kafka_settings, light, published_light):
    df, source, _ = light
    topic, first = published_light
    again = publish(df, topic, kafka_settings)
    assert again.total == first.total == len(source)
    assert again.notes == ["already finished: nothing published"] and again.published_now == 0
    assert_exactly_once(kafka_settings, topic, source)
    # another request on the same topic is refused instead of mixed in
    with pytest.raises(PublicationConflict, match="already holds request"):
        publish(df, topic, kafka_settings, request_id="another-request")


@pytest.mark.reliability
def test_rerun_after_failed_job_resumes_unfinished_partitions_only(kafka_settings, light, reliability_record):
    df, source, sizes = light
    non_empty = [i for i, n in enumerate(sizes) if n]
    doomed = non_empty[-1] if non_empty else 0
    topic = new_topic()
    # the failed job, its rerun and the count first; the checks of each step after the record
    try:
        publish(df, topic, kafka_settings, fail_spark_partitions=(doomed,), fail_spark_partitions_after=100)
        failure = None
    except Exception as exc:  # checked below: the injected failure
        failure = exc
    status = read_status(kafka_settings, topic)
    records = read_records(kafka_settings, topic)
    partial = len(read_topic(kafka_settings, topic))
    report = publish(df, topic, kafka_settings)
    messages, lost, duplicates = topic_counts(kafka_settings, topic, source)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

    assert len(non_empty) >= 2, sizes
    assert failure is not None and re.search("injected failure", str(failure)), repr(failure)
    assert status.state == "failed" and f"injected failure in Spark partition {doomed}" in status.error
    assert len(status.error) < 2000  # the task's message, not the JVM stack trace
    assert doomed not in status.completed_spark_partitions
    assert isinstance(records[0], StartRecord) and isinstance(records[-1], FailedRecord)
    assert partial >= 100  # the killed partition really left messages behind

    assert report.total == len(source)
    assert report.skipped_spark_partitions == len(status.completed_spark_partitions)
    assert report.already_published == partial - sum(sizes[i] for i in status.completed_spark_partitions)
    assert report.published_now == len(source) - partial
    assert_exactly_once(kafka_settings, topic, source, messages)
    assert read_status(kafka_settings, topic).state == "finished"


# --------------------------------------------------------------------------------------------
# 4. topic settings, 5. status records


def test_topic_settings_default_and_configured(kafka_settings, light, published_light):
    default_topic, _ = published_light
    assert partition_count(kafka_settings, default_topic) == 10
    config = topic_config(kafka_settings, default_topic)
    assert config["retention.ms"] == str(7 * 24 * 3600 * 1000) and config["compression.type"] == "lz4"
    tuned_topic = new_topic()
    publish(light[0].limit(50), tuned_topic, kafka_settings, partitions=3, retention_ms=3_600_000, compression="zstd")
    assert partition_count(kafka_settings, tuned_topic) == 3
    config = topic_config(kafka_settings, tuned_topic)
    assert config["retention.ms"] == "3600000" and config["compression.type"] == "zstd"
    assert len(read_topic(kafka_settings, tuned_topic)) == 50
    with pytest.raises(ValueError, match="compression must be one of"):
        PublishOptions(compression="brotli")
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        PublishOptions(partitions=0)


def test_status_records_start_progress_end(kafka_settings, light, published_light):
    """(The failed record is checked by the failed-job test.)"""
    _, source, sizes = light
    topic, report = published_light
    records = read_records(kafka_settings, topic)
    assert isinstance(records[0], StartRecord) and records[0].request_id == "req-1"
    assert records[0].partitions == 10 and records[0].schema_fingerprint == report.schema_fingerprint
    progress = [r for r in records if isinstance(r, ProgressRecord)]
    assert sorted(p.spark_partition for p in progress) == list(range(len(sizes)))
    assert {p.spark_partition: p.produced for p in progress} == dict(enumerate(sizes))
    for p in progress:  # each Spark partition writes only the Kafka partitions it owns
        assert set(p.partitions) <= set(owned_kafka_partitions(p.spark_partition, len(sizes), 10))
    assert sum(sum(nights.values()) for p in progress for nights in p.class_night.values()) == len(source)
    assert {n for p in progress for nights in p.class_night.values() for n in nights} == {"2024-03-01", "2024-03-02"}
    end = records[-1]
    assert isinstance(end, EndRecord) and end.total == len(source) == report.total
    published = Counter(m.partition() for m in read_topic(kafka_settings, topic))
    assert {p: o.count for p, o in end.partitions.items()} == published
    assert {p: o.last_offset for p, o in end.partitions.items()} == {p: n - 1 for p, n in published.items()}
    status = read_status(kafka_settings, topic)
    assert status.state == "finished" and status.total == len(source)


# --------------------------------------------------------------------------------------------
# 6. any cluster: SASL settings reach the tasks, secrets reach no log, metadata or error

SECRET = "s3cr3t-Pa55w0rd-never-printed"


def sasl_settings(bootstrap: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        sasl_username="alice", sasl_password=SECRET, extra={"socket.timeout.ms": "3000"},
    )


def test_task_producer_config_carries_sasl_settings():
    settings = sasl_settings("kafka-1.example.org:9093,kafka-2.example.org:9093")
    config = TaskConfig(
        topic="ftransfer_ztf_x", settings=settings, avro_schema_json="{}", key_column="candid",
        kafka_partitions=10, spark_partitions=2, completed=frozenset(), request_id="r", options=PublishOptions(),
        class_column=None, night_column=None, night_epoch=JD_UNIX_EPOCH,
    )
    shipped = pickle.loads(pickle.dumps(config))  # what an executor receives
    producer = producer_config(shipped)
    assert producer["bootstrap.servers"] == "kafka-1.example.org:9093,kafka-2.example.org:9093"
    assert producer["security.protocol"] == "SASL_SSL"
    assert producer["sasl.mechanism"] == "SCRAM-SHA-512"
    assert producer["sasl.username"] == "alice" and producer["sasl.password"] == SECRET
    assert producer["enable.idempotence"] is True and producer["compression.type"] == "lz4"
    assert producer["socket.timeout.ms"] == "3000"
    assert SECRET not in repr(config) and SECRET not in str(shipped)


def test_secret_never_appears_in_logs_metadata_or_errors(kafka_broker, kafka_settings, light, caplog, capfd):
    df = light[0].limit(30)
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("fink_pipeline.publish")
    # 1. a whole publication whose settings hold the password (PLAINTEXT: it is shipped to the
    #    tasks but not used), then its status records and report
    topic = new_topic()
    holding = KafkaSettings(bootstrap_servers=kafka_broker, sasl_username="alice", sasl_password=SECRET)
    report = publish_dataframe(df, ztf_target(topic, "r"), holding, log=log)
    assert report.total == 30
    metadata = [repr(report), repr(holding)] + [r.model_dump_json() for r in read_records(kafka_settings, topic)]
    # 2. a SASL client against the broker, which speaks no SASL: the publication fails
    with pytest.raises(Exception) as failure:
        publish_dataframe(df, ztf_target(new_topic(), "r"), sasl_settings(kafka_broker),
                          options=PublishOptions(admin_timeout_s=3), log=log)
    out, err = capfd.readouterr()
    logged = "\n".join(f"{r.getMessage()} {r.args}" for r in caplog.records)
    text = "\n".join([*metadata, str(failure.value), repr(failure.value), str(failure.getrepr()), logged, out, err])
    del failure  # its traceback holds the failing client, which would keep retrying
    gc.collect()
    assert "Data available at topic" in logged  # both paths ran
    assert SECRET not in text
