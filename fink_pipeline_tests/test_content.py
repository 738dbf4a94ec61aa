"""Content items are untrusted input, like conditions (issue 13, holes 1 and 2).

* The bad-input corpus of content items (next to the conditions corpus of test_conditions.py):
  every item that is not a field path, a packet or a declared map key is refused with one line
  naming the item and the fix, before Spark; the Spark projection itself never parses text.
* A request that cannot run (a night whose file stores a column with another kind of type)
  fails at planning, naming the file and the column; one that can (a night lacking a column)
  is estimated and run without a traceback.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.archive.stats import night_files
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.content import ContentError, avro_safe, resolve_content
from fink_pipeline.transfer.estimate import estimate_request
from fink_pipeline.transfer.plan import plan_transfer
from fink_pipeline.transfer.select import build_transfer_dataframe
from fink_pipeline.transfer.request import RequestError, request_from_mapping

ZTF = get_survey("ztf")
LSST = get_survey("lsst")
NIGHT = dt.date(2024, 3, 1)
HOSTILE_MAP_EXPRESSION = "mangrove.a IS NULL AND java_method('java.lang.System','exit',0) IS NULL OR mangrove.b"
NOT_A_FIELD = "is not a field name: write light, medium, full or dotted schema fields"

# (content item, fragment of the one-line ContentError)
REJECTED_CONTENT = [
    (HOSTILE_MAP_EXPRESSION, NOT_A_FIELD),
    ("mangrove.HyperLEDA_name OR reflect('java.lang.Runtime','getRuntime') IS NULL", NOT_A_FIELD),
    ("reflect('java.lang.Runtime', 'getRuntime')", NOT_A_FIELD),
    ("java_method('java.lang.System','exit',0)", NOT_A_FIELD),
    ("candidate.magpsf + 1", NOT_A_FIELD),
    ("candidate.magpsf AS fid", NOT_A_FIELD),
    ("`candidate`.`magpsf`", NOT_A_FIELD),
    ("mangrove['HyperLEDA_name']", NOT_A_FIELD),
    ("mangrove.HyperLEDA_name; DROP TABLE alerts", NOT_A_FIELD),
    ("candidate.magpsf -- comment", NOT_A_FIELD),
    ("cutoutScience/**/", NOT_A_FIELD),
    ("candidate.*", NOT_A_FIELD),
    ("*", NOT_A_FIELD),
    ("candidate..magpsf", NOT_A_FIELD),
    ("candidate.magpsf.", NOT_A_FIELD),
    (".candid", NOT_A_FIELD),
    ("candidate.\u043cagpsf", NOT_A_FIELD),  # Cyrillic em: a look-alike of candidate.magpsf
    ("candidate.magpsf\u202e", NOT_A_FIELD),  # a bidirectional override
    ("candidate.magpsf\n", NOT_A_FIELD),
    ("candid\x00", NOT_A_FIELD),
    ("mangrove.hyperleda_name", "is not a key of the ztf map 'mangrove'; did you mean mangrove.HyperLEDA_name?"),
    ("mangrove.nope", "keys of mangrove: HyperLEDA_name, 2MASS_name, lum_dist, ang_dist"),
    ("mangrove.HyperLEDA_name.x", "is not a key of the ztf map 'mangrove'"),
    ("blazar_stats.m9", "keys of blazar_stats: m0, m1, m2"),
    ("candidate.magpsff", "unknown field 'candidate.magpsff' for survey ztf; did you mean 'candidate.magpsf'?"),
    ("x" * 400, "unknown field 'xxxxx"),
]


@pytest.mark.parametrize(("item", "fragment"), REJECTED_CONTENT, ids=[repr(i[:40]) for i, _ in REJECTED_CONTENT])
def test_content_item_that_is_not_a_field_path_is_refused_with_one_line(item: str, fragment: str) -> None:
    with pytest.raises(ContentError) as info:
        resolve_content(ZTF, [item], ZTF.class_columns)
    message = str(info.value)
    assert message.startswith("content: ")
    assert fragment in message
    assert "\n" not in message and len(message) < 400  # a hostile item is not echoed whole


def test_content_corpus_covers_each_kind_of_bad_item() -> None:
    kinds = {"JVM call": "java_method(", "reflection": "reflect(", "operator": " + ", "alias": " AS ",
             "quoting": "`", "subscript": "[", "statement": ";", "comment": "--", "wildcard": "*",
             "look-alike": "\u043c", "wrong map key": "mangrove.nope", "unknown field": "magpsff"}
    missing = [kind for kind, marker in kinds.items() if not any(marker in item for item, _ in REJECTED_CONTENT)]
    assert missing == []


def test_every_declared_map_key_is_accepted_and_named_after_its_key() -> None:
    for survey in (ZTF, LSST):
        for root, keys in survey.map_keys.items():
            plan = resolve_content(survey, [f"{root}.{key}" for key in keys], survey.class_columns)
            assert plan.output_names[: len(keys)] == list(keys)
    assert LSST.map_keys["lc_features"] == ("u", "g", "r", "i", "z", "y")


def test_content_items_reach_spark_only_as_parsed_paths(spark) -> None:
    """Even a caller that skips validation cannot make the projection parse text as SQL."""
    df = spark.createDataFrame([(1, {"a": "x"})], "candid long, mangrove map<string,string>")
    with pytest.raises(ContentError, match="is neither a field nor a map key"):
        avro_safe(df, HOSTILE_MAP_EXPRESSION, "x")
    assert df.select(avro_safe(df, "mangrove.a", "a")).collect()[0].a == "x"


# --------------------------------------------------------------------------------------------
# requests on nights whose files differ from the archive schema


@pytest.fixture
def night_archive(tmp_path) -> str:
    root = str(tmp_path / "archive")
    generate_archive(ZTF, root, NIGHT, nights=1, alerts_per_night=120, seed=4, with_cutouts=False)
    return root


def _rewrite_mangrove(root: str, how: str) -> None:
    """Store the night's `mangrove` column as a tool that saw only nulls would, or drop it."""
    for path, _ in night_files(root, "ztf", NIGHT):
        table = pq.read_table(path)
        index = table.schema.get_field_index("mangrove")
        if how == "null-type":
            table = table.set_column(index, pa.field("mangrove", pa.null()), pa.nulls(table.num_rows))
        else:
            table = table.remove_column(index)
        pq.write_table(table, path)


