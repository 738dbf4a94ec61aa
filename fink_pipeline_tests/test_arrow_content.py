"""Content read with Arrow by the publishing tasks equals Spark's projection, byte for byte.

`build_publication` lets Spark select (archive file and row of each selected alert, plus the
columns Spark computes) and the tasks read the content with pyarrow. For every content type,
with classes, conditions and a limit, on generated archives (several files and row groups per
night, cutouts) and on archives imported from real alerts of several schema versions (columns
and nested fields missing from older nights), the Avro encoding of what `ArrowContent.batches`
yields equals the encoding of what Spark's projection (`build_transfer_dataframe`) returns.
Then a publication that reads with Arrow and loses a task attempt midway is exactly once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
from collections import Counter

import fastavro
import numpy as np
import pyarrow as pa
import pytest
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.importer import import_alerts
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.avro import avro_schema_from_arrow, encode_batch
from fink_pipeline.kafka.faults import PublishFaults
from fink_pipeline.kafka.publish import publish_dataframe
from fink_pipeline.surveys import get_survey
from fink_pipeline.spark import spark_to_arrow_schema
from fink_pipeline.transfer import arrow_content, select
from fink_pipeline.transfer.arrow_content import (
    FILE_COLUMN,
    ROW_COLUMN,
    ROW_GROUP_COLUMN,
    RowGroupSplits,
    local_path,
    spark_timestamp_strings,
)
from fink_pipeline.transfer.content import available_fields, field_type, project, projected_schema, resolve_content
from fink_pipeline.transfer.plan import plan_transfer
from fink_pipeline.transfer.select import build_publication, build_transfer_dataframe, read_nights
from fink_pipeline.transfer.request import TransferRequest
from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates
from fink_pipeline_tests.test_publish import new_topic, read_topic, schema_from_topic, ztf_target

pytestmark = pytest.mark.spark

START = dt.date(2024, 3, 1)
ZTF_CUSTOM = ["candid", "objectId", "candidate.magpsf", "candidate.jd", "brokerIngestTimestamp", "lc_features_g",
              "finkclass", "tnsclass", "year", "cutoutScience"]


@pytest.fixture(scope="module")
def ztf_archive(tmp_path_factory) -> str:
    """2 nights x 700 ZTF alerts with cutouts, 100-row row groups and ~4 MB files."""
    root = str(tmp_path_factory.mktemp("arrow_content_ztf"))
    generate_archive(get_survey("ztf"), root, START, nights=2, alerts_per_night=700, seed=41, with_cutouts=True,
                     rows_per_group=100, max_file_bytes=4 * 1024 * 1024)
    return root


def plan_for(root: str, survey: str = "ztf", **fields):
    nights = list_nights(root, survey)
    fields.setdefault("start", min(nights).isoformat())
    fields.setdefault("stop", max(nights).isoformat())
    request = TransferRequest(survey=survey, **fields)
    return plan_transfer(request, root, nights)


def selection_rows(publication):
    """The publication's rows as a DataFrame (row group splits as their one-column DataFrame)."""
    rows = publication.rows
    return rows.to_dataframe() if isinstance(rows, RowGroupSplits) else rows


def encoded(table: pa.Table, avro_schema: dict, key: str) -> dict[int, bytes]:
    """Each row's Avro bytes, by alert id."""
    values = encode_batch(table, avro_schema)
    return dict(zip(table.column(key).to_pylist(), values.to_pylist()))


def assert_same_as_spark(spark, plan, min_rows: int = 1) -> int:
    """Arrow-read content == Spark's projection (schema, rows, Avro bytes); returns the row count."""
    expected = build_transfer_dataframe(spark, plan).toArrow()
    publication = build_publication(spark, plan)
    content = publication.arrow_content
    assert content is not None, "this content should be read with Arrow"
    selection = selection_rows(publication).toArrow()
    got = pa.Table.from_batches(list(content.stream(selection.to_batches(max_chunksize=97))),
                                schema=content.output_schema)
    assert got.schema.names == expected.schema.names
    assert [f.type for f in got.schema] == [f.type for f in expected.schema]
    key = plan.survey.alert_id if plan.survey.alert_id in got.schema.names else "candid"
    assert got.num_rows == expected.num_rows >= min_rows
    avro_schema = avro_schema_from_arrow(content.output_schema)
    ours, spark_bytes = encoded(got, avro_schema, key), encoded(expected, avro_schema, key)
    assert ours.keys() == spark_bytes.keys()
    differing = [k for k in ours if ours[k] != spark_bytes[k]]
    assert not differing, f"{len(differing)} rows differ, e.g. alert {differing[0]}"
    return got.num_rows


