"""Spark column helpers with the value semantics Fink's pandas code has.

Fink's Rubin filters run as pandas UDFs: Spark hands each struct as a pandas DataFrame whose
float32 fields stay float32, a null number becomes NaN, a null boolean or string None.
The rules reproduced here:

* a comparison with NaN or a missing value is False (Spark's own `NaN > x` is True and a null
  comparison is null, so numbers go through `number`, which turns NaN into null, and every
  predicate through `coalesce(..., False)`);
* a float32 field compared with a Python float is compared in float32 (numpy 2's weak Python
  scalars): `score >= 0.7` keeps float32(0.7) = 0.69999999; pass `f32(0.7)` as the threshold;
* float32 arithmetic stays float32 in pandas (`psfFlux / psfFluxErr`): Spark computes it in
  double and `as_f32` rounds the result, which gives the correctly rounded float32 result of the
  same operation (double has more than 2 * 24 + 2 bits);
* division by zero gives +-inf or NaN (`ieee_divide`), where Spark raises (ANSI) or returns null;
* `isin` finds None/NaN only in a list holding them (`blocks.BAD_VALUES` does).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from pyspark.sql import Column

# AB magnitude zero-point of fluxes in nJy (fink_filters.rubin.utils.ZP_NJY)
ZP_NJY = 31.4

Operand = Union["Column", float, int, str]


def col(path: str) -> "Column":
    """The archive field at dotted `path`."""
    from pyspark.sql import functions as F

    return F.col(path)


def lit(value: Operand) -> "Column":
    """A Column for a Python value (Columns pass through)."""
    from pyspark.sql import Column, functions as F

    return value if isinstance(value, Column) else F.lit(value)


def f32(value: float) -> "Column":
    """A threshold as numpy compares it with a float32 field: rounded to float32."""
    from pyspark.sql import functions as F

    return F.lit(value).cast("float")


def number(value: Operand, dtype: str = "double") -> "Column":
    """A number as pandas sees it, NaN as null (null-propagating like NaN, never equal)."""
    from pyspark.sql import functions as F

    c = col(value) if isinstance(value, str) else lit(value)
    c = c.cast(dtype)
    return F.nanvl(c, F.lit(None).cast(dtype))


def as_f32(value: "Column") -> "Column":
    """A double result rounded to float32, NaN as null (float32 arithmetic of pandas)."""
    return number(value, "float")


def fill(cond: "Column", when_null: bool = False) -> "Column":
    """Null-free boolean: a missing comparison is False (`when_null` for `!=`-like rules)."""
    from pyspark.sql import functions as F

    return F.coalesce(cond, F.lit(when_null))


def gt(a: Operand, b: Operand) -> "Column":
    """pandas `a > b`: False when either side is NaN or missing."""
    return fill(_num(a) > _num(b))


def ge(a: Operand, b: Operand) -> "Column":
    """pandas `a >= b`."""
    return fill(_num(a) >= _num(b))


def lt(a: Operand, b: Operand) -> "Column":
    """pandas `a < b`."""
    return fill(_num(a) < _num(b))


def le(a: Operand, b: Operand) -> "Column":
    """pandas `a <= b`."""
    return fill(_num(a) <= _num(b))


def eq(a: Operand, b: Operand) -> "Column":
    """pandas `a == b` on numbers (NaN == NaN is False)."""
    return fill(_num(a) == _num(b))


def between_open(value: Operand, low: float, high: float) -> "Column":
    """pandas `(value > low) & (value < high)`."""
    return gt(value, low) & lt(value, high)


def _num(value: Operand) -> "Column":
    """Operand of a comparison: NaN turned into null, the column's own type kept (float32 stays
    float32 against an `f32` threshold)."""
    from pyspark.sql import Column, functions as F

    if isinstance(value, (int, float)):
        return F.lit(value)
    c = col(value) if isinstance(value, str) else value
    assert isinstance(c, Column)
    # isnan() reads any numeric type (integers have no NaN); the value keeps its own type
    return F.when(~F.isnan(c), c)


def is_true(value: Operand) -> "Column":
    """A nullable boolean as a filter keeps it: null is False."""
    return fill(col(value) if isinstance(value, str) else value)


def isin(value: Operand, labels: tuple[str, ...], null_matches: bool = False) -> "Column":
    """pandas `Series.isin(labels)`; `null_matches`: the list also holds None/NaN."""
    from pyspark.sql import functions as F

    c = col(value) if isinstance(value, str) else value
    return F.when(c.isNull(), F.lit(null_matches)).otherwise(fill(c.isin(*labels)))


def defined(*values: Operand) -> "Column":
    """All values non-null. Fink negates some nullable booleans with `~`, which raises
    TypeError in pandas on None (the whole batch fails); here only that alert is dropped."""
    from functools import reduce

    return reduce(lambda acc, c: acc & c, [(col(v) if isinstance(v, str) else v).isNotNull() for v in values])


def ieee_divide(numerator: Operand, denominator: Operand) -> "Column":
    """numerator / denominator in double with IEEE results for a zero denominator (+-inf, NaN
    for 0/0), as numpy divides; Spark's `/` raises or returns null there."""
    from pyspark.sql import functions as F

    n = (col(numerator) if isinstance(numerator, str) else lit(numerator)).cast("double")
    d = (col(denominator) if isinstance(denominator, str) else lit(denominator)).cast("double")
    # atan2(+-0, -1) = +-pi tells the sign of a zero denominator (-0.0 flips the infinity)
    zero_sign = F.when(F.atan2(d, F.lit(-1.0)) < 0, F.lit(-1.0)).otherwise(F.lit(1.0))
    at_zero = F.when(F.isnan(n) | (n == 0), F.lit(float("nan"))).otherwise(
        F.signum(n) * zero_sign * F.lit(float("inf"))
    )
    return F.when(d == 0, at_zero).otherwise(n / F.when(d != 0, d))


def flux_to_apparent_mag(flux: Operand) -> "Column":
    """fink_filters.rubin.utils.flux_to_apparent_mag: AB magnitude of a flux in nJy in double,
    null (NaN) where the flux is not positive and finite."""
    from pyspark.sql import functions as F

    f = number(flux)
    ok = (f > 0) & (f < F.lit(math.inf))
    return F.when(ok, F.lit(-2.5) * F.log10(f) + F.lit(ZP_NJY))


def let(values: dict[str, "Column"], body) -> "Column":
    """`body(bound)` with each of `values` computed once and read as `bound[name]`.

    Composite formulas (the airmass, the distance integral) reuse intermediate values many
    times; written as plain Column trees they repeat whole subtrees at every use, and the
    generated code of a filter outgrows the JVM's 64 kB method limit (Spark then logs an error
    and falls back to slower interpreted evaluation). A one-element `transform` binds them once.
    """
    from pyspark.sql import functions as F

    packed = F.array(F.struct(*[v.alias(k) for k, v in values.items()]))
    return F.element_at(F.transform(packed, body), 1)


def or_chain(values: list["Column"]) -> "Column":
    """pandas `a | b | c ...` on nullable booleans, left to right.

    pandas fills a None right operand with False, but a None left operand makes the result
    False (the object-dtype `|` fails on None and the NaN it yields is filled with False), so
    only the first operand's null matters: it drops the second operand with it.
    """
    from pyspark.sql import functions as F

    first, second, *rest = values
    out = F.when(first.isNull(), F.lit(False)).otherwise(first | fill(second))
    for value in rest:
        out = out | fill(value)
    return out
