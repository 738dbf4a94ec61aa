"""Object storage, proven on a local S3 API server (moto's, see `s3_server.py`): a transfer's
Delta table written to s3:// by `fink_datatransfer`, killed mid-way and resumed, holds exactly
the published alerts (read back with pandas and polars); storage options and credentials from
the environment through the resources; clear errors for a wrong endpoint, a missing bucket or
missing credentials; the archive read by pyarrow from s3://, and Spark's missing connector
said before Spark fails."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pyarrow as pa
import pytest

from fink_pipeline.storage import StorageError
from fink_pipeline.surveys import get_survey
from fink_pipeline_tests.s3_server import ACCESS_KEY, SECRET_KEY, free_port, start_s3_server

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def s3():
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(s3) -> str:
    """A new bucket for the test: `s3://<name>`."""
    return s3.create_bucket(f"fink-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def s3_env(s3, monkeypatch):
    """The server's credentials in this process's environment (as a deployment sets them)."""
    for name, value in s3.credentials_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3


def _delta_commits(s3):
    """A commit counter of a Delta table on the server (for `transfer_with_kills`)."""
    import pyarrow.fs as pafs

    filesystem = s3.filesystem()

    def commits(out, fmt: str) -> int:
        path = str(out).removeprefix("s3://") + "/_delta_log"
        infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return sum(1 for info in infos if info.path.endswith(".json"))

    return commits


@pytest.mark.kafka
@pytest.mark.reliability
def test_killed_transfer_into_s3_resumes_exactly_once(kafka_broker, s3, bucket, reliability_record):
    """SIGKILL fink_datatransfer (2 consumers) while it writes s3://, twice; the last run finishes:
    pandas and polars read back exactly the published alerts."""
    import polars as pl

    from fink_pipeline.consumer.readers import read_pandas
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates
    from fink_pipeline_tests.synthetic_topics import publish_synthetic_topic
    from fink_pipeline_tests.test_consumer_kill import transfer_with_kills

    topic = f"ftransfer_ztf_2024-03-01_{uuid.uuid4().hex[:8]}"
    published = publish_synthetic_topic(KafkaSettings(bootstrap_servers=kafka_broker), topic, get_survey("ztf"),
                                        4_000, seed=11)
    out = f"{bucket}/tables/{topic}"
    env = {**s3.credentials_env, "FINK_TABLE_STORAGE_OPTIONS": json.dumps(s3.storage_options)}
    stats = transfer_with_kills(kafka_broker, topic, out, "delta", kills=2, batchsize=150, seed=3,
                                commits=_delta_commits(s3), extra_env=env)
    assert stats["kills"] == 2, stats  # both kills interrupted a transfer in progress

    options = {**s3.storage_options, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    by_pandas = read_pandas(out, "delta", columns=["candid"], storage_options=options)["candid"].tolist()
    by_polars = pl.read_delta(out, storage_options=options)["candid"].to_list()
    lost, duplicates = count_lost_and_duplicates(by_pandas, published.ids)
    reliability_record(cases=1, failures_survived=stats["kills"], lost=lost, duplicates=duplicates)
    for ids in (by_pandas, by_polars):
        assert len(ids) == published.total and len(set(ids)) == len(ids)
        assert set(ids) == set(published.ids)


def test_table_resource_from_the_environment_writes_and_resumes_on_s3(s3_env, bucket, monkeypatch):
    """The production resources take the table root and options from FINK_* variables and the
    keys as EnvVars (named, never valued, in the resource config); the sink writes through them
    and a new sink on the same table resumes from the offsets committed with the data."""
    import dagster as dg

    from fink_pipeline.consumer.delta_sink import DeltaSink
    from fink_pipeline.consumer.partitioning import Partitioning
    from fink_pipeline.consumer.sinks import Publication
    from fink_pipeline.orchestration.resources import production_resources

    monkeypatch.setenv("FINK_TABLE_ROOT", f"{bucket}/tables")
    monkeypatch.setenv("FINK_TABLE_STORAGE_OPTIONS", json.dumps(s3_env.storage_options))
    tables = production_resources()["tables"]
    assert tables.secret_access_key == dg.EnvVar("AWS_SECRET_ACCESS_KEY")  # by name only
    assert SECRET_KEY not in json.dumps(tables.storage_options)
    with dg.build_resources({"tables": tables}) as resources:
        resolved = resources.tables
        uri = resolved.table_uri("ftransfer_ztf_2024-03-01_s3")
        assert uri == f"{bucket}/tables/ftransfer_ztf_2024-03-01_s3"
        assert resolved.quarantine_dir().startswith("/")  # local: never a path named s3:/...
        rows = pa.table({"candid": pa.array([1, 2, 3], pa.int64())})
        publication = Publication("ftransfer_ztf_2024-03-01_s3", "p1")
        sink = DeltaSink(uri, Partitioning("none"), storage_options=resolved.options())
        sink.prepare(rows.schema)
        sink.claim(publication)
        sink.write(rows, {0: 3}, {0: 0})
        again = DeltaSink(uri, Partitioning("none"), storage_options=resolved.options())
        again.claim(publication)
        assert again.resume_offsets([0, 1]) == {0: 3, 1: 0}


def test_local_deployment_reads_the_storage_options_too(monkeypatch):
    """FINK_TABLE_STORAGE_OPTIONS and FINK_ARCHIVE_STORAGE_OPTIONS reach the local deployment's
    resources (they were ignored there: only production passed them)."""
    from fink_pipeline.orchestration.resources import local_resources

    monkeypatch.setenv("FINK_TABLE_ROOT", "s3://bucket/tables")
    monkeypatch.setenv("FINK_TABLE_STORAGE_OPTIONS", '{"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}')
    monkeypatch.setenv("FINK_ARCHIVE_STORAGE_OPTIONS", '{"AWS_REGION": "eu-west-3"}')
    resources = local_resources()
    assert resources["tables"].options() == {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}
    assert resources["archive"].options() == {"AWS_REGION": "eu-west-3"}


@pytest.mark.parametrize("options, fix", [
    ({"AWS_SECRET_ACCESS_KEY": "x"}, "set it in the environment"),
    ({"AWS_S3_ALLOW_UNSAFE_RENAME": "true"}, "conditional puts"),
])
def test_storage_options_refuse_secrets_and_unsafe_renames(monkeypatch, options, fix):
    from fink_pipeline.env import EnvSettingsError
    from fink_pipeline.storage import StorageEnvSettings

    monkeypatch.setenv("FINK_TABLE_STORAGE_OPTIONS", json.dumps(options))
    with pytest.raises(EnvSettingsError) as caught:
        StorageEnvSettings.load()
    message = str(caught.value)
    assert "FINK_TABLE_STORAGE_OPTIONS" in message and fix in message and '"x"' not in message


def _sink(uri: str, options: dict):
    from fink_pipeline.consumer.delta_sink import DeltaSink
    from fink_pipeline.consumer.partitioning import Partitioning

    return DeltaSink(uri, Partitioning("none"), storage_options=options)


def test_wrong_endpoint_missing_bucket_and_missing_credentials_say_what_to_fix(s3, bucket, monkeypatch):
    rows = pa.schema([("candid", pa.int64())])
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    keys = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    # few retries: the store is not there
    nowhere = {**s3.storage_options, **keys, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
               "max_retries": "1", "retry_timeout": "2s"}
    no_http = {k: v for k, v in {**s3.storage_options, **keys}.items() if k != "AWS_ALLOW_HTTP"}
    cases = [
        (f"{bucket}/t", nowhere, ["cannot reach the object store", "AWS_ENDPOINT_URL", "FINK_TABLE_STORAGE_OPTIONS"]),
        ("s3://no-such-bucket/t", {**s3.storage_options, **keys},
         ["bucket 'no-such-bucket' does not exist", "FINK_TABLE_ROOT"]),
        (f"{bucket}/t", dict(s3.storage_options), ["no credentials", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]),
        (f"{bucket}/t", no_http, ['"AWS_ALLOW_HTTP": "true"']),
    ]
    for uri, options, expected in cases:
        with pytest.raises(StorageError) as caught:
            _sink(uri, options).prepare(rows)
        message = str(caught.value)
        assert all(text in message for text in expected), message
        assert "Kernel error" not in message and SECRET_KEY not in message


def test_archive_on_s3_is_listed_and_read_by_pyarrow(s3_env, bucket, tmp_path, monkeypatch):
    """pyarrow reads an archive night on s3://: the archive layer lists it (endpoint from the
    environment) and `arrow_filesystem` reads its files from the archive's storage options,
    row for row as the same night generated locally."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.storage import arrow_filesystem

    survey, night = get_survey("ztf"), dt.date(2024, 3, 1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    root = f"{bucket}/archive"
    for target in (root, str(tmp_path)):
        generate_archive(survey, target, night, 1, 300, seed=5, with_cutouts=False)
    assert list_nights(root, "ztf") == [night]
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # from here on: the options alone
    filesystem, base = arrow_filesystem(root, s3_env.storage_options)
    files = sorted(i.path for i in filesystem.get_file_info(pafs.FileSelector(f"{base}/ztf/science", recursive=True))
                   if i.path.endswith(".parquet"))
    assert files
    remote = pa.concat_tables([pq.read_table(f, filesystem=filesystem, columns=["candid", "candidate"])
                               for f in files])
    local = pq.read_table(str(tmp_path / "ztf" / "science"), columns=["candid", "candidate"])
    assert remote.sort_by("candid").equals(local.sort_by("candid"))


def test_spark_without_the_s3_connector_is_told_before_it_fails(spark, s3_env, bucket):
    """PyPI's pyspark has no S3 connector: Spark itself fails with a class or scheme error, and
    `spark_archive_access_error` says which package and settings fix it, before any job."""
    from fink_pipeline.storage import pyspark_hadoop_version, spark_archive_access_error

    for uri in (f"{bucket}/archive", f"s3a://{bucket.removeprefix('s3://')}/archive"):
        with pytest.raises(Exception) as caught:
            spark.read.parquet(uri).count()
        assert "S3AFileSystem" in str(caught.value) or 'No FileSystem for scheme "s3"' in str(caught.value)
        message = spark_archive_access_error(uri, {})
        assert f"org.apache.hadoop:hadoop-aws:{pyspark_hadoop_version()}" in message
        assert "spark.jars.packages" in message and "Maven" in message and "FINK_SPARK_CONF" in message
    version = pyspark_hadoop_version()
    assert version and version[0].isdigit()
    assert spark_archive_access_error("/data/archive", {}) is None
    assert spark_archive_access_error(f"{bucket}/archive",
                                      {"spark.jars.packages": f"org.apache.hadoop:hadoop-aws:{version}"}) is None


@pytest.mark.kafka
def test_pipeline_transfer_materializes_its_table_on_s3(spark, kafka_broker, s3_env, bucket, tmp_path, monkeypatch):
    """A whole transfer (Spark, Kafka, the alert_table asset) with FINK_TABLE_STORAGE_OPTIONS and
    an s3:// table root: the Delta table on the server holds each published alert once, with the
    Kafka offsets it resumes from committed in its log."""
    import dagster as dg
    import polars as pl

    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.consumer.readers import delta_committed_offsets
    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.transfer.request import TransferRequest

    archive = str(tmp_path / "archive")
    generate_archive(get_survey("ztf"), archive, dt.date(2024, 3, 1), 1, 1_000, seed=3, with_cutouts=False)
    monkeypatch.setenv("FINK_TABLE_STORAGE_OPTIONS", json.dumps(s3_env.storage_options))
    request = TransferRequest(start="2024-03-01", stop="2024-03-01", content="light").with_identity()
    tables = f"{bucket}/tables"
    with dg.instance_for_test() as instance:
        result = run_transfer(request, bootstrap=kafka_broker, archive_root=archive, table_root=tables,
                              request_root=str(tmp_path / "requests"), instance=instance)
    assert result.success
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("transferred_alerts")}
    uri = f"{tables}/{request.topic}"
    assert meta["alert_table"]["path"].value == uri
    published = meta["alert_topic"]["alerts_published"].value
    assert published == 1_000
    options = {**s3_env.storage_options, **s3_env.credentials_env}
    ids = pl.read_delta(uri, storage_options=options)["candid"].to_list()
    assert len(ids) == len(set(ids)) == published
    # where a rerun resumes: every message's offset, committed with the rows
    assert sum(delta_committed_offsets(uri, range(10), options).values()) == published