@pytest.mark.parametrize("content", ["light", "medium", "full", "custom"])
def test_ztf_contents_equal_spark_projection(spark, ztf_archive, content):
    plan = plan_for(ztf_archive, content=ZTF_CUSTOM if content == "custom" else [content])
    assert assert_same_as_spark(spark, plan) == 1400


def test_classes_conditions_and_limit_select_the_same_rows(spark, ztf_archive):
    plan = plan_for(ztf_archive, content=["light"], classes=["Unknown", "SN candidate", "Solar System MPC"],
                    conditions=["candidate.magpsf > 17.5", "candidate.ndethist >= 1"])
    selected = assert_same_as_spark(spark, plan, min_rows=50)
    assert selected < 1400
    limited = plan_for(ztf_archive, content=["full"], conditions=["candidate.magpsf > 17.5"], limit=123)
    assert assert_same_as_spark(spark, limited) == 123


def test_map_key_content_is_projected_by_spark(spark, ztf_archive):
    plan = plan_for(ztf_archive, content=["candid", "mangrove.HyperLEDA_name"])
    publication = build_publication(spark, plan)
    assert publication.arrow_content is None
    assert publication.rows.columns == ["candid", "HyperLEDA_name", "jd"]


def test_ztf_nights_of_several_schema_versions(spark, shared_data, tmp_path):
    # raw 3.2/3.3/4.02 packets and Fink output: older nights lack Fink's columns and fields
    root = str(tmp_path)
    report = import_alerts([shared_data / "ztf" / "alerts", shared_data / "ztf" / "fink"], get_survey("ztf"), root)
    assert report.total_imported > 100
    for content in (["light"], ["full"], ZTF_CUSTOM[:-1]):
        assert assert_same_as_spark(spark, plan_for(root, content=content)) == report.total_imported


def test_rubin_nights_of_several_schema_versions(spark, shared_data, tmp_path):
    root = str(tmp_path)
    lsst = shared_data / "lsst"
    report = import_alerts([lsst / "alerts", lsst / "fink"], get_survey("lsst"), root,
                           schemas_dir=lsst / "schemas" / "lsst-alert-packet")
    assert report.total_imported > 10
    for content in (["light"], ["full"]):
        assert assert_same_as_spark(spark, plan_for(root, "lsst", content=content)) == report.total_imported


def test_elasticc_full_content(spark, tmp_path):
    root = str(tmp_path)
    survey = get_survey("elasticc")
    generate_archive(survey, root, dt.date(2023, 5, 1), nights=1, alerts_per_night=300, seed=4, with_cutouts=False,
                     rows_per_group=64)
    assert assert_same_as_spark(spark, plan_for(root, "elasticc", content=["full"])) == 300


def test_timestamps_format_as_spark_casts_them(spark):
    values = [dt.datetime(2024, 3, 1, 5, 12, 33, 120000), None, dt.datetime(2024, 3, 1, 5, 12, 33),
              dt.datetime(1969, 12, 31, 23, 59, 59, 500000), dt.datetime(2024, 3, 1, 0, 0, 0, 1),
              dt.datetime(1999, 12, 31, 23, 59, 59, 999999)]
    column = pa.array(values, pa.timestamp("us", tz="UTC"))
    df = spark.createDataFrame(pa.table({"t": column}).to_pandas()).selectExpr("cast(t as string) AS t")
    assert spark_timestamp_strings(column).to_pylist() == [row.t for row in df.collect()]


