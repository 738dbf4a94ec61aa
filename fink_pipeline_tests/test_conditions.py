"""Extra conditions: allow-list validation, regenerated Spark SQL, and Spark vs a Python reference.

Fink passes the portal's textarea straight to `df.filter(str)` (reference sections 3 and 10);
`fink_pipeline.transfer.conditions` parses, type-checks and regenerates it instead.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import pytest

from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.base import flatten_schema
from fink_pipeline.surveys.ztf.schema import ARCHIVE_SCHEMA, CANDIDATE, LC_FEATURES, PRV_CANDIDATE
from fink_pipeline.transfer.conditions import limits as limits_module
from fink_pipeline.transfer.conditions import validator as validator_module
from fink_pipeline.transfer.conditions import (
    MAX_CONDITION_LENGTH,
    MAX_CONDITIONS,
    MAX_CONDITIONS_LENGTH,
    MAX_DEPTH,
    ConditionError,
    ConditionsSizeError,
    ValidatedCondition,
    split_conditions,
    validate_condition,
    validate_conditions,
)

# What the DataFrame has at filter time: the archive plus the job's computed columns.
FIELDS: dict[str, pa.DataType] = {
    **flatten_schema(ARCHIVE_SCHEMA),
    "finkclass": pa.string(),
    "tnsclass": pa.string(),
    "year": pa.int32(),
    "month": pa.int32(),
    "day": pa.int32(),
}
# The keys of its map columns (mangrove): a map key outside them is refused.
MAP_KEYS = get_survey("ztf").map_keys

Row = dict[str, Any]


def cand(row: Row, name: str) -> Any:
    return (row["candidate"] or {}).get(name)


def mangrove(row: Row, key: str) -> Any:
    return dict(row["mangrove"] or []).get(key)


def prv(row: Row) -> list[Row] | None:
    return row["prv_candidates"]


def float_or_none(text: str | None) -> float | None:
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def log10_or_none(x: float | None) -> float | None:
    return math.log10(x) if x is not None and x > 0 else None  # Spark: NULL for x <= 0


@dataclass(frozen=True)
class Case:
    """An accepted condition, a Python reference of the rows it keeps, optional expectations."""

    condition: str
    keeps: Callable[[Row], bool]
    spark_sql: str | None = None
    fields: tuple[str, ...] | None = None


ACCEPTED: list[Case] = [
    # The three examples of Fink's portal and documentation (with their trailing ';').
    Case("candidate.magpsf > 19.5;", lambda r: (m := cand(r, "magpsf")) is not None and m > 19.5,
         "candidate.magpsf > 19.5", ("candidate.magpsf",)),
    Case(
        "(candidate.magnr - candidate.magpsf) < -4 * (LOG10(candidate.distnr) + 0.2);",
        lambda r: None not in (cand(r, "magnr"), cand(r, "magpsf"), log10_or_none(cand(r, "distnr")))
        and cand(r, "magnr") - cand(r, "magpsf") < -4 * (log10_or_none(cand(r, "distnr")) + 0.2),
        "(candidate.magnr - candidate.magpsf) < -4 * (LOG10(candidate.distnr) + 0.2)",
        ("candidate.magnr", "candidate.magpsf", "candidate.distnr"),
    ),
    Case("rf_snia_vs_nonia > 0.5;", lambda r: (v := r["rf_snia_vs_nonia"]) is not None and v > 0.5,
         "rf_snia_vs_nonia > 0.5", ("rf_snia_vs_nonia",)),
    # Classes, IN lists, LIKE, NULL handling.
    Case("finkclass = 'SN candidate'", lambda r: r["finkclass"] == "SN candidate",
         "finkclass = 'SN candidate'", ("finkclass",)),
    Case('"SN candidate" = finkclass', lambda r: r["finkclass"] == "SN candidate", "'SN candidate' = finkclass"),
    Case("finkclass IN ('SN candidate', 'Early SN Ia candidate')",
         lambda r: r["finkclass"] in ("SN candidate", "Early SN Ia candidate")),
    Case("cdsxmatch NOT IN ('Unknown', 'RRLyr')", lambda r: r["cdsxmatch"] not in (None, "Unknown", "RRLyr"),
         "NOT cdsxmatch IN ('Unknown', 'RRLyr')"),
    Case("tnsclass LIKE '(TNS) SN%'", lambda r: r["tnsclass"].startswith("(TNS) SN")),
    Case(r"cdsxmatch LIKE 'a\_b'", lambda r: r["cdsxmatch"] == "a_b"),
    Case(r"cdsxmatch = 'it\'s'", lambda r: r["cdsxmatch"] == "it's"),
    Case("cdsxmatch RLIKE '^(RR|EB)'", lambda r: r["cdsxmatch"] is not None and re.search("^(RR|EB)", r["cdsxmatch"]) is not None),
    Case("upper(cdsxmatch) = 'RRLYR'", lambda r: (r["cdsxmatch"] or "").upper() == "RRLYR", "UPPER(cdsxmatch) = 'RRLYR'"),
    Case("candidate.ssnamenr IS NULL", lambda r: cand(r, "ssnamenr") is None),
    Case("coalesce(candidate.ssnamenr, 'none') = 'none'", lambda r: cand(r, "ssnamenr") is None),
    Case("candidate.magpsf <=> NULL", lambda r: cand(r, "magpsf") is None),
    Case("candidate.magpsf IS NOT NULL AND candidate.drb > 0.5",
         lambda r: cand(r, "magpsf") is not None and cand(r, "drb") > 0.5, "NOT candidate.magpsf IS NULL AND candidate.drb > 0.5"),
    # Ranges, nesting, arithmetic.
    Case("candidate.magpsf BETWEEN 18 AND 19.5", lambda r: (m := cand(r, "magpsf")) is not None and 18 <= m <= 19.5),
    Case("((candidate.magpsf > 19) AND (candidate.drb > 0.5)) OR roid = 3",
         lambda r: ((m := cand(r, "magpsf")) is not None and m > 19 and cand(r, "drb") > 0.5) or r["roid"] == 3),
    Case("(((candidate.magpsf + 0.5) * 2) - 1) / 2 > 19.9",
         lambda r: (m := cand(r, "magpsf")) is not None and ((m + 0.5) * 2 - 1) / 2 > 19.9),
    Case("candidate.magpsf / candidate.sigmapsf > 100",  # sigmapsf = 0 gives NULL, not a DIVIDE_BY_ZERO
         lambda r: cand(r, "magpsf") is not None and cand(r, "sigmapsf") and cand(r, "magpsf") / cand(r, "sigmapsf") > 100,
         "TRY_DIVIDE(candidate.magpsf, candidate.sigmapsf) > 100", ("candidate.magpsf", "candidate.sigmapsf")),
    Case("candidate.ndethist % 4 = 1", lambda r: cand(r, "ndethist") % 4 == 1, "TRY_MOD(candidate.ndethist, 4) = 1"),
    Case("candidate.jd - candidate.jdstarthist < 20", lambda r: cand(r, "jd") - cand(r, "jdstarthist") < 20),
    Case("abs(candidate.magpsf - candidate.magnr) < 1",
         lambda r: None not in (cand(r, "magpsf"), cand(r, "magnr")) and abs(cand(r, "magpsf") - cand(r, "magnr")) < 1),
    Case("round(candidate.magpsf, 0) = 20",  # Spark rounds half up
         lambda r: (m := cand(r, "magpsf")) is not None and math.floor(m + 0.5) == 20),
    Case("sqrt(pow(candidate.ra - 10, 2)) < 1", lambda r: abs(cand(r, "ra") - 10) < 1,
         "SQRT(POWER(candidate.ra - 10, 2)) < 1"),
    Case("LOG(candidate.distnr) > 0", lambda r: cand(r, "distnr") > 1, "LN(candidate.distnr) > 0"),
    Case("greatest(candidate.magpsf, candidate.magnr) > 20",
         lambda r: max([v for v in (cand(r, "magpsf"), cand(r, "magnr")) if v is not None], default=0) > 20),
    Case("candidate.magpsf > 1e1 AND candidate.magpsf < 19", lambda r: (m := cand(r, "magpsf")) is not None and 10 < m < 19),
    Case("CASE WHEN candidate.fid = 1 THEN candidate.magpsf ELSE candidate.magpsf - 0.5 END > 19",
         lambda r: (m := cand(r, "magpsf")) is not None and (m if cand(r, "fid") == 1 else m - 0.5) > 19),
    Case("CANDIDATE.MAGPSF > 20", lambda r: (m := cand(r, "magpsf")) is not None and m > 20,
         "candidate.magpsf > 20", ("candidate.magpsf",)),
    Case("`candidate`.`field` = 500", lambda r: cand(r, "field") == 500, "candidate.field = 500"),
    Case("CAST(candidate.ndethist AS STRING) = '30'", lambda r: cand(r, "ndethist") == 30,
         "TRY_CAST(candidate.ndethist AS STRING) = '30'"),
    # Strings.
    Case("startswith(objectId, 'ZTF24aaaaaa') AND endswith(objectId, 'f')", lambda r: r["objectId"].endswith("f")),
    Case("substr(objectId, -1, 1) IN ('a', 'b')", lambda r: r["objectId"][-1] in "ab", "SUBSTRING(objectId, -1, 1) IN ('a', 'b')"),
    Case("instr(objectId, 'aaaaae') > 0", lambda r: "aaaaae" in r["objectId"]),
    Case("length(tnsclass) > 10", lambda r: len(r["tnsclass"]) > 10),
    # Maps: dotted and bracket access, absent keys are NULL.
    Case("mangrove.HyperLEDA_name IS NOT NULL", lambda r: mangrove(r, "HyperLEDA_name") is not None,
         "NOT mangrove['HyperLEDA_name'] IS NULL", ("mangrove",)),
    Case("mangrove['2MASS_name'] = 'J4'", lambda r: mangrove(r, "2MASS_name") == "J4", "mangrove['2MASS_name'] = 'J4'"),
    Case("mangrove.lum_dist IS NULL", lambda r: mangrove(r, "lum_dist") is None),
    Case("CAST(mangrove.lum_dist AS DOUBLE) < 100",  # 'not-a-number' gives NULL, not CAST_INVALID_INPUT
         lambda r: (d := float_or_none(mangrove(r, "lum_dist"))) is not None and d < 100,
         "TRY_CAST(mangrove['lum_dist'] AS DOUBLE) < 100", ("mangrove",)),
    # Arrays: size, elements (out of range gives NULL), field of every item.
    Case("size(prv_candidates) > 3", lambda r: prv(r) is not None and len(prv(r)) > 3,
         "SIZE(prv_candidates) > 3", ("prv_candidates",)),
    Case("prv_candidates[0].magpsf < 19.1", lambda r: bool(prv(r)) and prv(r)[0]["magpsf"] < 19.1,
         "TRY_ELEMENT_AT(prv_candidates, 1).magpsf < 19.1", ("prv_candidates",)),
    Case("prv_candidates[3].magpsf > 0", lambda r: prv(r) is not None and len(prv(r)) > 3),
    Case("element_at(prv_candidates, -1).fid = 2", lambda r: bool(prv(r)) and prv(r)[-1]["fid"] == 2,
         "TRY_ELEMENT_AT(prv_candidates, -1).fid = 2"),
    Case("array_contains(prv_candidates.fid, 2)", lambda r: prv(r) is not None and any(p["fid"] == 2 for p in prv(r)),
         "ARRAY_CONTAINS(prv_candidates.fid, 2)", ("prv_candidates",)),
    # Structs, booleans, timestamps, partition columns.
    Case("lc_features_g.mean > 18", lambda r: r["lc_features_g"] is not None and r["lc_features_g"]["mean"] > 18,
         None, ("lc_features_g.mean",)),
    Case("lc_features_g IS NULL", lambda r: r["lc_features_g"] is None),
    Case("NOT from_upper", lambda r: r["from_upper"] is False),
    Case("from_upper IS TRUE", lambda r: r["from_upper"] is True),
    Case("brokerIngestTimestamp >= '2024-01-02'",
         lambda r: r["brokerIngestTimestamp"] is not None and r["brokerIngestTimestamp"] >= dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc)),
    Case("timestamp < '2024-01-02 12:00:00'",
         lambda r: r["timestamp"] is not None and r["timestamp"] < dt.datetime(2024, 1, 2, 12, tzinfo=dt.timezone.utc)),
    Case("year = 2024 AND month IN (1, 2) AND day < 3", lambda r: r["year"] == 2024 and r["month"] in (1, 2) and r["day"] < 3,
         None, ("year", "month", "day")),
]


def _validate_one(text: str) -> ValidatedCondition:
    validated = validate_conditions(text, FIELDS, map_keys=MAP_KEYS)
    assert len(validated) == 1, validated
    return validated[0]


@pytest.mark.parametrize("case", ACCEPTED, ids=[c.condition for c in ACCEPTED])
def test_accepted_conditions(case: Case) -> None:
    validated = _validate_one(case.condition)
    assert validated.source == case.condition.rstrip(";").strip()
    if case.spark_sql is not None:
        assert validated.spark_sql == case.spark_sql
    if case.fields is not None:
        assert validated.fields == case.fields
    # Every reported field is a key of `fields` (the Spark job prunes columns with them).
    assert set(validated.fields) <= set(FIELDS)
    # The regenerated SQL is itself a valid, stable condition.
    again = validate_condition(validated.spark_sql, FIELDS, map_keys=MAP_KEYS)
    assert again.spark_sql == validated.spark_sql


# (condition, token, suggestion)
REJECTED = [
    # Unknown fields, with the closest valid one (root vs candidate, ztf#641).
    ("candidate.magpsff > 19.5", "candidate.magpsff", "candidate.magpsf"),
    ("jd - candidate.jdstarthist < 10", "jd", "candidate.jd"),
    ("magpsf > 19", "magpsf", "candidate.magpsf"),
    ("rf_snia_vs_noni > 0.5", "rf_snia_vs_noni", "rf_snia_vs_nonia"),
    ("candidate.magpsf.x > 1", "candidate.magpsf.x", "candidate.magpsf"),
    ("`candidate.magpsf` > 19.5", "`candidate.magpsf`", "candidate.magpsf"),
    ("mangrove.HyperLeda_name = 'x'", "mangrove.HyperLeda_name", "mangrove.HyperLEDA_name"),
    ("mangrove['lumdist'] = '1'", "mangrove.lumdist", "mangrove.lum_dist"),
    # Unsafe or unknown functions.
    ("reflect('java.lang.Runtime', 'getRuntime') IS NULL", "reflect", None),
    ("java_method('java.lang.System', 'exit', 0) = 1", "java_method", None),
    ("input_file_name() LIKE '%2024%'", "input_file_name", None),
    ("read_files('/etc/passwd') IS NOT NULL", "read_files", None),
    ("from_json(cdsxmatch, 'a INT') IS NULL", "from_json", None),
    ("rand() < 0.5", "rand", None),
    ("randn() > 0", "randn", None),
    ("uuid() = 'x'", "uuid", None),
    ("current_timestamp() > '2024-01-01'", "current_timestamp", None),
    ("current_timestamp > '2024-01-01'", "current_timestamp", None),
    ("explode(prv_candidates) IS NOT NULL", "explode", None),
    ("posexplode(prv_candidates) IS NULL", "posexplode", None),
    ("inline(prv_candidates) IS NULL", "inline", None),
    ("stack(2, 1, 2) = 1", "stack", None),
    ("raise_error('x') IS NULL", "raise_error", None),
    ("my_udf(candidate.magpsf) > 1", "my_udf", None),
    ("`my udf`(candidate.magpsf) > 1", "my udf", None),
    ("LOG01(candidate.distnr) > 0", "LOG01", "log10"),
    ("cardinality(prv_candidates) > 1", "cardinality", "size"),
    # Aggregates, windows, lambdas.
    ("sum(candidate.magpsf) > 10", "sum", None),
    ("count(*) > 1", "count", None),
    ("avg(candidate.magpsf) OVER (PARTITION BY objectId) > 19", "avg", None),
    ("abs(candidate.magpsf) OVER () > 1", "OVER", None),
    ("transform(prv_candidates, x -> x.magpsf) IS NOT NULL", "transform", None),
    ("exists(prv_candidates, x -> x.magpsf > 19)", "exists", None),
    # Subqueries, statements, comments.
    ("candidate.magpsf > (SELECT max(magpsf) FROM alerts)", "SELECT", None),
    ("candidate.magpsf IN (SELECT magpsf FROM t)", "SELECT", None),
    ("EXISTS (SELECT 1)", "SELECT", None),
    ("candidate.magpsf > 1 UNION SELECT 1", "UNION", None),
    ("candidate.magpsf > 19.5; DROP TABLE alerts", ";", None),
    ("DROP TABLE alerts", "DROP", None),
    ("INSERT INTO alerts VALUES (1)", "INSERT", None),
    ("DELETE FROM alerts", "DELETE", None),
    ("SELECT * FROM alerts", "SELECT", None),
    ("SET spark.sql.ansi.enabled = false", "SET", None),
    ("candidate.magpsf > 19.5 -- AND candidate.drb > 0.5", "--", None),
    ("candidate.magpsf > 19.5 /* hidden */", "/*", None),
    ("candidate.magpsf > 19.5\u202e", "U+202E", None),
    # Not a boolean, type errors.
    ("candidate.magpsf + 1", "candidate.magpsf + 1", None),
    ("'SN candidate'", "'SN candidate'", None),
    ("candidate.magpsf > 'bright'", "'bright'", None),
    ("candidate.magpsf BETWEEN 'a' AND 'b'", "'a'", None),
    ("finkclass = 1", "1", None),
    ("finkclass IN ('SN candidate', 1)", "1", None),
    ("from_upper = 1", "1", None),
    ("cdsxmatch + 1 > 2", "cdsxmatch", None),
    ("candidate.magpsf LIKE '19%'", "candidate.magpsf", None),
    ("candidate.magpsf AND candidate.drb", "candidate.magpsf", None),
    ("NOT candidate.ndethist", "candidate.ndethist", None),
    ("prv_candidates > 3", "prv_candidates", None),
    ("candidate > 1", "candidate", None),
    ("size(candidate.magpsf) > 1", "candidate.magpsf", None),
    ("lower(candidate.magpsf) = 'a'", "candidate.magpsf", None),
    ("array_contains(prv_candidates, 1)", "prv_candidates", None),
    ("brokerIngestTimestamp > 'yesterday'", "'yesterday'", None),
    ("CASE WHEN candidate.magpsf > 19 THEN 'faint' ELSE 1 END = 'faint'", "1", None),
    ("CAST(candidate AS STRING) = 'x'", "candidate", None),
    ("CAST(candidate.magpsf AS BINARY) IS NULL", "BINARY", None),
    # Literals only where Spark would otherwise fail at run time.
    ("candidate.magpsf IN (candidate.magnr, 1)", "candidate.magnr", None),
    ("cdsxmatch LIKE candidate.ssnamenr", "candidate.ssnamenr", None),
    ("cdsxmatch RLIKE '('", "'('", None),
    ("cdsxmatch LIKE 'a\\\\b'", "'a\\\\b'", None),
    ("mangrove[cdsxmatch] = 'x'", "cdsxmatch", None),
    ("element_at(prv_candidates, 0).magpsf > 1", "0", None),
    ("prv_candidates[-1].magpsf > 1", "-1", None),
    ("round(candidate.magpsf, candidate.fid) > 1", "candidate.fid", None),
    ("candidate.magpsf > 1e999", "1e999", None),
    # Other syntax outside the allow-list.
    ("candidate.* IS NOT NULL", "*", None),
    ("candidate.magpsf > ?", "?", None),
    ("candidate.magpsf > :threshold", ":threshold", None),
    ("candidate.magpsf > ${threshold}", "${threshold}", None),
    ("candidate.fid & 1 = 1", "&", None),
    ("candidate.fid DIV 2 > 1", "DIV", None),
    ("cdsxmatch || 'x' = 'y'", "||", None),
    ("candidate.magpsf > interval 1 day", "INTERVAL", None),
    ("TRIM(LEADING 'x' FROM cdsxmatch) = 'a'", "trim", None),
    # Unparsable, empty, too long, too deep.
    ("candidate.magpsf > 19.5 foo", "foo", None),
    ("candidate.magpsf > 19.5)", ")", None),
    ("candidate.magpsf >", ">", None),
    ("candidate.magpsf > 19,5", ",", None),
    ("candidate.magpsf => 19.5", "=>", None),
    ("candidate.magpsf > 19.5 AND", "AND", None),
    ("finkclass = 'SN candidate", "'", None),
    ("   ", "", None),
    ("finkclass = '" + "x" * MAX_CONDITION_LENGTH + "'", f"{MAX_CONDITION_LENGTH + 14} characters", None),
    ("(" * (MAX_DEPTH + 1) + "candidate.magpsf > 1" + ")" * (MAX_DEPTH + 1), "(", None),
    ("NOT " * MAX_DEPTH + "from_upper", "NOT", None),
]


@pytest.mark.parametrize(("condition", "token", "suggestion"), REJECTED, ids=[r[0][:60] for r in REJECTED])
def test_rejected_conditions(condition: str, token: str, suggestion: str | None) -> None:
    with pytest.raises(ConditionError) as info:
        validate_condition(condition, FIELDS, map_keys=MAP_KEYS)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.condition == condition.strip()
    assert error.token == token
    assert error.suggestion == suggestion
    message = str(error)
    assert message.startswith("condition ")
    if token:
        assert f'"{token}"' in message or token in message
    if suggestion:
        assert f'did you mean "{suggestion}"?' in message


def test_rejected_count() -> None:
    assert len(REJECTED) >= 45 and len(ACCEPTED) >= 40


def test_error_message_names_condition_token_and_fix() -> None:
    with pytest.raises(ConditionError) as info:
        validate_conditions("candidate.magpsff > 19.5", FIELDS)
    assert str(info.value) == (
        'condition "candidate.magpsff > 19.5": unknown field "candidate.magpsff" — did you mean "candidate.magpsf"?'
    )


def test_syntax_error_reports_the_position() -> None:
    with pytest.raises(ConditionError) as info:
        validate_condition("candidate.magpsf > 19.5)", FIELDS)
    assert "column 24" in str(info.value)


def test_split_on_semicolons_and_newlines_but_not_inside_quotes() -> None:
    text = "candidate.magpsf > 19.5;\n rf_snia_vs_nonia > 0.5 ;; finkclass = 'a;b'\n\ncdsxmatch = \"x\ny\"\n`we;ird` = 1;"
    assert split_conditions(text) == [
        "candidate.magpsf > 19.5",
        "rf_snia_vs_nonia > 0.5",
        "finkclass = 'a;b'",
        'cdsxmatch = "x\ny"',
        "`we;ird` = 1",
    ]
    assert split_conditions([r"cdsxmatch = 'it\'s;' ; roid = 3", "", "  "]) == [r"cdsxmatch = 'it\'s;'", "roid = 3"]
    assert split_conditions("  ;\n ; ") == []


def test_split_follows_spark_quoting_and_stops_at_an_unterminated_quote() -> None:
    # A prefixed literal is quoted like any other (an invalid hex one too); a backslash escapes the
    # quote of a raw string as in Spark's lexer; SHOW does not swallow the next line.
    assert split_conditions("cdsxmatch = X'zz;'\nroid = 3;r'a\\' ; b' = cdsxmatch\nSHOW x\nroid = 4") == [
        "cdsxmatch = X'zz;'", "roid = 3", "r'a\\' ; b' = cdsxmatch", "SHOW x", "roid = 4",
    ]
    # Nothing is split after a quote that is never closed; the validator reports where it opens.
    text = "candidate.magpsf > 1;\nfinkclass = 'open; still\nopen"
    assert split_conditions(text) == ["candidate.magpsf > 1", "finkclass = 'open; still\nopen"]
    with pytest.raises(ConditionError) as info:
        validate_conditions(text, FIELDS)
    assert info.value.condition == "finkclass = 'open; still\nopen" and info.value.position == 12
    assert info.value.problem == "unterminated quote ' at column 13"


def test_validate_textarea_with_the_portal_examples() -> None:
    textarea = (
        "candidate.magpsf > 19.5;\n"
        "(candidate.magnr - candidate.magpsf) < -4 * (LOG10(candidate.distnr) + 0.2);\n"
        "rf_snia_vs_nonia > 0.5;"
    )
    validated = validate_conditions(textarea, FIELDS)
    assert [v.source for v in validated] == [
        "candidate.magpsf > 19.5",
        "(candidate.magnr - candidate.magpsf) < -4 * (LOG10(candidate.distnr) + 0.2)",
        "rf_snia_vs_nonia > 0.5",
    ]
    assert validate_conditions(["finkclass = 'a;b'", "roid = 3"], FIELDS)[0].spark_sql == "finkclass = 'a;b'"
    assert validate_conditions("", FIELDS) == []  # no extra condition at all is fine


def test_hidden_statement_after_a_semicolon_is_rejected() -> None:
    with pytest.raises(ConditionError) as info:
        validate_conditions("candidate.magpsf > 19.5; DROP TABLE alerts", FIELDS)
    assert info.value.token == "DROP"
    assert info.value.condition == "DROP TABLE alerts"


def test_limits_are_inclusive() -> None:
    longest = "finkclass = '" + "x" * (MAX_CONDITION_LENGTH - 14) + "'"
    assert len(longest) == MAX_CONDITION_LENGTH
    validate_condition(longest, FIELDS)
    validate_condition("(" * MAX_DEPTH + "candidate.magpsf > 1" + ")" * MAX_DEPTH, FIELDS)
    validate_condition("NOT " * (MAX_DEPTH - 1) + "from_upper", FIELDS)
    # Long chains of one operator are wide, not deep.
    validate_condition(" AND ".join(["candidate.magpsf > 1"] * 80), FIELDS)


@pytest.fixture
def parse_calls(monkeypatch) -> dict[str, int]:
    """Counts the conditions validated and the textareas split (an oversized request: none)."""
    calls = {"validate_condition": 0, "split_conditions": 0}
    # Each is patched where it is called: validate_conditions calls validate_condition, the size
    # check calls split_conditions.
    for module, name in ((validator_module, "validate_condition"), (limits_module, "split_conditions")):
        original = getattr(module, name)

        def counting(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counting)
    return calls


@pytest.mark.parametrize(
    ("conditions", "message", "splits"),
    [
        (["candidate.magpsf > 19"] * 10_000, f"10000 extra conditions, at most {MAX_CONDITIONS}; keep the ones", 0),
        ("candidate.magpsf > 19;" * (MAX_CONDITIONS + 1),
         f"{MAX_CONDITIONS + 1} extra conditions, at most {MAX_CONDITIONS}", 1),
        (["candidate.magpsf > 19 AND " * 40_000], f"1040000 characters of extra conditions, at most "
         f"{MAX_CONDITIONS_LENGTH} in all; shorten them (each under {MAX_CONDITION_LENGTH} characters)", 0),
        ("rb>0;" * 200_000, "1000000 characters of extra conditions", 0),  # 200,000 tiny conditions
    ],
    ids=["10k-conditions", "textarea-101", "1MB-condition", "1MB-textarea"],
)
def test_oversized_condition_sets_are_refused_before_any_is_parsed(conditions, message, splits, parse_calls) -> None:
    with pytest.raises(ConditionError) as info:
        validate_conditions(conditions, FIELDS)
    assert type(info.value) is ConditionsSizeError
    assert message in str(info.value)
    assert len(str(info.value)) < 200  # no condition is quoted
    # nothing was parsed; a text over the total length was not even split
    assert parse_calls == {"validate_condition": 0, "split_conditions": splits}


def test_condition_set_limits_are_inclusive(parse_calls) -> None:
    assert len(validate_conditions(["candidate.magpsf > 19"] * MAX_CONDITIONS, FIELDS)) == MAX_CONDITIONS
    longest = "finkclass = '" + "x" * (MAX_CONDITION_LENGTH - 14) + "'"
    count = MAX_CONDITIONS_LENGTH // MAX_CONDITION_LENGTH
    assert len(validate_conditions([longest] * count, FIELDS)) == count  # exactly MAX_CONDITIONS_LENGTH
    with pytest.raises(ConditionsSizeError):
        validate_conditions([longest] * count + ["x"], FIELDS)
    assert parse_calls["validate_condition"] == MAX_CONDITIONS + count


def test_conditions_size_error_survives_pickling() -> None:
    import pickle

    with pytest.raises(ConditionsSizeError) as info:
        validate_conditions(["candidate.magpsf > 19"] * (MAX_CONDITIONS + 1), FIELDS)
    copy = pickle.loads(pickle.dumps(info.value))
    assert type(copy) is ConditionsSizeError and str(copy) == str(info.value) and copy.problem == info.value.problem


def test_map_keys_are_unconstrained_by_default_and_results_are_frozen() -> None:
    validated = validate_condition("mangrove.anything = 'x'", FIELDS)  # no survey's keys given
    assert validated == validate_condition("mangrove.anything = 'x'", FIELDS, map_keys={})
    assert validated.spark_sql == "mangrove['anything'] = 'x'"
    with pytest.raises(dataclasses.FrozenInstanceError):
        validated.spark_sql = "true"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Spark: the regenerated SQL runs and keeps exactly the rows of the Python reference.

_CANDIDATE_FIELDS = "jd fid magpsf sigmapsf magnr distnr drb ndethist jdstarthist field ssnamenr ra".split()
SPARK_SCHEMA = pa.schema(
    [
        ARCHIVE_SCHEMA.field("objectId"),
        pa.field("candidate", pa.struct([CANDIDATE.field(n) for n in _CANDIDATE_FIELDS])),
        pa.field("prv_candidates", pa.list_(pa.struct([PRV_CANDIDATE.field(n) for n in ("jd", "fid", "magpsf")]))),
        ARCHIVE_SCHEMA.field("brokerIngestTimestamp"),
        ARCHIVE_SCHEMA.field("cdsxmatch"),
        ARCHIVE_SCHEMA.field("mangrove"),
        ARCHIVE_SCHEMA.field("roid"),
        ARCHIVE_SCHEMA.field("rf_snia_vs_nonia"),
        pa.field("lc_features_g", pa.struct([LC_FEATURES.field("mean")])),
        ARCHIVE_SCHEMA.field("from_upper"),
        ARCHIVE_SCHEMA.field("timestamp"),
        pa.field("finkclass", pa.string()),
        pa.field("tnsclass", pa.string()),
        pa.field("year", pa.int32()),
        pa.field("month", pa.int32()),
        pa.field("day", pa.int32()),
    ]
)


def _ts(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.timezone.utc)


def _history(*points: tuple[float, int]) -> list[Row]:
    return [{"jd": 2460000.5 + i, "fid": fid, "magpsf": mag} for i, (mag, fid) in enumerate(points)]


def _row(object_id: str, candidate: Row, **values: Any) -> Row:
    base = dict.fromkeys(SPARK_SCHEMA.names)
    base.update(objectId=object_id, candidate={**dict.fromkeys(_CANDIDATE_FIELDS), **candidate}, **values)
    return base


ROWS: list[Row] = [
    _row("ZTF24aaaaaaa",
         dict(jd=2460310.5, fid=1, magpsf=19.8, sigmapsf=0.1, magnr=15.0, distnr=0.5, drb=0.9, ndethist=5,
              jdstarthist=2460300.5, field=500, ra=10.0),
         prv_candidates=_history((19.0, 1), (19.2, 2), (19.4, 1), (19.6, 2)),
         mangrove=[("HyperLEDA_name", "PGC1"), ("2MASS_name", "J1"), ("lum_dist", "40.5"), ("ang_dist", "0.3")],
         cdsxmatch="Unknown", rf_snia_vs_nonia=0.7, roid=0, from_upper=False, finkclass="SN candidate",
         tnsclass="Unknown", lc_features_g={"mean": 18.5}, brokerIngestTimestamp=_ts(2024, 1, 2, 3),
         timestamp=_ts(2024, 1, 2, 3), year=2024, month=1, day=2),
    _row("ZTF24aaaaaab",
         dict(jd=2460310.5, fid=2, magpsf=18.2, sigmapsf=0.05, magnr=22.0, distnr=0.0, drb=0.4, ndethist=30,
              jdstarthist=2460000.5, field=501, ssnamenr="12345", ra=50.0),
         prv_candidates=_history((18.0, 2)), mangrove=None, cdsxmatch="RRLyr", rf_snia_vs_nonia=0.2, roid=3,
         from_upper=True, finkclass="RRLyr", tnsclass="Unknown", lc_features_g=None,
         brokerIngestTimestamp=_ts(2023, 12, 31, 23), timestamp=_ts(2023, 12, 31, 23), year=2023, month=12, day=31),
    _row("ZTF24aaaaaac",
         dict(jd=2460311.5, fid=1, distnr=2.0, drb=0.8, ndethist=1, jdstarthist=2460311.5, field=500, ra=11.5),
         prv_candidates=None, mangrove=[], cdsxmatch="aXb", rf_snia_vs_nonia=None, roid=0, from_upper=None,
         finkclass="Unknown", tnsclass="(TNS) SN Ia", lc_features_g={"mean": 17.0},
         brokerIngestTimestamp=None, timestamp=None, year=2024, month=1, day=3),
    _row("ZTF24aaaaaad",
         dict(jd=2460311.5, fid=2, magpsf=20.5, sigmapsf=0.2, magnr=24.0, distnr=2.0, drb=0.95, ndethist=3,
              jdstarthist=2460305.5, field=600, ra=9.5),
         prv_candidates=_history((20.1, 2), (20.2, 1), (20.3, 2), (20.4, 1), (20.6, 1)),
         mangrove=[("HyperLEDA_name", "PGC3"), ("lum_dist", "not-a-number")], cdsxmatch="it's",
         rf_snia_vs_nonia=0.55, roid=1, from_upper=False, finkclass="Early SN Ia candidate",
         tnsclass="(TNS) SN Ia", lc_features_g={"mean": 20.0}, brokerIngestTimestamp=_ts(2024, 1, 3),
         timestamp=_ts(2024, 1, 3), year=2024, month=1, day=3),
    _row("ZTF24aaaaaae",
         dict(jd=2460341.5, fid=1, magpsf=17.0, sigmapsf=0.0, magnr=17.5, distnr=5.0, drb=0.6, ndethist=12,
              jdstarthist=2460330.5, field=500, ra=200.0),
         prv_candidates=_history((17.2, 1), (17.1, 2)), mangrove=[("2MASS_name", "J4")], cdsxmatch="EB*",
         rf_snia_vs_nonia=0.9, roid=2, from_upper=True, finkclass="EB*", tnsclass="Unknown",
         lc_features_g={"mean": 17.5}, brokerIngestTimestamp=_ts(2024, 2, 1), timestamp=_ts(2024, 2, 1),
         year=2024, month=2, day=1),
    _row("ZTF24aaaaaaf",
         dict(jd=2460342.5, fid=2, magpsf=19.5, sigmapsf=0.5, magnr=15.5, distnr=1.0, drb=0.99, ndethist=7,
              jdstarthist=2460340.5, field=700, ssnamenr="2010 AB", ra=300.0),
         prv_candidates=_history((19.4, 1), (19.3, 2), (19.2, 1)),
         mangrove=[("HyperLEDA_name", "PGC5"), ("lum_dist", "120.0")], cdsxmatch="a_b", rf_snia_vs_nonia=0.5,
         roid=0, from_upper=False, finkclass="SN candidate", tnsclass="(TNS) SN II", lc_features_g={"mean": 19.0},
         brokerIngestTimestamp=_ts(2024, 2, 2), timestamp=_ts(2024, 2, 2), year=2024, month=2, day=2),
]


@pytest.mark.spark
def test_spark_selects_the_same_rows_as_python(spark) -> None:
    from pyspark.sql import functions as F

    table = pa.Table.from_pylist(ROWS, schema=SPARK_SCHEMA)
    rows = table.to_pylist()  # read back: float32 values exactly as Spark sees them
    # A local relation (no cache): Spark's optimizer evaluates each small filter in the driver.
    df = spark.createDataFrame(table)
    assert df.count() == len(rows)
    mismatches = []
    for case in ACCEPTED:
        validated = _validate_one(case.condition)
        expected = {r["objectId"] for r in rows if case.keeps(r)}
        # Each case keeps some rows but not all, so the comparison is informative.
        assert 0 < len(expected) < len(rows), (case.condition, expected)
        got = {r.objectId for r in df.filter(F.expr(validated.spark_sql)).select("objectId").collect()}
        if got != expected:
            mismatches.append((case.condition, validated.spark_sql, sorted(got), sorted(expected)))
    assert not mismatches, mismatches
