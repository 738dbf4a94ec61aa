"""Size limits of a condition and of a request's conditions together, checked before any parsing."""

from __future__ import annotations

from typing import Sequence

from fink_pipeline.transfer.conditions.errors import ConditionError
from fink_pipeline.transfer.conditions.split import split_conditions

MAX_CONDITION_LENGTH = 2000
MAX_DEPTH = 50
# A request's extra conditions together (after splitting): each one is parsed and type-checked
# (about a millisecond for a short one), so a hostile request of 10,000 conditions or of a 1 MB
# textarea split into 250,000 pieces would hold the validating process for minutes. Real
# requests carry a handful.
MAX_CONDITIONS = 100
MAX_CONDITIONS_LENGTH = 20_000  # characters over all conditions (ten of the longest allowed)


class ConditionsSizeError(ConditionError):
    """Too many conditions, or too long together: about all of them, so no one is quoted."""

    def __init__(self, problem: str) -> None:
        super().__init__("", "", problem)
        self.args = (problem,)

    def __reduce__(self):
        return (type(self), (self.problem,))


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
