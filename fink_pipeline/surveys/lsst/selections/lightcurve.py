"""Light-curve quantities of Fink's Rubin blocks, as Spark expressions on the alert's arrays.

Fink's code walks `prvDiaSources` (a list of dicts per alert) in Python; here higher-order
functions (`filter`, `aggregate`, `exists`, `array_sort`) do the same on the array of structs.
Band matches compare like Python's `==` (None == None is True): `eqNullSafe`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fink_pipeline.surveys.lsst.selections.columns import col, fill, ge, ieee_divide, le, let, number

if TYPE_CHECKING:
    from pyspark.sql import Column

BANDS: tuple[str, ...] = ("u", "g", "r", "i", "z", "y")
# bands of fink_filters.rubin.utils.extract_max_flux, in its order
MAX_FLUX_BANDS: tuple[str, ...] = ("g", "i", "r", "u", "z", "y")
PRV = "prvDiaSources"


def per_band(field: str, band: "Column | None" = None) -> "Column":
    """`diaObject.<band>_<field>` of the alert's band (null for a null or unknown band), the
    `when` chain of Fink's per-row `"{}_{}".format(row["band"], field)` lookup."""
    from pyspark.sql import functions as F

    band = col("diaSource.band") if band is None else band
    out = None
    for b in BANDS:
        value = col(f"diaObject.{b}_{field}")
        out = F.when(band == F.lit(b), value) if out is None else out.when(band == F.lit(b), value)
    return out


def history(*fields: str) -> "Column":
    """prvDiaSources reduced to `fields` (an array of structs, null without history).

    Zipping `prvDiaSources.<field>` arrays lets Spark read only those nested fields from Parquet;
    a lambda over whole elements would read all ~100 fields of every previous source.
    """
    from pyspark.sql import functions as F

    return F.arrays_zip(*[col(f"{PRV}.{f}").alias(f) for f in fields])


SOURCE_FIELDS = ("band", "midpointMjdTai", "psfFlux", "psfFluxErr")


def same_band_sources(band: "Column | None" = None) -> "Column":
    """Previous sources (`SOURCE_FIELDS`) whose band equals the alert's (Python `==`: None
    matches None)."""
    from pyspark.sql import functions as F

    band = col("diaSource.band") if band is None else band
    return F.filter(history(*SOURCE_FIELDS), lambda s: s["band"].eqNullSafe(band))


def last_same_band_source() -> "Column":
    """The last same-band entry in list order (`compute_mc_sampling_flux_rate`'s reversed scan),
    a struct of `SOURCE_FIELDS`; null when there is none.

    `array_position` on the reversed bands finds it with compiled code (no lambda per element);
    only a null band, which matches null previous bands in Python, scans with a lambda.
    """
    from pyspark.sql import functions as F

    bands, band = col(f"{PRV}.band"), col("diaSource.band")
    null_band = F.array_position(F.reverse(F.transform(bands, lambda b: b.isNull())), F.lit(True))
    from_end = F.when(band.isNull(), null_band).otherwise(F.array_position(F.reverse(bands), band))
    index = F.when(from_end > 0, -from_end).cast("int")
    fields = [F.try_element_at(col(f"{PRV}.{f}"), index).alias(f) for f in SOURCE_FIELDS]
    return F.when(index.isNotNull(), F.struct(*fields))


def latest_same_band_source() -> "Column":
    """Python's `max(same_band, key=midpointMjdTai)` (`get_latest_source_same_band`): the first
    entry with the greatest time; an entry replaces the current one only when its time is
    strictly greater, so a NaN time never wins and a leading NaN is never replaced."""
    from pyspark.sql import functions as F

    def latest(b: "Column") -> "Column":
        same = b["same"]
        first = F.try_element_at(same, F.lit(1))
        rest = F.slice(same, 2, F.greatest(F.size(same) - 1, F.lit(0)))
        newer = lambda acc, s: fill(number(s["midpointMjdTai"]) > number(acc["midpointMjdTai"]))  # noqa: E731
        return F.aggregate(rest, first, lambda acc, s: F.when(newer(acc, s), s).otherwise(acc))

    return let({"same": same_band_sources()}, latest)


