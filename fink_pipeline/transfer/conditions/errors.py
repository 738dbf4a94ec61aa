"""The error every refused condition raises (the size limits subclass it, see `limits`), and the
context of one condition's validation that builds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Mapping

import pyarrow as pa


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


@dataclass
class Context:
    """One condition being validated: its text, the fields and map keys it may read, those it reads."""

    condition: str
    fields: Mapping[str, pa.DataType]
    map_keys: Mapping[str, Collection[str]]
    used: dict[str, None] = field(default_factory=dict)  # ordered set of fields read
    # fields of other surveys -> that survey's name, to say so when one is used here
    elsewhere: Mapping[str, str] = field(default_factory=dict)

    def fail(self, token: object, problem: str, fix: str | None = None, suggestion: str | None = None,
             position: int | None = None) -> ConditionError:
        return ConditionError(self.condition, str(token), problem, fix, suggestion, position)
