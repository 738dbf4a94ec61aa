"""Validation of the user's "extra conditions" before any Spark code runs.

Fink's portal passes the raw text of its "extra conditions" textarea to `df.filter(str)`
(reference sections 3 and 10): a typo surfaces as a Spark stack trace (or, as in
ztf.fink-portal.org#641, as nothing at all) and nothing stops hostile input such as
`reflect(...)` or `input_file_name()`. Here every condition is parsed with sqlglot (Spark
dialect), checked against an allow-list of syntax, fields and pure functions with a small type
inference, and *regenerated* from the checked AST: the Spark job never sees the user's text.

The regenerated SQL is also made safe for Spark's ANSI mode (the default since Spark 4), where
`x / 0`, `arr[9]` or `CAST('abc' AS INT)` abort the whole job: division and modulo become
`try_divide`/`try_mod`, array access becomes `try_element_at` and casts become `TRY_CAST`, which
return NULL instead (the row is then not selected, as in Fink's non-ANSI Spark 3).

Pure Python: sqlglot and pyarrow only (no Spark, no Dagster).
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import math
import re
import sys
import threading
import unicodedata
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Collection, Iterator, Mapping, Sequence

import pyarrow as pa
from sqlglot import exp
from sqlglot.dialects.spark import Spark
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from fink_pipeline.surveys.ztf.schema import MAP_KEYS as ZTF_SCHEMA_MAP_KEYS

__all__ = [
    "ALLOWED_FUNCTIONS",
    "MAX_CONDITIONS",
    "MAX_CONDITIONS_LENGTH",
    "MAX_CONDITION_LENGTH",
    "MAX_DEPTH",
    "ZTF_MAP_KEYS",
    "ConditionError",
    "ConditionsSizeError",
    "ValidatedCondition",
    "check_conditions_size",
    "conditions_size_problem",
    "split_conditions",
    "validate_condition",
    "validate_conditions",
]

MAX_CONDITION_LENGTH = 2000
MAX_DEPTH = 50
# A request's extra conditions together (after splitting): each one is parsed and type-checked
# (about a millisecond for a short one), so a hostile request of 10,000 conditions or of a 1 MB
# textarea split into 250,000 pieces would hold the validating process for minutes. Real
# requests carry a handful.
MAX_CONDITIONS = 100
MAX_CONDITIONS_LENGTH = 20_000  # characters over all conditions (ten of the longest allowed)

# Keys of the map columns whose content is known (the survey's `map_keys`; ZTF's by default).
# Keys of map columns absent from the mapping are not checked; map keys are case-sensitive in Spark.
ZTF_MAP_KEYS: Mapping[str, tuple[str, ...]] = ZTF_SCHEMA_MAP_KEYS

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
_SYNTAX_CALLS = frozenset({"cast", "try_cast"})

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
_FORBIDDEN_FUNCTIONS: Mapping[str, str] = {
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
_FUNCTION_HINTS: Mapping[str, str] = {
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
_CANONICAL_NAMES: Mapping[str, str] = {
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
_HARMLESS_FLAGS = frozenset({"ignore_nulls", "safe", "coalesce", "is_nvl", "is_null", "zero_start"})

# First tokens of statements (a condition is an expression, never a statement).
_STATEMENT_TOKENS = frozenset(
    getattr(TokenType, name)
    for name in (
        "SELECT INSERT DELETE DROP UPDATE CREATE ALTER MERGE WITH TRUNCATE COMMAND VALUES TABLE "
        "GRANT USE SET DESCRIBE SHOW CACHE UNCACHE REFRESH LOAD EXECUTE PRAGMA REPLACE COPY PUT "
        "GET ANALYZE COMMENT SUMMARIZE"
    ).split()
    if hasattr(TokenType, name)
)
# Tokens that start a query anywhere in an expression (subqueries).
_QUERY_TOKENS = frozenset(
    getattr(TokenType, name)
    for name in ("SELECT", "WITH", "VALUES", "UNION", "EXCEPT", "INTERSECT")
    if hasattr(TokenType, name)
)
# Keywords legitimately followed by "(" that are not function calls.
_KEYWORDS_BEFORE_PAREN = frozenset(
    "AND OR NOT IN WHEN THEN ELSE CASE END BETWEEN LIKE ILIKE RLIKE REGEXP IS NULL TRUE FALSE "
    "AS ESCAPE DIV".split()
)
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NUMBER_RE = re.compile(r"^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
# The string forms Spark casts to a timestamp/date without error (checked before ANSI Spark does).
_TIMESTAMP_RE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{1,2})(-(?P<d>\d{1,2})"
    r"([ T](?P<H>\d{1,2}):(?P<M>\d{1,2})(:(?P<S>\d{1,2})(\.\d{1,9})?)?"
    r"(Z|[+-]\d{2}(:?\d{2})?)?)?)?)?$"
)
_DIALECT = Spark()


class ConditionError(ValueError):
    """A condition was refused; `condition`, `token` and `suggestion` say where and how to fix it."""

    def __init__(
        self,
        condition: str,
        token: str,
        problem: str,
        fix: str | None = None,
        suggestion: str | None = None,
        position: int | None = None,
    ) -> None:
        self.condition = condition
        self.token = token
        self.problem = problem
        self.suggestion = suggestion
        self.position = position
        if fix is None and suggestion is not None:
            fix = f'did you mean "{suggestion}"?'
        self.fix = fix
        shown = condition if len(condition) <= 200 else condition[:200] + "…"
        message = f'condition "{shown}": {problem}'
        if fix:
            message += f" — {fix}"
        super().__init__(message)

    def __reduce__(self):  # keep the attributes when pickled (e.g. across processes)
        return (type(self), (self.condition, self.token, self.problem, self.fix, self.suggestion, self.position))


class ConditionsSizeError(ConditionError):
    """Too many conditions, or too long together: about all of them, so no one is quoted."""

    def __init__(self, problem: str) -> None:
        super().__init__("", "", problem)
        self.args = (problem,)

    def __reduce__(self):
        return (type(self), (self.problem,))


@dataclass(frozen=True)
class ValidatedCondition:
    """A checked condition: the user's text, the Spark SQL to run and the fields it reads."""

    source: str
    spark_sql: str
    fields: tuple[str, ...]


# ---------------------------------------------------------------------------------------------
# Splitting


def _quote_aware_scan(text: str) -> Iterator[tuple[int, str, str | None]]:
    """Yield (index, char, open quote or None) for every char; quotes follow Spark's lexer.

    Strings are '...' or "..." with backslash escapes, identifiers are `...` (`` escapes `).
    The open quote is the one the char is *inside* (None for chars outside any quote,
    including the opening and closing quote chars themselves).
    """
    quote: str | None = None
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if quote is None:
            if ch in "'\"`":
                quote = ch
            yield i, ch, None
        elif quote != "`" and ch == "\\" and i + 1 < n:
            yield i, ch, quote
            yield i + 1, text[i + 1], quote
            i += 1
        elif ch == quote:
            if quote == "`" and i + 1 < n and text[i + 1] == "`":
                yield i, ch, quote
                yield i + 1, ch, quote
                i += 1
            else:
                quote = None
                yield i, ch, None
        else:
            yield i, ch, quote
        i += 1