def test_restart_from_beginning_removes_an_s3_table(s3_env, bucket):
    """`fink_datatransfer --restart_from_beginning` on an s3:// output deletes its objects (the
    local rmtree it used would not see them)."""
    from fink_pipeline.cli.datatransfer import remove_output
    from fink_pipeline.consumer.sinks import Publication

    uri = f"{bucket}/tables/ftransfer_ztf_2024-03-01_rm"
    sink = _sink(uri, s3_env.storage_options)
    sink.prepare(pa.schema([("candid", pa.int64())]))
    sink.claim(Publication("ftransfer_ztf_2024-03-01_rm", "p"))
    assert sink.held_publication() is not None
    assert remove_output(uri, s3_env.storage_options)
    assert _sink(uri, s3_env.storage_options).held_publication() is None
    assert not remove_output(uri, s3_env.storage_options)


def test_s3_commits_are_conditional_puts_without_any_locking_option(s3_env, bucket):
    """Two writers committing the same table version on S3: delta-rs's put-if-absent lets one
    win and the other fail (no AWS_S3_ALLOW_UNSAFE_RENAME, no lock), so no commit is overwritten:
    what the consumers' exactly-once offsets rely on."""
    from deltalake import CommitProperties, DeltaTable, write_deltalake
    from deltalake.exceptions import CommitFailedError

    uri, options = f"{bucket}/race", s3_env.storage_options
    rows = pa.table({"candid": pa.array([1], pa.int64())})
    write_deltalake(uri, rows, storage_options=options)
    first, second = DeltaTable(uri, storage_options=options), DeltaTable(uri, storage_options=options)
    write_deltalake(first, rows, mode="append")
    with pytest.raises(CommitFailedError):
        write_deltalake(second, rows, mode="append", commit_properties=CommitProperties(max_commit_retries=0))
    table = DeltaTable(uri, storage_options=options)
    assert table.version() == 1 and len(table.file_uris()) == 2


