"""The consumer side of the exactly-once promise (issue 13, holes 3-6), on real components:
the embedded broker, real Delta tables and Parquet folders, the `fink_datatransfer` command.

* a Delta table's progress belongs to the table and the publication, not to the consumer group;
* a Parquet folder holds one publication and refuses another one;
* readers of a Parquet folder never see rows of a batch that was not committed;
* a topic re-created under the same name is a new publication, not a continuation.
"""

from __future__ import annotations

import os
import uuid

import pandas as pd
import pyarrow as pa
import pytest

from fink_pipeline.consumer.core import consume_topic
from fink_pipeline.consumer.delta_sink import DeltaSink
from fink_pipeline.consumer.parquet_sink import ParquetSink
from fink_pipeline.consumer.partitioning import Partitioning
from fink_pipeline.consumer.readers import read_delta_table, read_parquet_dataset
from fink_pipeline_tests.synthetic_topics import publish_tables, synthetic_alerts
from fink_pipeline.kafka.broker import EmbeddedBroker
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.surveys import get_survey
from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates, table_ids
from fink_pipeline_tests.test_datatransfer_cli import run_cli

pytestmark = pytest.mark.kafka

ZTF = get_survey("ztf")
EXIT_USAGE = 2


def unique_topic() -> str:
    return f"ftransfer_ztf_2024-03-01_{uuid.uuid4().hex[:10]}"


def publish(settings: KafkaSettings, topic: str, n_alerts: int, seed: int):
    return publish_tables(settings, topic, synthetic_alerts(ZTF, n_alerts, "light", seed=seed, batch_size=1000))


def cli_env() -> dict:
    env = dict(os.environ)
    env.pop("FINK_KAFKA_BOOTSTRAP_SERVERS", None)
    return env


def sink_for(fmt: str, path) -> DeltaSink | ParquetSink:
    partitioning = Partitioning("finkclass", ZTF.time_column, ZTF.time_scale)
    return DeltaSink(str(path), partitioning) if fmt == "delta" else ParquetSink(str(path), partitioning)


# ------------------------------------------------------------------------------------------
# hole 3: the group id does not own the table's progress


@pytest.mark.reliability
def test_delta_resume_under_another_group_id_holds_each_alert_once(kafka_settings, tmp_path, reliability_record):
    topic = unique_topic()
    published = publish(kafka_settings, topic, 3000, seed=31)
    outdir = tmp_path / "delta"
    common = ["-topic", topic, "-outdir", str(outdir), "-servers", kafka_settings.bootstrap_servers,
              "-nconsumers", "2", "-batchsize", "500"]
    first = run_cli([*common, "-groupid", "first_machine", "-limit", "1200"], cli_env())
    assert first.returncode == 0, first.stderr
    # resumed under another group id (a credentials file instead of -groupid, another machine)
    second = run_cli([*common, "-groupid", "second_machine"], cli_env())
    ids = read_delta_table(str(outdir))["candid"].to_pylist()
    lost, duplicates = count_lost_and_duplicates(ids, published.ids)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
    assert second.returncode == 0, second.stderr
    assert len(ids) == len(set(ids)) == published.total
    assert lost == duplicates == 0


# ------------------------------------------------------------------------------------------
# hole 4: one publication per Parquet folder


@pytest.mark.reliability
def test_parquet_folder_refuses_a_second_topic(kafka_settings, tmp_path, reliability_record):
    first_topic, second_topic = unique_topic(), unique_topic()
    first = publish(kafka_settings, first_topic, 1500, seed=41)
    publish(kafka_settings, second_topic, 1500, seed=42)
    outdir = tmp_path / "parquet"

    def download(topic: str):
        return run_cli(["-topic", topic, "-outdir", str(outdir), "-format", "parquet", "-servers",
                        kafka_settings.bootstrap_servers, "-nconsumers", "2"], cli_env())

    assert download(first_topic).returncode == 0
    refused = download(second_topic)
    ids = read_parquet_dataset(str(outdir))["candid"].to_pylist()
    lost, duplicates = count_lost_and_duplicates(ids, first.ids)
    reliability_record(cases=1, failures_survived=int(refused.returncode == EXIT_USAGE), lost=lost,
                       duplicates=duplicates)
    assert refused.returncode == EXIT_USAGE, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), refused.stderr
    assert str(outdir) in errors[0] and first_topic in errors[0] and second_topic in errors[0]
    assert "-outdir" in errors[0], "the error must say how to download the second topic"
    assert lost == duplicates == 0


# ------------------------------------------------------------------------------------------
# hole 5: no reader sees an uncommitted Parquet batch