def _map_key_request():
    return request_from_mapping({"start": NIGHT.isoformat(), "stop": NIGHT.isoformat(),
                                 "content": ["candid", "mangrove.HyperLEDA_name"]})


def test_request_that_cannot_read_a_night_fails_before_spark_naming_the_column(night_archive) -> None:
    _rewrite_mangrove(night_archive, "null-type")
    for attempt in (lambda r: plan_transfer(r, night_archive, list_nights(night_archive, "ztf")),
                    lambda r: estimate_request(r, night_archive)):
        with pytest.raises(RequestError) as info:
            attempt(_map_key_request())
        message = str(info.value)
        assert message.startswith("archive: night 2024-03-01: file ") and "\n" not in message
        assert "stores 'mangrove' as null where the archive schema has map<string, string>" in message


def test_replanning_rereads_only_changed_files_and_still_checks_each_one(night_archive, monkeypatch) -> None:
    """A run plans its request three times: unchanged footers are read once per process, yet a
    file rewritten since (another size and time) is read again and checked on its own, even
    when every other file of the night has the schema already checked."""
    import shutil

    (first, _), = night_files(night_archive, "ztf", NIGHT)
    last = first.rsplit("/", 1)[0] + "/part-90001.parquet"
    for copy in ("part-90000.parquet", "part-90001.parquet"):
        shutil.copy(first, first.rsplit("/", 1)[0] + "/" + copy)
    opened: list[str] = []
    real = pq.ParquetFile
    real_reader = pq.ParquetReader

    def counting(source, *args, **kwargs):
        opened.append(getattr(source, "path", source))
        return real(source, *args, **kwargs)

    def counting_reader(*args, **kwargs):  # footers are read with pq.ParquetFile's own reader
        opened.append("footer")
        return real_reader(*args, **kwargs)

    monkeypatch.setattr(pq, "ParquetFile", counting)
    monkeypatch.setattr(pq, "ParquetReader", counting_reader)

    def plan():
        return plan_transfer(_map_key_request(), night_archive, list_nights(night_archive, "ztf"))

    assert len(plan().footers[NIGHT]) == 3
    opened.clear()
    assert len(plan().footers[NIGHT]) == 3 and opened == []
    table = real(last).read()
    index = table.schema.get_field_index("mangrove")
    pq.write_table(table.set_column(index, pa.field("mangrove", pa.null()), pa.nulls(table.num_rows)), last)
    with pytest.raises(RequestError, match=f"file {last} stores 'mangrove' as null"):
        plan()
    assert len(opened) == 1


