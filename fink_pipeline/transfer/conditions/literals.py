"""Checks of literal values that Spark would only reject at run time (patterns, timestamps, numbers)."""

from __future__ import annotations

import datetime as dt
import re

NUMBER_RE = re.compile(r"^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
# The string forms Spark casts to a timestamp/date without error (checked before ANSI Spark does).
_TIMESTAMP_RE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{1,2})(-(?P<d>\d{1,2})"
    r"([ T](?P<H>\d{1,2}):(?P<M>\d{1,2})(:(?P<S>\d{1,2})(\.\d{1,9})?)?"
    r"(Z|[+-]\d{2}(:?\d{2})?)?)?)?)?$"
)


def java_regex_error(pattern: str) -> str | None:
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


def like_pattern_error(pattern: str) -> str | None:
    """Spark's LIKE escape character is backslash: it must precede %, _ or another backslash."""
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            if i + 1 >= len(pattern) or pattern[i + 1] not in "%_\\":
                return "a backslash must be followed by %, _ or \\"
            i += 1
        i += 1
    return None


def timestamp_literal_ok(value: str) -> bool:
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
