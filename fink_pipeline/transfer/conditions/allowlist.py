"""What a condition may use: the allowed functions, the refused ones with their reasons, the
statement and query tokens that never start an expression."""

from __future__ import annotations

import difflib
from typing import Mapping

from sqlglot.tokens import TokenType

# Pure, deterministic functions a condition may call (matched case-insensitively). The try_*
# ones are what the regenerated SQL uses, so a regenerated condition validates again unchanged.
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(
    """
    abs sqrt log log10 log2 ln exp pow power floor ceil ceiling round sign signum
    sin cos tan asin acos atan atan2 degrees radians greatest least pi
    lower upper length substring substr trim concat startswith endswith contains instr
    size array_contains element_at coalesce isnull isnotnull nvl isnan
    try_divide try_mod try_element_at
    """.split()
)
# Spelled like calls but handled as syntax.
SYNTAX_CALLS = frozenset({"cast", "try_cast"})

_REFLECTIVE = "reflective call into the JVM"
_IO = "reads files or the execution environment"
_RANDOM = "non-deterministic"
_GENERATOR = "generator function (changes the number of rows)"
_AGGREGATE = "aggregate function (a condition applies to one alert at a time)"
_WINDOW = "window function (a condition applies to one alert at a time)"
_LAMBDA = "higher-order function with a lambda"
_PARSER = "parses data at run time"
_SIDE_EFFECT = "raises errors at run time"
# Functions people do try, with the reason they are refused (anything else unknown is refused too).
FORBIDDEN_FUNCTIONS: Mapping[str, str] = {
    **dict.fromkeys(["reflect", "java_method", "try_reflect"], _REFLECTIVE),
    **dict.fromkeys(
        [
            "input_file_name", "input_file_block_start", "input_file_block_length", "read_files",
            "current_user", "user", "session_user", "current_database", "current_catalog",
            "current_schema", "version", "spark_partition_id", "monotonically_increasing_id",
            "current_timezone",
        ],
        _IO,
    ),
    **dict.fromkeys(
        [
            "rand", "randn", "random", "uuid", "shuffle", "uniform", "randstr",
            "current_timestamp", "current_date", "now", "localtimestamp", "unix_timestamp",
        ],
        _RANDOM,
    ),
    **dict.fromkeys(
        [
            "explode", "explode_outer", "posexplode", "posexplode_outer", "inline",
            "inline_outer", "stack", "json_tuple",
        ],
        _GENERATOR,
    ),
    **dict.fromkeys(
        [
            "sum", "avg", "mean", "count", "min", "max", "first", "last", "collect_list",
            "collect_set", "stddev", "stddev_pop", "stddev_samp", "variance", "var_pop",
            "var_samp", "percentile", "percentile_approx", "approx_count_distinct", "any_value",
            "every", "bool_and", "bool_or", "count_if", "max_by", "min_by", "median", "mode",
            "corr", "covar_pop", "covar_samp", "skewness", "kurtosis", "first_value",
            "last_value", "array_agg", "some", "any",
        ],
        _AGGREGATE,
    ),
    **dict.fromkeys(
        [
            "row_number", "rank", "dense_rank", "percent_rank", "cume_dist", "ntile", "lag",
            "lead", "nth_value", "over",
        ],
        _WINDOW,
    ),
    **dict.fromkeys(
        [
            "transform", "filter", "exists", "forall", "aggregate", "reduce", "zip_with",
            "map_filter", "transform_keys", "transform_values", "map_zip_with",
        ],
        _LAMBDA,
    ),
    **dict.fromkeys(
        [
            "from_json", "from_csv", "from_xml", "schema_of_json", "schema_of_csv", "xpath",
            "xpath_string", "xpath_boolean", "xpath_int", "xpath_double", "get_json_object",
            "parse_json", "url_decode", "aes_decrypt", "aes_encrypt",
        ],
        _PARSER,
    ),
    **dict.fromkeys(["raise_error", "assert_true"], _SIDE_EFFECT),
}
# Helpful replacements for common names that are not allowed.
FUNCTION_HINTS: Mapping[str, str] = {
    "cardinality": "size",
    "array_size": "size",
    "lcase": "lower",
    "ucase": "upper",
    "char_length": "length",
    "character_length": "length",
    "len": "length",
    "locate": "instr",
    "position": "instr",
    "ifnull": "coalesce",
}

# sqlglot's name for a parsed function -> the Spark function we emit and check.
CANONICAL_NAMES: Mapping[str, str] = {
    "STARTS_WITH": "STARTSWITH",
    "ENDS_WITH": "ENDSWITH",
    "STR_POSITION": "INSTR",
    "ARRAY_SIZE": "SIZE",
    "IS_NAN": "ISNAN",
    "POW": "POWER",
    "SIGNUM": "SIGN",
    "CEILING": "CEIL",
    "SUBSTR": "SUBSTRING",
    "NVL": "COALESCE",
    "SAFE_DIVIDE": "TRY_DIVIDE",
}
# sqlglot flags that carry no meaning for the Spark SQL we regenerate.
# zero_start (sqlglot >= 30.31, set by the Spark dialect on SUBSTRING) records Spark's own
# reading of a start of 0; the regenerated call runs on Spark, which reads it the same way.
HARMLESS_FLAGS = frozenset({"ignore_nulls", "safe", "coalesce", "is_nvl", "is_null", "zero_start"})

# First tokens of statements (a condition is an expression, never a statement).
STATEMENT_TOKENS = frozenset(
    getattr(TokenType, name)
    for name in (
        "SELECT INSERT DELETE DROP UPDATE CREATE ALTER MERGE WITH TRUNCATE COMMAND VALUES TABLE "
        "GRANT USE SET DESCRIBE SHOW CACHE UNCACHE REFRESH LOAD EXECUTE PRAGMA REPLACE COPY PUT "
        "GET ANALYZE COMMENT SUMMARIZE"
    ).split()
    if hasattr(TokenType, name)
)
# Tokens that start a query anywhere in an expression (subqueries).
QUERY_TOKENS = frozenset(
    getattr(TokenType, name)
    for name in ("SELECT", "WITH", "VALUES", "UNION", "EXCEPT", "INTERSECT")
    if hasattr(TokenType, name)
)
# Keywords legitimately followed by "(" that are not function calls.
KEYWORDS_BEFORE_PAREN = frozenset(
    "AND OR NOT IN WHEN THEN ELSE CASE END BETWEEN LIKE ILIKE RLIKE REGEXP IS NULL TRUE FALSE "
    "AS ESCAPE DIV".split()
)


def function_refusal(name: str) -> tuple[str, str, str | None] | None:
    """(problem, fix, suggested function) when `name` may not be called, None when it may."""
    lower = name.lower()
    if lower in ALLOWED_FUNCTIONS or lower in SYNTAX_CALLS:
        return None
    allowed = ", ".join(sorted(ALLOWED_FUNCTIONS))
    reason = FORBIDDEN_FUNCTIONS.get(lower)
    if lower == "over":
        return f'window functions ("{name}") are not allowed', "a condition applies to one alert at a time", None
    if reason is not None:
        return f'function "{name}" is not allowed ({reason})', f"only these pure functions are allowed: {allowed}", None
    suggestion = FUNCTION_HINTS.get(lower)
    if suggestion is None:
        close = difflib.get_close_matches(lower, sorted(ALLOWED_FUNCTIONS), n=1, cutoff=0.7)
        suggestion = close[0] if close else None
    fix = f'did you mean "{suggestion}"?' if suggestion else f"allowed functions: {allowed}"
    return f'unknown function "{name}" (user-defined functions are not allowed)', fix, suggestion
