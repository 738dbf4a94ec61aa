"""ZTF `tnsclass`: the type of the nearest TNS source within 1.5 arcsec of `candidate.ra/dec`
(reference section 3, step 2), "Unknown" otherwise.

The catalogue is prepared the way Fink's `tns.parquet` is built (`prepare_tns_catalog`), then
matched in Arrow/numpy (`tnsclass_arrow`, tests and statistics) or in Spark on a declination
zone x right-ascension cell grid (`tnsclass_column` / `with_tnsclass`, the transfer job), with the
same tie-breaking. pyspark is imported lazily so that this module imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.surveys.ztf.classification import UNKNOWN, as_number, numeric_array

if TYPE_CHECKING:  # pyspark is heavy; only the Spark-side callables need it
    from pyspark.sql import Column, DataFrame

TNS_RADIUS_ARCSEC = 1.5
TNS_PREFIX = "(TNS) "
# Temporary column carrying the TNS candidates of an alert's sky cell (see tnsclass_column).
TNS_HELPER_COLUMN = "_tns_candidates"
_TNS_ZONE = "_tns_zone"
_TNS_CELL = "_tns_cell"


# --------------------------------------------------------------------------------------------
# tnsclass: catalogue
# --------------------------------------------------------------------------------------------


def prepare_tns_catalog(catalog: "pa.Table | Any") -> pa.Table:
    """Normalise a TNS catalogue the way Fink's `tns.parquet` is built.

    Keeps rows with a non-null `type` (and usable coordinates), prefixes `type` with "(TNS) "
    unless it already carries it (the file written by fink-broker is already prefixed), and
    returns an Arrow table `ra` (double, deg), `declination` (double, deg), `type` (string),
    `_tns_index` (int64, the row order used to break distance ties).
    """
    if not isinstance(catalog, pa.Table):
        catalog = pa.Table.from_pandas(catalog, preserve_index=False)
    missing = {"ra", "declination", "type"} - set(catalog.column_names)
    if missing:
        raise KeyError(f"TNS catalogue lacks columns {sorted(missing)}")
    ra = pc.cast(catalog.column("ra"), pa.float64())
    dec = pc.cast(catalog.column("declination"), pa.float64())
    kind = pc.cast(catalog.column("type"), pa.string())
    keep = pc.and_(pc.is_valid(kind), pc.and_(pc.is_finite(ra), pc.is_finite(dec)))
    keep = pc.fill_null(keep, False)
    kind = pc.filter(kind, keep)
    prefixed = pc.if_else(
        pc.starts_with(kind, TNS_PREFIX), kind, pc.binary_join_element_wise(TNS_PREFIX, kind, "")
    )
    out = pa.table(
        {
            "ra": pc.filter(ra, keep),
            "declination": pc.filter(dec, keep),
            "type": prefixed,
        }
    )
    return out.append_column("_tns_index", pa.array(np.arange(out.num_rows, dtype=np.int64)))


def load_tns_catalog(path: str) -> pa.Table:
    """Read a TNS Parquet file (columns ra, declination, type) and `prepare_tns_catalog` it."""
    import pyarrow.parquet as pq

    return prepare_tns_catalog(pq.read_table(path, columns=["ra", "declination", "type"]))


# --------------------------------------------------------------------------------------------
# tnsclass: Arrow / numpy (sorted-declination search, independent of the Spark grid)
# --------------------------------------------------------------------------------------------


def _haversine_deg(ra1, dec1, ra2, dec2):
    """Angular separation in degrees (haversine, stable for small angles)."""
    d1, d2 = np.radians(dec1), np.radians(dec2)
    h = np.sin((d2 - d1) / 2.0) ** 2 + np.cos(d1) * np.cos(d2) * np.sin(np.radians(ra2 - ra1) / 2.0) ** 2
    return np.degrees(2.0 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def _coordinates(values) -> np.ndarray:
    """Arrow (chunked) array, numpy array or sequence -> float64 numpy with NaN for nulls."""
    if isinstance(values, np.ndarray):
        return values.astype(np.float64)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        values = pa.array(values, type=pa.float64())
    return numeric_array(values)


def tnsclass_arrow(
    ra: "pa.Array | np.ndarray",
    dec: "pa.Array | np.ndarray",
    catalog: "pa.Table | None",
    radius_arcsec: float = TNS_RADIUS_ARCSEC,
) -> pa.Array:
    """TNS label of the nearest catalogue source closer than `radius_arcsec`, else "Unknown".

    `catalog` is a prepared catalogue (`prepare_tns_catalog`/`load_tns_catalog`; a raw one is
    prepared on the fly) or None (every alert "Unknown"). Ties in distance go to the source
    that comes first in the catalogue. Alerts with null coordinates are "Unknown".
    """
    ra_a, dec_a = _coordinates(ra), _coordinates(dec)
    n = len(ra_a)
    out = np.full(n, UNKNOWN, dtype=object)
    if catalog is None or n == 0:
        return pa.array(out, type=pa.string())
    if "_tns_index" not in catalog.column_names:
        catalog = prepare_tns_catalog(catalog)
    if catalog.num_rows == 0:
        return pa.array(out, type=pa.string())

    radius = radius_arcsec / 3600.0
    order = np.argsort(numeric_array(catalog.column("declination").combine_chunks()), kind="stable")
    c_dec = numeric_array(catalog.column("declination").combine_chunks())[order]
    c_ra = numeric_array(catalog.column("ra").combine_chunks())[order]
    c_idx = catalog.column("_tns_index").combine_chunks().to_numpy()[order]
    c_type = catalog.column("type").combine_chunks().to_numpy(zero_copy_only=False)[order]

    valid = np.isfinite(ra_a) & np.isfinite(dec_a)
    # candidates: catalogue rows whose declination is within the radius (the separation is
    # at least the declination difference)
    lo = np.searchsorted(c_dec, dec_a - radius * 1.001, side="left")
    hi = np.searchsorted(c_dec, dec_a + radius * 1.001, side="right")
    counts = np.where(valid, hi - lo, 0)
    alert = np.repeat(np.arange(n), counts)
    if alert.size == 0:
        return pa.array(out, type=pa.string())
    # positions lo[i], lo[i]+1, ..., hi[i]-1 for every alert, concatenated
    starts = np.repeat(lo, counts)
    offsets = np.arange(alert.size) - np.repeat(np.cumsum(counts) - counts, counts)
    cand = starts + offsets
    sep = _haversine_deg(ra_a[alert], dec_a[alert], c_ra[cand], c_dec[cand])
    ok = sep < radius  # Fink: d2d < 1.5 arcsec (strict)
    alert, cand, sep = alert[ok], cand[ok], sep[ok]
    if alert.size == 0:
        return pa.array(out, type=pa.string())
    # nearest first, then catalogue order; keep the first row of each alert
    best = np.lexsort((c_idx[cand], sep, alert))
    alert, cand = alert[best], cand[best]
    first = np.ones(alert.size, dtype=bool)
    first[1:] = alert[1:] != alert[:-1]
    out[alert[first]] = c_type[cand[first]]
    return pa.array(out, type=pa.string())


# --------------------------------------------------------------------------------------------
# tnsclass: Spark (zones of declination x cells of right ascension, broadcast catalogue)
# --------------------------------------------------------------------------------------------


def _grid(radius_arcsec: float) -> tuple[float, int]:
    """Zone height (deg) and number of declination zones of the sky grid."""
    height = 2.0 * radius_arcsec / 3600.0  # two match radii: ~4 cells per catalogue source
    return height, int(np.ceil(180.0 / height))


def _zone_of(dec: "Column", height: float, nzones: int) -> "Column":
    from pyspark.sql import functions as F

    z = F.floor((dec + F.lit(90.0)) / F.lit(height))
    return F.least(F.greatest(z, F.lit(0)), F.lit(nzones - 1)).cast("long")


def _ncells_of(zone: "Column", height: float) -> "Column":
    """RA cells in a zone: about `height` wide at the zone's edge closest to a pole."""
    from pyspark.sql import functions as F

    lo = zone.cast("double") * F.lit(height) - F.lit(90.0)
    edge = F.least(F.greatest(F.abs(lo), F.abs(lo + F.lit(height))), F.lit(90.0))
    n = F.floor(F.lit(360.0) * F.cos(F.radians(edge)) / F.lit(height))
    return F.greatest(n, F.lit(1)).cast("long")