@pytest.mark.kafka
@pytest.mark.reliability
def test_publication_read_with_arrow_survives_a_failed_attempt(spark, kafka_settings, ztf_archive, reliability_record):
    plan = plan_for(ztf_archive, content=["light"])
    publication = build_publication(spark, plan)
    topic = new_topic()
    report = publish_dataframe(
        publication.rows, ztf_target(topic, "arrow-1"), kafka_settings,
        faults=PublishFaults(fail_first_attempt_after=150), arrow_content=publication.arrow_content,
    )
    messages = read_topic(kafka_settings, topic)
    expected = {row["candid"]: row for row in build_transfer_dataframe(spark, plan).toArrow().to_pylist()}
    lost, duplicates = count_lost_and_duplicates([int(m.key()) for m in messages], expected)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
    assert report.total == 1400 and report.retried_tasks >= 1
    counts = Counter(int(m.key()) for m in messages)
    assert len(counts) == 1400 and max(counts.values()) == 1
    assert lost == duplicates == 0
    parsed = fastavro.parse_schema(schema_from_topic(kafka_settings, topic))
    sample = [fastavro.schemaless_reader(io.BytesIO(m.value()), parsed) for m in messages[:50]]
    assert all(record["magpsf"] == expected[record["candid"]]["magpsf"] for record in sample)
    assert sum(sum(n.values()) for n in report.per_class_night.values()) == 1400


@pytest.mark.kafka
@pytest.mark.reliability
def test_a_publication_split_by_files_is_not_resumed_split_by_row_groups(spark, kafka_settings, ztf_archive,
                                                                        reliability_record):
    """An unfiltered transfer hands its tasks row groups; earlier versions handed them Spark's
    file splits. A publication interrupted under the one layout and resumed under the other
    would give rows to other tasks, which read back only their own Kafka partitions: the
    resume refuses (nothing more published), and resuming with the first layout is exact."""
    from fink_pipeline.kafka.readback import PublicationConflict

    plan = plan_for(ztf_archive, content=["light"])
    by_groups = build_publication(spark, plan)
    assert by_groups.arrow_content.row_groups
    plan.footers = {}  # as an earlier version planned it: Spark lists the rows of its file splits
    by_files = build_publication(spark, plan)
    assert not by_files.arrow_content.row_groups
    topic = new_topic()
    target = ztf_target(topic, "layout-1")
    with pytest.raises(Exception):  # every attempt of Spark partition 0 fails: the job fails
        publish_dataframe(by_files.rows, target, kafka_settings, arrow_content=by_files.arrow_content,
                          faults=PublishFaults(fail_spark_partitions=(0,), fail_spark_partitions_after=20))
    published = len(read_topic(kafka_settings, topic))
    assert 0 < published < 1400
    with pytest.raises(PublicationConflict, match="publish to a new topic name"):
        publish_dataframe(by_groups.rows, target, kafka_settings, arrow_content=by_groups.arrow_content)
    assert len(read_topic(kafka_settings, topic)) == published
    report = publish_dataframe(by_files.rows, target, kafka_settings, arrow_content=by_files.arrow_content)
    ids = [int(m.key()) for m in read_topic(kafka_settings, topic)]
    expected = {row["candid"]: row for row in build_transfer_dataframe(spark, plan).toArrow().to_pylist()}
    lost, duplicates = count_lost_and_duplicates(ids, expected)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
    assert report.total == len(ids) == 1400 and lost == duplicates == 0


def test_content_streams_before_the_selection_ends(spark, ztf_archive):
    # a task publishes as Spark selects: its first content batch is read from the first
    # selection batches, not after the whole partition's selection
    publication = build_publication(spark, plan_for(ztf_archive, content=["light"]))
    content = publication.arrow_content
    selection = selection_rows(publication).toArrow().to_batches(max_chunksize=97)
    consumed = []

    def arriving():
        for batch in selection:
            consumed.append(batch.num_rows)
            yield batch

    first = next(iter(content.stream(arriving())))
    assert first.num_rows > 0
    assert len(consumed) <= 2 < len(selection), f"{len(consumed)} of {len(selection)} selection batches read first"