@pytest.mark.spark
def test_arrow_content_reader_reads_an_s3_archive_as_the_local_one(spark, s3_env, bucket, tmp_path, monkeypatch):
    """The publishing tasks' Arrow content reader opens archive files on S3 through pyarrow's
    filesystem (endpoint and keys from the executor's environment), Spark's `s3a://` paths
    included: the same selection rows, pointed at a copy of the archive on the server, give the
    same content, byte for byte, as the local archive (several files and row groups)."""
    import pyarrow.compute as pc
    import pyarrow.fs as pafs

    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.avro import avro_schema_from_arrow, encode_batch
    from fink_pipeline.storage import arrow_filesystem
    from fink_pipeline.transfer.arrow_content import FILE_COLUMN, is_arrow_readable_archive
    from fink_pipeline_tests.test_arrow_content import plan_for, row_locations
    from fink_pipeline.transfer.select import build_publication

    survey, night = get_survey("ztf"), dt.date(2024, 3, 1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    local = str(tmp_path / "archive")
    remote = f"{bucket}/archive"
    generate_archive(survey, local, night, 1, 200, seed=9, with_cutouts=False, rows_per_group=40,
                     max_file_bytes=256 * 1024)
    filesystem, base = arrow_filesystem(remote, s3_env.storage_options)
    pafs.copy_files(local, base, destination_filesystem=filesystem)
    assert is_arrow_readable_archive(remote) and is_arrow_readable_archive(f"s3a://{remote[5:]}")
    publication = build_publication(spark, plan_for(local, content=["light"]))
    content, selection = publication.arrow_content, row_locations(publication)  # one row per alert
    files = selection.column(FILE_COLUMN)
    prefix = "file:" + local if pc.any(pc.starts_with(files, "file:")).as_py() else local  # Spark: file:/tmp/...
    assert pc.all(pc.starts_with(files, prefix)).as_py()
    for scheme in ("s3://", "s3a://"):
        moved = pc.replace_substring(files, prefix, scheme + remote.removeprefix("s3://"))
        on_s3 = selection.set_column(selection.schema.get_field_index(FILE_COLUMN), FILE_COLUMN, moved)
        avro_schema = avro_schema_from_arrow(content.output_schema)
        got = [pa.Table.from_batches(list(content.stream(table.to_batches(max_chunksize=120))),
                                     schema=content.output_schema) for table in (selection, on_s3)]
        assert got[0].num_rows == got[1].num_rows == 200
        assert encode_batch(got[1], avro_schema).to_pylist() == encode_batch(got[0], avro_schema).to_pylist()
