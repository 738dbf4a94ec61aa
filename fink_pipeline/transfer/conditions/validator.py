"""Validating conditions: the checks in order, from characters to the typed AST, and the Spark SQL
regenerated from it."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Collection, Mapping, Sequence

import pyarrow as pa

from fink_pipeline.transfer.conditions.checker import Checker
from fink_pipeline.transfer.conditions.errors import Context
from fink_pipeline.transfer.conditions.limits import MAX_CONDITION_LENGTH, check_conditions_size
from fink_pipeline.transfer.conditions.syntax import (
    check_characters,
    check_depth,
    check_tokens,
    parse,
    recursion_headroom,
    tokenize,
)
from fink_pipeline.transfer.conditions.types import Kind, describe

# Keys of map columns absent from `map_keys` are not checked (a survey's own keys come from its
# `Survey.map_keys`); map keys are case-sensitive in Spark.
_NO_MAP_KEYS: Mapping[str, Collection[str]] = MappingProxyType({})


@dataclass(frozen=True)
class ValidatedCondition:
    """A checked condition: the user's text, the Spark SQL to run and the fields it reads."""

    source: str
    spark_sql: str
    fields: tuple[str, ...]


def validate_conditions(
    conditions: str | Sequence[str],
    fields: Mapping[str, pa.DataType],
    *,
    map_keys: Mapping[str, Collection[str]] = _NO_MAP_KEYS,
    elsewhere: Mapping[str, str] = _NO_MAP_KEYS,
) -> list[ValidatedCondition]:
    """Split (see `split_conditions`) and validate every condition; raise on the first bad one.

    `fields` maps dotted field paths (as `flatten_schema` returns, plus computed columns such as
    `finkclass` or `year`) to Arrow types; `map_keys` maps map columns to their known keys (the
    survey's `map_keys`; a map column absent from it accepts any key). An empty textarea gives an
    empty list. `elsewhere` maps other surveys' fields to their survey, named in the error
    when a condition reads one (a ZTF field in an LSST request).
    Raises `ConditionError` (a `ValueError`) naming the condition, the token and the fix; more
    than MAX_CONDITIONS conditions or MAX_CONDITIONS_LENGTH characters in all are refused before
    any of them is parsed (see `check_conditions_size`).
    """
    return [validate_condition(c, fields, map_keys=map_keys, elsewhere=elsewhere)
            for c in check_conditions_size(conditions)]


def validate_condition(
    condition: str,
    fields: Mapping[str, pa.DataType],
    *,
    map_keys: Mapping[str, Collection[str]] = _NO_MAP_KEYS,
    elsewhere: Mapping[str, str] = _NO_MAP_KEYS,
) -> ValidatedCondition:
    """Validate ONE condition (no splitting: a `;` is refused) and regenerate its Spark SQL."""
    if not isinstance(condition, str):
        raise TypeError(f"a condition must be a string, not {type(condition).__name__}")
    text = condition.strip()
    ctx = Context(text, fields, map_keys, elsewhere=elsewhere)
    if not text:
        raise ctx.fail("", "empty condition", "write a boolean expression such as candidate.magpsf > 19.5")
    if len(text) > MAX_CONDITION_LENGTH:
        raise ctx.fail(
            f"{len(text)} characters",
            f"condition too long ({len(text)} characters)",
            f"keep each condition under {MAX_CONDITION_LENGTH} characters or split it on ';'",
        )
    check_characters(ctx, text)
    with recursion_headroom():
        tokens = tokenize(ctx, text)
        check_tokens(ctx, tokens)
        tree = parse(ctx, text, tokens)
        check_depth(ctx, tree)
        out = Checker(ctx).visit(tree)
        if out.type.kind is not Kind.BOOLEAN:
            raise ctx.fail(
                out.text,
                f"not a boolean condition: \"{out.text}\" is {describe(out.type)}",
                "compare it with something, e.g. candidate.magpsf > 19.5",
            )
        spark_sql = out.node.sql(dialect="spark")
    return ValidatedCondition(source=text, spark_sql=spark_sql, fields=tuple(ctx.used))