def split_conditions(text: str | Sequence[str]) -> list[str]:
    """Split a textarea (or several) into single conditions.

    Splits on `;` and newlines outside quoted literals (`'a;b'` stays whole), strips every
    piece and drops empty ones, like the portal does before calling Fink's job.
    """
    texts = [text] if isinstance(text, str) else list(text)
    pieces: list[str] = []
    for chunk in texts:
        if not isinstance(chunk, str):
            raise TypeError(f"conditions must be strings, not {type(chunk).__name__}")
        start = 0
        for i, ch, quote in _quote_aware_scan(chunk):
            if quote is None and ch in ";\n\r":
                pieces.append(chunk[start:i])
                start = i + 1
        pieces.append(chunk[start:])
    return [p.strip() for p in pieces if p.strip()]


# ---------------------------------------------------------------------------------------------
# Types


class _Kind(enum.Enum):
    NUMERIC = "numeric"
    STRING = "string"
    BOOLEAN = "boolean"
    TIMESTAMP = "timestamp"
    DATE = "date"
    BINARY = "binary"
    NULL = "null"
    STRUCT = "struct"
    ARRAY = "array"
    MAP = "map"
    OTHER = "other"


_SCALAR = {_Kind.NUMERIC, _Kind.STRING, _Kind.BOOLEAN, _Kind.TIMESTAMP, _Kind.DATE}
_NO_VALUE = object()


@dataclass(frozen=True)
class _Type:
    kind: _Kind
    arrow: pa.DataType | None = None

    def __str__(self) -> str:
        return self.kind.value


def _arrow_kind(dtype: pa.DataType) -> _Kind:
    t = pa.types
    if t.is_dictionary(dtype):
        return _arrow_kind(dtype.value_type)
    if t.is_integer(dtype) or t.is_floating(dtype) or t.is_decimal(dtype):
        return _Kind.NUMERIC
    if t.is_string(dtype) or t.is_large_string(dtype) or getattr(t, "is_string_view", lambda _: False)(dtype):
        return _Kind.STRING
    if t.is_boolean(dtype):
        return _Kind.BOOLEAN
    if t.is_timestamp(dtype):
        return _Kind.TIMESTAMP
    if t.is_date(dtype):
        return _Kind.DATE
    if t.is_binary(dtype) or t.is_large_binary(dtype) or t.is_fixed_size_binary(dtype):
        return _Kind.BINARY
    if t.is_struct(dtype):
        return _Kind.STRUCT
    if t.is_list(dtype) or t.is_large_list(dtype) or t.is_fixed_size_list(dtype):
        return _Kind.ARRAY
    if t.is_map(dtype):
        return _Kind.MAP
    if t.is_null(dtype):
        return _Kind.NULL
    return _Kind.OTHER


def _typed(dtype: pa.DataType) -> _Type:
    return _Type(_arrow_kind(dtype), dtype)


NUMERIC = _Type(_Kind.NUMERIC)
STRING = _Type(_Kind.STRING)
BOOLEAN = _Type(_Kind.BOOLEAN)
NULL = _Type(_Kind.NULL)


class _Lazy:
    """The user's SQL for a node, rendered only when a message needs it (keeps validation linear)."""

    __slots__ = ("node", "_sql")

    def __init__(self, node: exp.Expr) -> None:
        self.node = node
        self._sql: str | None = None

    def __str__(self) -> str:
        if self._sql is None:
            self._sql = self.node.sql(dialect="spark")
        return self._sql

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


class _Out:
    """A validated sub-expression: the rebuilt sqlglot node, its type, its literal value."""

    __slots__ = ("node", "type", "_text", "value", "path")

    def __init__(self, node: exp.Expr, type: _Type, text: "str | _Lazy", value: object = _NO_VALUE,
                 path: str | None = None) -> None:
        self.node = node
        self.type = type
        self._text = text  # how the user wrote it (rendered only for messages)
        self.value = value  # Python value when the node is a literal
        self.path = path  # the `fields` key when the node is exactly a known field

    @property
    def text(self) -> str:
        """How the user wrote this sub-expression (for messages)."""
        return str(self._text)

    @property
    def is_literal(self) -> bool:
        return self.value is not _NO_VALUE


# ---------------------------------------------------------------------------------------------
# Validation


@dataclass
class _Context:
    condition: str
    fields: Mapping[str, pa.DataType]
    map_keys: Mapping[str, Collection[str]]
    used: dict[str, None] = field(default_factory=dict)  # ordered set of fields read

    def fail(self, token: object, problem: str, fix: str | None = None, suggestion: str | None = None,
             position: int | None = None) -> ConditionError:
        return ConditionError(self.condition, str(token), problem, fix, suggestion, position)


_RECURSION_LOCK = threading.Lock()


@contextmanager
def _recursion_headroom(limit: int = 20_000) -> Iterator[None]:
    """sqlglot's parser recurses ~20 frames per nesting level: give it room for MAX_DEPTH.

    Pure-Python frames do not use the C stack on Python 3.11+, so a higher limit is safe.
    """
    with _RECURSION_LOCK:
        previous = sys.getrecursionlimit()
        if previous < limit:
            sys.setrecursionlimit(limit)
        try:
            yield
        finally:
            if previous < limit:
                sys.setrecursionlimit(previous)


def validate_conditions(
    conditions: str | Sequence[str],
    fields: Mapping[str, pa.DataType],
    *,
    map_keys: Mapping[str, Collection[str]] = ZTF_MAP_KEYS,
) -> list[ValidatedCondition]:
    """Split (see `split_conditions`) and validate every condition; raise on the first bad one.

    `fields` maps dotted field paths (as `flatten_schema` returns, plus computed columns such as
    `finkclass` or `year`) to Arrow types. An empty textarea gives an empty list.
    Raises `ConditionError` (a `ValueError`) naming the condition, the token and the fix; more
    than MAX_CONDITIONS conditions or MAX_CONDITIONS_LENGTH characters in all are refused before
    any of them is parsed (see `check_conditions_size`).
    """
    return [validate_condition(c, fields, map_keys=map_keys) for c in check_conditions_size(conditions)]


def conditions_size_problem(conditions: str | Sequence[str]) -> tuple[list[str], str | None]:
    """(the split conditions, or [] when too long to split; the problem with their size or None).

    The number of texts given and their total length are checked first, on the raw input, so
    that a huge textarea is never scanned; then the number of conditions once split. The
    problem names the limit and the fix.
    """
    texts = [conditions] if isinstance(conditions, str) else list(conditions)
    given = sum(1 for t in texts if isinstance(t, str) and t.strip())  # each holds one condition or more
    if given > MAX_CONDITIONS:
        return [], _too_many(given)
    total = sum(len(t) for t in texts if isinstance(t, str))
    if total > MAX_CONDITIONS_LENGTH:
        return [], (
            f"{total} characters of extra conditions, at most {MAX_CONDITIONS_LENGTH} in all; "
            f"shorten them (each under {MAX_CONDITION_LENGTH} characters)"
        )
    pieces = split_conditions(texts)
    if len(pieces) > MAX_CONDITIONS:
        return pieces, _too_many(len(pieces))
    return pieces, None


def _too_many(count: int) -> str:
    return (f"{count} extra conditions, at most {MAX_CONDITIONS}; "
            "keep the ones you need (they are ANDed: merge those on one field)")


def check_conditions_size(conditions: str | Sequence[str]) -> list[str]:
    """The split conditions; `ConditionError` when there are too many or they are too long in all."""
    pieces, problem = conditions_size_problem(conditions)
    if problem is not None:
        raise ConditionsSizeError(problem)
    return pieces


