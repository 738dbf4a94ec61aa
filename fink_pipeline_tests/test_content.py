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


@pytest.mark.spark
def test_map_key_on_a_night_lacking_the_map_column_reaches_no_traceback(spark, night_archive) -> None:
    _rewrite_mangrove(night_archive, "drop")
    estimate = estimate_request(_map_key_request(), night_archive, spark=spark)
    assert estimate.total.alerts == 120 and estimate.bytes_per_alert > 0
    plan = plan_transfer(_map_key_request(), night_archive, list_nights(night_archive, "ztf"))
    rows = build_transfer_dataframe(spark, plan).collect()
    assert len(rows) == 120 and {row.HyperLEDA_name for row in rows} == {None}