def _cell_of(ra: "Column", ncells: "Column") -> "Column":
    from pyspark.sql import functions as F

    c = F.floor(F.pmod(ra, F.lit(360.0)) / F.lit(360.0) * ncells.cast("double")).cast("long")
    return F.pmod(c, ncells)


def _tns_catalog_to_spark(spark, catalog: "pa.Table | DataFrame") -> "DataFrame":
    """Prepared Spark catalogue with columns ra, declination, type, _tns_index."""
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    if isinstance(catalog, DataFrame):
        cat = catalog
        if "_tns_index" not in cat.columns:
            # the DataFrame's own order breaks ties (ids grow with partition and position)
            cat = cat.withColumn("_tns_index", F.monotonically_increasing_id())
        cat = cat.select(
            F.col("ra").cast("double").alias("ra"),
            F.col("declination").cast("double").alias("declination"),
            F.col("type").cast("string").alias("type"),
            F.col("_tns_index").cast("long").alias("_tns_index"),
        )
        usable = F.col("type").isNotNull()
        for name in ("ra", "declination"):
            usable = usable & F.col(name).isNotNull() & ~F.isnan(name)
        cat = cat.where(usable)
        return cat.withColumn(
            "type",
            F.when(F.col("type").startswith(TNS_PREFIX), F.col("type")).otherwise(
                F.concat(F.lit(TNS_PREFIX), F.col("type"))
            ),
        )
    table = catalog if "_tns_index" in catalog.column_names else prepare_tns_catalog(catalog)
    schema = "ra double, declination double, type string, _tns_index long"
    columns = table.select(["ra", "declination", "type", "_tns_index"])
    return spark.createDataFrame(columns.to_pandas(), schema)


