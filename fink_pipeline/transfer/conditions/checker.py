"""The AST checker: every node allow-listed, typed and rebuilt into the Spark SQL that runs.

The rebuilt SQL is safe for Spark's ANSI mode (see the package's docstring): division and modulo
become `try_divide`/`try_mod`, which return NULL instead of failing the whole job.
"""

from __future__ import annotations

import math

from sqlglot import exp

from fink_pipeline.transfer.conditions.allowlist import ALLOWED_FUNCTIONS, FORBIDDEN_FUNCTIONS
from fink_pipeline.transfer.conditions.errors import ConditionError, Context
from fink_pipeline.transfer.conditions.fields import FieldReading
from fink_pipeline.transfer.conditions.functions import FunctionCalls
from fink_pipeline.transfer.conditions.literals import NUMBER_RE, java_regex_error, like_pattern_error, timestamp_literal_ok
from fink_pipeline.transfer.conditions.syntax import token_of
from fink_pipeline.transfer.conditions.types import (
    BOOLEAN, NO_VALUE, NULL, NUMERIC, SCALAR, STRING,
    Kind, Lazy, Out, SqlType, describe, function_node,
)


class Checker(FieldReading, FunctionCalls):
    """Walks the sqlglot AST: allow-listed nodes only, typed, rebuilt into a fresh tree.

    Fields and map keys are read in `FieldReading`, casts and function calls checked in
    `FunctionCalls`; literals, operators and CASE here.
    """

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.fields = ctx.fields
        self._lower: dict[str, list[str]] = {}
        for path in ctx.fields:
            self._lower.setdefault(path.lower(), []).append(path)

    # -- dispatch ---------------------------------------------------------------------------

    def visit(self, node: exp.Expr) -> Out:
        text = Lazy(node)
        handler = getattr(self, f"_visit_{type(node).__name__}", None)
        if handler is None:
            if isinstance(node, exp.Func) and not isinstance(node, (exp.Window, exp.AggFunc)):
                return self._function(node, text)
            raise self._unsupported(node, text)
        return handler(node, text)

    def _unsupported(self, node: exp.Expr, text: object) -> ConditionError:
        token = token_of(node)
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
            reason = FORBIDDEN_FUNCTIONS.get(token.lower())
            problem = f'function "{token}" is not allowed' + (f" ({reason})" if reason else "")
            return self.ctx.fail(token, problem, f"only these pure functions are allowed: {', '.join(sorted(ALLOWED_FUNCTIONS))}")
        if isinstance(node, (exp.DDL, exp.DML, exp.Command)):
            return self.ctx.fail(token, f"{token} statements are not allowed", "a condition is a boolean expression")
        return self.ctx.fail(token, f'"{text}" ({token}) is not supported in a condition',
                             "use fields, literals, arithmetic, comparisons, AND/OR/NOT, IN, BETWEEN, LIKE, CASE and the allowed functions")

    # -- literals ---------------------------------------------------------------------------

    def _visit_Literal(self, node: exp.Literal, text: Lazy) -> Out:
        if node.is_string:
            return Out(exp.Literal.string(node.this), STRING, text, node.this)
        raw = node.this
        if not NUMBER_RE.match(raw):
            raise self.ctx.fail(raw, f'invalid number "{raw}"', "write numbers like 19.5, 1e-3 or 42")
        value: float | int = float(raw) if any(c in raw for c in ".eE") else int(raw)
        if isinstance(value, float) and not math.isfinite(value):
            raise self.ctx.fail(raw, f'number out of range "{raw}"')
        return Out(exp.Literal.number(raw), NUMERIC, text, value)

    def _visit_Boolean(self, node: exp.Boolean, text: Lazy) -> Out:
        return Out(exp.Boolean(this=bool(node.this)), BOOLEAN, text, bool(node.this))

    def _visit_Null(self, node: exp.Null, text: Lazy) -> Out:
        return Out(exp.Null(), NULL, text, None)

    def _visit_Paren(self, node: exp.Paren, text: Lazy) -> Out:
        inner = self.visit(node.this)
        return Out(exp.Paren(this=inner.node), inner.type, text, inner.value)

    # -- operators --------------------------------------------------------------------------

    def _expect(self, out: Out, kinds: set[Kind], what: str, fix: str | None = None) -> None:
        """Raise unless `out` has one of `kinds` (or is NULL); "{}" in `fix` becomes its text."""
        if out.type.kind not in kinds | {Kind.NULL}:
            raise self.ctx.fail(out.text, f'"{out.text}" is {describe(out.type)}, {what}',
                                fix.replace("{}", out.text) if fix else None)

    def _visit_Neg(self, node: exp.Neg, text: Lazy) -> Out:
        inner = self.visit(node.this)
        self._expect(inner, {Kind.NUMERIC}, "unary minus needs a number")
        value = -inner.value if isinstance(inner.value, (int, float)) and not isinstance(inner.value, bool) else NO_VALUE
        return Out(exp.Neg(this=inner.node), NUMERIC, text, value)

    def _arithmetic(self, node: exp.Binary, text: Lazy) -> Out:
        left, right = self.visit(node.this), self.visit(node.expression)
        op = {exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.Mod: "%"}[type(node)]
        for side in (left, right):
            self._expect(side, {Kind.NUMERIC}, f'arithmetic ("{op}") needs numbers',
                         "use concat() to join strings" if side.type.kind is Kind.STRING and op == "+" else None)
        if isinstance(node, exp.Div):
            # try_divide/try_mod: NULL instead of an ANSI-mode DIVIDE_BY_ZERO error
            out: exp.Expr = function_node("TRY_DIVIDE", left.node, right.node)
        elif isinstance(node, exp.Mod):
            out = function_node("TRY_MOD", left.node, right.node)
        else:
            out = type(node)(this=left.node, expression=right.node)
        return Out(out, NUMERIC, text)

    _visit_Add = _visit_Sub = _visit_Mul = _visit_Div = _visit_Mod = _arithmetic

    def _comparable(self, left: Out, right: Out, where: str) -> None:
        """Raise unless `left` and `right` can be compared without an implicit cast."""
        kl, kr = left.type.kind, right.type.kind
        for side in (left, right):
            if side.type.kind not in SCALAR | {Kind.NULL}:
                raise self.ctx.fail(side.text, f'cannot compare "{side.text}": it is {describe(side.type)}',
                                    "compare one of its fields or use size()/IS NULL")
        if Kind.NULL in (kl, kr) or kl == kr:
            return
        for temporal, other in ((left, right), (right, left)):
            if temporal.type.kind in (Kind.TIMESTAMP, Kind.DATE) and other.type.kind is Kind.STRING:
                if other.is_literal and timestamp_literal_ok(other.value):
                    return
                raise self.ctx.fail(other.text, f"invalid {temporal.type.kind.value} {other.text} in {where}",
                                    "write it like '2024-01-31' or '2024-01-31 18:30:00'")
        # Point at the literal if there is one, else at the right-hand side.
        culprit = right if right.is_literal or not left.is_literal else left
        other = left if culprit is right else right
        fix = None
        if culprit.is_literal and isinstance(culprit.value, str) and other.type.kind is Kind.NUMERIC:
            fix = f"compare with a number (no quotes), e.g. {other.text} > 19.5"
        elif culprit.is_literal and other.type.kind is Kind.STRING:
            fix = f"quote the text, e.g. {other.text} = '{culprit.text}'"
        elif other.type.kind is Kind.BOOLEAN:
            fix = f"compare with true or false, e.g. {other.text} = true"
        raise self.ctx.fail(
            culprit.text,
            f'type mismatch in "{where}": {other.text} is {describe(other.type)} but {culprit.text} is {describe(culprit.type)}',
            fix,
        )

    def _common_type(self, outs: list[Out], plain: str, mix: str, fix: str | None = None) -> SqlType:
        """The type that plain values `outs` share, NULLs aside (NULL if all are); `plain` and `mix`
        start the messages when one is not a plain value or two differ."""
        for out in outs:
            if out.type.kind not in SCALAR | {Kind.NULL}:
                raise self.ctx.fail(out.text, f'{plain}, "{out.text}" is {describe(out.type)}')
        kinds = {out.type.kind for out in outs} - {Kind.NULL}
        if len(kinds) > 1:
            first = next(out for out in outs if out.type.kind is not Kind.NULL)
            culprit = next(out for out in outs if out.type.kind not in (Kind.NULL, first.type.kind))
            raise self.ctx.fail(culprit.text, f"{mix} {describe(first.type)} and {describe(culprit.type)} ({culprit.text})", fix)
        return SqlType(kinds.pop()) if kinds else NULL

    def _comparison(self, node: exp.Binary, text: Lazy) -> Out:
        left, right = self.visit(node.this), self.visit(node.expression)
        self._comparable(left, right, text)
        return Out(type(node)(this=left.node, expression=right.node), BOOLEAN, text)

    _visit_EQ = _visit_NEQ = _visit_GT = _visit_GTE = _visit_LT = _visit_LTE = _comparison
    _visit_NullSafeEQ = _visit_NullSafeNEQ = _comparison

    def _logical(self, node: exp.Binary, text: Lazy) -> Out:
        left, right = self.visit(node.this), self.visit(node.expression)
        word = "AND" if isinstance(node, exp.And) else "OR"
        for side in (left, right):
            self._expect(side, {Kind.BOOLEAN}, f"{word} needs conditions on both sides",
                         "compare it, e.g. {} > 0")
        return Out(type(node)(this=left.node, expression=right.node), BOOLEAN, text)

    _visit_And = _visit_Or = _logical

    def _visit_Not(self, node: exp.Not, text: Lazy) -> Out:
        inner = self.visit(node.this)
        self._expect(inner, {Kind.BOOLEAN}, "NOT needs a condition", "compare it, e.g. {} > 0")
        return Out(exp.Not(this=inner.node), BOOLEAN, text)

    def _visit_In(self, node: exp.In, text: Lazy) -> Out:
        for arg in ("query", "unnest", "field"):
            value = node.args.get(arg)
            if isinstance(value, exp.Expr):
                raise self._unsupported(value, Lazy(value))
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
        return Out(exp.In(this=left.node, expressions=items), BOOLEAN, text)

    def _visit_Between(self, node: exp.Between, text: Lazy) -> Out:
        if node.args.get("symmetric"):
            raise self.ctx.fail("SYMMETRIC", "BETWEEN SYMMETRIC is not supported", "put the bounds in order")
        this, low, high = self.visit(node.this), self.visit(node.args["low"]), self.visit(node.args["high"])
        self._comparable(this, low, text)
        self._comparable(this, high, text)
        return Out(exp.Between(this=this.node, low=low.node, high=high.node), BOOLEAN, text)

    def _visit_Is(self, node: exp.Is, text: Lazy) -> Out:
        this = self.visit(node.this)
        target = node.expression
        if isinstance(target, exp.Null):
            return Out(exp.Is(this=this.node, expression=exp.Null()), BOOLEAN, text)
        if isinstance(target, exp.Boolean):
            self._expect(this, {Kind.BOOLEAN}, "IS TRUE/FALSE needs a condition")
            return Out(exp.Is(this=this.node, expression=exp.Boolean(this=bool(target.this))), BOOLEAN, text)
        raise self._unsupported(target, Lazy(target))

    def _pattern(self, node: exp.Binary, text: Lazy) -> Out:
        word = {exp.Like: "LIKE", exp.ILike: "ILIKE", exp.RegexpLike: "RLIKE"}[type(node)]
        extra = [k for k, v in node.args.items() if k not in ("this", "expression") and v]
        if extra:
            raise self.ctx.fail(word, f"{word} options ({', '.join(extra)}) are not supported")
        this, pattern = self.visit(node.this), self.visit(node.expression)
        self._expect(this, {Kind.STRING}, f"{word} needs a string", "compare numbers with <, >, = or BETWEEN")
        if not (pattern.is_literal and isinstance(pattern.value, str)):
            raise self.ctx.fail(pattern.text, f'the {word} pattern must be a quoted string, not "{pattern.text}"')
        error = java_regex_error(pattern.value) if word == "RLIKE" else like_pattern_error(pattern.value)
        if error:
            raise self.ctx.fail(pattern.text, f"invalid {word} pattern {pattern.text}: {error}")
        return Out(type(node)(this=this.node, expression=exp.Literal.string(pattern.value)), BOOLEAN, text)

    _visit_Like = _visit_ILike = _visit_RegexpLike = _pattern

    def _visit_Case(self, node: exp.Case, text: Lazy) -> Out:
        subject = self.visit(node.this) if node.this is not None else None
        ifs, results = [], []
        for branch in node.args.get("ifs") or []:
            if not isinstance(branch, exp.If):
                raise self._unsupported(branch, Lazy(branch))
            when = self.visit(branch.this)
            if subject is None:
                self._expect(when, {Kind.BOOLEAN}, "WHEN needs a condition", "e.g. WHEN {} > 0")
            else:
                self._comparable(subject, when, text)
            then = self.visit(branch.args["true"])
            results.append(then)
            ifs.append(exp.If(this=when.node, true=then.node))
        default = node.args.get("default")
        default_out = self.visit(default) if default is not None else None
        if default_out is not None:
            results.append(default_out)
        result = self._common_type(results, "CASE results must be plain values", "CASE results mix",
                                   "make every THEN/ELSE the same type")
        built = exp.Case(this=subject.node if subject else None, ifs=ifs,
                         default=default_out.node if default_out else None)
        return Out(built, result, text)
