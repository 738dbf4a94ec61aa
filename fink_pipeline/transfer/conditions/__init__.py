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

Pure Python: sqlglot and pyarrow only (no Spark, no Dagster, no survey: the caller passes the
survey's fields and map keys).

Modules: `split` (a textarea into conditions, on sqlglot's tokens), `limits` (sizes, checked
before any parsing), `allowlist` (functions and syntax), `syntax` (characters, tokens, parsing),
`types` and `literals` (the type inference), `checker`, `fields` and `functions` (the AST walk
that rebuilds the SQL), `validator` (the entry points).
"""

from __future__ import annotations

from fink_pipeline.transfer.conditions.allowlist import ALLOWED_FUNCTIONS
from fink_pipeline.transfer.conditions.errors import ConditionError
from fink_pipeline.transfer.conditions.limits import (
    MAX_CONDITION_LENGTH,
    MAX_CONDITIONS,
    MAX_CONDITIONS_LENGTH,
    MAX_DEPTH,
    ConditionsSizeError,
    check_conditions_size,
    conditions_size_problem,
)
from fink_pipeline.transfer.conditions.split import split_conditions
from fink_pipeline.transfer.conditions.validator import ValidatedCondition, validate_condition, validate_conditions

__all__ = [
    "ALLOWED_FUNCTIONS",
    "MAX_CONDITIONS",
    "MAX_CONDITIONS_LENGTH",
    "MAX_CONDITION_LENGTH",
    "MAX_DEPTH",
    "ConditionError",
    "ConditionsSizeError",
    "ValidatedCondition",
    "check_conditions_size",
    "conditions_size_problem",
    "split_conditions",
    "validate_condition",
    "validate_conditions",
]
