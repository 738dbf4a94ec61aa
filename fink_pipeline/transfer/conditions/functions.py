"""Casts and calls of the allowed functions: arity, argument types and result type.

Casts become `TRY_CAST` and are limited to the conversions Spark's ANSI mode allows.
"""

from __future__ import annotations

from typing import Mapping

from sqlglot import exp

from fink_pipeline.transfer.conditions.allowlist import ALLOWED_FUNCTIONS, CANONICAL_NAMES, HARMLESS_FLAGS
from fink_pipeline.transfer.conditions.errors import Context
from fink_pipeline.transfer.conditions.syntax import check_function_name
from fink_pipeline.transfer.conditions.types import (
    BOOLEAN, NUMERIC, SCALAR, STRING,
    Kind, Lazy, Out, SqlType, describe, function_node, type_of,
)


class FunctionCalls:
    """The `Checker`'s handling of CAST and of function calls."""

    ctx: Context

    _CAST_TARGETS: Mapping[exp.DataType.Type, Kind] = {
        **dict.fromkeys(
            [
                exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT,
                exp.DataType.Type.BIGINT, exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE,
                exp.DataType.Type.DECIMAL,
            ],
            Kind.NUMERIC,
        ),
        **dict.fromkeys([exp.DataType.Type.TEXT, exp.DataType.Type.VARCHAR, exp.DataType.Type.CHAR], Kind.STRING),
        exp.DataType.Type.BOOLEAN: Kind.BOOLEAN,
    }
    # Which source kinds may be cast to which target kinds (Spark's ANSI cast rules).
    _CAST_SOURCES: Mapping[Kind, set[Kind]] = {
        Kind.NUMERIC: {Kind.NUMERIC, Kind.STRING, Kind.BOOLEAN},
        Kind.STRING: {Kind.NUMERIC, Kind.STRING, Kind.BOOLEAN, Kind.TIMESTAMP, Kind.DATE},
        Kind.BOOLEAN: {Kind.NUMERIC, Kind.STRING, Kind.BOOLEAN},
    }

    def _cast(self, node: exp.Cast, text: Lazy) -> Out:
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
        if inner.type.kind is not Kind.NULL and inner.type.kind not in self._CAST_SOURCES[target]:
            raise self.ctx.fail(inner.text, f'cannot CAST "{inner.text}" ({describe(inner.type)}) to {to_text}')
        if target is Kind.STRING:
            dtype = exp.DataType.build("STRING", dialect="spark")
        else:
            dtype = exp.DataType.build(to.sql(dialect="spark"), dialect="spark")
        # TRY_CAST: NULL instead of an ANSI-mode CAST_INVALID_INPUT error
        return Out(exp.TryCast(this=inner.node, to=dtype, safe=True), SqlType(target), text)

    _visit_Cast = _visit_TryCast = _cast

    def _visit_Anonymous(self, node: exp.Anonymous, text: Lazy) -> Out:
        return self._function(node, text)

    def _function(self, node: exp.Func, text: Lazy) -> Out:
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
                elif key not in HARMLESS_FLAGS:
                    # e.g. TRIM(LEADING ...): an option we would silently drop
                    raise self.ctx.fail(name.lower(), f'this form of {name.lower()}() is not supported')
        name = CANONICAL_NAMES.get(name, name)
        if isinstance(node, exp.Log):
            # sqlglot reads log10(x) as LOG(10, x); Spark's LOG10 is exact (LOG(10, 1000) is not)
            base = raw_args[0] if len(raw_args) == 2 else None
            if isinstance(base, exp.Literal) and not base.is_string and base.this in ("10", "2"):
                name, raw_args = f"LOG{base.this}", raw_args[1:]
            elif len(raw_args) == 1:
                name = "LN"  # Spark's one-argument log is the natural logarithm
        if name.lower() not in ALLOWED_FUNCTIONS:
            check_function_name(self.ctx, name.lower())
            raise self._unsupported(node, text)
        args = [self.visit(a) for a in raw_args if isinstance(a, exp.Expr)]
        result = self._check_call(name, args, text)
        return Out(function_node(name, *[a.node for a in args]), result, text)

    def _arity(self, name: str, args: list[Out], low: int, high: int | None, text: str) -> None:
        if len(args) < low or (high is not None and len(args) > high):
            expected = f"{low}" if low == high else (f"{low} or more" if high is None else f"{low} to {high}")
            raise self.ctx.fail(name.lower(), f"{name.lower()}() takes {expected} argument(s), got {len(args)} in \"{text}\"")

    def _int_literal(self, out: Out, what: str) -> None:
        if not (out.is_literal and isinstance(out.value, int) and not isinstance(out.value, bool)):
            raise self.ctx.fail(out.text, f'{what} must be an integer literal, not "{out.text}"')

    _NUMERIC_1 = frozenset(
        "ABS SQRT LN EXP SIGN SIN COS TAN ASIN ACOS ATAN DEGREES RADIANS LOG10 LOG2".split()
    )

    def _check_call(self, name: str, args: list[Out], text: str) -> SqlType:
        """Arity and argument types of an allowed function; returns its result type."""
        num, string = {Kind.NUMERIC}, {Kind.STRING}
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
            return self._common_type(args, f"{lower}() needs plain values", f"{lower}() mixes")
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
            self._expect(args[0], {Kind.ARRAY, Kind.MAP}, "size() needs an array or a map", "use length() for strings")
            return NUMERIC
        if name == "ARRAY_CONTAINS":
            self._arity(name, args, 2, 2, text)
            array, value = args
            if array.type.kind is not Kind.ARRAY:
                raise self.ctx.fail(array.text, f'array_contains() needs an array, "{array.text}" is {describe(array.type)}')
            item = Out(array.node, type_of(array.type.arrow.value_type), array.text)
            if item.type.kind not in SCALAR:
                raise self.ctx.fail(array.text, f'array_contains() needs an array of plain values, the items of "{array.text}" are {item.type.kind.value}s',
                                    f"use a field of the items, e.g. array_contains({array.text}.fid, 1)" if item.type.kind is Kind.STRUCT else None)
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