def test_stream_joins_small_content_batches_for_the_encoder(spark, ztf_archive, monkeypatch):
    # an archive of small files gives content batches of a file's rows at most; the encoder
    # pays per batch, so the stream joins them (the first one excepted: it goes out at once)
    # without changing their rows or order
    monkeypatch.setattr(arrow_content, "_MIN_BATCH_ROWS", 300)
    publication = build_publication(spark, plan_for(ztf_archive, content=["light"]))
    content = publication.arrow_content
    selection = selection_rows(publication).toArrow()
    avro_schema = avro_schema_from_arrow(content.output_schema)
    streamed = list(content.stream(selection.to_batches(max_chunksize=97)))
    monkeypatch.setattr(arrow_content, "_MIN_BATCH_ROWS", 1)
    unjoined = list(content.stream(selection.to_batches(max_chunksize=97)))
    sizes = [batch.num_rows for batch in streamed]
    assert sum(sizes) == sum(batch.num_rows for batch in unjoined) > 1000
    assert len(unjoined) > len(streamed)
    assert sizes[0] == unjoined[0].num_rows and all(size >= 300 for size in sizes[1:-1]), sizes
    assert (encode_batch(pa.Table.from_batches(streamed, schema=content.output_schema), avro_schema).to_pylist()
            == encode_batch(pa.Table.from_batches(unjoined, schema=content.output_schema), avro_schema).to_pylist())


def test_joined_batches_respect_the_byte_bound(monkeypatch):
    batches = [pa.RecordBatch.from_pydict({"x": pa.array(np.arange(i * 100, i * 100 + 100))}) for i in range(10)]
    monkeypatch.setattr(arrow_content, "_MIN_BATCH_ROWS", 10_000)
    monkeypatch.setattr(arrow_content, "_MAX_BATCH_BYTES", 3 * batches[0].nbytes)
    joined = list(arrow_content._coalesced(iter(batches)))
    assert [b.num_rows for b in joined] == [100, 300, 300, 300]
    assert pa.Table.from_batches(joined).column("x").to_pylist() == list(range(1000))


def row_locations(publication) -> pa.Table:
    """The publication's selection as one row per alert (file, row), its row groups expanded
    (file names as plain strings, as Spark's listing gives them)."""
    content = publication.arrow_content
    table = pa.Table.from_batches([content.expand(b) for b in selection_rows(publication).toArrow().to_batches()])
    files = table.column(FILE_COLUMN)
    if pa.types.is_dictionary(files.type):
        table = table.set_column(table.schema.get_field_index(FILE_COLUMN), FILE_COLUMN, files.cast(pa.string()))
    return table