@pytest.mark.reliability
def test_parquet_reader_never_sees_uncommitted_batch(kafka_settings, tmp_path, reliability_record):
    topic = unique_topic()
    published = publish(kafka_settings, topic, 2000, seed=51)
    root = tmp_path / "p"
    consume_topic(kafka_settings, topic, sink_for("parquet", root), group_id="g", limit=500, batch_size=500)
    committed = read_parquet_dataset(str(root)).num_rows
    assert committed == 500

    # The batch's commit fails after its data files are written (here: its marker name is taken
    # by a folder, as a full disk or a crash would stop it): the process dies without a marker.
    sink = sink_for("parquet", root)
    offsets = sink.resume_offsets(range(10))
    extra = read_parquet_dataset(str(root)).slice(0, 50)
    p0 = min(offsets)
    batch_id = f"{p0}-{offsets[p0] + 10_000}-{offsets[p0] + 10_050}"
    blocker = root / "_offsets" / f"batch-{batch_id}.json"
    blocker.mkdir()
    with pytest.raises(OSError):
        sink.write(extra, {p0: offsets[p0] + 10_050}, {p0: offsets[p0] + 10_000})
    sink.close()
    blocker.rmdir()

    # Every reader sees the committed rows only: the project's helper, pyarrow, pandas, and the
    # `**/*.parquet` globs of polars and DuckDB.
    import duckdb
    import polars as pl
    import pyarrow.dataset as ds

    seen = {
        "read_parquet_dataset": read_parquet_dataset(str(root)).num_rows,
        "pyarrow.dataset": ds.dataset(str(root), format="parquet", partitioning="hive").count_rows(),
        "pandas.read_parquet": len(pd.read_parquet(str(root))),
        "polars.scan_parquet": pl.scan_parquet(str(root / "**" / "*.parquet"), hive_partitioning=True)
        .select(pl.len()).collect().item(),
        "duckdb.read_parquet": duckdb.connect().execute(
            f"SELECT count(*) FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)").fetchone()[0],
    }
    report = consume_topic(kafka_settings, topic, sink_for("parquet", root), group_id="g")
    ids = read_parquet_dataset(str(root))["candid"].to_pylist()
    lost, duplicates = count_lost_and_duplicates(ids, published.ids)
    reliability_record(cases=1, failures_survived=1, lost=lost,
                       duplicates=duplicates + sum(n - committed for n in seen.values()))
    assert seen == dict.fromkeys(seen, committed), seen
    assert report.complete and lost == duplicates == 0


# ------------------------------------------------------------------------------------------
# hole 6: a re-created topic is a new publication


@pytest.fixture
def restartable_broker():
    """A broker of this test alone (it is restarted, losing every topic): [broker] list."""
    brokers = [EmbeddedBroker()]
    brokers[0].start()
    yield brokers
    for broker in brokers:
        broker.stop()


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_recreated_topic_is_detected_as_a_new_publication(restartable_broker, tmp_path, fmt):
    broker = restartable_broker[0]
    address = broker.address
    settings = KafkaSettings(bootstrap_servers=address)
    topic = unique_topic()
    publish(settings, topic, 2000, seed=61)
    out = tmp_path / fmt
    consume_topic(settings, topic, sink_for(fmt, out), group_id="g", limit=600, batch_size=300)
    before = sorted(table_ids(out, fmt))
    assert len(before) == 600

    # The broker restarts on memory storage and the transfer is published again (other alerts,
    # other offsets): resuming at the earlier publication's offsets would mix two publications.
    broker.stop()
    restarted = EmbeddedBroker()
    restartable_broker.append(restarted)
    restarted.start(port=int(address.rsplit(":", 1)[1]))
    again = publish(settings, topic, 2000, seed=62)

    with pytest.raises(RuntimeError, match="published again") as refused:
        consume_topic(settings, topic, sink_for(fmt, out), group_id="g", batch_size=300, max_timeout=5)
    assert str(out) in str(refused.value) and "new output folder" in str(refused.value)
    assert sorted(table_ids(out, fmt)) == before
    if fmt == "delta":
        # a table owned by its caller alone (the pipeline's alert_table) restarts cleanly instead
        report = consume_topic(settings, topic, sink_for(fmt, out), group_id="g", batch_size=300,
                               replace_other_publication=True)
        ids = table_ids(out, fmt)
        assert report.complete and len(ids) == len(set(ids)) == again.total and set(ids) == set(again.ids)


# ------------------------------------------------------------------------------------------
# the pieces: publication ids, claims without Kafka


def test_publication_id_is_fresh_for_a_new_publication_and_kept_on_resume():
    from fink_pipeline.kafka.status import StartRecord, TransferStatus, publication_id_for

    status = TransferStatus(topic="t")
    first = publication_id_for(status)
    assert first and first != publication_id_for(status)  # fresh each time nothing started
    status.apply(StartRecord(request_id="r", topic="t", partitions=10, schema_fingerprint="f", publication_id=first))
    assert status.publication_id == first and publication_id_for(status) == first  # a resume keeps it
    # records of older writers have no id: still readable, and a resume keeps "no id"
    older = TransferStatus(topic="t")
    older.apply(StartRecord.model_validate_json(
        '{"type": "start", "request_id": "r", "topic": "t", "partitions": 10, "schema_fingerprint": "f"}'))
    assert older.publication_id is None and publication_id_for(older) is None


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_output_folder_holds_one_publication(tmp_path, fmt):
    from fink_pipeline.consumer.sinks import Publication, PublicationMismatch

    schema = pa.schema([("candid", pa.int64()), ("finkclass", pa.string())])
    a, a_again, b = Publication("topic_a", "1"), Publication("topic_a", "2"), Publication("topic_b", "3")
    empty = sink_for(fmt, tmp_path / "empty")
    empty.prepare(schema)
    empty.claim(a)
    empty.claim(b)  # nothing committed yet: the folder may change hands
    assert empty.held_publication() == b

    sink = sink_for(fmt, tmp_path / "out")
    sink.prepare(schema)
    sink.claim(a)
    sink.resume_offsets([0])
    sink.write(pa.table({"candid": [1, 2], "finkclass": ["x", "y"]}), {0: 2}, {0: 0})
    sink.close()
    for other, message in ((b, "holds topic topic_a, not topic_b"), (a_again, "published again")):
        with pytest.raises(PublicationMismatch, match=message) as refused:
            sink_for(fmt, tmp_path / "out").claim(other)
        assert str(tmp_path / "out") in str(refused.value) and "-outdir" in str(refused.value)
    again = sink_for(fmt, tmp_path / "out")
    again.claim(a)
    assert again.resume_offsets([0]) == {0: 2}
    again.close()