def _explode_catalog(cat: "DataFrame", radius_arcsec: float) -> "DataFrame":
    """Every (zone, cell) a source's match circle can touch -> array of candidate sources."""
    from pyspark.sql import functions as F

    height, nzones = _grid(radius_arcsec)
    r = radius_arcsec / 3600.0 * 1.001  # margin: the exact test is done after the join
    ra = F.pmod(F.col("ra"), F.lit(360.0))
    dec = F.col("declination")
    zones = F.sequence(_zone_of(dec - F.lit(r), height, nzones), _zone_of(dec + F.lit(r), height, nzones))
    cat = cat.withColumn(_TNS_ZONE, F.explode(zones))
    ncells = _ncells_of(F.col(_TNS_ZONE), height)
    # largest RA offset of a point within r of the source; the circle holds a pole otherwise
    sin_r, cos_dec = F.lit(float(np.sin(np.radians(r)))), F.cos(F.radians(dec))
    alpha = F.when(
        cos_dec > sin_r * F.lit(1.0001), F.degrees(F.asin(sin_r / cos_dec)) * F.lit(1.001)
    ).otherwise(F.lit(180.0))
    c_lo = F.floor((ra - alpha) / F.lit(360.0) * ncells.cast("double")).cast("long")
    c_hi = F.floor((ra + alpha) / F.lit(360.0) * ncells.cast("double")).cast("long")
    cells = F.when(
        (alpha >= F.lit(180.0)) | (c_hi - c_lo + F.lit(1) >= ncells),
        F.sequence(F.lit(0).cast("long"), ncells - F.lit(1)),
    ).otherwise(F.transform(F.sequence(c_lo, c_hi), lambda c: F.pmod(c, ncells)))
    cat = cat.withColumn(_TNS_CELL, F.explode(F.array_distinct(cells)))
    return cat.groupBy(_TNS_ZONE, _TNS_CELL).agg(
        F.collect_list(F.struct("ra", "declination", "type", "_tns_index")).alias(TNS_HELPER_COLUMN)
    )


