"""The checks made before the AST is walked: characters, tokens, parsing and nesting depth."""

from __future__ import annotations

import re
import sys
import threading
import unicodedata
from contextlib import contextmanager
from typing import Iterator, Mapping

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import Token, TokenType

from fink_pipeline.transfer.conditions.allowlist import (
    KEYWORDS_BEFORE_PAREN,
    QUERY_TOKENS,
    STATEMENT_TOKENS,
    function_refusal,
)
from fink_pipeline.transfer.conditions.errors import Context
from fink_pipeline.transfer.conditions.limits import MAX_DEPTH
from fink_pipeline.transfer.conditions.split import DIALECT, Lexed, lex

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RECURSION_LOCK = threading.Lock()


@contextmanager
def recursion_headroom(limit: int = 20_000) -> Iterator[None]:
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


def check_characters(ctx: Context, text: str) -> None:
    """Refuse invisible characters, comments, statement separators and unterminated quotes.

    The first one in the text is reported; the tokens say which characters are inside quotes.
    """
    lexed = lex(text)
    found = [p for p in (_invisible_character(text), _comment(lexed), _semicolon(lexed)) if p is not None]
    if found:
        position, token, problem, fix = min(found)
        raise ctx.fail(token, problem, fix, position=position)
    quote = lexed.unclosed_quote()
    if quote is not None:
        i, q = quote
        raise ctx.fail(q, f"unterminated quote {q} at column {i + 1}", f"close it with {q}", position=i)


_Problem = tuple[int, str, str, str]  # position, token, problem, fix


def _invisible_character(text: str) -> _Problem | None:
    # Control and format characters (NUL, bidi overrides, zero-width...) can hide text.
    for i, ch in enumerate(text):
        if ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf"):
            return i, f"U+{ord(ch):04X}", f"invisible character U+{ord(ch):04X}", "remove it (retype the condition)"
    return None


def _comment(lexed: Lexed) -> _Problem | None:
    """The first comment: what starts a stretch between tokens, or a hint token (/*+ ... */)."""
    text = lexed.text
    starts = [stop - len(text[start:stop].lstrip()) for start, stop, _ in lexed.gaps()]
    starts += [t.start for t in lexed.tokens if t.token_type == TokenType.HINT]
    if not lexed.complete:
        starts.append(lexed.end)  # e.g. a /* never closed
    for i in sorted(starts):
        marker = text[i: i + 2]
        if marker in ("--", "/*"):
            return i, marker, f'comments ("{marker}") are not allowed', "comments can hide text; remove it"
    return None


def _semicolon(lexed: Lexed) -> _Problem | None:
    for token in lexed.tokens:
        if token.token_type == TokenType.SEMICOLON:
            return (token.start, ";", "several statements (\";\")",
                    "write one condition per line or per ';'-separated piece")
    return None


def tokenize(ctx: Context, text: str) -> list[Token]:
    try:
        return DIALECT.tokenize(text)
    except TokenError as error:
        raise ctx.fail(text, f"cannot read the condition ({error})", "check quotes and special characters") from None


def check_tokens(ctx: Context, tokens: list[Token]) -> None:
    """Token-level checks, in text order: statements, subqueries, nesting, function names.

    Function names are checked here (not on the AST) because sqlglot renames functions
    (`nvl` -> COALESCE, `random` -> RAND): the user must see the name they typed.
    """
    if tokens and tokens[0].token_type in STATEMENT_TOKENS and not (
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
        if token.comments:  # backstop: a comment check_characters did not see (e.g. {# ... #})
            raise ctx.fail("--", 'comments are not allowed', "comments can hide text; remove it", position=token.start)
        if kind in QUERY_TOKENS:
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
        if not quoted and (not _NAME_RE.match(token.text) or token.text.upper() in KEYWORDS_BEFORE_PAREN):
            continue
        if prev is not None and prev.token_type == TokenType.ALIAS:
            continue  # a type with parameters inside CAST(... AS DECIMAL(10, 2))
        after = tokens[index + 2] if index + 2 < len(tokens) else None
        if after is not None and after.token_type in QUERY_TOKENS:
            continue  # EXISTS (SELECT ...): reported as a subquery on the next tokens
        check_function_name(ctx, token.text, token.start)


def check_function_name(ctx: Context, name: str, position: int | None = None) -> None:
    refusal = function_refusal(name)
    if refusal is not None:
        problem, fix, suggestion = refusal
        raise ctx.fail(name, problem, fix, suggestion, position=position)


_PARSE_MESSAGES = (
    ("Required keyword", "incomplete expression"),
    ("Expecting )", "missing closing parenthesis"),
    ("Expected END", "CASE without END"),
    ("Invalid expression / Unexpected token", "unexpected token"),
)


def parse(ctx: Context, text: str, tokens: list[Token]) -> exp.Expr:
    try:
        trees = DIALECT.parser().parse(tokens, text)
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


def check_depth(ctx: Context, tree: exp.Expr) -> None:
    """Expression nesting (iteratively: the AST of a hostile input may be very deep)."""
    stack: list[tuple[exp.Expr, int, exp.Expr | None]] = [(tree, 1, None)]
    while stack:
        node, depth, parent = stack.pop()
        if depth > MAX_DEPTH:
            raise ctx.fail(token_of(parent or node), f"nesting deeper than {MAX_DEPTH} levels", "simplify the condition")
        family = _FAMILIES.get(type(node))
        for child in node.iter_expressions():
            if isinstance(child, (exp.Identifier, exp.DataType)):
                continue  # names and types are parts of their node, not levels
            same = family is not None and (family == "paren" or _FAMILIES.get(type(child)) == family)
            stack.append((child, depth if same else depth + 1, node))


def token_of(node: exp.Expr) -> str:
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