def validate_condition(
    condition: str,
    fields: Mapping[str, pa.DataType],
    *,
    map_keys: Mapping[str, Collection[str]] = ZTF_MAP_KEYS,
) -> ValidatedCondition:
    """Validate ONE condition (no splitting: a `;` is refused) and regenerate its Spark SQL."""
    if not isinstance(condition, str):
        raise TypeError(f"a condition must be a string, not {type(condition).__name__}")
    text = condition.strip()
    ctx = _Context(text, fields, map_keys)
    if not text:
        raise ctx.fail("", "empty condition", "write a boolean expression such as candidate.magpsf > 19.5")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ctx.fail(
            f"{len(text)} characters",
            f"condition too long ({len(text)} characters)",
            f"keep each condition under {MAX_CONDITION_LENGTH} characters or split it on ';'",
        )
    _check_characters(ctx, text)
    with _recursion_headroom():
        tokens = _tokenize(ctx, text)
        _check_tokens(ctx, tokens)
        tree = _parse(ctx, text, tokens)
        _check_depth(ctx, tree)
        out = _Validator(ctx).visit(tree)
        if out.type.kind is not _Kind.BOOLEAN:
            raise ctx.fail(
                out.text,
                f"not a boolean condition: \"{out.text}\" is {_describe(out.type)}",
                "compare it with something, e.g. candidate.magpsf > 19.5",
            )
        spark_sql = out.node.sql(dialect="spark")
    return ValidatedCondition(source=text, spark_sql=spark_sql, fields=tuple(ctx.used))


def _check_characters(ctx: _Context, text: str) -> None:
    """Refuse comments, statement separators, invisible characters and unterminated quotes."""
    last_quote: tuple[int, str] | None = None
    for i, ch, quote in _quote_aware_scan(text):
        # Control and format characters (NUL, bidi overrides, zero-width...) can hide text.
        if ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf"):
            raise ctx.fail(f"U+{ord(ch):04X}", f"invisible character U+{ord(ch):04X}",
                           "remove it (retype the condition)", position=i)
        if quote is not None:
            continue
        if ch in "'\"`":
            last_quote = (i, ch) if last_quote is None else None
            continue
        if ch == "-" and text[i + 1: i + 2] == "-" or ch == "/" and text[i + 1: i + 2] == "*":
            marker = text[i: i + 2]
            raise ctx.fail(marker, f'comments ("{marker}") are not allowed', "comments can hide text; remove it", position=i)
        if ch == ";":
            raise ctx.fail(";", "several statements (\";\")", "write one condition per line or per ';'-separated piece", position=i)
    if last_quote is not None:
        i, q = last_quote
        raise ctx.fail(q, f"unterminated quote {q} at column {i + 1}", f"close it with {q}", position=i)


def _tokenize(ctx: _Context, text: str) -> list[Token]:
    try:
        return _DIALECT.tokenize(text)
    except TokenError as error:
        raise ctx.fail(text, f"cannot read the condition ({error})", "check quotes and special characters") from None


def _check_tokens(ctx: _Context, tokens: list[Token]) -> None:
    """Token-level checks, in text order: statements, subqueries, nesting, function names.

    Function names are checked here (not on the AST) because sqlglot renames functions
    (`nvl` -> COALESCE, `random` -> RAND): the user must see the name they typed.
    """
    if tokens and tokens[0].token_type in _STATEMENT_TOKENS and not (
        len(tokens) > 1 and tokens[1].token_type == TokenType.L_PAREN
    ):
        word = tokens[0].text.upper()
        raise ctx.fail(
            tokens[0].text,
            f"{word} statements are not allowed",
            "a condition is a boolean expression such as candidate.magpsf > 19.5",
            position=tokens[0].start,
        )
    depth = 0
    for index, token in enumerate(tokens):
        kind = token.token_type
        if token.comments:  # backstop: sqlglot found a comment the quote-aware scan did not
            raise ctx.fail("--", 'comments are not allowed', "comments can hide text; remove it", position=token.start)
        if kind in _QUERY_TOKENS:
            raise ctx.fail(token.text, f'subqueries ("{token.text}") are not allowed',
                           "a condition can only read fields of the alert", position=token.start)
        if kind in (TokenType.L_PAREN, TokenType.L_BRACKET):
            depth += 1
            if depth > MAX_DEPTH:
                raise ctx.fail(token.text, f"nesting deeper than {MAX_DEPTH} levels",
                               "simplify the condition", position=token.start)
        elif kind in (TokenType.R_PAREN, TokenType.R_BRACKET):
            depth = max(depth - 1, 0)
        nxt = tokens[index + 1] if index + 1 < len(tokens) else None
        if nxt is None or nxt.token_type != TokenType.L_PAREN:
            continue
        prev = tokens[index - 1] if index else None
        quoted = kind == TokenType.IDENTIFIER
        if not quoted and (not _NAME_RE.match(token.text) or token.text.upper() in _KEYWORDS_BEFORE_PAREN):
            continue
        if prev is not None and prev.token_type == TokenType.ALIAS:
            continue  # a type with parameters inside CAST(... AS DECIMAL(10, 2))
        after = tokens[index + 2] if index + 2 < len(tokens) else None
        if after is not None and after.token_type in _QUERY_TOKENS:
            continue  # EXISTS (SELECT ...): reported as a subquery on the next tokens
        _check_function_name(ctx, token.text, token.start)


def _check_function_name(ctx: _Context, name: str, position: int | None = None) -> None:
    lower = name.lower()
    if lower in ALLOWED_FUNCTIONS or lower in _SYNTAX_CALLS:
        return
    allowed = ", ".join(sorted(ALLOWED_FUNCTIONS))
    reason = _FORBIDDEN_FUNCTIONS.get(lower)
    if lower == "over":
        raise ctx.fail(name, f'window functions ("{name}") are not allowed',
                       "a condition applies to one alert at a time", position=position)
    if reason is not None:
        raise ctx.fail(name, f'function "{name}" is not allowed ({reason})',
                       f"only these pure functions are allowed: {allowed}", position=position)
    suggestion = _FUNCTION_HINTS.get(lower)
    if suggestion is None:
        close = difflib.get_close_matches(lower, sorted(ALLOWED_FUNCTIONS), n=1, cutoff=0.7)
        suggestion = close[0] if close else None
    fix = f'did you mean "{suggestion}"?' if suggestion else f"allowed functions: {allowed}"
    raise ctx.fail(name, f'unknown function "{name}" (user-defined functions are not allowed)',
                   fix, suggestion, position=position)


_PARSE_MESSAGES = (
    ("Required keyword", "incomplete expression"),
    ("Expecting )", "missing closing parenthesis"),
    ("Expected END", "CASE without END"),
    ("Invalid expression / Unexpected token", "unexpected token"),
)


def _parse(ctx: _Context, text: str, tokens: list[Token]) -> exp.Expr:
    try:
        trees = _DIALECT.parser().parse(tokens, text)
    except ParseError as error:
        info = error.errors[0] if error.errors else {}
        description = str(info.get("description") or error)
        problem = next((friendly for prefix, friendly in _PARSE_MESSAGES if description.startswith(prefix)), None)
        problem = problem or description.split(".")[0]
        token = str(info.get("highlight") or "").strip() or text
        line, col = info.get("line"), info.get("col")
        where = f" at line {line}, column {col}" if line and line > 1 else (f" at column {col}" if col else "")
        raise ctx.fail(token, f'syntax error{where} near "{token}": {problem}',
                       "check the syntax; conditions look like candidate.magpsf > 19.5") from None
    except RecursionError:
        raise ctx.fail(text[:20], f"nesting deeper than {MAX_DEPTH} levels", "simplify the condition") from None
    trees = [t for t in trees if t is not None]
    if len(trees) != 1:
        raise ctx.fail(";", "several statements", "write one condition per piece")
    return trees[0]


