"""Nightly statistics and transfer estimates against independent counts.

Statistics (pyarrow + the Arrow classifier) are compared with counts made by the pandas
transliteration of Fink's classification (test_ztf_classification) and a brute-force TNS match
(test_transfer_job). Estimates are exact for nights and classes; with extra conditions or a
live-stream filter they come from a sample evaluated by Spark and must land within 10 % of the
true count, inside their confidence interval. The size estimate must equal the Avro payload the
job would publish. The 3 x 50,000 and 2 x 50,000 sizes of the acceptance criteria are marked
slow; the default suite runs the same checks on a few thousand alerts.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fink_pipeline.archive import stats as S
from fink_pipeline.archive.generate import generate_archive, write_night
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.ztf.classification import FINK_CLASS_LABELS
from fink_pipeline.surveys.ztf.tns import prepare_tns_catalog
from fink_pipeline.transfer.estimate import Estimate, estimate_request, wilson_interval
from fink_pipeline.transfer.plan import plan_transfer
from fink_pipeline.transfer.sample import project_arrow, size_sample
from fink_pipeline.transfer.request import request_from_mapping
from fink_pipeline_tests.test_transfer_job import (
    archive_frame,
    in_classes,
    reference_filter,
    tns_catalog_from_archive,
    with_tns,
)

ZTF = get_survey("ztf")
START = dt.date(2024, 3, 1)
NIGHTS = [START + dt.timedelta(days=i) for i in range(3)]


def independent_pairs(frame, night: dt.date) -> Counter:
    """(finkclass, tnsclass) -> alerts of one night, from the reference frame."""
    rows = frame[frame.night == night]
    return Counter(zip(rows.finkclass, rows.tnsclass))


def stats_pairs(stats: S.NightStatistics) -> Counter:
    return Counter({(r["finkclass"], r["tnsclass"]): r["alerts"] for r in stats.rows()})


def request(**fields):
    fields.setdefault("start", NIGHTS[0].isoformat())
    fields.setdefault("stop", NIGHTS[-1].isoformat())
    return request_from_mapping(fields)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    """3 nights x 3,000 ZTF alerts without cutouts."""
    root = str(tmp_path_factory.mktemp("stats_archive"))
    generate_archive(ZTF, root, START, nights=3, alerts_per_night=3_000, seed=21, with_cutouts=False)
    return root


@pytest.fixture(scope="module")
def reference(archive):
    return archive_frame(archive, NIGHTS)


@pytest.fixture(scope="module")
def catalog(archive) -> pa.Table:
    return tns_catalog_from_archive(archive, NIGHTS[1])


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def check_statistics_against_reference(root: str, nights: list[dt.date], frame, catalog=None) -> None:
    prepared = prepare_tns_catalog(catalog) if catalog is not None else None
    labels: set[str] = set()
    for night in nights:
        stats = S.compute_night_statistics(ZTF, root, night, prepared)
        assert stats_pairs(stats) == independent_pairs(frame, night)
        assert stats.total == stats.source_rows == int((frame.night == night).sum())
        labels |= set(stats.per_label())
    assert set(FINK_CLASS_LABELS) <= labels
    assert len(labels - set(FINK_CLASS_LABELS)) >= 30  # many SIMBAD labels


def test_statistics_match_an_independent_count(archive, reference) -> None:
    check_statistics_against_reference(archive, NIGHTS, reference)


def test_statistics_count_fink_and_tns_label_pairs(archive, reference, catalog) -> None:
    frame = with_tns(reference, catalog)
    assert (frame.tnsclass != "Unknown").sum() >= 40
    check_statistics_against_reference(archive, NIGHTS, frame, catalog)


@pytest.mark.slow
def test_statistics_of_3_nights_of_50000_alerts(tmp_path) -> None:
    root = str(tmp_path)
    generate_archive(ZTF, root, START, nights=3, alerts_per_night=50_000, seed=3, with_cutouts=False)
    check_statistics_against_reference(root, NIGHTS, archive_frame(root, NIGHTS))


def test_statistics_files_are_atomic_idempotent_and_track_their_sources(archive, tmp_path) -> None:
    root = str(tmp_path)
    generate_archive(ZTF, root, START, nights=1, alerts_per_night=500, seed=4, with_cutouts=False)
    night = START
    stats, computed = S.night_statistics(ZTF, root, night, save=True)
    assert computed
    path = Path(S.statistics_path(root, "ztf", night))
    assert path.name == "night=2024-03-01.parquet" and path.parent.name == "statistics"
    first = path.read_bytes()
    # stored and current: read back, not recomputed
    again, computed = S.night_statistics(ZTF, root, night, save=True)
    assert not computed and again.counts.equals(stats.counts) and again.total == 500
    # recomputing rewrites the same bytes, and leaves no temporary file
    S.write_night_statistics(root, S.compute_night_statistics(ZTF, root, night))
    assert path.read_bytes() == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    # the statistics directory is not mistaken for a night
    assert list_nights(root, "ztf") == [night]
    # a regenerated night, or a TNS catalogue, makes them stale
    write_night(ZTF, root, night, 700, seed=5, with_cutouts=False)
    assert not S.is_current(S.read_night_statistics(root, "ztf", night), root)
    stats, computed = S.night_statistics(ZTF, root, night, save=True)
    assert computed and stats.total == 700
    tns = prepare_tns_catalog(pa.table({"ra": [1.0], "declination": [2.0], "type": ["SN Ia"]}))
    assert not S.is_current(stats, root, S.catalog_fingerprint(tns))
    assert S.is_current(stats, root, S.catalog_fingerprint(None))


def test_a_failed_write_leaves_the_previous_statistics(tmp_path, monkeypatch) -> None:
    root = str(tmp_path)
    generate_archive(ZTF, root, START, nights=1, alerts_per_night=200, seed=4, with_cutouts=False)
    stats = S.compute_night_statistics(ZTF, root, START)
    path = Path(S.write_night_statistics(root, stats))
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(S.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        S.write_night_statistics(root, stats)
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_night_statistics_asset_and_its_check(archive, tmp_path) -> None:
    import dagster as dg

    from fink_pipeline.orchestration.assets.archive import night_statistics
    from fink_pipeline.orchestration.resources import ArchiveResource

    root = str(tmp_path)
    generate_archive(ZTF, root, START, nights=1, alerts_per_night=400, seed=8, with_cutouts=False)
    absent = START + dt.timedelta(days=1)
    # a statistics file left for a night that has no data (e.g. the night was deleted)
    S.write_night_statistics(root, S.compute_night_statistics(ZTF, root, START).__class__(
        "ztf", absent, ("finkclass", "tnsclass"), S._empty_counts(("finkclass", "tnsclass")), ()))
    resources = {"archive": ArchiveResource(root=root)}
    with dg.instance_for_test() as instance:
        result = dg.materialize([night_statistics], partition_key=START.isoformat(), resources=resources,
                                instance=instance)
        assert result.success
        meta = result.asset_materializations_for_node("night_statistics")[0].metadata
        assert meta["alerts"].value == 400 and meta["night_present"].value is True
        checks = result.get_asset_check_evaluations()
        assert [(c.check_name, c.passed) for c in checks] == [("total_matches_archive_rows", True)]
        assert checks[0].metadata["archive_rows"].value == 400
        assert S.read_night_statistics(root, "ztf", START).total == 400

        result = dg.materialize([night_statistics], partition_key=absent.isoformat(), resources=resources,
                                instance=instance)
        assert result.success
        meta = result.asset_materializations_for_node("night_statistics")[0].metadata
        assert meta["alerts"].value == 0 and meta["night_present"].value is False
        assert S.read_night_statistics(root, "ztf", absent) is None


# --------------------------------------------------------------------------------------------
# Estimates: nights and classes (exact)
# --------------------------------------------------------------------------------------------

EXACT_CASES = [
    ("all-classes", dict()),
    ("one-fink-label", dict(classes=["Unknown"])),
    ("fink-labels", dict(classes=["SN candidate", "Early SN Ia candidate", "Kilonova candidate", "Tracklet"])),
    ("simbad", dict(classes=["(SIMBAD) RRLyr", "EB*", "Solar System MPC"])),
    ("missing-night", dict(stop=(NIGHTS[-1] + dt.timedelta(days=2)).isoformat(), classes=["Ambiguous", "QSO"])),
    ("tns-and-fink", dict(classes=["(TNS) SN Ia", "(TNS) SN II", "SN candidate", "Unknown"])),
]


@pytest.mark.parametrize("fields", [c[1] for c in EXACT_CASES], ids=[c[0] for c in EXACT_CASES])
def test_estimate_is_exact_for_nights_and_classes(archive, reference, catalog, fields) -> None:
    req = request(**fields)
    with_catalog = any(c.startswith("(TNS) ") for c in req.classes)
    frame = with_tns(reference, catalog) if with_catalog else reference
    estimate = estimate_request(req, archive, tns_catalog=catalog if with_catalog else None)
    selected = in_classes(frame, req.classes)
    assert estimate.exact and estimate.total.low == estimate.total.high
    assert estimate.alerts == selected.sum() > 0
    assert estimate.alerts_in_nights == len(frame)
    for row in estimate.night_rows:
        assert row.alerts == (selected & (frame.night == row.night)).sum()
    for row in estimate.rows:
        label = row.label
        if req.classes:
            mask = in_classes(frame, [label])
        else:
            mask = frame.finkclass == label
        assert row.alerts == row.in_class == (mask & (frame.night == row.night)).sum(), label
    if not req.classes:
        assert {r.label for r in estimate.rows} == set(frame.finkclass)
    if "missing-night" in str(fields) or fields.get("stop", "") > NIGHTS[-1].isoformat():
        assert len(estimate.missing_nights) == 2


def test_estimate_of_tns_classes_without_a_catalogue_is_zero_and_says_why(archive) -> None:
    estimate = estimate_request(request(classes=["(TNS) SN Ia"]), archive)
    assert estimate.alerts == 0
    assert any("no TNS catalogue" in note for note in estimate.notes)


def test_estimate_uses_stored_statistics_and_can_store_them(archive, tmp_path) -> None:
    root = str(tmp_path)
    generate_archive(ZTF, root, START, nights=2, alerts_per_night=300, seed=9, with_cutouts=False)
    first = estimate_request(request(stop=NIGHTS[1].isoformat()), root, save_statistics=True)
    assert first.statistics_computed == NIGHTS[:2]
    second = estimate_request(request(stop=NIGHTS[1].isoformat()), root)
    assert second.statistics_computed == [] and second.alerts == first.alerts == 600
    assert not any("on the fly" in n for n in second.notes)


def test_estimate_validates_the_request_first(archive) -> None:
    with pytest.raises(ValueError, match=r"^classes: 'SN candidat' is not a Fink class; did you mean 'SN candidate'"):
        estimate_request(request(classes=["SN candidat"]), archive)
    with pytest.raises(ValueError, match=r"^condition \"candidate.magpsff > 1\": unknown field"):
        estimate_request(request(conditions=["candidate.magpsff > 1"]), archive)


def test_limit_caps_the_estimate(archive) -> None:
    estimate = estimate_request(request(classes=["Unknown"], limit=10), archive)
    assert estimate.alerts == 10 and any("limit" in n for n in estimate.notes)


def test_estimate_metadata_is_json_and_complete(archive) -> None:
    estimate = estimate_request(request(classes=["Unknown", "RRLyr"], content="medium"), archive)
    meta = estimate.as_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["estimated_alerts"] == meta["estimated_alerts_low"] == meta["estimated_alerts_high"] == estimate.alerts
    assert meta["estimate_exact"] is True
    assert meta["estimated_bytes"] == round(estimate.alerts * estimate.bytes_per_alert)
    assert [r["night"] for r in meta["estimate_per_night"]] == [n.isoformat() for n in NIGHTS]
    assert {r["class"] for r in meta["estimate_per_class"]} == {"Unknown", "RRLyr"}
    assert "| **total** |" in estimate.as_markdown()


# --------------------------------------------------------------------------------------------
# Estimates: conditions and filters (sampled)
# --------------------------------------------------------------------------------------------


def test_wilson_interval() -> None:
    # a census is exact, an empty sample says nothing
    assert wilson_interval(30, 100, 100, 0.95) == (0.3, 0.3, 0.3)
    assert wilson_interval(0, 0, 100, 0.95)[1:] == (0.0, 1.0)
    rate, low, high = wilson_interval(0, 50, 10_000, 0.95)
    assert rate == 0 and low == 0 and 0.05 < high < 0.09
    rate, low, high = wilson_interval(500, 1000, 10**9, 0.95)
    assert math.isclose(high - rate, rate - low, rel_tol=1e-6) and math.isclose(high - low, 2 * 1.96 * math.sqrt(0.25 / 1000), rel_tol=0.01)
    # half the population sampled: the interval shrinks by about sqrt(1/2)
    _, low2, high2 = wilson_interval(500, 1000, 2000, 0.95)
    assert math.isclose((high2 - low2) / (high - low), math.sqrt(0.5), rel_tol=0.01)


def check_sampled(estimate: Estimate, truth: int) -> None:
    assert not estimate.exact
    assert abs(estimate.alerts - truth) <= 0.10 * truth, (estimate.alerts, truth)
    assert estimate.total.low <= truth <= estimate.total.high, (estimate.total, truth)
    assert estimate.total.high - estimate.total.low < 0.2 * truth


SAMPLED_CASES = [
    ("magnitude", dict(conditions=["candidate.magpsf > 19.5"]), lambda f: f.magpsf > 19.5),
    ("classes-and-conditions", dict(classes=["Unknown", "Solar System MPC"], conditions=["candidate.ndethist > 2", "candidate.drb > 0.5"]),
     lambda f: in_classes(f, ["Unknown", "Solar System MPC"]) & (f.ndethist > 2) & (f.drb > 0.5)),
    ("filter", dict(livestream_filter="vra"), lambda f: reference_filter(f, "vra")),
]


@pytest.mark.spark
@pytest.mark.parametrize(("fields", "truth_of"), [c[1:] for c in SAMPLED_CASES], ids=[c[0] for c in SAMPLED_CASES])
def test_sampled_estimate_is_within_10_percent(spark, archive, reference, fields, truth_of) -> None:
    # 2,000 of the 3,000 alerts of each night are evaluated
    estimate = estimate_request(request(**fields), archive, spark=spark, sample_rows=6_000)
    check_sampled(estimate, int(truth_of(reference).sum()))
    # the pass rate is taken over the sampled alerts of the requested classes
    assert 0 < estimate.total.sampled <= 6_000
    assert "6,000-alert sample evaluated by Spark" in estimate.method
    for row in estimate.night_rows:
        assert row.low <= row.alerts <= row.high <= row.in_class


@pytest.mark.spark
def test_a_whole_night_sample_is_exact(spark, archive, reference) -> None:
    estimate = estimate_request(request(stop=NIGHTS[0].isoformat(), conditions=["candidate.magpsf > 19.5"]),
                                archive, spark=spark, sample_rows=3_000)
    truth = int(((reference.night == NIGHTS[0]) & (reference.magpsf > 19.5)).sum())
    assert estimate.alerts == estimate.total.low == estimate.total.high == truth


@pytest.mark.slow
@pytest.mark.spark
def test_sampled_estimate_on_2_nights_of_50000_alerts(spark, tmp_path) -> None:
    import pandas as pd

    root = str(tmp_path)
    generate_archive(ZTF, root, START, nights=2, alerts_per_night=50_000, seed=17, with_cutouts=False)
    files = [p for n in NIGHTS[:2] for p, _ in S.night_files(root, "ztf", n)]
    candidate = pq.read_table(files, columns=["candidate"]).column("candidate")
    frame = pd.DataFrame({name: pc.struct_field(candidate, name).to_pandas() for name in ("magpsf", "ndethist", "fid")})
    for conditions, truth in (
        (["candidate.magpsf > 19.5"], (frame.magpsf > 19.5).sum()),
        (["candidate.magpsf > 19.5", "candidate.fid = 2", "candidate.ndethist > 3"],
         ((frame.magpsf > 19.5) & (frame.fid == 2) & (frame.ndethist > 3)).sum()),
    ):
        estimate = estimate_request(request(stop=NIGHTS[1].isoformat(), conditions=conditions), root, spark=spark,
                                    sample_rows=10_000)
        check_sampled(estimate, int(truth))


# --------------------------------------------------------------------------------------------
# Size
# --------------------------------------------------------------------------------------------


@pytest.mark.spark
def test_size_estimate_equals_the_published_avro_payload(spark, archive) -> None:
    """Light-packet style flattening, a map key, structs, a list of structs, a timestamp and
    both class columns: the estimate encodes them exactly as the job publishes them."""
    from fink_pipeline.avro import avro_schema_from_arrow, encode_batch
    from fink_pipeline.spark import spark_to_arrow_schema
    from fink_pipeline.transfer.select import build_transfer_dataframe

    content = ["candid", "candidate.magpsf", "mangrove.HyperLEDA_name", "prv_candidates", "lc_features_r",
               "timestamp", "finkclass", "tnsclass"]
    req = request(stop=NIGHTS[0].isoformat(), content=content)
    plan = plan_transfer(req, archive, list_nights(archive, "ztf"))
    df = build_transfer_dataframe(spark, plan)
    published = avro_schema_from_arrow(spark_to_arrow_schema(df))
    rows = df.toArrow()
    payload = pc.sum(pc.binary_length(encode_batch(rows, published))).as_py() / rows.num_rows
    # the whole night encoded: the estimate is the payload itself
    estimate = estimate_request(req, archive, size_sample_rows=3_000)
    assert math.isclose(estimate.bytes_per_alert, payload, rel_tol=1e-12)
    # with the same schema as the job's, field for field
    table, labels = size_sample(plan, [NIGHTS[0]], 50, 0)
    assert avro_schema_from_arrow(project_arrow(table, plan.content, labels).schema) == published
    # the default sample (300 alerts) is close
    assert math.isclose(estimate_request(req, archive).bytes_per_alert, payload, rel_tol=0.1)
    assert 0 < estimate.archive_bytes_per_alert


def test_size_of_the_packets(archive) -> None:
    """Per-alert payloads in the order of Fink's figures, and consistent with each other."""
    size = {packet: estimate_request(request(content=packet), archive, size_sample_rows=3_000).bytes_per_alert
            for packet in ("light", "medium", "full")}
    assert 500 < size["light"] < 3_000  # Fink: 1.4 KB
    # no cutouts in this archive: full only adds the empty stamps and the partition columns
    assert size["light"] * 3 < size["medium"] < size["full"] < size["medium"] * 1.05


@pytest.mark.spark
def test_sampled_estimate_of_a_survey_with_stored_classes_is_exact_on_a_whole_night(spark, tmp_path) -> None:
    """ELAsTiCC stores its classId in the files: the sample must read it (it is not computed)."""
    import pyarrow.compute as pc

    survey, night = get_survey("elasticc"), dt.date(2023, 3, 1)
    root = str(tmp_path / "archive")
    generate_archive(survey, root, night, nights=1, alerts_per_night=1_500, seed=2, with_cutouts=False)
    table = pq.read_table(S.night_dir(root, "elasticc", night), columns=["diaSource"])
    truth = int(pc.sum(pc.greater(pc.struct_field(table["diaSource"], "snr"), 5.0)).as_py())
    fields = {"survey": "elasticc", "start": night.isoformat(), "stop": night.isoformat(),
              "conditions": ["diaSource.snr > 5"]}
    estimate = estimate_request(request_from_mapping(fields), root, spark=spark, sample_rows=3_000)
    assert 0 < truth < 1_500
    assert estimate.alerts == estimate.total.low == estimate.total.high == truth