def tnsclass_column(
    df: "DataFrame",
    tns_catalog_df: "DataFrame | pa.Table | None" = None,
    radius_arcsec: float = TNS_RADIUS_ARCSEC,
    position: tuple[str, str] = ("candidate.ra", "candidate.dec"),
) -> tuple["DataFrame", "Column"]:
    """Prepare `df` for the TNS cross-match and return the `tnsclass` column expression.

    A cross-match needs a join, so this returns `(df2, column)`: `df2` is `df` plus the helper
    column `TNS_HELPER_COLUMN` (the catalogue sources of the alert's sky cell, obtained by a
    broadcast left join that keeps one row per alert), and `column` computes the label from
    it: the haversine separation to each candidate, the nearest one with separation < 1.5"
    (ties: first in the catalogue), else "Unknown". Drop the helper after use, or call
    `with_tnsclass` which does both. With no catalogue: `(df, lit("Unknown"))`.

    Fink's UDF matches per Arrow batch and then looks the label up by `objectId`, so two alerts
    of the same object in one batch both get the first one's label; we match every alert on
    its own position (the two differ only if an object moves by more than 1.5").
    `position` names the alert's (ra, dec) fields in degrees.
    """
    from pyspark.sql import functions as F

    if tns_catalog_df is None:
        return df, F.lit(UNKNOWN)
    cat = _tns_catalog_to_spark(df.sparkSession, tns_catalog_df)
    cells = _explode_catalog(cat, radius_arcsec)
    height, nzones = _grid(radius_arcsec)

    ra, dec = as_number(position[0]), as_number(position[1])
    zone = _zone_of(dec, height, nzones)
    keyed = df.withColumn(_TNS_ZONE + "_a", zone).withColumn(
        _TNS_CELL + "_a", _cell_of(ra, _ncells_of(zone, height))
    )
    joined = keyed.join(
        F.broadcast(cells),
        (keyed[_TNS_ZONE + "_a"] == cells[_TNS_ZONE]) & (keyed[_TNS_CELL + "_a"] == cells[_TNS_CELL]),
        "left",
    ).select(*[keyed[c] for c in df.columns], cells[TNS_HELPER_COLUMN])

    d1 = F.radians(dec)

    def with_sep(s):
        d2 = F.radians(s["declination"])
        h = F.pow(F.sin((d2 - d1) / 2.0), 2) + F.cos(d1) * F.cos(d2) * F.pow(
            F.sin(F.radians(s["ra"] - ra) / 2.0), 2
        )
        sep = F.degrees(F.lit(2.0) * F.asin(F.sqrt(F.least(F.greatest(h, F.lit(0.0)), F.lit(1.0)))))
        return F.struct(sep.alias("sep"), s["_tns_index"].alias("idx"), s["type"].alias("type"))

    radius = radius_arcsec / 3600.0
    scored = F.transform(F.col(TNS_HELPER_COLUMN), with_sep)
    close = F.filter(scored, lambda s: s["sep"] < F.lit(radius))
    # structs order field by field: smallest separation, then smallest catalogue index
    nearest = F.array_min(close)
    return joined, F.coalesce(nearest["type"], F.lit(UNKNOWN))


def with_tnsclass(
    df: "DataFrame",
    tns_catalog_df: "DataFrame | pa.Table | None" = None,
    radius_arcsec: float = TNS_RADIUS_ARCSEC,
    column: str = "tnsclass",
    position: tuple[str, str] = ("candidate.ra", "candidate.dec"),
) -> "DataFrame":
    """`df` plus the `tnsclass` column ("Unknown" everywhere when no catalogue is given)."""
    prepared, expr = tnsclass_column(df, tns_catalog_df, radius_arcsec, position)
    out = prepared.withColumn(column, expr)
    return out.drop(TNS_HELPER_COLUMN) if TNS_HELPER_COLUMN in prepared.columns else out