# Same-operator chains (a AND b AND c, a + b - c) count as one nesting level.
_FAMILIES: Mapping[type, str] = {
    exp.And: "and", exp.Or: "or", exp.Add: "add", exp.Sub: "add", exp.Mul: "mul",
    exp.Div: "mul", exp.Mod: "mul", exp.Paren: "paren",
}


def _check_depth(ctx: _Context, tree: exp.Expr) -> None:
    """Expression nesting (iteratively: the AST of a hostile input may be very deep)."""
    stack: list[tuple[exp.Expr, int, exp.Expr | None]] = [(tree, 1, None)]
    while stack:
        node, depth, parent = stack.pop()
        if depth > MAX_DEPTH:
            raise ctx.fail(_token_of(parent or node), f"nesting deeper than {MAX_DEPTH} levels", "simplify the condition")
        family = _FAMILIES.get(type(node))
        for child in node.iter_expressions():
            if isinstance(child, (exp.Identifier, exp.DataType)):
                continue  # names and types are parts of their node, not levels
            same = family is not None and (family == "paren" or _FAMILIES.get(type(child)) == family)
            stack.append((child, depth if same else depth + 1, node))


def _token_of(node: exp.Expr) -> str:
    """A short name for a node in messages: operator, function or keyword."""
    names = {
        exp.Not: "NOT", exp.Neg: "-", exp.Paren: "(", exp.And: "AND", exp.Or: "OR",
        exp.Window: "OVER", exp.Lambda: "->", exp.Star: "*", exp.Interval: "INTERVAL",
        exp.Escape: "ESCAPE", exp.IntDiv: "DIV", exp.DPipe: "||", exp.BitwiseAnd: "&",
        exp.BitwiseOr: "|", exp.BitwiseXor: "^", exp.BitwiseNot: "~", exp.BitwiseLeftShift: "<<",
        exp.BitwiseRightShift: ">>", exp.Any: "ANY", exp.All: "ALL", exp.Exists: "EXISTS",
        exp.Subquery: "SELECT", exp.Select: "SELECT",
    }
    for cls, name in names.items():
        if isinstance(node, cls):
            return name
    if isinstance(node, exp.Anonymous):
        return node.name
    if isinstance(node, exp.Func):
        return node.sql_name().lower()
    if isinstance(node, (exp.Placeholder, exp.Parameter)):
        return node.sql(dialect="spark")
    return node.key.upper()


def _describe(t: _Type) -> str:
    return {
        _Kind.NUMERIC: "a number", _Kind.STRING: "a string", _Kind.BOOLEAN: "a boolean",
        _Kind.TIMESTAMP: "a timestamp", _Kind.DATE: "a date", _Kind.BINARY: "binary data",
        _Kind.NULL: "NULL", _Kind.STRUCT: "a struct", _Kind.ARRAY: "an array", _Kind.MAP: "a map",
    }.get(t.kind, f"of type {t.arrow}")


def _java_regex_error(pattern: str) -> str | None:
    """Best-effort check that `pattern` compiles as a Java regex (Spark's RLIKE).

    Python's `re` is close to Java's; Java-only constructs are neutralised before compiling and
    Python-only ones are refused, so a valid Java pattern is not rejected.
    """
    if "(?P" in pattern or "(?(" in pattern:
        return "Python-only group syntax"
    py = re.sub(r"\\Q(.*?)(\\E|$)", lambda m: re.escape(m.group(1)), pattern, flags=re.S)
    py = re.sub(r"\(\?<([A-Za-z][A-Za-z0-9]*)>", r"(?P<\1>", py)
    py = re.sub(r"\\(?:[pP]\{[^}]*\}|[pP][A-Za-z]|x\{[0-9A-Fa-f]+\}|k<[^>]*>|c.|[ehHVGzRX])", ".", py)
    try:
        re.compile(py)
    except re.error as error:
        return str(error)
    return None