@pytest.mark.spark
def test_map_key_on_a_night_lacking_the_map_column_reaches_no_traceback(spark, night_archive) -> None:
    _rewrite_mangrove(night_archive, "drop")
    estimate = estimate_request(_map_key_request(), night_archive, spark=spark)
    assert estimate.total.alerts == 120 and estimate.bytes_per_alert > 0
    plan = plan_transfer(_map_key_request(), night_archive, list_nights(night_archive, "ztf"))
    rows = build_transfer_dataframe(spark, plan).collect()
    assert len(rows) == 120 and {row.HyperLEDA_name for row in rows} == {None}


# --------------------------------------------------------------------------------------------
# pre-defined packets: Fink's portal names, per survey (reference 4.1 and 9.1)

ELASTICC = get_survey("elasticc")
LSST_ROOT = [f.name for f in LSST.archive_schema]
LIGHT_DIA_SOURCE = ("snr", "psfFlux", "psfFluxErr", "scienceFlux", "scienceFluxErr", "templateFlux",
                    "templateFluxErr", "band", "midpointMjdTai", "ra", "dec", "reliability")
# Fink's "Light SSO packet" (lsst.fink-portal.org assets/spark_lsst_transfer.py), in its order
LIGHT_SSO = ("diaSourceId", "ssSource.ssObjectId", "ssSource.phaseAngle", "ssSource.diaDistanceRank",
             *(f"diaSource.{name}" for name in LIGHT_DIA_SOURCE),
             "mpc_orbits.packed_primary_provisional_designation",
             "mpc_orbits.unpacked_primary_provisional_designation",
             "lsst_schema_version", "fink_broker_version", "fink_science_version")

# (survey, names as Fink's portal and its YAML export write them, or as users type them, short name)
PORTAL_NAMES = [
    (LSST, ["Full packet", "full packet", "FULL PACKET", "full", "Full"], "full"),
    (LSST, ["Medium packet", "medium PACKET", "medium"], "medium"),
    # "Light packet" is the name the LSST portal gave it before April 2026 (its YAML exports keep it)
    (LSST, ["Light static packet", "light static packet", "Light packet", "light", "LIGHT"], "light"),
    (LSST, ["Light SSO packet", "light sso packet", "LIGHT SSO PACKET", "light_sso"], "light_sso"),
    (ZTF, ["Full packet", "full"], "full"),
    (ZTF, ["Medium packet", "medium"], "medium"),
    (ZTF, ["Light packet", "light packet", "light"], "light"),
    (ELASTICC, ["Full packet", "full"], "full"),
]


@pytest.mark.parametrize(("survey", "names", "packet"), PORTAL_NAMES,
                         ids=[f"{s.name}-{p}" for s, _, p in PORTAL_NAMES])
def test_packets_are_named_as_finks_portal_writes_them(survey, names, packet) -> None:
    plans = {name: resolve_content(survey, [name], survey.class_columns) for name in names}
    assert {plan.packet for plan in plans.values()} == {packet}
    assert len({plan.columns for plan in plans.values()}) == 1


def test_packets_split_on_spaces_by_a_flat_request_are_still_recognized() -> None:
    # `--content "Light SSO packet"` reaches content as words (the flat form splits on spaces)
    assert resolve_content(LSST, ["Light", "SSO", "packet"]).packet == "light_sso"
    assert resolve_content(ZTF, ["full", "packet"], ZTF.class_columns).packet == "full"


