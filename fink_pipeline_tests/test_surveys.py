"""Survey registry, the Rubin (LSST) and ELAsTiCC archive schemas and their generators."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights, night_dir
from fink_pipeline.surveys import UnknownSurveyError, available_surveys, get_survey
from fink_pipeline.surveys.base import flatten_schema

NIGHT = dt.date(2026, 3, 6)


def generated(name: str, n: int, seed: int = 0, with_cutouts: bool = False, batch_size: int = 700, night=NIGHT):
    survey = get_survey(name)
    return pa.Table.from_batches(
        list(survey.generate_night(night, n, seed, with_cutouts=with_cutouts, batch_size=batch_size)),
        schema=survey.archive_schema,
    )


def test_registry_knows_three_surveys_with_their_time_axes():
    assert available_surveys() == ["elasticc", "lsst", "ztf"]
    with pytest.raises(UnknownSurveyError, match="choose one of elasticc, lsst, ztf"):
        get_survey("panstarrs")
    lsst, elasticc = get_survey("LSST"), get_survey("elasticc")
    assert (lsst.time_column, lsst.time_scale, lsst.alert_id) == ("diaSource.midpointMjdTai", "mjd", "diaSourceId")
    assert (elasticc.time_column, elasticc.time_scale, elasticc.alert_id) == ("diaSource.midPointTai", "mjd", "alertId")
    assert (lsst.default_partitionby, elasticc.default_partitionby) == ("time", "classId")
    assert (lsst.class_columns, elasticc.class_columns) == ((), ("classId",))
    assert (lsst.topic_prefix, elasticc.topic_prefix) == ("ftransfer_lsst", "ftransfer_elasticc")
    # MJD 61105.0 is 2026-03-06 00:00 UTC
    assert lsst.night_of(61105.0) == dt.date(2026, 3, 6) and lsst.night_of(61105.9999) == dt.date(2026, 3, 6)


@pytest.mark.parametrize("name", ["lsst", "elasticc"])
def test_archive_schema_holds_ids_time_light_fields_and_no_partition_columns(name):
    survey = get_survey(name)
    paths = survey.field_paths
    light = survey.packets["light"]
    for path in (survey.time_column, survey.alert_id, survey.object_id, *survey.class_columns, *light.fields):
        assert path in paths, path
    assert pa.types.is_floating(paths[survey.time_column])
    assert not {"year", "month", "day"} & set(survey.archive_schema.names)
    assert all(f.nullable for f in survey.archive_schema)
    assert set(light.all_but) - {"year", "month", "day"} <= set(survey.archive_schema.names)


def test_lsst_schema_is_the_fink_full_packet_plus_older_versions(shared_data):
    import pyarrow.parquet as pq

    fink = pq.read_schema(next((shared_data / "lsst" / "fink" / "ftransfer_avro").glob("*.metadata")))
    ours = get_survey("lsst").archive_schema
    # Fink's root fields, in Fink's order, then the older-version and 2025 Fink fields
    assert ours.names[: len(fink.names) - 4] == [n for n in fink.names if n not in ("year", "month", "day", "tns_type_recomputed")]
    theirs = flatten_schema(fink)
    mine = flatten_schema(ours)
    for path, dtype in theirs.items():
        if path.split(".")[0] in ("year", "month", "day"):
            continue
        assert path in mine, path
        if path.endswith(("Timestamp", "timestamp")):
            assert pa.types.is_timestamp(mine[path])  # strings only in the transfer output
        elif not pa.types.is_map(dtype):
            assert str(mine[path]).split("<")[0] == str(dtype).split("<")[0], path
    assert {"alertId", "MPCORB", "ssObject", "prvDiaNondetectionLimits", "cdsxmatch"} <= set(ours.names)


@pytest.mark.parametrize("name", ["lsst", "elasticc"])
def test_generator_matches_schema_night_and_ids(name):
    survey = get_survey(name)
    table = generated(name, 2500)
    assert table.schema == survey.archive_schema
    assert table.num_rows == 2500
    times = pc.struct_field(table.column(survey.time_column.split(".")[0]), survey.time_column.split(".")[1])
    nights = {survey.night_of(t) for t in (pc.min(times).as_py(), pc.max(times).as_py())}
    assert nights == {NIGHT}
    ids = table.column(survey.alert_id)
    assert ids.null_count == 0 and pc.count_distinct(ids).as_py() == 2500
    # another night never reuses an id
    other = generated(name, 500, night=NIGHT + dt.timedelta(days=1))
    assert not set(other.column(survey.alert_id).to_pylist()) & set(ids.to_pylist())


@pytest.mark.parametrize("name", ["lsst", "elasticc"])
def test_generator_is_deterministic_and_batch_size_independent(name):
    a = generated(name, 1300, seed=3, batch_size=400)
    b = generated(name, 1300, seed=3, batch_size=5000)
    assert a.equals(b)
    assert not generated(name, 1300, seed=4).equals(a)


def test_lsst_generator_populations_history_and_fink_values():
    table = generated("lsst", 4000)
    rows = table.select(["diaSource", "diaObject", "ssSource", "pred", "misc"]).to_pylist()
    sso = np.array([r["ssSource"] is not None for r in rows])
    # solar-system detections: 4.6 % (b_is_solar_system yield), no diaObject, Fink is_sso
    assert 0.03 < sso.mean() < 0.065
    assert all((r["diaObject"] is None) == s for r, s in zip(rows, sso))
    assert all(r["pred"]["is_sso"] == s for r, s in zip(rows, sso))
    # b_is_new (first seen now, asteroids included) yields 0.219: 17.3 % first static detections
    first = np.array([bool(r["pred"]["is_first"]) for r in rows])
    assert 0.14 < first.mean() < 0.21
    seen_now = np.array([r["misc"]["firstDiaSourceMjdTaiFink"] == r["diaSource"]["midpointMjdTai"] for r in rows])
    assert 0.19 < seen_now.mean() < 0.25 and (seen_now == (first | sso)).all()
    for r in table.slice(0, 300).select(["diaSource", "diaObject", "prvDiaSources", "lc_features"]).to_pylist():
        if r["diaObject"] is not None:
            history = r["prvDiaSources"]
            assert r["diaObject"]["nDiaSources"] == len(history) + 1
            assert all(p["midpointMjdTai"] < r["diaSource"]["midpointMjdTai"] for p in history)
            assert all(p["diaObjectId"] == r["diaSource"]["diaObjectId"] for p in history)
            bands = {p["band"] for p in history}
            assert {k for k, _ in (r["lc_features"] or [])} == bands
    snr = np.array([r["diaSource"]["snr"] for r in rows])
    assert snr.min() >= 5.0 and 5.5 < np.median(snr) < 9  # samples: p50 5.9
    assert {r["diaSource"]["band"] for r in rows} == set("ugrizy")


def test_lsst_cutouts_are_unique_fits_stamps_and_change_nothing_else():
    with_cutouts = generated("lsst", 600, with_cutouts=True)
    without = generated("lsst", 600, with_cutouts=False)
    cutouts = ("cutoutScience", "cutoutTemplate", "cutoutDifference")
    assert with_cutouts.drop_columns(list(cutouts)).equals(without.drop_columns(list(cutouts)))
    assert all(without.column(c).null_count == 600 for c in cutouts)
    science = with_cutouts.column("cutoutScience").to_pylist()
    assert all(s.startswith(b"SIMPLE  =") and len(s) % 2880 == 0 for s in science)
    assert {len(s) for s in science} == {34560}  # the most common real size
    assert len(set(science)) == 600


def test_elasticc_generator_classes_and_light_curve():
    table = generated("elasticc", 3000)
    classes = table.column("classId").to_pylist()
    assert set(classes) <= {111, 112, 113, 114, 115, 121, 122, 123, 124, 131, 132, 133, 134, 135, 211, 212, 213, 214, 221}
    assert len(set(classes)) >= 12
    rows = table.select(["alertId", "diaSource", "prvDiaSources", "cmidPointTai", "len"]).to_pylist()
    for r in rows[:500]:
        assert r["alertId"] == r["diaSource"]["diaSourceId"] == r["diaSource"]["diaObjectId"] * 2000 + len(r["prvDiaSources"]) + 1
        assert len(r["cmidPointTai"]) == len(r["prvDiaSources"]) + 1
        assert r["cmidPointTai"][-1] == r["diaSource"]["midPointTai"] == max(r["cmidPointTai"])
        assert 1 <= r["len"] <= len(r["cmidPointTai"])
    assert table.column("cutoutDifference").null_count == 3000  # as in Fink's ELAsTiCC archive


@pytest.mark.parametrize("name", ["ztf", "lsst", "elasticc"])
def test_cli_generate_writes_every_survey(name, tmp_path):
    from fink_pipeline.cli.main import main

    code = main(["archive", "generate", "--survey", name, "--start", "2026-03-05", "--nights", "2",
                 "--alerts-per-night", "120", "--root", str(tmp_path), "--no-cutouts"])  # fmt: skip
    assert code == 0
    assert list_nights(str(tmp_path), name) == [dt.date(2026, 3, 5), dt.date(2026, 3, 6)]
    # nightly statistics come with the nights: estimates read them, not the archive
    from fink_pipeline.archive.stats import night_statistics, stored_nights

    assert stored_nights(str(tmp_path), name) == [dt.date(2026, 3, 5), dt.date(2026, 3, 6)]
    stats, computed = night_statistics(get_survey(name), str(tmp_path), dt.date(2026, 3, 5))
    assert not computed and stats.total == 120


@pytest.mark.spark
def test_generated_and_imported_rubin_nights_read_together_with_spark(spark, shared_data, tmp_path):
    """A generated lsst.v10_0 night and imported v7_4 / v9_0 nights, through `read_nights`."""
    from fink_pipeline.archive.importer import import_alerts
    from fink_pipeline.transfer.select import read_nights

    lsst = get_survey("lsst")
    root = str(tmp_path)
    generate_archive(lsst, root, NIGHT, 1, 300, with_cutouts=False)
    imported = import_alerts([shared_data / "lsst" / "fink" / "processed_v7_4_avro",
                              shared_data / "lsst" / "alerts" / "rubin_v9_0_fink-ingested"], lsst, root)  # fmt: skip
    nights = list_nights(root, "lsst")
    assert nights == [dt.date(2025, 4, 11), dt.date(2025, 9, 6), NIGHT]
    plan = SimpleNamespace(survey=lsst, archive_root=root, night_paths=[night_dir(root, "lsst", n) for n in nights])
    df = read_nights(spark, plan)
    rows = df.select("year", "month", "day", "lsst_schema_version", "fink_broker_version", "alertId").collect()
    counts: dict = {}
    by_version: dict = {}
    for r in rows:
        counts[(r["year"], r["month"], r["day"])] = counts.get((r["year"], r["month"], r["day"]), 0) + 1
        fink, alert_ids = by_version.get(r["lsst_schema_version"], (0, 0))
        by_version[r["lsst_schema_version"]] = (fink + (r["fink_broker_version"] is not None),
                                               alert_ids + (r["alertId"] is not None))  # fmt: skip
    assert counts == {(2025, 4, 11): 20, (2025, 9, 6): 28, (2026, 3, 6): 300}
    assert imported.total_imported == 48
    assert by_version["lsst.v10_0"] == (300, 0)  # generated: Fink values, no v7_4 alertId
    assert by_version["lsst.v9_0"] == (0, 0)  # ingested before Fink's science step
    assert by_version[None] == (20, 20)  # v7_4 packets carry no lsst_schema_version


@pytest.mark.spark
def test_generated_elasticc_night_reads_with_spark_and_filters_on_classid(spark, tmp_path):
    from pyspark.sql import functions as F

    from fink_pipeline.transfer.select import read_nights

    survey = get_survey("elasticc")
    report = generate_archive(survey, str(tmp_path), NIGHT, 1, 400)
    plan = SimpleNamespace(survey=survey, archive_root=str(tmp_path), night_paths=[report.nights[0].path])
    df = read_nights(spark, plan)
    expected = generated("elasticc", 400).column("classId").to_pylist().count(111)
    assert df.filter(F.col("classId") == 111).count() == expected > 0
