"""Reading fields: dotted paths resolved against the schema (with suggestions for typos), struct
children, the same field of every array item, and map keys."""

from __future__ import annotations

import difflib
from typing import Mapping

import pyarrow as pa
from sqlglot import exp

from fink_pipeline.transfer.conditions.errors import ConditionError, Context
from fink_pipeline.transfer.conditions.types import Kind, Lazy, Out, arrow_kind, describe, function_node, type_of


class FieldReading:
    """The `Checker`'s handling of field references (`candidate.magpsf`, `mangrove.key`, `arr[0]`)."""

    ctx: Context
    fields: Mapping[str, pa.DataType]
    _lower: dict[str, list[str]]  # lower-cased path -> the paths spelled so

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
        if typed in self.ctx.elsewhere:
            fix = f"it is a {self.ctx.elsewhere[typed]} field, not one of the requested survey's; " + fix
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

    def _resolve(self, node: exp.Expr, text: Lazy) -> Out:
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
        out = Out(node_out, type_of(self.fields[key]), key, path=key)
        deepest = key
        for name in names[k:]:
            out = self._navigate(out, name, typed, text)
            deepest = out.path or deepest
        self.ctx.used.setdefault(deepest, None)
        return out

    def _navigate(self, out: Out, name: str, typed: str, display: object) -> Out:
        """`out.name`: a struct field, the same field of every array item, or a map key."""
        dtype = out.type.arrow
        if dtype is not None and pa.types.is_map(dtype):
            return self._map_key(out, name)
        struct, item_of_array = dtype, False
        if dtype is not None and arrow_kind(dtype) is Kind.ARRAY and pa.types.is_struct(dtype.value_type):
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
        return Out(node, type_of(ctype), f"{out.text}.{child.name}", path=path)

    def _map_key(self, out: Out, key: str) -> Out:
        """`map.key` or `map['key']`, always emitted as `map['key']` (NULL when absent)."""
        known = self.ctx.map_keys.get(out.path) if out.path else None
        if known is not None and key not in known:
            close = [k for k in known if k.lower() == key.lower()]
            close = close or difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
            suggestion = f"{out.text}.{close[0]}" if close else None
            fix = (f'did you mean "{suggestion}"? ' if suggestion else "") + f"(keys of {out.text}: {', '.join(known)})"
            raise self.ctx.fail(f"{out.text}.{key}", f'unknown map key "{out.text}.{key}"', fix, suggestion)
        node = exp.Bracket(this=out.node, expressions=[exp.Literal.string(key)])
        return Out(node, type_of(out.type.arrow.item_type), f"{out.text}.{key}")

    def _visit_Column(self, node: exp.Column, text: Lazy) -> Out:
        if isinstance(node.this, exp.Star):
            raise self.ctx.fail("*", '"*" is not allowed', "name the fields, e.g. candidate.magpsf")
        return self._resolve(node, text)

    def _visit_Dot(self, node: exp.Dot, text: Lazy) -> Out:
        if self._column_parts(node) is not None:
            return self._resolve(node, text)
        if not isinstance(node.expression, exp.Identifier):
            raise self._unsupported(node.expression, Lazy(node.expression))
        # A field of a computed struct, e.g. element_at(prv_candidates, -1).magpsf
        base = self.visit(node.this)
        name = node.expression.name
        return self._navigate(base, name, f"{base.text}.{name}", text)

    def _visit_Bracket(self, node: exp.Bracket, text: Lazy) -> Out:
        base = self.visit(node.this)
        if len(node.expressions) != 1:
            raise self.ctx.fail(text, "exactly one index or key is allowed in [...]")
        key = self.visit(node.expressions[0])
        one_based = node.args.get("offset") == 1  # element_at(...) vs [...]
        if base.type.kind is Kind.MAP:
            if not (key.is_literal and isinstance(key.value, str)):
                raise self.ctx.fail(key.text, f'map key "{key.text}" must be a quoted string', f"e.g. {base.text}['HyperLEDA_name']")
            return self._map_key(base, key.value)
        if base.type.kind is Kind.ARRAY:
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
            node_out = function_node("TRY_ELEMENT_AT", base.node, exp.Literal.number(position))
            return Out(node_out, type_of(base.type.arrow.value_type), text)
        raise self.ctx.fail(base.text, f'"{base.text}" is {describe(base.type)}, it has no elements to index')