def _like_pattern_error(pattern: str) -> str | None:
    """Spark's LIKE escape character is backslash: it must precede %, _ or another backslash."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in "%_\\":
                return "a backslash must be followed by %, _ or \\"
            i += 1
        i += 1
    return None


def _timestamp_literal_ok(value: str) -> bool:
    m = _TIMESTAMP_RE.match(value.strip())
    if not m:
        return False
    try:
        dt.datetime(
            int(m["y"]), int(m["m"] or 1), int(m["d"] or 1),
            int(m["H"] or 0), int(m["M"] or 0), int(m["S"] or 0),
        )
    except ValueError:
        return False
    return True


def _func(name: str, *args: exp.Expr) -> exp.Expr:
    return exp.Anonymous(this=name, expressions=list(args))


class _Validator:
    """Walks the sqlglot AST: allow-listed nodes only, typed, rebuilt into a fresh tree."""

    def __init__(self, ctx: _Context) -> None:
        self.ctx = ctx
        self.fields = ctx.fields
        self._lower: dict[str, list[str]] = {}
        for path in ctx.fields:
            self._lower.setdefault(path.lower(), []).append(path)

    # -- dispatch ---------------------------------------------------------------------------

    def visit(self, node: exp.Expr) -> _Out:
        text = _Lazy(node)
        handler = getattr(self, f"_visit_{type(node).__name__}", None)
        if handler is None:
            if isinstance(node, exp.Func) and not isinstance(node, (exp.Window, exp.AggFunc)):
                return self._function(node, text)
            raise self._unsupported(node, text)
        return handler(node, text)

    def _unsupported(self, node: exp.Expr, text: object) -> ConditionError:
        token = _token_of(node)
        if isinstance(node, (exp.Subquery, exp.Query, exp.Exists)):
            return self.ctx.fail(token, f'subqueries ("{token}") are not allowed', "a condition can only read fields of the alert")
        if isinstance(node, exp.Window):
            return self.ctx.fail(token, f"window functions ({token}) are not allowed", "a condition applies to one alert at a time")
        if isinstance(node, exp.AggFunc):
            return self.ctx.fail(token, f'aggregate function "{token}" is not allowed', "a condition applies to one alert at a time")
        if isinstance(node, exp.Lambda):
            return self.ctx.fail(token, "lambda functions are not allowed", "use size(), element_at() or array_contains()")
        if isinstance(node, (exp.Placeholder, exp.Parameter)):
            return self.ctx.fail(token, f'parameters ("{token}") are not allowed', "write the value itself, e.g. 19.5")
        if isinstance(node, exp.Star):
            return self.ctx.fail("*", '"*" is not allowed', "name the fields, e.g. candidate.magpsf")
        if isinstance(node, exp.Alias):
            alias = node.alias
            return self.ctx.fail(alias, f'unexpected "{alias}" after the condition', "remove it or join conditions with AND/OR")
        if isinstance(node, exp.Func):
            reason = _FORBIDDEN_FUNCTIONS.get(token.lower())
            problem = f'function "{token}" is not allowed' + (f" ({reason})" if reason else "")
            return self.ctx.fail(token, problem, f"only these pure functions are allowed: {', '.join(sorted(ALLOWED_FUNCTIONS))}")
        if isinstance(node, (exp.DDL, exp.DML, exp.Command)):
            return self.ctx.fail(token, f"{token} statements are not allowed", "a condition is a boolean expression")
        return self.ctx.fail(token, f'"{text}" ({token}) is not supported in a condition',
                             "use fields, literals, arithmetic, comparisons, AND/OR/NOT, IN, BETWEEN, LIKE, CASE and the allowed functions")

    # -- fields -----------------------------------------------------------------------------

    def _lookup(self, path: str) -> str | None:
        if path in self.fields:
            return path
        candidates = self._lower.get(path.lower(), [])
        return candidates[0] if len(candidates) == 1 else None

    def _all_paths(self) -> list[str]:
        """Known fields plus struct children reachable from them (for suggestions)."""
        paths: dict[str, None] = {}

        def visit(prefix: str, dtype: pa.DataType) -> None:
            paths.setdefault(prefix, None)
            if pa.types.is_struct(dtype):
                for child in dtype:
                    visit(f"{prefix}.{child.name}", child.type)

        for path, dtype in self.fields.items():
            visit(path, dtype)
        return list(paths)

    def _suggest_field(self, typed: str) -> str | None:
        paths = self._all_paths()
        typed_lower = typed.lower()
        leaf = typed_lower.rsplit(".", 1)[-1]
        # The same name elsewhere: `jd` -> `candidate.jd` (Fink issue ztf#641), shallowest first.
        same_leaf = [p for p in paths if p.rsplit(".", 1)[-1].lower() == leaf and p.lower() != typed_lower]
        if same_leaf:
            return min(same_leaf, key=lambda p: (p.count("."), paths.index(p)))
        by_lower = {p.lower(): p for p in paths}
        close = difflib.get_close_matches(typed_lower, list(by_lower), n=1, cutoff=0.8)
        if close:
            return by_lower[close[0]]
        leaves: dict[str, str] = {}
        for p in sorted(paths, key=lambda p: p.count(".")):
            leaves.setdefault(p.rsplit(".", 1)[-1].lower(), p)
        close = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.75)
        if close:
            return leaves[close[0]]
        close = difflib.get_close_matches(typed_lower, list(by_lower), n=1, cutoff=0.6)
        return by_lower[close[0]] if close else None

    def _unknown_field(self, typed: str, display: object) -> ConditionError:
        display = str(display)
        suggestion = self._suggest_field(typed)
        fix = f'did you mean "{suggestion}"?' if suggestion else "see the list of available fields"
        if "`" in display and "." in typed:
            fix += " (backticks quote a single name: write candidate.magpsf, not `candidate.magpsf`)"
        return self.ctx.fail(display, f'unknown field "{display}"', fix, suggestion)

    def _column_parts(self, node: exp.Expr) -> list[exp.Identifier] | None:
        """Identifiers of a plain dotted reference (Column, or Dots over a Column), else None."""
        if isinstance(node, exp.Column):
            parts = [node.args.get(k) for k in ("catalog", "db", "table", "this")]
            parts = [p for p in parts if p is not None]
            return parts if all(isinstance(p, exp.Identifier) for p in parts) else None
        if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Identifier):
            inner = self._column_parts(node.this)
            return None if inner is None else inner + [node.expression]
        return None

    def _resolve(self, node: exp.Expr, text: _Lazy) -> _Out:
        """A dotted reference: the shortest prefix that is a known field, then its Arrow type."""
        parts = self._column_parts(node)
        if parts is None:
            raise self._unsupported(node, text)
        names = [p.name for p in parts]
        typed = ".".join(names)
        if any("." in n or not n for n in names):  # `candidate.magpsf` in backticks is ONE name
            raise self._unknown_field(typed, text)
        for k in range(1, len(names) + 1):
            key = self._lookup(".".join(names[:k]))
            if key is not None:
                break
        else:
            raise self._unknown_field(typed, text)
        # Rebuilt from the schema's spelling (Spark resolves names case-insensitively).
        key_parts = key.split(".")
        node_out: exp.Expr = exp.column(exp.to_identifier(key_parts[0]))
        for child in key_parts[1:]:
            node_out = exp.Dot(this=node_out, expression=exp.to_identifier(child))
        out = _Out(node_out, _typed(self.fields[key]), key, path=key)
        deepest = key
        for name in names[k:]:
            out = self._navigate(out, name, typed, text)
            deepest = out.path or deepest
        self.ctx.used.setdefault(deepest, None)
        return out

    def _navigate(self, out: _Out, name: str, typed: str, display: object) -> _Out:
        """`out.name`: a struct field, the same field of every array item, or a map key."""
        dtype = out.type.arrow
        if dtype is not None and pa.types.is_map(dtype):
            return self._map_key(out, name)
        struct, item_of_array = dtype, False
        if dtype is not None and _arrow_kind(dtype) is _Kind.ARRAY and pa.types.is_struct(dtype.value_type):
            struct, item_of_array = dtype.value_type, True
        if struct is None or not pa.types.is_struct(struct):
            raise self._unknown_field(typed, display)
        matches = [f for f in struct if f.name == name] or [f for f in struct if f.name.lower() == name.lower()]
        if len(matches) != 1:
            raise self._unknown_field(typed, display)
        child = matches[0]
        node = exp.Dot(this=out.node, expression=exp.to_identifier(child.name))
        # Spark reads `array_of_structs.field` as the array of that field.
        ctype = pa.list_(child.type) if item_of_array else child.type
        path = self._lookup(f"{out.path}.{child.name}") if out.path else None
        return _Out(node, _typed(ctype), f"{out.text}.{child.name}", path=path)

    def _map_key(self, out: _Out, key: str) -> _Out:
        """`map.key` or `map['key']`, always emitted as `map['key']` (NULL when absent)."""
        known = self.ctx.map_keys.get(out.path) if out.path else None
        if known is not None and key not in known:
            close = [k for k in known if k.lower() == key.lower()]
            close = close or difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            suggestion = f"{out.text}.{close[0]}" if close else None
            fix = (f'did you mean "{suggestion}"? ' if suggestion else "") + f"(keys of {out.text}: {', '.join(known)})"
            raise self.ctx.fail(f"{out.text}.{key}", f'unknown map key "{out.text}.{key}"', fix, suggestion)
        node = exp.Bracket(this=out.node, expressions=[exp.Literal.string(key)])
        return _Out(node, _typed(out.type.arrow.item_type), f"{out.text}.{key}")

    def _visit_Column(self, node: exp.Column, text: _Lazy) -> _Out:
        if isinstance(node.this, exp.Star):
            raise self.ctx.fail("*", '"*" is not allowed', "name the fields, e.g. candidate.magpsf")
        return self._resolve(node, text)

    def _visit_Dot(self, node: exp.Dot, text: _Lazy) -> _Out:
        if self._column_parts(node) is not None:
            return self._resolve(node, text)
        if not isinstance(node.expression, exp.Identifier):
            raise self._unsupported(node.expression, _Lazy(node.expression))
        # A field of a computed struct, e.g. element_at(prv_candidates, -1).magpsf
        base = self.visit(node.this)
        name = node.expression.name
        return self._navigate(base, name, f"{base.text}.{name}", text)

    def _visit_Bracket(self, node: exp.Bracket, text: _Lazy) -> _Out:
        base = self.visit(node.this)
        if len(node.expressions) != 1:
            raise self.ctx.fail(text, "exactly one index or key is allowed in [...]")
        key = self.visit(node.expressions[0])
        one_based = node.args.get("offset") == 1  # element_at(...) vs [...]
        if base.type.kind is _Kind.MAP:
            if not (key.is_literal and isinstance(key.value, str)):
                raise self.ctx.fail(key.text, f'map key "{key.text}" must be a quoted string', f"e.g. {base.text}['HyperLEDA_name']")
            return self._map_key(base, key.value)
        if base.type.kind is _Kind.ARRAY:
            index = key.value
            if not (key.is_literal and isinstance(index, int) and not isinstance(index, bool)):
                raise self.ctx.fail(key.text, f'array index "{key.text}" must be an integer literal')
            if one_based and index == 0:
                raise self.ctx.fail(key.text, "element_at() indices start at 1 (negative counts from the end), not 0",
                                    f"e.g. element_at({base.text}, 1)")
            if not one_based and index < 0:
                raise self.ctx.fail(key.text, "[...] indices start at 0 and cannot be negative",
                                    f"use element_at({base.text}, {index}) to count from the end")
            position = index if one_based else index + 1
            # try_element_at: NULL instead of an ANSI-mode error for a short array
            node_out = _func("TRY_ELEMENT_AT", base.node, exp.Literal.number(position))
            return _Out(node_out, _typed(base.type.arrow.value_type), text)
        raise self.ctx.fail(base.text, f'"{base.text}" is {_describe(base.type)}, it has no elements to index')

    # -- literals ---------------------------------------------------------------------------

    def _visit_Literal(self, node: exp.Literal, text: _Lazy) -> _Out:
        if node.is_string:
            return _Out(exp.Literal.string(node.this), STRING, text, node.this)
        raw = node.this
        if not _NUMBER_RE.match(raw):
            raise self.ctx.fail(raw, f'invalid number "{raw}"', "write numbers like 19.5, 1e-3 or 42")
        value: float | int = float(raw) if any(c in raw for c in ".eE") else int(raw)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.ctx.fail(raw, f'number out of range "{raw}"')
        return _Out(exp.Literal.number(raw), NUMERIC, text, value)

    def _visit_Boolean(self, node: exp.Boolean, text: _Lazy) -> _Out:
        return _Out(exp.Boolean(this=bool(node.this)), BOOLEAN, text, bool(node.this))

    def _visit_Null(self, node: exp.Null, text: _Lazy) -> _Out:
        return _Out(exp.Null(), NULL, text, None)

    def _visit_Paren(self, node: exp.Paren, text: _Lazy) -> _Out:
        inner = self.visit(node.this)
        return _Out(exp.Paren(this=inner.node), inner.type, text, inner.value)

    # -- operators --------------------------------------------------------------------------

    def _expect(self, out: _Out, kinds: set[_Kind], what: str, fix: str | None = None) -> None:
        """Raise unless `out` has one of `kinds` (or is NULL); "{}" in `fix` becomes its text."""
        if out.type.kind not in kinds | {_Kind.NULL}:
            raise self.ctx.fail(out.text, f'"{out.text}" is {_describe(out.type)}, {what}',
                                fix.replace("{}", out.text) if fix else None)

    def _visit_Neg(self, node: exp.Neg, text: _Lazy) -> _Out:
        inner = self.visit(node.this)
        self._expect(inner, {_Kind.NUMERIC}, "unary minus needs a number")
        value = -inner.value if isinstance(inner.value, (int, float)) and not isinstance(inner.value, bool) else _NO_VALUE
        return _Out(exp.Neg(this=inner.node), NUMERIC, text, value)

    def _arithmetic(self, node: exp.Binary, text: _Lazy) -> _Out:
        left, right = self.visit(node.this), self.visit(node.expression)
        op = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%"}[type(node)]
        for side in (left, right):
            self._expect(side, {_Kind.NUMERIC}, f'arithmetic ("{op}") needs numbers',
                         "use concat() to join strings" if side.type.kind is _Kind.STRING and op == "+" else None)
        if isinstance(node, exp.Div):
            # try_divide/try_mod: NULL instead of an ANSI-mode DIVIDE_BY_ZERO error
            out: exp.Expr = _func("TRY_DIVIDE", left.node, right.node)
        elif isinstance(node, exp.Mod):
            out = _func("TRY_MOD", left.node, right.node)
        else:
            out = type(node)(this=left.node, expression=right.node)
        return _Out(out, NUMERIC, text)

    _visit_Add = _visit_Sub = _visit_Mul = _visit_Div = _visit_Mod = _arithmetic

    def _comparable(self, left: _Out, right: _Out, where: str) -> None:
        """Raise unless `left` and `right` can be compared without an implicit cast."""
        kl, kr = left.type.kind, right.type.kind
        for side in (left, right):
            if side.type.kind not in _SCALAR | {_Kind.NULL}:
                raise self.ctx.fail(side.text, f'cannot compare "{side.text}": it is {_describe(side.type)}',
                                    "compare one of its fields or use size()/IS NULL")
        if _Kind.NULL in (kl, kr) or kl == kr:
            return
        for temporal, other in ((left, right), (right, left)):
            if temporal.type.kind in (_Kind.TIMESTAMP, _Kind.DATE) and other.type.kind is _Kind.STRING:
                if other.is_literal and _timestamp_literal_ok(other.value):
                    return
                raise self.ctx.fail(other.text, f"invalid {temporal.type.kind.value} {other.text} in {where}",
                                    "write it like '2024-01-31' or '2024-01-31 18:30:00'")
        # Point at the literal if there is one, else at the right-hand side.
        culprit = right if right.is_literal or not left.is_literal else left
        other = left if culprit is right else right
        fix = None
        if culprit.is_literal and isinstance(culprit.value, str) and other.type.kind is _Kind.NUMERIC:
            fix = f"compare with a number (no quotes), e.g. {other.text} > 19.5"
        elif culprit.is_literal and other.type.kind is _Kind.STRING:
            fix = f"quote the text, e.g. {other.text} = '{culprit.text}'"
        elif other.type.kind is _Kind.BOOLEAN:
            fix = f"compare with true or false, e.g. {other.text} = true"
        raise self.ctx.fail(
            culprit.text,
            f'type mismatch in "{where}": {other.text} is {_describe(other.type)} but {culprit.text} is {_describe(culprit.type)}',
            fix,
        )

    def _comparison(self, node: exp.Binary, text: _Lazy) -> _Out:
        left, right = self.visit(node.this), self.visit(node.expression)
        self._comparable(left, right, text)
        return _Out(type(node)(this=left.node, expression=right.node), BOOLEAN, text)

    _visit_EQ = _visit_NEQ = _visit_GT = _visit_GTE = _visit_LT = _visit_LTE = _comparison
    _visit_NullSafeEQ = _visit_NullSafeNEQ = _comparison

    def _logical(self, node: exp.Binary, text: _Lazy) -> _Out:
        left, right = self.visit(node.this), self.visit(node.expression)
        word = "AND" if isinstance(node, exp.And) else "OR"
        for side in (left, right):
            self._expect(side, {_Kind.BOOLEAN}, f"{word} needs conditions on both sides",
                         "compare it, e.g. {} > 0")
        return _Out(type(node)(this=left.node, expression=right.node), BOOLEAN, text)

    _visit_And = _visit_Or = _logical

    def _visit_Not(self, node: exp.Not, text: _Lazy) -> _Out:
        inner = self.visit(node.this)
        self._expect(inner, {_Kind.BOOLEAN}, "NOT needs a condition", "compare it, e.g. {} > 0")
        return _Out(exp.Not(this=inner.node), BOOLEAN, text)

    def _visit_In(self, node: exp.In, text: _Lazy) -> _Out:
        for arg in ("query", "unnest", "field"):
            value = node.args.get(arg)
            if isinstance(value, exp.Expr):
                raise self._unsupported(value, _Lazy(value))
            if value:
                raise self.ctx.fail("IN", "IN needs a list of values")
        left = self.visit(node.this)
        if not node.expressions:
            raise self.ctx.fail("IN", "empty IN list", f"e.g. {left.text} IN (1, 2)")
        items = []
        for item in node.expressions:
            out = self.visit(item)
            if not out.is_literal:
                raise self.ctx.fail(out.text, f'IN lists may only contain literal values, not "{out.text}"',
                                    "use OR for comparisons with other fields")
            self._comparable(left, out, text)
            items.append(out.node)
        return _Out(exp.In(this=left.node, expressions=items), BOOLEAN, text)

    def _visit_Between(self, node: exp.Between, text: _Lazy) -> _Out:
        if node.args.get("symmetric"):
            raise self.ctx.fail("SYMMETRIC", "BETWEEN SYMMETRIC is not supported", "put the bounds in order")
        this, low, high = self.visit(node.this), self.visit(node.args["low"]), self.visit(node.args["high"])
        self._comparable(this, low, text)
        self._comparable(this, high, text)
        return _Out(exp.Between(this=this.node, low=low.node, high=high.node), BOOLEAN, text)

    def _visit_Is(self, node: exp.Is, text: _Lazy) -> _Out:
        this = self.visit(node.this)
        target = node.expression
        if isinstance(target, exp.Null):
            return _Out(exp.Is(this=this.node, expression=exp.Null()), BOOLEAN, text)
        if isinstance(target, exp.Boolean):
            self._expect(this, {_Kind.BOOLEAN}, "IS TRUE/FALSE needs a condition")
            return _Out(exp.Is(this=this.node, expression=exp.Boolean(this=bool(target.this))), BOOLEAN, text)
        raise self._unsupported(target, _Lazy(target))

    def _pattern(self, node: exp.Binary, text: _Lazy) -> _Out:
        word = {exp.Like: "LIKE", exp.ILike: "ILIKE", exp.RegexpLike: "RLIKE"}[type(node)]
        extra = [k for k, v in node.args.items() if k not in ("this", "expression") and v]
        if extra:
            raise self.ctx.fail(word, f"{word} options ({', '.join(extra)}) are not supported")
        this, pattern = self.visit(node.this), self.visit(node.expression)
        self._expect(this, {_Kind.STRING}, f"{word} needs a string", "compare numbers with <, >, = or BETWEEN")
        if not (pattern.is_literal and isinstance(pattern.value, str)):
            raise self.ctx.fail(pattern.text, f'the {word} pattern must be a quoted string, not "{pattern.text}"')
        error = _java_regex_error(pattern.value) if word == "RLIKE" else _like_pattern_error(pattern.value)
        if error:
            raise self.ctx.fail(pattern.text, f"invalid {word} pattern {pattern.text}: {error}")
        return _Out(type(node)(this=this.node, expression=exp.Literal.string(pattern.value)), BOOLEAN, text)

    _visit_Like = _visit_ILike = _visit_RegexpLike = _pattern

    def _visit_Case(self, node: exp.Case, text: _Lazy) -> _Out:
        subject = self.visit(node.this) if node.this is not None else None
        ifs, results = [], []
        for branch in node.args.get("ifs") or []:
            if not isinstance(branch, exp.If):
                raise self._unsupported(branch, _Lazy(branch))
            when = self.visit(branch.this)
            if subject is None:
                self._expect(when, {_Kind.BOOLEAN}, "WHEN needs a condition", "e.g. WHEN {} > 0")
            else:
                self._comparable(subject, when, text)
            then = self.visit(branch.args["true"])
            results.append(then)
            ifs.append(exp.If(this=when.node, true=then.node))
        default = node.args.get("default")
        default_out = self.visit(default) if default is not None else None
        if default_out is not None:
            results.append(default_out)
        kinds = {r.type.kind for r in results} - {_Kind.NULL}
        for r in results:
            if r.type.kind not in _SCALAR | {_Kind.NULL}:
                raise self.ctx.fail(r.text, f'CASE results must be plain values, "{r.text}" is {_describe(r.type)}')
        if len(kinds) > 1:
            first = next(r for r in results if r.type.kind is not _Kind.NULL)
            culprit = next(r for r in results if r.type.kind not in (_Kind.NULL, first.type.kind))
            raise self.ctx.fail(culprit.text, f"CASE results mix {_describe(first.type)} and {_describe(culprit.type)} ({culprit.text})",
                                "make every THEN/ELSE the same type")
        result = _Type(kinds.pop()) if kinds else NULL
        built = exp.Case(this=subject.node if subject else None, ifs=ifs,
                         default=default_out.node if default_out else None)
        return _Out(built, result, text)

    # -- casts and functions ----------------------------------------------------------------

    _CAST_TARGETS: Mapping[exp.DataType.Type, _Kind] = {
        **dict.fromkeys(
            [
                exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT,
                exp.DataType.Type.BIGINT, exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE,
                exp.DataType.Type.DECIMAL,
            ],
            _Kind.NUMERIC,
        ),
        **dict.fromkeys([exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR], _Kind.STRING),
        exp.DataType.Type.BOOLEAN: _Kind.BOOLEAN,
    }
    # Which source kinds may be cast to which target kinds (Spark's ANSI cast rules).
    _CAST_SOURCES: Mapping[_Kind, set[_Kind]] = {
        _Kind.NUMERIC: {_Kind.NUMERIC, _Kind.STRING, _Kind.BOOLEAN},
        _Kind.STRING: {_Kind.NUMERIC, _Kind.STRING, _Kind.BOOLEAN, _Kind.TIMESTAMP, _Kind.DATE},
        _Kind.BOOLEAN: {_Kind.NUMERIC, _Kind.STRING, _Kind.BOOLEAN},
    }

    def _cast(self, node: exp.Cast, text: _Lazy) -> _Out:
        extra = [k for k, v in node.args.items() if k not in ("this", "to", "safe", "_type") and v]
        if extra:
            raise self.ctx.fail("CAST", f"CAST options ({', '.join(extra)}) are not supported")
        to = node.args.get("to")
        target = self._CAST_TARGETS.get(to.this) if isinstance(to, exp.DataType) else None
        to_text = to.sql(dialect="spark") if isinstance(to, exp.Expr) else str(to)
        if target is None:
            raise self.ctx.fail(to_text, f"cannot CAST to {to_text}", "cast to DOUBLE, INT, BIGINT, DECIMAL(p, s), STRING or BOOLEAN")
        params = to.expressions
        if not all(isinstance(p, exp.DataTypeParam) and isinstance(p.this, exp.Literal) and p.this.is_int for p in params):
            raise self.ctx.fail(to_text, f"the parameters of {to_text} must be integers")
        inner = self.visit(node.this)
        if inner.type.kind is not _Kind.NULL and inner.type.kind not in self._CAST_SOURCES[target]:
            raise self.ctx.fail(inner.text, f'cannot CAST "{inner.text}" ({_describe(inner.type)}) to {to_text}')
        if target is _Kind.STRING:
            dtype = exp.DataType.build("STRING", dialect="spark")
        else:
            dtype = exp.DataType.build(to.sql(dialect="spark"), dialect="spark")
        # TRY_CAST: NULL instead of an ANSI-mode CAST_INVALID_INPUT error
        return _Out(exp.TryCast(this=inner.node, to=dtype, safe=True), _Type(target), text)

    _visit_Cast = _visit_TryCast = _cast

    def _visit_Anonymous(self, node: exp.Anonymous, text: _Lazy) -> _Out:
        return self._function(node, text)

    def _function(self, node: exp.Func, text: _Lazy) -> _Out:
        if isinstance(node, exp.Anonymous):
            name = node.name.upper()
            raw_args: list[object] = list(node.expressions)
        else:
            name = node.sql_name().upper()
            raw_args = []
            for key in type(node).arg_types:
                value = node.args.get(key)
                if value is None or value is False:
                    continue
                if isinstance(value, exp.Expr):
                    raw_args.append(value)
                elif isinstance(value, list) and all(isinstance(v, exp.Expr) for v in value):
                    raw_args.extend(value)
                elif key not in _HARMLESS_FLAGS:
                    # e.g. TRIM(LEADING ...): an option we would silently drop
                    raise self.ctx.fail(name.lower(), f'this form of {name.lower()}() is not supported')
        name = _CANONICAL_NAMES.get(name, name)
        if isinstance(node, exp.Log):
            # sqlglot reads log10(x) as LOG(10, x); Spark's LOG10 is exact (LOG(10, 1000) is not)
            base = raw_args[0] if len(raw_args) == 2 else None
            if isinstance(base, exp.Literal) and not base.is_string and base.this in ("10", "2"):
                name, raw_args = f"LOG{base.this}", raw_args[1:]
            elif len(raw_args) == 1:
                name = "LN"  # Spark's one-argument log is the natural logarithm
        if name.lower() not in ALLOWED_FUNCTIONS:
            _check_function_name(self.ctx, name.lower())
            raise self._unsupported(node, text)
        args = [self.visit(a) for a in raw_args if isinstance(a, exp.Expr)]
        result = self._check_call(name, args, text)
        return _Out(_func(name, *[a.node for a in args]), result, text)

    def _arity(self, name: str, args: list[_Out], low: int, high: int | None, text: str) -> None:
        if len(args) < low or (high is not None and len(args) > high):
            expected = f"{low}" if low == high else (f"{low} or more" if high is None else f"{low} to {high}")
            raise self.ctx.fail(name.lower(), f"{name.lower()}() takes {expected} argument(s), got {len(args)} in \"{text}\"")

    def _int_literal(self, out: _Out, what: str) -> None:
        if not (out.is_literal and isinstance(out.value, int) and not isinstance(out.value, bool)):
            raise self.ctx.fail(out.text, f'{what} must be an integer literal, not "{out.text}"')

    _NUMERIC_1 = frozenset(
        "ABS SQRT LN EXP SIGN SIN COS TAN ASIN ACOS ATAN DEGREES RADIANS LOG10 LOG2".split()
    )

    def _check_call(self, name: str, args: list[_Out], text: str) -> _Type:
        """Arity and argument types of an allowed function; returns its result type."""
        num, string = {_Kind.NUMERIC}, {_Kind.STRING}
        lower = name.lower()
        if name in self._NUMERIC_1:
            self._arity(name, args, 1, 1, text)
            self._expect(args[0], num, f"{lower}() needs a number")
            return NUMERIC
        if name in ("LOG", "POWER", "ATAN2", "TRY_DIVIDE", "TRY_MOD"):
            self._arity(name, args, 2 if name != "LOG" else 1, 2, text)
            for a in args:
                self._expect(a, num, f"{lower}() needs numbers")
            return NUMERIC
        if name in ("FLOOR", "CEIL", "ROUND"):
            self._arity(name, args, 1, 2, text)
            self._expect(args[0], num, f"{lower}() needs a number")
            if len(args) == 2:
                self._int_literal(args[1], f"the scale of {lower}()")
            return NUMERIC
        if name == "PI":
            self._arity(name, args, 0, 0, text)
            return NUMERIC
        if name in ("GREATEST", "LEAST", "COALESCE"):
            self._arity(name, args, 2 if name != "COALESCE" else 1, None, text)
            kinds = {a.type.kind for a in args} - {_Kind.NULL}
            for a in args:
                if a.type.kind not in _SCALAR | {_Kind.NULL}:
                    raise self.ctx.fail(a.text, f'{lower}() needs plain values, "{a.text}" is {_describe(a.type)}')
            if len(kinds) > 1:
                first = next(a for a in args if a.type.kind is not _Kind.NULL)
                culprit = next(a for a in args if a.type.kind not in (_Kind.NULL, first.type.kind))
                raise self.ctx.fail(culprit.text, f"{lower}() mixes {_describe(first.type)} and {_describe(culprit.type)} ({culprit.text})")
            return _Type(kinds.pop()) if kinds else NULL
        if name in ("LOWER", "UPPER", "TRIM"):
            self._arity(name, args, 1, 1, text)
            self._expect(args[0], string, f"{lower}() needs a string")
            return STRING
        if name == "LENGTH":
            self._arity(name, args, 1, 1, text)
            self._expect(args[0], string, "length() needs a string", "use size() for arrays")
            return NUMERIC
        if name == "SUBSTRING":
            self._arity(name, args, 2, 3, text)
            self._expect(args[0], string, "substring() needs a string")
            for a in args[1:]:
                self._expect(a, num, "substring() positions are numbers")
            return STRING
        if name == "CONCAT":
            self._arity(name, args, 1, None, text)
            for a in args:
                self._expect(a, string, "concat() needs strings", "cast it: CAST({} AS STRING)")
            return STRING
        if name in ("STARTSWITH", "ENDSWITH", "CONTAINS"):
            self._arity(name, args, 2, 2, text)
            for a in args:
                self._expect(a, string, f"{lower}() needs strings")
            return BOOLEAN
        if name == "INSTR":
            self._arity(name, args, 2, 2, text)
            for a in args:
                self._expect(a, string, "instr() needs strings")
            return NUMERIC
        if name == "SIZE":
            self._arity(name, args, 1, 1, text)
            self._expect(args[0], {_Kind.ARRAY, _Kind.MAP}, "size() needs an array or a map", "use length() for strings")
            return NUMERIC
        if name == "ARRAY_CONTAINS":
            self._arity(name, args, 2, 2, text)
            array, value = args
            if array.type.kind is not _Kind.ARRAY:
                raise self.ctx.fail(array.text, f'array_contains() needs an array, "{array.text}" is {_describe(array.type)}')
            item = _Out(array.node, _typed(array.type.arrow.value_type), array.text)
            if item.type.kind not in _SCALAR:
                raise self.ctx.fail(array.text, f'array_contains() needs an array of plain values, the items of "{array.text}" are {item.type.kind.value}s',
                                    f"use a field of the items, e.g. array_contains({array.text}.fid, 1)" if item.type.kind is _Kind.STRUCT else None)
            self._comparable(item, value, text)
            return BOOLEAN
        if name in ("ISNULL", "ISNOTNULL"):
            self._arity(name, args, 1, 1, text)
            return BOOLEAN
        if name == "ISNAN":
            self._arity(name, args, 1, 1, text)
            self._expect(args[0], num, "isnan() needs a number")
            return BOOLEAN
        if name == "ELEMENT_AT":  # normally parsed as a Bracket; kept for safety
            raise self.ctx.fail(lower, "use element_at(array, index) with an integer literal index")
        raise self.ctx.fail(lower, f'function "{lower}" is not supported')
