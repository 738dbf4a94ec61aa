"""Rubin (LSST) and ELAsTiCC transfers end to end: generated archive -> Dagster run (Spark ->
Kafka -> Delta), checked against an independent pyarrow selection of the archive files.

LSST alerts carry no class label (Fink's LSST service selects with conditions and blocks and
partitions by time); ELAsTiCC alerts carry their true `classId`, which selections filter on and
tables are partitioned by.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights, night_dir
from fink_pipeline.consumer.readers import read_delta_table
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.plan import plan_transfer
from fink_pipeline.transfer.request import RequestError, TransferRequest

LSST_START = dt.date(2026, 6, 1)
ELASTICC_START = dt.date(2023, 6, 1)
ALERTS_PER_NIGHT = 800


@pytest.fixture(scope="module")
def rubin_archive(tmp_path_factory) -> str:
    """3 nights x 800 alerts of each survey in one archive root (no cutouts)."""
    root = str(tmp_path_factory.mktemp("rubin_archive"))
    generate_archive(get_survey("lsst"), root, LSST_START, nights=3, alerts_per_night=ALERTS_PER_NIGHT, seed=3,
                     with_cutouts=False)
    generate_archive(get_survey("elasticc"), root, ELASTICC_START, nights=3, alerts_per_night=ALERTS_PER_NIGHT,
                     seed=4, with_cutouts=False)
    return root


def archive_nights(root: str, survey: str, nights: list[dt.date]) -> pa.Table:
    """The given nights of the archive, read with pyarrow alone."""
    return pa.concat_tables(
        [ds.dataset(night_dir(root, survey, n), format="parquet").to_table() for n in nights],
        promote_options="permissive",
    )


def run_request(request: TransferRequest, broker: str, root: str, tmp_path: Path):
    import dagster as dg

    from fink_pipeline.orchestration.launch import run_transfer

    with dg.instance_for_test() as instance:
        return run_transfer(request, bootstrap=broker, archive_root=root, table_root=str(tmp_path / "tables"),
                            request_root=str(tmp_path / "requests"), instance=instance)


def published(result) -> int:
    metadata = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("transferred_alerts")}
    return metadata["alert_topic"]["alerts_published"].value


def estimated(result) -> int:
    return result.asset_materializations_for_node("transfer_request")[0].metadata["estimated_alerts"].value


@pytest.mark.spark
@pytest.mark.kafka
def test_lsst_transfer_with_a_condition_lands_in_a_time_partitioned_table(spark, kafka_broker, rubin_archive,
                                                                           tmp_path):
    nights = [LSST_START, LSST_START + dt.timedelta(days=1)]
    request = TransferRequest(survey="lsst", start=nights[0].isoformat(), stop=nights[-1].isoformat(),
                              content="light", conditions=["diaSource.snr > 10"]).with_identity()
    assert request.topic.startswith("ftransfer_lsst_")
    result = run_request(request, kafka_broker, rubin_archive, tmp_path)
    assert result.success

    archive = archive_nights(rubin_archive, "lsst", nights)
    expected = archive.filter(pc.greater(pc.struct_field(archive["diaSource"], "snr"), 10))
    assert 0 < expected.num_rows < archive.num_rows
    assert published(result) == expected.num_rows
    # a condition makes the estimate a sampled one: close, not exact
    assert estimated(result) == pytest.approx(expected.num_rows, rel=0.25)

    table_uri = tmp_path / "tables" / request.topic
    table = read_delta_table(str(table_uri))
    assert sorted(table["diaSourceId"].to_pylist()) == sorted(expected["diaSourceId"].to_pylist())
    # light static packet: diaSource fields flattened to the root, no sections, no cutouts
    assert {"diaSourceId", "diaObjectId", "snr", "psfFlux", "band", "midpointMjdTai"} <= set(table.column_names)
    assert not {"diaSource", "prvDiaSources", "cutoutScience"} & set(table.column_names)
    assert pc.min(table["snr"]).as_py() > 10
    # partitioned by the night of diaSource.midpointMjdTai, as fink-client does for LSST
    days = sorted(p.name for p in (table_uri / "year=2026" / "month=06").iterdir())
    assert days == ["day=01", "day=02"]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"row_count_matches_published": True, "candid_unique": True}


@pytest.mark.spark
@pytest.mark.kafka
def test_elasticc_transfer_of_two_classes_is_partitioned_by_class_id(spark, kafka_broker, rubin_archive, tmp_path):
    nights = [ELASTICC_START + dt.timedelta(days=1), ELASTICC_START + dt.timedelta(days=2)]
    classes = ["111", "212"]  # SN Ia and RR Lyrae
    request = TransferRequest(survey="elasticc", start=nights[0].isoformat(), stop=nights[-1].isoformat(),
                              classes=classes, content="light").with_identity()
    result = run_request(request, kafka_broker, rubin_archive, tmp_path)
    assert result.success

    archive = archive_nights(rubin_archive, "elasticc", nights)
    expected = archive.filter(pc.is_in(archive["classId"], value_set=pa.array([111, 212], pa.int32())))
    assert expected.num_rows > 100
    assert published(result) == expected.num_rows
    # nights and classes only: exact from the nightly statistics
    assert estimated(result) == expected.num_rows

    table_uri = tmp_path / "tables" / request.topic
    table = read_delta_table(str(table_uri))
    assert sorted(table["alertId"].to_pylist()) == sorted(expected["alertId"].to_pylist())
    assert {str(v) for v in table["classId"].to_pylist()} == set(classes)
    assert sorted(p.name for p in table_uri.iterdir() if p.name.startswith("classId=")) == [
        "classId=111", "classId=212"
    ]
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"row_count_matches_published": True, "candid_unique": True}


@pytest.mark.parametrize(
    ("survey", "start", "classes", "message"),
    [
        ("lsst", LSST_START, ["SN candidate"], "classes: lsst alerts carry no class label"),
        ("elasticc", ELASTICC_START, ["SN Ia"], "classes: 'SN Ia' is not a known elasticc classId; did you mean '111' \\(SN Ia\\)\\?"),
        ("elasticc", ELASTICC_START, ["999"], "classes: '999' is not a known elasticc classId; choose among 111 \\(SN Ia\\), 112"),
    ],
)
def test_class_filters_a_survey_cannot_apply_fail_before_spark(rubin_archive, survey, start, classes, message):
    request = TransferRequest(survey=survey, start=start.isoformat(), stop=start.isoformat(), classes=classes)
    with pytest.raises(RequestError, match=message):
        plan_transfer(request, rubin_archive, list_nights(rubin_archive, survey))


@pytest.mark.spark
def test_lsst_tns_type_is_recomputed_from_the_catalogue_before_conditions(spark, rubin_archive, tmp_path):
    """Fink's LSST job matches TNS again (1.5", diaSource.ra/dec) before the extra conditions:
    a catalogue source 0.5" from one alert and one exactly on another give their types (bare,
    no "(TNS) " prefix), one 2" away gives nothing, and a condition on the recomputed column
    selects exactly those; without a catalogue the stored values are kept (with a note), read on
    a 10,000-alert night since the generator types only the TNS-classified transients (~0.06 %)."""
    from fink_pipeline.transfer.select import build_publication, build_transfer_dataframe

    night = LSST_START
    archive = archive_nights(rubin_archive, "lsst", [night])
    ids = archive.column("diaSourceId").to_pylist()
    source = archive.column("diaSource").combine_chunks()
    ra, dec = source.field("ra").to_pylist(), source.field("dec").to_pylist()
    picked = [i for i in range(len(ids)) if abs(dec[i]) < 80][:3]
    offset = 0.5 / 3600.0
    catalog = pa.table({
        "ra": [ra[picked[0]], ra[picked[1]], ra[picked[2]]],
        "declination": [dec[picked[0]] + offset, dec[picked[1]], dec[picked[2]] + 4 * offset],
        "type": ["SN Ia", "TDE", "SN II"],
    })
    fields = dict(survey="lsst", start=night.isoformat(), stop=night.isoformat(),
                  content=["diaSourceId", "tns_type_recomputed"])
    request = TransferRequest(**fields, conditions=["tns_type_recomputed != 'Unknown'"])
    plan = plan_transfer(request, rubin_archive, list_nights(rubin_archive, "lsst"), tns_catalog=catalog)
    rows = {r["diaSourceId"]: r["tns_type_recomputed"] for r in build_transfer_dataframe(spark, plan).collect()}
    assert rows == {ids[picked[0]]: "SN Ia", ids[picked[1]]: "TDE"}
    # the publishing path that reads the content from the archive files with Arrow must take the
    # recomputed value from Spark, not the stored one
    publication = build_publication(spark, plan)
    assert publication.arrow_content is not None and "tns_type_recomputed" in publication.arrow_content.carried
    carried = {r["tns_type_recomputed"] for r in publication.rows.collect()}
    assert carried == {"SN Ia", "TDE"}

    typed_root = str(tmp_path / "typed")
    generate_archive(get_survey("lsst"), typed_root, night, nights=1, alerts_per_night=10_000, seed=3,
                     with_cutouts=False)  # fmt: skip
    typed = archive_nights(typed_root, "lsst", [night])
    stored = dict(zip(typed.column("diaSourceId").to_pylist(), typed.column("tns_type_recomputed").to_pylist()))
    plain = plan_transfer(TransferRequest(**fields), typed_root, list_nights(typed_root, "lsst"))
    assert plain.tns_catalog is None and any("tns_type_recomputed keeps the values stored" in n for n in plain.notes)
    kept = {r["diaSourceId"]: r["tns_type_recomputed"] for r in build_transfer_dataframe(spark, plain).collect()}
    assert kept == stored and set(stored.values()) - {"Unknown"}, "the generator stores some TNS types"