def mc_flux_rate() -> "Column":
    """Deterministic limit of `compute_mc_sampling_flux_rate` for the last same-band source, a
    struct (mean, std) = ((f - f_prv) / dt, sqrt(e^2 + e_prv^2) / |dt|); both null without a
    previous source or with a NaN among the previous source's values (Fink's NaN mask)."""
    from pyspark.sql import functions as F

    def rate(b: "Column") -> "Column":
        prv = b["prv"]
        dt = b["now"] - number(prv["midpointMjdTai"])
        flux = b["flux"] - number(prv["psfFlux"])
        err_prv = number(prv["psfFluxErr"])
        spread = F.sqrt(b["err"] * b["err"] + err_prv * err_prv)
        complete = (prv.isNotNull() & number(prv["midpointMjdTai"]).isNotNull() & number(prv["psfFlux"]).isNotNull()
                    & err_prv.isNotNull())  # fmt: skip
        return F.struct(F.when(complete, ieee_divide(flux, dt)).alias("mean"),
                        F.when(complete, ieee_divide(spread, F.abs(dt))).alias("std"))  # fmt: skip

    # the previous source is found once per alert (bound), not once per use
    return let({"prv": last_same_band_source(), "now": number("diaSource.midpointMjdTai"),
                "flux": number("diaSource.psfFlux"), "err": number("diaSource.psfFluxErr")}, rate)  # fmt: skip


def median_template_mag(band: str) -> "Column":
    """`quiescent_colors` of filter_mdwarf_flare for one band: AB magnitude of the median
    templateFlux of the previous sources in `band` whose templateFlux is not null; null (NaN)
    when a flux is NaN (np.median propagates it) or the median is not positive. Use
    `has_template_flux` for whether the band counts as available."""
    from pyspark.sql import functions as F

    def magnitude(b: "Column") -> "Column":
        ordered, n = b["ordered"], F.size(b["ordered"])
        # 1-based middle positions (index 0 is an error even for try_element_at: kept >= 1)
        lo = F.try_element_at(ordered, F.greatest(F.floor((n + 1) / 2).cast("int"), F.lit(1)))
        hi = F.try_element_at(ordered, F.greatest(F.floor(n / 2).cast("int") + 1, F.lit(1)))
        median = F.when(n % 2 == 1, lo).otherwise((lo + hi) / F.lit(2.0))
        any_nan = F.exists(ordered, lambda f: F.isnan(f))
        ok = (n > 0) & ~any_nan & (median > 0) & (median < F.lit(math.inf))
        return F.when(ok, F.lit(-2.5) * F.log10(median) + F.lit(31.4))

    fluxes = F.transform(_template_fluxes(band), lambda f: f.cast("double"))
    return let({"ordered": F.array_sort(fluxes)}, magnitude)


def has_template_flux(band: str) -> "Column":
    """At least one previous source in `band` with a non-null templateFlux."""
    from pyspark.sql import functions as F

    return fill(F.size(_template_fluxes(band)) > 0)


def _template_fluxes(band: str) -> "Column":
    from pyspark.sql import functions as F

    same = F.filter(history("band", "templateFlux"),
                    lambda s: fill(s["band"] == F.lit(band)) & s["templateFlux"].isNotNull())  # fmt: skip
    return F.transform(same, lambda s: s["templateFlux"])


def isolated_in_time(lo_hours: float = 4.0, hi_hours: float = 48.0) -> "Column":
    """`isolated_source` of filter_mdwarf_flare: no previous source between `lo_hours` and
    `hi_hours` before the alert ((t - t_prv) * 24 hours, NaN never inside)."""
    from pyspark.sql import functions as F

    now = number("diaSource.midpointMjdTai")
    inside = F.exists(
        history("midpointMjdTai"),
        lambda s: ge((now - number(s["midpointMjdTai"])) * F.lit(24.0), lo_hours)
        & le((now - number(s["midpointMjdTai"])) * F.lit(24.0), hi_hours),
    )
    return ~fill(inside)


def peak_flux() -> "Column":
    """`extract_max_flux`: the greatest `<band>_psfFluxMax` of diaObject, NaNs skipped (pandas
    `max(axis=1)`); null when every band is missing."""
    from pyspark.sql import functions as F

    return F.greatest(*[number(f"diaObject.{b}_psfFluxMax") for b in MAX_FLUX_BANDS])


def two_points_same_band() -> "Column":
    """`has_two_points_same_band`: `diaObject.<band>_psfFluxNdata >= 2` in the alert's band."""
    return ge(per_band("psfFluxNdata"), 2)