def test_portal_yaml_export_content_selects_the_packet() -> None:
    """The YAML the LSST portal's `Download configuration` writes (keys as in apps/datatransfer.py)."""
    export = {"survey": "lsst", "dates": {"startdate": "2026-06-01", "stopdate": "2026-06-02"},
              "content": ["Light SSO packet"], "extra_cond": None}
    request = request_from_mapping(export)
    plan = resolve_content(LSST, request.content)
    assert plan.packet == "light_sso"


def test_lsst_light_sso_packet_is_finks() -> None:
    plan = resolve_content(LSST, ["Light SSO packet"])
    assert tuple(plan.source_fields) == LIGHT_SSO
    assert plan.output_names == [field.rsplit(".", 1)[-1] for field in LIGHT_SSO]
    assert "midpointMjdTai" in plan.output_names  # what clients partition on


def test_lsst_light_static_packet_is_finks() -> None:
    plan = resolve_content(LSST, ["Light static packet"])
    flattened = [f"diaSource.{name}" for name in ("diaObjectId", *LIGHT_DIA_SOURCE)]
    assert plan.source_fields[: len(flattened)] == flattened
    rest = plan.output_names[len(flattened):]
    assert {"diaSourceId", "xm", "clf", "pred", "misc", "tns_type_recomputed", "lc_features",
            "fink_broker_version", "timestamp"} <= set(rest)
    assert not {"diaSource", "prvDiaSources", "prvDiaForcedSources", "diaObject", "ssSource", "mpc_orbits",
                "MPCORB", "cutoutScience", "cutoutTemplate", "cutoutDifference", "year", "month", "day"} & set(rest)


def test_lsst_full_and_medium_packets_are_finks() -> None:
    full = resolve_content(LSST, ["Full packet"])
    assert full.output_names == [*LSST_ROOT, "year", "month", "day"]
    medium = resolve_content(LSST, ["Medium packet"])
    assert medium.output_names == [c for c in full.output_names if not c.startswith("cutout")]


def test_every_packet_of_every_survey_names_selectable_fields_once() -> None:
    from fink_pipeline.transfer.content import available_fields

    for survey in (ZTF, LSST, ELASTICC):
        assert {"full", "medium", "light"} <= set(survey.packets)
        known = available_fields(survey, survey.class_columns)
        for name in survey.packets:
            plan = resolve_content(survey, [name], survey.class_columns)
            assert set(plan.source_fields) <= set(known), (survey.name, name)
            assert len(set(plan.output_names)) == len(plan.output_names), (survey.name, name)


@pytest.mark.parametrize("items", [["diaObject"], ["xm"], ["pred.is_sso"], ["tns_type_recomputed"],
                                   ["diaSourceId", "diaObject", "xm", "pred.is_sso", "tns_type_recomputed"]])
def test_lsst_sections_and_fields_are_selectable(items) -> None:
    plan = resolve_content(LSST, items)
    assert plan.packet is None
    assert plan.source_fields == [*items, "diaSource.midpointMjdTai"]


@pytest.mark.parametrize(("survey", "items", "fragment"), [
    (LSST, ["Light SOS packet"], "content: unknown packet 'Light SOS packet' for survey lsst; did you mean 'Light SSO packet'?"),
    (LSST, ["Heavy packet"], "content: unknown packet 'Heavy packet' for survey lsst; lsst packets: Full packet, Medium packet, Light static packet, Light SSO packet"),
    (ZTF, ["Light static packet"], "content: unknown packet 'Light static packet' for survey ztf; did you mean 'Light packet'?"),
    (ZTF, ["Light SSO packet"], "for survey ztf; did you mean 'Light packet'?"),
    (LSST, ["lite"], "did you mean 'light'?"),
    (LSST, ["Full packet", "diaObject"], "content: the packet 'Full packet' cannot be combined with other fields"),
    (LSST, ["diaSourceId", "Light", "SSO", "packet"], "the packet 'Light SSO packet' cannot be combined"),
    (LSST, ["Full packet'); java_method('java.lang.System','exit',0"], NOT_A_FIELD),
    (LSST, ["Light SSO packet OR 1=1"], NOT_A_FIELD),
    (LSST, ["Light\tSSO\npacket"], NOT_A_FIELD),
])
def test_unknown_or_combined_packets_get_one_line_with_a_close_match(survey, items, fragment) -> None:
    with pytest.raises(ContentError) as info:
        resolve_content(survey, items, survey.class_columns)
    message = str(info.value)
    assert fragment in message, message
    assert message.startswith("content: ") and "\n" not in message and len(message) < 400


