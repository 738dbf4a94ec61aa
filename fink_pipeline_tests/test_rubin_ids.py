"""Rubin ids stay 64-bit integers end to end.

Rubin's diaSourceId and diaObjectId use the whole int64 range: values above 2**53 have no exact
float64, so any step through a float (a pandas column with nulls, a JSON number, a Python
float) changes them silently. Here an archive night carries such ids (2**62 + 1, 2**63 - 1,
...; diaObjectId null for a quarter of the alerts, as for solar-system sources) through the
whole pipeline: archive -> Spark -> Avro -> Kafka -> consumer -> Delta and Parquet, and the
ids read back with pyarrow, pandas and polars are int64 and exactly those written.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.stats import night_files
from fink_pipeline.consumer.core import consume_topic
from fink_pipeline.consumer.delta_sink import DeltaSink
from fink_pipeline.consumer.parquet_sink import ParquetSink
from fink_pipeline.consumer.partitioning import Partitioning
from fink_pipeline.consumer.readers import pandas_types, read_delta_table, read_pandas, read_parquet_dataset
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.request import TransferRequest

LSST = get_survey("lsst")
NIGHT = dt.date(2026, 6, 1)
N_ALERTS = 240
# ids no float64 holds (float(2**62 + 1) == 2**62), the largest int64, and 2**53 + 1
EDGE_IDS = [2**62 + 1, 2**63 - 1, 2**53 + 1, 2**63 - 2]
CONTENT = ["diaSourceId", "diaSource.diaObjectId", "diaSource", "diaObject"]


def big_ids(n: int) -> tuple[list[int], list[int | None]]:
    """(diaSourceId, diaObjectId) of `n` alerts: unique sources, objects null one alert in four."""
    sources = EDGE_IDS + [2**62 + 1 + 1_000_003 * i for i in range(len(EDGE_IDS), n)]
    objects = [None if i % 4 == 3 else 2**63 - 1 - 7 * i for i in range(n)]
    assert all(float(i) != i for i in sources[:2] + sources[4:]) and float(objects[0]) != objects[0]
    return sources[:n], objects


def _with_child(struct: pa.ChunkedArray | pa.StructArray, name: str, values: pa.Array) -> pa.StructArray:
    if isinstance(struct, pa.ChunkedArray):
        struct = struct.combine_chunks()
    children = [values if f.name == name else struct.field(i) for i, f in enumerate(struct.type)]
    return pa.StructArray.from_arrays(children, fields=list(struct.type), mask=pc.invert(struct.is_valid()))


@pytest.fixture(scope="module")
def big_id_archive(tmp_path_factory) -> tuple[str, dict[int, int | None], dict[int, tuple]]:
    """One LSST night whose alert, source and object ids are rewritten with `big_ids`; returns
    the archive root, diaSourceId -> diaObjectId as written, and `ids_of` the archive files
    (diaObject.diaObjectId is null where the alert has no diaObject: solar-system sources)."""
    root = str(tmp_path_factory.mktemp("big_ids"))
    generate_archive(LSST, root, NIGHT, nights=1, alerts_per_night=N_ALERTS, seed=9, with_cutouts=False)
    sources, objects = big_ids(N_ALERTS)
    start = 0
    for path, _ in night_files(root, "lsst", NIGHT):
        table = pq.read_table(path)
        rows = slice(start, start + table.num_rows)
        start += table.num_rows
        source_ids = pa.array(sources[rows], pa.int64())
        object_ids = pa.array(objects[rows], pa.int64())
        for name, column in (("diaSourceId", source_ids),
                             ("diaSource", _with_child(_with_child(table["diaSource"], "diaSourceId", source_ids),
                                                       "diaObjectId", object_ids)),
                             ("diaObject", _with_child(table["diaObject"], "diaObjectId", object_ids))):
            index = table.schema.get_field_index(name)
            table = table.set_column(index, table.schema.field(name), column)
        pq.write_table(table, path)
    assert start == N_ALERTS
    archive = pa.concat_tables(pq.read_table(path) for path, _ in night_files(root, "lsst", NIGHT))
    archive = archive.append_column("diaObjectId", pc.struct_field(archive["diaSource"], "diaObjectId"))
    return root, dict(zip(sources, objects)), ids_of(archive)


def ids_of(table: pa.Table) -> dict[int, tuple]:
    """diaSourceId -> (root diaObjectId, diaSource.diaSourceId, diaSource.diaObjectId, diaObject.diaObjectId)."""
    columns = [table["diaObjectId"], pc.struct_field(table["diaSource"], "diaSourceId"),
               pc.struct_field(table["diaSource"], "diaObjectId"), pc.struct_field(table["diaObject"], "diaObjectId")]
    return {row[0]: tuple(row[1:]) for row in zip(table["diaSourceId"].to_pylist(), *(c.to_pylist() for c in columns))}


def check_arrow_types(table: pa.Table) -> None:
    assert table.schema.field("diaSourceId").type == pa.int64()
    assert table.schema.field("diaObjectId").type == pa.int64()
    for struct, child in (("diaSource", "diaSourceId"), ("diaSource", "diaObjectId"), ("diaObject", "diaObjectId")):
        assert table.schema.field(struct).type.field(child).type == pa.int64()


def exact_ints(values) -> list[int | None]:
    """Values of a pandas/polars integer column as Python ints (None for missing), refusing floats."""
    out = []
    for value in values:
        if value is None or value is pd.NA:
            out.append(None)
        else:
            assert isinstance(value, (int, np.integer)) and not isinstance(value, bool), (type(value), value)
            out.append(int(value))
    return out


def check_read_back(delta_uri: str, parquet_root, written: dict, expected: dict) -> None:
    """The ids read back from both outputs with pyarrow, pandas and polars: int64, exact."""
    import polars as pl
    from deltalake import DeltaTable

    # pyarrow: int64 fields holding exactly the ids written
    for table in (read_delta_table(delta_uri), read_parquet_dataset(str(parquet_root))):
        check_arrow_types(table)
        assert ids_of(table) == expected

    # pandas: integer columns (nullable Int64), never float, nested ones exact too
    frames = {"delta read_pandas": read_pandas(delta_uri), "parquet read_pandas": read_pandas(str(parquet_root), "parquet"),
              "parquet pd.read_parquet pyarrow": pd.read_parquet(parquet_root, dtype_backend="pyarrow"),
              # root columns only: pandas' default turns integers inside records into floats when nulls are
              "delta to_pandas": DeltaTable(delta_uri).to_pandas(types_mapper=pandas_types),
              "parquet pd.read_parquet": pd.read_parquet(parquet_root)}
    for name, frame in frames.items():
        for column in ("diaSourceId", "diaObjectId"):
            assert pd.api.types.is_integer_dtype(frame[column].dtype), (name, column, frame[column].dtype)
        got = dict(zip(exact_ints(frame["diaSourceId"]), exact_ints(frame["diaObjectId"])))
        assert got == written, name
        if "pyarrow" in name or "read_pandas" in name:
            nested = {row["diaSourceId"]: row["diaObjectId"] for row in frame["diaSource"]}
            assert nested == written, name
            assert all(isinstance(v, int) for v in nested.values() if v is not None)

    # polars: Int64, exact
    polars_frames = {"delta": pl.read_delta(delta_uri),
                     "parquet": pl.read_parquet(str(parquet_root / "**" / "*.parquet"), hive_partitioning=True)}
    for name, frame in polars_frames.items():
        assert frame.schema["diaSourceId"] == pl.Int64 and frame.schema["diaObjectId"] == pl.Int64, name
        assert dict(zip(frame["diaSourceId"].to_list(), frame["diaObjectId"].to_list())) == written, name
        assert frame.schema["diaSource"].to_schema()["diaSourceId"] == pl.Int64
        assert ids_of(frame.select("diaSourceId", "diaObjectId", "diaSource", "diaObject").to_arrow()) == expected


def consume_both(settings, topic: str, tmp_path) -> tuple[str, object]:
    """The topic consumed into a Delta table and a Parquet folder (by night, LSST's default)."""
    out = []
    for name, sink in (("delta", DeltaSink), ("parquet", ParquetSink)):
        sink = sink(str(tmp_path / name), Partitioning("time", LSST.time_column, LSST.time_scale))
        report = consume_topic(settings, topic, sink, group_id=f"ids-{name}")
        assert report.complete and report.written == N_ALERTS
        out.append(tmp_path / name)
    return str(out[0]), out[1]


def check_archive(written: dict, expected: dict) -> None:
    assert {source: values[0] for source, values in expected.items()} == written
    assert all(values[1] == source for source, values in expected.items())
    assert all(values[3] in (values[0], None) for values in expected.values())  # None: no diaObject


@pytest.mark.spark
@pytest.mark.kafka
def test_rubin_ids_above_2_53_stay_exact_int64_from_archive_to_delta_and_parquet(spark, kafka_broker, kafka_settings,
                                                                                big_id_archive, tmp_path):
    """The production run (Dagster: Spark selects, the publishing tasks read the content with
    Arrow, alert_table writes Delta), the topic then downloaded again into Parquet."""
    import dagster as dg

    from fink_pipeline.orchestration.launch import run_transfer

    root, written, expected = big_id_archive
    check_archive(written, expected)
    request = TransferRequest(survey="lsst", start=NIGHT.isoformat(), stop=NIGHT.isoformat(),
                              content=CONTENT).with_identity()
    with dg.instance_for_test() as instance:
        result = run_transfer(request, bootstrap=kafka_broker, archive_root=root, table_root=str(tmp_path / "tables"),
                              request_root=str(tmp_path / "requests"), instance=instance)
    assert result.success
    parquet_root = tmp_path / "parquet"
    report = consume_topic(kafka_settings, request.topic,
                           ParquetSink(str(parquet_root), Partitioning("time", LSST.time_column, LSST.time_scale)),
                           group_id="ids")
    assert report.complete and report.written == N_ALERTS
    check_read_back(str(tmp_path / "tables" / request.topic), parquet_root, written, expected)


@pytest.mark.spark
@pytest.mark.kafka
def test_rubin_ids_stay_exact_when_spark_projects_the_content(spark, kafka_settings, big_id_archive, tmp_path):
    """The other publishing path: Spark projects the content (a remote archive) and encodes it."""
    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.kafka.publish import PublicationTarget, publish_dataframe
    from fink_pipeline.surveys.base import MJD_UNIX_EPOCH
    from fink_pipeline.transfer.plan import plan_transfer
    from fink_pipeline.transfer.select import build_publication

    root, written, expected = big_id_archive
    request = TransferRequest(survey="lsst", start=NIGHT.isoformat(), stop=NIGHT.isoformat(),
                              content=CONTENT).with_identity()
    publication = build_publication(spark, plan_transfer(request, root, list_nights(root, "lsst")), arrow_content=False)
    assert publication.arrow_content is None
    target = PublicationTarget(topic=request.topic, request_id="ids", time_column=LSST.time_column,
                               time_epoch=MJD_UNIX_EPOCH, key_column=LSST.alert_id, class_column=None)
    assert publish_dataframe(publication.rows, target, kafka_settings).total == N_ALERTS
    delta_uri, parquet_root = consume_both(kafka_settings, request.topic, tmp_path)
    check_read_back(delta_uri, parquet_root, written, expected)
