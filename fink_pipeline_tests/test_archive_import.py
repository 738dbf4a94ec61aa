"""`archive import`: real ZTF, Rubin and ELAsTiCC samples into the night-partitioned archive.

Expected contents are computed straight from the source files (fastavro / pyarrow, not the
importer's code): one row per distinct alert id, first occurrence wins, night = UTC date of the
survey's time column. Every imported night is read back with pyarrow.dataset and with Spark
(`transfer.select.read_nights`, the unified schema given explicitly).
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import fastavro
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from fink_pipeline.archive.importer import discover_files, import_alerts, sniff_format
from fink_pipeline.archive.layout import list_nights, night_dir, science_root
from fink_pipeline.surveys import get_survey

# the same location as the `shared_data` fixture (conftest), for the module-level helpers
SHARED_LSST_SCHEMAS = (
    Path(os.environ.get("FINK_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    / "lsst" / "schemas" / "lsst-alert-packet"
)
ZTF = get_survey("ztf")
LSST = get_survey("lsst")
ELASTICC = get_survey("elasticc")


# --------------------------------------------------------------------------------------------
# Independent expectations from the source files
# --------------------------------------------------------------------------------------------


def _records(path: str):
    """Every record of an alert file as a dict (plain Avro, gzip Avro or Parquet)."""
    fmt = sniff_format(path)
    if fmt == "parquet":
        yield from pq.read_table(path).to_pylist()
    elif fmt == "confluent":  # Rubin's registry ids: 900 -> v9_0, 1101 -> v11_1
        body = Path(path).read_bytes()
        schema_id = int.from_bytes(body[1:5], "big")
        folder = SHARED_LSST_SCHEMAS / f"v{schema_id // 100}_{schema_id % 100}"
        schema = fastavro.schema.load_schema(next(folder.glob("*.alert.avsc")))
        yield fastavro.schemaless_reader(io.BytesIO(body[5:]), schema, None)
    elif fmt in ("avro", "avro.gz"):
        opener = gzip.open if fmt == "avro.gz" else open
        with opener(path, "rb") as fh:
            yield from fastavro.reader(fh)


def _get(record: dict, dotted: str):
    value = record
    for part in dotted.split("."):
        if value is None:
            return None
        value = value.get(part)
    return value


def _night(survey, value: float) -> dt.date | None:
    """UTC date of a time value, None outside 1990..2099 (corrupt or synthetic times)."""
    epoch = 2440587.5 if survey.time_scale == "jd" else 40587.0
    days = math.floor(value - epoch)
    if not (dt.date(1990, 1, 1) - dt.date(1970, 1, 1)).days <= days < (dt.date(2100, 1, 1) - dt.date(1970, 1, 1)).days:
        return None
    return dt.date(1970, 1, 1) + dt.timedelta(days=days)


def expected_alerts(paths: list[str], survey, id_fallback: str | None = None) -> dict:
    """alert id -> (night, record) of the first valid occurrence, in import order.

    Ids are unique within a night (the importer's rule); keys are (night, id) pairs for surveys
    whose samples reuse an id across nights (ELAsTiCC's placeholder alertId), plain ids otherwise.
    """
    out: dict = {}
    for path in paths:
        for record in _records(path):
            alert_id = record.get(survey.alert_id)
            if alert_id is None and id_fallback:
                alert_id = _get(record, id_fallback)
            time = _get(record, survey.time_column)
            if alert_id is None or time is None or _night(survey, time) is None:
                continue
            key = (_night(survey, time), alert_id) if survey is ELASTICC else alert_id
            out.setdefault(key, (_night(survey, time), record))
    return out


def alert_files(*roots: Path) -> list[str]:
    return [path for path, _ in discover_files(roots) if sniff_format(path) != "unknown"]


def per_night(expected: dict) -> dict[dt.date, int]:
    counts: dict[dt.date, int] = {}
    for night, _ in expected.values():
        counts[night] = counts.get(night, 0) + 1
    return counts


def read_archive(root: str, survey, columns=None) -> pa.Table:
    """The whole survey archive with pyarrow.dataset (hive partitions, unified schema)."""
    dataset = ds.dataset(science_root(root, survey.name), format="parquet", partitioning="hive",
                         schema=survey.archive_schema)  # fmt: skip
    return dataset.to_table(columns=columns)


def spark_read(spark, root: str, survey, nights):
    """The selected nights through the transfer job's reader (explicit unified schema)."""
    from fink_pipeline.transfer.select import read_nights

    plan = SimpleNamespace(survey=survey, archive_root=root, night_paths=[night_dir(root, survey.name, n) for n in nights])
    return read_nights(spark, plan)


# --------------------------------------------------------------------------------------------
# ZTF: every schema version of the samples
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ztf_import(shared_data, tmp_path_factory):
    """All ZTF samples imported once (raw 3.2/3.3/4.02, Fink-rewritten 4.02, Fink Avro incl.
    snappy, Fink Parquet incl. the science_parquet layouts)."""
    root = str(tmp_path_factory.mktemp("ztf_archive"))
    sources = [shared_data / "ztf" / "alerts", shared_data / "ztf" / "fink"]
    files = alert_files(*sources)
    report = import_alerts(sources, ZTF, root)
    return SimpleNamespace(root=root, report=report, files=files, expected=expected_alerts(files, ZTF))


def test_every_ztf_sample_file_imports_without_error(ztf_import):
    report = ztf_import.report
    assert report.failed_files == [], [(f.path, f.error) for f in report.failed_files]
    read = {f.path for f in report.files if not f.ignored}
    assert read == set(ztf_import.files)
    formats = {f.format for f in report.files if not f.ignored}
    assert formats == {"avro", "parquet"}
    writers = {f.writer_schema for f in report.files if not f.ignored}
    assert {"ztf.alert", "topLevelRecord", "topLevelRecord.value", "parquet"} <= writers
    # schema versions present: 3.2, 3.3 and 4.02 raw packets
    versions = {r["schemavsn"] for r in (rec for _, rec in ztf_import.expected.values())}
    assert {"3.2", "3.3", "4.02"} <= versions
    assert report.total_read == sum(1 for path in ztf_import.files for _ in _records(path))
    assert report.total_imported + report.total_duplicates + report.total_invalid == report.total_read


def test_ztf_schema_evolution_is_reported(ztf_import):
    by_name = {Path(f.path).name: f for f in ztf_import.report.files}
    # ZTF 4.02 forced photometry has no place in Fink's archive: reported, not silently lost
    v402 = next(f for name, f in by_name.items() if name.endswith("v4_02.avro"))
    assert v402.dropped_fields == ("fp_hists",)
    # legacy Fink distribution fields are reported as dropped
    multi = by_name["avro_multi_alerts.avro"]
    assert {"topic", "rfscore", "snn"} <= set(multi.dropped_fields)
    # 2021 Fink stored `mulens` as a record: kept as null, and said so
    tracklet = next(f for name, f in by_name.items() if name.startswith("part-00000-3a52a51e"))
    assert any("mulens" in issue for issue in tracklet.incompatible_fields)
    # partition columns of consumer-side Parquet are expected, not "dropped"
    consumer = by_name["part-0-0-435829.parquet"]
    assert not {"year", "month", "day", "finkclass", "tnsclass"} & set(consumer.dropped_fields)


def test_imported_ztf_nights_match_sources_with_pyarrow(ztf_import):
    expected = ztf_import.expected
    assert list_nights(ztf_import.root, "ztf") == sorted(per_night(expected))
    assert ztf_import.report.per_night == per_night(expected)
    table = read_archive(ztf_import.root, ZTF, ["candid", "objectId", "candidate", "cdsxmatch"])
    assert table.num_rows == len(expected)
    got = table.to_pylist()
    assert len({row["candid"] for row in got}) == len(got)
    for row in got:
        night, record = expected[row["candid"]]
        assert row["objectId"] == record["objectId"]
        assert row["candidate"]["jd"] == record["candidate"]["jd"]
        assert row["candidate"]["magpsf"] == pytest.approx(record["candidate"]["magpsf"], rel=1e-6)
        assert ZTF.night_of(row["candidate"]["jd"]) == night
    # older packets have no Fink values: null, never invented
    raw = {row["candid"]: row for row in got if "cdsxmatch" not in expected[row["candid"]][1]}
    assert raw and all(row["cdsxmatch"] is None for row in raw.values())


def test_each_night_folder_holds_exactly_its_alerts(ztf_import):
    counts = per_night(ztf_import.expected)
    for night, count in counts.items():
        folder = night_dir(ztf_import.root, "ztf", night)
        table = ds.dataset(folder, format="parquet").to_table(columns=["candidate"])
        assert table.num_rows == count
        assert {ZTF.night_of(c["jd"]) for c in table.column("candidate").to_pylist()} == {night}
        assert "year" not in pq.read_schema(next(Path(folder).glob("*.parquet"))).names


@pytest.mark.spark
def test_imported_ztf_nights_read_with_spark_unified_schema(ztf_import, spark):
    expected = ztf_import.expected
    nights = sorted(per_night(expected))
    df = spark_read(spark, ztf_import.root, ZTF, nights)
    rows = df.select("candid", "objectId", "candidate.jd", "candidate.magpsf", "cdsxmatch", "year", "month", "day").collect()
    assert len(rows) == len(expected)
    for row in rows:
        night, record = expected[row["candid"]]
        assert row["objectId"] == record["objectId"]
        assert row["jd"] == record["candidate"]["jd"]
        assert row["magpsf"] == pytest.approx(record["candidate"]["magpsf"], rel=1e-6)
        assert (row["year"], row["month"], row["day"]) == (night.year, night.month, night.day)
    # nights written from raw 3.x packets and from Fink 4.1 output read together
    with_fink = {r["candid"] for r in rows if r["cdsxmatch"] is not None}
    assert with_fink and len(with_fink) < len(rows)


def test_reimport_adds_nothing_and_keeps_files(ztf_import):
    root = ztf_import.root
    before = sorted(p.relative_to(root) for p in Path(root).rglob("*.parquet"))
    again = import_alerts([Path(f) for f in ztf_import.files], ZTF, root)
    assert again.total_imported == 0
    assert again.nights == []
    assert again.total_duplicates + again.total_invalid == again.total_read
    assert sorted(p.relative_to(root) for p in Path(root).rglob("*.parquet")) == before
    assert not list(Path(science_root(root, "ztf")).glob("_staging/*"))


def test_import_adds_to_an_existing_night_without_duplicates(shared_data, tmp_path):
    night_folder = shared_data / "ztf" / "alerts" / "v3.3_night-20200101"
    files = sorted(str(p) for p in night_folder.glob("*.avro"))
    first = import_alerts(files[:20], ZTF, str(tmp_path))
    second = import_alerts(files[10:], ZTF, str(tmp_path))
    assert first.total_imported == 20
    assert second.total_imported == len(files) - 20
    assert second.total_duplicates == 10
    table = read_archive(str(tmp_path), ZTF, ["candid"])
    assert sorted(table.column("candid").to_pylist()) == sorted(expected_alerts(files, ZTF))
    parts = list(Path(night_dir(str(tmp_path), "ztf", dt.date(2020, 1, 1))).glob("*.parquet"))
    assert len(parts) == 2  # one per import, each renamed in whole


def test_small_buffers_and_few_open_files_give_the_same_archive(shared_data, tmp_path):
    """Streaming limits: chunks of 7 records, 1 MB of buffers, 2 open part files at once."""
    sources = [shared_data / "ztf" / "alerts", shared_data / "ztf" / "fink" / "ftransfer_avro"]
    default = import_alerts(sources, ZTF, str(tmp_path / "a"))
    tight = import_alerts(sources, ZTF, str(tmp_path / "b"), chunk_rows=7, max_buffer_bytes=1 << 20, max_open_writers=2)
    assert tight.per_night == default.per_night
    assert sum(n.files for n in tight.nights) > sum(n.files for n in default.nights)
    a = read_archive(str(tmp_path / "a"), ZTF, ["candid", "objectId"]).sort_by("candid")
    b = read_archive(str(tmp_path / "b"), ZTF, ["candid", "objectId"]).sort_by("candid")
    assert a.equals(b)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_bad_files_are_reported_and_the_rest_imported(shared_data, tmp_path):
    good = shared_data / "ztf" / "alerts" / "v3.2_night-20181129"
    truncated = tmp_path / "in" / "truncated.avro"
    truncated.parent.mkdir()
    source = shared_data / "ztf" / "fink" / "ftransfer_avro" / "part-3-305711.avro"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    garbage = tmp_path / "in" / "notes.txt"
    garbage.write_text("not alerts")
    lsst_file = next((shared_data / "lsst" / "fink" / "ftransfer_avro").glob("*.avro"))
    report = import_alerts([good, truncated, garbage, lsst_file], ZTF, str(tmp_path / "archive"))
    by_path = {Path(f.path).name: f for f in report.files}
    assert by_path["truncated.avro"].error
    assert by_path["notes.txt"].skipped and "not an alert file" in by_path["notes.txt"].error
    assert "candidate.jd" in by_path[lsst_file.name].error and "--survey" in by_path[lsst_file.name].error
    assert report.per_night[dt.date(2018, 11, 29)] == 11
    # what was readable of the truncated file is imported (a re-run completes it without duplicates)
    assert by_path["truncated.avro"].imported == by_path["truncated.avro"].rows_read


def test_missing_path_and_confluent_without_schemas(shared_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        import_alerts([tmp_path / "no-such-file.avro"], ZTF, str(tmp_path))
    framed = shared_data / "lsst" / "alerts" / "wire_format_confluent" / "lsst.v9_0.avro"
    report = import_alerts([framed], LSST, str(tmp_path))
    assert report.failed_files and "--schemas" in report.failed_files[0].error


def test_a_failing_import_publishes_nothing(shared_data, tmp_path):
    def explode(_rows):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        import_alerts([shared_data / "ztf" / "alerts" / "v3.2_night-20181129"], ZTF, str(tmp_path), progress=explode)
    assert list_nights(str(tmp_path), "ztf") == []
    assert not list(Path(science_root(str(tmp_path), "ztf")).glob("_staging/*"))


# --------------------------------------------------------------------------------------------
# Rubin and ELAsTiCC
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rubin_import(shared_data, tmp_path_factory):
    root = str(tmp_path_factory.mktemp("rubin_archive"))
    schemas = shared_data / "lsst" / "schemas" / "lsst-alert-packet"
    sources = [shared_data / "lsst" / "alerts", shared_data / "lsst" / "fink"]
    report = import_alerts(sources, LSST, root, schemas_dir=schemas)
    files = alert_files(*sources)
    return SimpleNamespace(root=root, report=report,
                           expected=expected_alerts(files, LSST, id_fallback="diaSource.diaSourceId"))  # fmt: skip


def test_rubin_samples_import_with_their_time_column(rubin_import):
    report = rubin_import.report
    assert report.failed_files == [], [(f.path, f.error) for f in report.failed_files]
    framed = [f for f in report.files if f.format == "confluent"]
    assert len(framed) == 3 and all(f.rows_read == 1 for f in framed)
    # every field of every Rubin version and Fink output has a place in the unified schema
    assert all(f.dropped_fields == () and f.incompatible_fields == () for f in report.files)
    # the synthetic v7_4 sample has midpointMjdTai = 1480360995: counted invalid, not archived
    v74 = next(f for f in report.files if f.path.endswith("v7_4/fakeAlert.avro"))
    assert v74.invalid_rows == 1 and v74.imported == 0
    expected = rubin_import.expected
    assert report.per_night == per_night(expected)
    assert dt.date(2025, 9, 6) in report.per_night and dt.date(2026, 3, 6) in report.per_night
    table = read_archive(rubin_import.root, LSST, ["diaSourceId", "alertId", "diaSource", "lsst_schema_version"])
    assert table.num_rows == len(expected)
    for row in table.to_pylist():
        night, record = expected[row["diaSourceId"]]
        assert row["diaSource"]["midpointMjdTai"] == record["diaSource"]["midpointMjdTai"]
        assert LSST.night_of(row["diaSource"]["midpointMjdTai"]) == night
    # lsst.v7_4 packets: alertId kept, diaSourceId filled from the triggering diaSource
    v74_rows = [r for r in table.to_pylist() if r["alertId"] is not None]
    assert len(v74_rows) == 20
    assert all(r["alertId"] == r["diaSourceId"] == r["diaSource"]["diaSourceId"] for r in v74_rows)


@pytest.mark.spark
def test_rubin_nights_of_several_versions_read_together_with_spark(rubin_import, spark):
    nights = sorted(per_night(rubin_import.expected))
    df = spark_read(spark, rubin_import.root, LSST, nights)
    rows = df.select("diaSourceId", "diaSource.midpointMjdTai", "alertId", "mpc_orbits", "MPCORB", "cdsxmatch").collect()
    assert len(rows) == len(rubin_import.expected)
    assert {r["diaSourceId"] for r in rows} == set(rubin_import.expected)
    assert any(r["cdsxmatch"] is not None for r in rows)  # Fink 2025 flat values (v7_4 night)
    assert any(r["alertId"] is None for r in rows)  # newer packets


def test_elasticc_samples_import_by_midpointtai(shared_data, tmp_path):
    sources = [shared_data / "elasticc"]
    report = import_alerts(sources, ELASTICC, str(tmp_path))
    assert report.failed_files == []
    assert {f.format for f in report.files if not f.ignored} == {"avro", "avro.gz", "parquet"}
    assert all(f.dropped_fields == () for f in report.files)
    expected = expected_alerts(alert_files(*sources), ELASTICC)
    assert report.per_night == per_night(expected)
    assert len(report.nights) > 80  # the samples spread over many simulated nights
    table = read_archive(str(tmp_path), ELASTICC, ["alertId", "diaSource", "pIa", "classId"])
    assert table.num_rows == len(expected)
    for row in table.to_pylist():
        _, record = expected[(ELASTICC.night_of(row["diaSource"]["midPointTai"]), row["alertId"])]
        assert row["diaSource"]["midPointTai"] == record["diaSource"]["midPointTai"]
        assert row["pIa"] == record.get("pIa")
    assert table.column("classId").null_count == table.num_rows  # no truth in these samples
    # the samples reuse one placeholder alertId: distinct alerts of distinct nights, all kept
    placeholder = [r for r in table.to_pylist() if r["alertId"] == 1231321321]
    assert len(placeholder) == 31  # the 29 processed rows and the two v0_9 sample packets


def test_cli_import_prints_nights_and_exit_code(shared_data, tmp_path, capsys):
    from fink_pipeline.cli.main import main

    folder = shared_data / "ztf" / "alerts" / "v3.2_night-20181129"
    code = main(["archive", "import", str(folder), "--survey", "ztf", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "2018-11-29" in out and "11 alerts imported into 1 nights" in out
    from fink_pipeline.archive.stats import stored_nights

    assert stored_nights(str(tmp_path), "ztf") == [dt.date(2018, 11, 29)]  # statistics of the imported night
    bad = tmp_path / "bad.avro"
    bad.write_bytes(b"Obj\x01garbage")
    code = main(["archive", "import", str(bad), "--survey", "ztf", "--root", str(tmp_path)])
    assert code == 1
    assert "skipped" in capsys.readouterr().out
    assert os.path.isdir(night_dir(str(tmp_path), "ztf", dt.date(2018, 11, 29)))
    shutil.rmtree(tmp_path / "ztf")