def test_stream_in_any_order_and_with_repeated_rows_reads_each_row_once(spark, ztf_archive):
    # the ordered reading, rows repeated once per catalogue source (adjacent, as the
    # cross-match's explode gives them), a shuffled selection (a sorted limit) and a row group
    # revisited after another one all give each selection row's content once
    publication = build_publication(spark, plan_for(ztf_archive, content=["light"]))
    content = publication.arrow_content
    selection = row_locations(publication)
    avro_schema = avro_schema_from_arrow(content.output_schema)

    def contents(table: pa.Table) -> list[bytes]:
        got = pa.Table.from_batches(list(content.stream(table.to_batches(max_chunksize=250))),
                                    schema=content.output_schema)
        assert got.num_rows == table.num_rows
        return sorted(encode_batch(got, avro_schema).to_pylist())

    def reference(table: pa.Table) -> list[bytes]:
        got = pa.Table.from_batches(list(content.batches(content.collect(table.to_batches()))),
                                    schema=content.output_schema)
        return sorted(encode_batch(got, avro_schema).to_pylist())

    n = selection.num_rows
    rng = np.random.default_rng(7)
    repeated = selection.take(pa.array(np.repeat(np.arange(n), rng.integers(1, 4, n))))
    shuffled = selection.take(pa.array(rng.permutation(n)))
    revisited = pa.concat_tables([selection.slice(0, 150), selection.slice(n // 2), selection.slice(150, n // 2 - 150)])
    assert contents(selection) == reference(selection)
    for table in (repeated, shuffled, revisited):
        assert contents(table) == reference(table)


def test_unfiltered_transfer_is_classified_by_the_tasks(spark, ztf_archive):
    # nothing filters on the classes: Spark hands the tasks the nights' row groups, which
    # stand for exactly the rows Spark's own listing gives, and the tasks classify them (the
    # contents above compare the result with Spark's projection)
    plan = plan_for(ztf_archive, content=["light"])
    publication = build_publication(spark, plan)
    assert publication.arrow_content.classified == ("finkclass", "tnsclass")
    assert isinstance(publication.rows, RowGroupSplits)
    assert selection_rows(publication).columns == [ROW_GROUP_COLUMN]
    listed = read_nights(spark, plan).select(F.col("_metadata.file_path"), F.col("_metadata.row_index")).collect()
    expected = Counter((local_path(uri), row) for uri, row in listed)
    expanded = row_locations(publication)
    got = Counter(zip(expanded.column(FILE_COLUMN).to_pylist(), expanded.column(ROW_COLUMN).to_pylist()))
    assert got == expected and len(expected) > 1000 and len(publication.arrow_content.row_groups) > 4
    filtered = build_publication(spark, plan_for(ztf_archive, content=["light"], classes=["SN candidate"]))
    assert filtered.arrow_content.classified == ()
    assert {"finkclass", "tnsclass"} <= set(filtered.rows.columns)


def test_whole_nights_publication_needs_no_spark_analysis(spark, ztf_archive, monkeypatch):
    # every alert of the nights, classified by the tasks: the publication is built from the
    # footers, the archive schema and the survey's class schema alone (Spark's analysis of the
    # nights cost ~2 s of a cold JVM), and equals the one built with the class columns typed by
    # Spark's analysis of `classify` (a survey declaring none), output schema included
    plan = plan_for(ztf_archive, content=["light"])
    with monkeypatch.context() as patched:
        def no_reading(*args, **kwargs):
            raise AssertionError("the nights were read with Spark")
        patched.setattr(select, "read_nights", no_reading)
        publication = build_publication(spark, plan)
    analysed = build_publication(spark, dataclasses.replace(
        plan, survey=dataclasses.replace(plan.survey, class_schema=None)))
    assert publication.arrow_content == analysed.arrow_content
    assert publication.arrow_content.output_schema.equals(analysed.arrow_content.output_schema)
    assert selection_rows(publication).toArrow().equals(selection_rows(analysed).toArrow())


@pytest.mark.parametrize(("groups", "partitions"), [(400, 10), (7, 3), (10, 10), (1000, 7), (23, 1)])
def test_row_groups_split_as_a_coalesce_of_one_partition_per_group(spark, groups, partitions):
    # the publisher coalesced one partition per row group into the Kafka partitions' number;
    # the publication now splits the row groups so from the start (no Spark planning to count
    # them): the same row groups per partition, so a run interrupted either way resumes exactly
    def owners(df) -> dict[int, int]:
        return {r.id: r.p for r in df.select("id", F.spark_partition_id().alias("p")).collect()}

    coalesced = spark.range(0, groups, 1, numPartitions=groups).coalesce(partitions)
    split = spark.range(0, groups, 1, numPartitions=partitions)
    assert owners(split) == owners(coalesced)
    assert len(set(owners(split).values())) == split.rdd.getNumPartitions() == min(groups, partitions)
    # the publisher's RDD of row group ranges (and its DataFrame over Spark Connect) too
    splits = RowGroupSplits(spark, groups, min(groups, partitions))
    by_rdd = splits.to_rdd().mapPartitionsWithIndex(lambda p, ranges: [(g, p) for r in ranges for g in r]).collect()
    assert dict(by_rdd) == owners(splits.to_dataframe().withColumnRenamed(ROW_GROUP_COLUMN, "id")) == owners(split)
    assert len(by_rdd) == groups


def test_whole_nights_publication_in_the_kafka_partitions_number(spark, ztf_archive):
    plan = plan_for(ztf_archive, content=["light"])
    publication = build_publication(spark, plan, max_partitions=3)
    assert len(publication.arrow_content.row_groups) > 3
    assert publication.spark_partitions == publication.rows.partitions == publication.rows.to_rdd().getNumPartitions() == 3
    assert build_publication(spark, plan).spark_partitions is None  # no bound: the publisher counts


@pytest.mark.kafka
def test_whole_nights_publication_runs_no_spark_sql(spark, kafka_settings, ztf_archive):
    # every alert of the nights: the tasks get their row groups from an RDD job, so Spark
    # runs no SQL query before (or for) the publication; the first query of a cold JVM cost
    # ~2.5 CPU-s and ~2 s before the first task. Every alert is published once.
    plan = plan_for(ztf_archive, content=["light"])
    expected = build_transfer_dataframe(spark, plan).select("candid").toArrow().column(0).to_pylist()
    executions = spark._jsparkSession.sharedState().statusStore()
    before = executions.executionsCount()
    publication = build_publication(spark, plan, max_partitions=4)
    topic = new_topic()
    report = publish_dataframe(publication.rows, ztf_target(topic, "rdd-1"), kafka_settings,
                               arrow_content=publication.arrow_content, spark_partitions=publication.spark_partitions)
    assert executions.executionsCount() == before
    ids = [int(m.key()) for m in read_topic(kafka_settings, topic)]
    assert report.total == len(ids) == 1400 and sorted(ids) == sorted(expected)
    assert report.spark_partitions == 4


def test_survey_class_schema_is_what_spark_classify_gives(spark, ztf_archive):
    survey = get_survey("ztf")
    classified = select.classify(read_nights(spark, plan_for(ztf_archive)), survey)
    spark_fields = spark_to_arrow_schema(classified.select(*survey.class_columns))
    assert spark_fields.equals(survey.class_schema)


def content_groups(survey, names: list[str], size: int = 100) -> list[list[str]]:
    """`names` (dotted fields) in groups without two fields published under one name."""
    groups: list[list[str]] = []
    for name in names:
        short = name.rsplit(".", 1)[-1]
        group = next((g for g in groups if len(g) < size and short not in {n.rsplit(".", 1)[-1] for n in g}), None)
        if group is None:
            groups.append(group := [])
        group.append(name)
    return groups


@pytest.mark.parametrize("survey_name", ["ztf", "lsst", "elasticc"])
def test_projected_schema_is_spark_projection_schema(spark, ztf_archive, survey_name):
    # every packet and every field of the survey (nested ones, structs, timestamps, night
    # columns): the schema worked out without Spark equals the one Spark's analysis gives;
    # a map key (only Spark resolves those) gives None
    survey = get_survey(survey_name)
    if survey_name == "ztf":
        df = select.classify(read_nights(spark, plan_for(ztf_archive)), survey)
    else:
        df = spark.createDataFrame([], from_arrow_schema(survey.archive_schema))
        df = df.select("*", *[F.lit(None).cast("int").alias(c) for c in ("year", "month", "day")])
    fields = [name for name in available_fields(survey, ()) if field_type(df.schema, name) is not None]
    contents = [[packet] for packet in survey.packets] + content_groups(survey, fields)
    compared = 0
    for items in contents:
        plan = resolve_content(survey, items)
        expected = project(df, plan).schema if all(field_type(df.schema, s) for s, _ in plan.columns) else None
        assert projected_schema(df.schema, plan) == expected, items
        compared += expected is not None
    assert compared >= len(contents) - 1 and len(fields) > 50
    map_keys = [f"{column}.{key}" for column, keys in survey.map_keys.items() for key in keys[:1]]
    if map_keys:
        assert projected_schema(df.schema, resolve_content(survey, map_keys)) is None


def test_stream_keeps_few_archive_files_open(spark, ztf_archive, monkeypatch):
    """A task's split spans many archive files: the ordered reader closes the files it has
    left (each holds its footer and reader buffers, ~1 MiB) instead of keeping all of them."""
    import fink_pipeline.transfer.arrow_content as arrow_content

    most_open: list[int] = []

    class Watched(arrow_content._OrderedReader):
        def add(self, batch):
            yield from super().add(batch)
            most_open.append(len(self.files))

    monkeypatch.setattr(arrow_content, "_OrderedReader", Watched)
    publication = build_publication(spark, plan_for(ztf_archive, content=["light"]))
    selection = row_locations(publication)
    files = len(set(selection.column(FILE_COLUMN).to_pylist()))
    got = sum(b.num_rows for b in publication.arrow_content.stream(selection.to_batches(max_chunksize=60)))
    assert got == selection.num_rows and files >= 4
    assert max(most_open) <= 2