@pytest.mark.spark
def test_no_packet_or_field_reaches_the_sql_parser(spark, monkeypatch) -> None:
    """Every packet of every survey and the hostile corpus project with `F.col` only: a spy
    in place of `F.expr` and `selectExpr` is never called."""
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    from fink_pipeline.transfer.content import project

    def refuse(*args, **kwargs):
        raise AssertionError(f"content reached Spark's SQL parser: {args}")

    for survey in (ZTF, LSST, ELASTICC):
        schema = pa.schema([*survey.archive_schema, *(pa.field(c, pa.string()) for c in survey.class_columns
                                                      if c not in survey.archive_schema.names),
                            *(pa.field(c, pa.int32()) for c in ("year", "month", "day"))])
        df = spark.createDataFrame(schema.empty_table())
        monkeypatch.setattr(F, "expr", refuse)
        monkeypatch.setattr(DataFrame, "selectExpr", refuse)
        for name in survey.packets:
            plan = resolve_content(survey, [name], survey.class_columns)
            assert project(df, plan).columns == plan.output_names
        monkeypatch.undo()


# --------------------------------------------------------------------------------------------
# sizes of the LSST packets, estimated as the others are

LSST_NIGHT = dt.date(2026, 6, 1)


@pytest.fixture(scope="module")
def lsst_archive(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("lsst_packets"))
    generate_archive(LSST, root, LSST_NIGHT, nights=1, alerts_per_night=200, seed=8, with_cutouts=True)
    return root


def _lsst_request(content):
    return request_from_mapping({"survey": "lsst", "start": LSST_NIGHT.isoformat(), "stop": LSST_NIGHT.isoformat(),
                                 "content": content})


def test_lsst_packets_are_sized_in_the_order_of_finks_figures(lsst_archive) -> None:
    size = {name: estimate_request(_lsst_request([name]), lsst_archive, size_sample_rows=200).bytes_per_alert
            for name in ("Full packet", "Medium packet", "Light static packet", "Light SSO packet")}
    # Fink's portal: Full 137-176 KB, Medium 80-123 KB (the history; this archive's is shorter),
    # Light static and SSO 1.7 KB (one figure for both; SSO has 21 scalar fields, static ~100)
    assert size["Medium packet"] + 50_000 < size["Full packet"]  # three cutouts of ~58 KB
    assert size["Light static packet"] * 10 < size["Medium packet"]
    assert 400 < size["Light static packet"] < 3_000
    assert 60 < size["Light SSO packet"] < size["Light static packet"] / 3


@pytest.mark.spark
def test_size_estimate_of_the_light_sso_packet_is_the_published_payload(spark, lsst_archive) -> None:
    import math

    import pyarrow.compute as pc

    from fink_pipeline.avro import avro_schema_from_arrow, encode_batch
    from fink_pipeline.spark import spark_to_arrow_schema

    request = _lsst_request(["Light SSO packet"])
    df = build_transfer_dataframe(spark, plan_transfer(request, lsst_archive, list_nights(lsst_archive, "lsst")))
    rows = df.toArrow()
    published = avro_schema_from_arrow(spark_to_arrow_schema(df))
    payload = pc.sum(pc.binary_length(encode_batch(rows, published))).as_py() / rows.num_rows
    estimate = estimate_request(request, lsst_archive, size_sample_rows=200)
    assert estimate.content == "light_sso" and rows.num_rows == 200
    assert math.isclose(estimate.bytes_per_alert, payload, rel_tol=1e-12)
