"""ZTF alert classification as the Data Transfer job computes it: `finkclass` and `tnsclass`.

`finkclass` reproduces `fink_filters.ztf.classification.extract_fink_classification_`
(reference section 3.1): eight boolean flags taken from the Fink filters, the labels written in
a fixed order (later wins), an ambiguity counter, then the SIMBAD label overriding everything.
`tnsclass` is the type of the nearest TNS source within 1.5 arcsec of `candidate.ra/dec`
(reference section 3, step 2), "Unknown" otherwise.

Two implementations of the same rules live here:

* Spark: native Column expressions (no Python UDF), used by the transfer job;
* Arrow/numpy: vectorised, used by the tests and the consumer side.

Null handling. Fink runs the rules as pandas UDFs, where Spark hands nulls over as NaN (numbers)
or None (strings). Pandas comparisons with NaN are False except `!=`, which is True; `isin` and
`==` on None are False. Both implementations follow exactly that, and NaN values stored in float
columns are treated like nulls (in Spark a raw NaN would compare greater than every number).
Where Fink itself would raise (`astype(int)` on a null `roid`/`ndethist`, `startswith` on a null
`cdsxmatch`), we keep the pandas comparison semantics instead of failing the job:
null `roid` is "not 3" and "not 2", null `ndethist` fails every threshold, and a null
`cdsxmatch` is neither a SIMBAD counterpart nor an extragalactic host.

pyspark is imported lazily so that this module imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:  # pyspark is heavy; only the Spark-side callables need it
    from pyspark.sql import Column, DataFrame

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

# fink_utils.xmatch.simbad.return_list_of_eg_host() (2026 snapshot, reference section 3.1):
# SIMBAD labels compatible with an extragalactic host, plus "no counterpart"/"failed xmatch".
_EG_NON_GALAXY = ("Unknown", "Candidate_SN*", "SN", "Transient", "Fail", "Fail 504", "SN*_Candidate")
_EG_GALAXIES = (
    "galaxy", "Galaxy", "EmG", "Seyfert", "Seyfert_1", "Seyfert_2", "BlueCompG", "StarburstG",
    "LSB_G", "HII_G", "High_z_G", "GinPair", "GinGroup", "BClG", "GinCl", "PartofG",
    "Compact_Gr_G", "IG", "PairG", "GroupG", "ClG", "SuperClG", "Void", "LINER",
    "Possible_ClG", "Possible_SClG", "GravLens_Candidate",
)  # fmt: skip
EXTRAGALACTIC_HOSTS: frozenset[str] = frozenset(_EG_NON_GALAXY + _EG_GALAXIES)

# cdsxmatch values meaning "no SIMBAD counterpart" (filter_simbad_candidates); in addition any
# value starting with "Fail" or "Galaxy" is not treated as a SIMBAD counterpart.
SIMBAD_NO_COUNTERPART: tuple[str, ...] = ("Unknown", "Transient", "Fail", "Fail 504")

# Labels produced by the rule itself (anything else is a raw SIMBAD otype from cdsxmatch).
UNKNOWN = "Unknown"
EARLY_SN_IA = "Early SN Ia candidate"
SN_CANDIDATE = "SN candidate"
KILONOVA = "Kilonova candidate"
MICROLENSING = "Microlensing candidate"
SSO_MPC = "Solar System MPC"
SSO_CANDIDATE = "Solar System candidate"
TRACKLET = "Tracklet"
AMBIGUOUS = "Ambiguous"
FINK_CLASS_LABELS: tuple[str, ...] = (
    UNKNOWN, EARLY_SN_IA, SN_CANDIDATE, KILONOVA, MICROLENSING,
    SSO_MPC, SSO_CANDIDATE, TRACKLET, AMBIGUOUS,
)  # fmt: skip

# The 13 inputs of extract_fink_classification_, in Fink's argument order.
FINKCLASS_INPUT_COLUMNS: tuple[str, ...] = (
    "cdsxmatch", "roid", "mulens", "snn_snia_vs_nonia", "snn_sn_vs_all", "rf_snia_vs_nonia",
    "candidate.ndethist", "candidate.drb", "candidate.classtar", "candidate.jd",
    "candidate.jdstarthist", "rf_kn_vs_nonkn", "tracklet",
)  # fmt: skip

# Label writing order of extract_fink_classification_ (later wins) ...
_LABEL_ORDER: tuple[tuple[str, str], ...] = (
    ("mulens", MICROLENSING),
    ("sn", SN_CANDIDATE),
    ("sn_early", EARLY_SN_IA),
    ("kn", KILONOVA),
    ("roid_2", SSO_CANDIDATE),
    ("tracklet", TRACKLET),
    ("roid_3", SSO_MPC),
)
# ... and the flags counted by the ambiguity counter (early SN, KN and tracklet are not).
_AMBIGUITY_FLAGS: tuple[str, ...] = ("mulens", "sn", "roid_2", "roid_3")

TNS_RADIUS_ARCSEC = 1.5
TNS_PREFIX = "(TNS) "
# Temporary column carrying the TNS candidates of an alert's sky cell (see tnsclass_column).
TNS_HELPER_COLUMN = "_tns_candidates"
_TNS_ZONE = "_tns_zone"
_TNS_CELL = "_tns_cell"


# --------------------------------------------------------------------------------------------
# finkclass: Spark
# --------------------------------------------------------------------------------------------


def as_number(name_or_col: "str | Column") -> "Column":
    """Column as double with NaN turned into null (pandas sees both as NaN)."""
    from pyspark.sql import functions as F

    c = F.col(name_or_col) if isinstance(name_or_col, str) else name_or_col
    c = c.cast("double")
    return F.nanvl(c, F.lit(None).cast("double"))


def fill_null(cond: "Column", when_null: bool = False) -> "Column":
    """Null-free boolean: pandas comparisons with NaN are False (True for `!=`)."""
    from pyspark.sql import functions as F

    return F.coalesce(cond, F.lit(when_null))


def finkclass_flag_columns(tracklet: "Column | None" = None) -> dict[str, "Column"]:
    """The eight Fink flags as null-free boolean Spark columns.

    Keys: tracklet, simbad, sn_early, sn, mulens, kn, roid_3, roid_2. Each flag is the exact
    rule of the Fink filter named in the reference (section 3.1), so a livestream filter that
    defines a Fink class selects exactly the alerts whose flag is true here. `tracklet`
    overrides the tracklet column (the `unknowns` filter runs the rule with an empty one).
    """
    from pyspark.sql import functions as F

    cds = F.col("cdsxmatch")
    roid = as_number("roid")
    ndethist = as_number("candidate.ndethist")
    drb = as_number("candidate.drb")
    classtar = as_number("candidate.classtar")
    age = F.nanvl(as_number("candidate.jd") - as_number("candidate.jdstarthist"), F.lit(None).cast("double"))
    snn1 = fill_null(as_number("snn_snia_vs_nonia") > 0.5)
    snn2 = fill_null(as_number("snn_sn_vs_all") > 0.5)
    high_drb = fill_null(drb > 0.5)
    high_classtar = fill_null(classtar > 0.4)
    eg_host = fill_null(cds.isin(*sorted(EXTRAGALACTIC_HOSTS)))
    not_mpc = fill_null(roid != 3, when_null=True)  # NaN != 3 is True in pandas
    # an all-null tracklet column may be read back as another type: compare as a string
    tracklet_col = (F.col("tracklet") if tracklet is None else tracklet).cast("string")

    return {
        # str(x).startswith("TRCK_"): a null tracklet is "None", so False
        "tracklet": fill_null(tracklet_col.startswith("TRCK_")),
        # cdsxmatch not in the no-counterpart list, not "Fail*" and not "Galaxy*"
        "simbad": fill_null(
            ~cds.isin(*SIMBAD_NO_COUNTERPART) & ~cds.startswith("Fail") & ~cds.startswith("Galaxy")
        ),
        # filter_early_sn_candidates
        "sn_early": (snn1 | snn2)
        & eg_host
        & high_drb
        & high_classtar
        & fill_null(ndethist <= 20)
        & fill_null(as_number("rf_snia_vs_nonia") > 0.5),
        # filter_sn_candidates
        "sn": (snn1 | snn2)
        & eg_host
        & fill_null(age <= 90)
        & high_drb
        & high_classtar
        & fill_null(ndethist > 1)
        & not_mpc,
        # filter_microlensing_candidates
        "mulens": fill_null(as_number("mulens") > 0.0),
        # filter_kn_candidates.kn_candidates_
        "kn": fill_null(as_number("rf_kn_vs_nonkn") > 0.5)
        & high_drb
        & high_classtar
        & fill_null(age < 5)
        & not_mpc
        & fill_null(ndethist < 20)
        & eg_host,
        # filter_sso_ztf_candidates / filter_sso_fink_candidates
        "roid_3": fill_null(roid == 3),
        "roid_2": fill_null(roid == 2),
    }


def finkclass_from_flags(flags: Mapping[str, "Column"]) -> "Column":
    """Combine the flags of `finkclass_flag_columns` as extract_fink_classification_ does.

    Labels in Fink's writing order (later wins), "Ambiguous" when more than one of
    microlensing / SN / Solar System flags is up, and the raw `cdsxmatch` wherever the SIMBAD
    flag is up.
    """
    from pyspark.sql import functions as F

    # "later wins" == the first true flag when the writing order is reversed
    label = None
    for flag, name in reversed(_LABEL_ORDER):
        branch = (F.when if label is None else label.when)
        label = branch(flags[flag], F.lit(name))
    label = label.otherwise(F.lit(UNKNOWN))
    ambiguity = sum(flags[flag].cast("int") for flag in _AMBIGUITY_FLAGS)
    return (
        F.when(flags["simbad"], F.col("cdsxmatch"))
        .when(ambiguity > 1, F.lit(AMBIGUOUS))
        .otherwise(label)
    )


def finkclass_column() -> "Column":
    """Spark column computing Fink's `finkclass` label (native expression, no UDF).

    Reads the 13 columns of `FINKCLASS_INPUT_COLUMNS`.
    """
    return finkclass_from_flags(finkclass_flag_columns())


# --------------------------------------------------------------------------------------------
# finkclass: Arrow / numpy
# --------------------------------------------------------------------------------------------


def arrow_field(table: pa.Table, path: str) -> pa.Array:
    """A (possibly nested, dotted) field of an Arrow table as one Array.

    A flat column literally named `path` wins; otherwise struct levels are descended
    (a null parent struct makes the child null).
    """
    if path in table.column_names:
        return table.column(path).combine_chunks()
    head, *rest = path.split(".")
    if head not in table.column_names:
        raise KeyError(f"column {path!r} not found in table (columns: {table.column_names})")
    arr = table.column(head).combine_chunks()
    for name in rest:
        arr = pc.struct_field(arr, name)
    return arr


def _np_num(arr: pa.Array) -> np.ndarray:
    """Numeric Arrow array -> float64 numpy (nulls -> NaN), like pandas' astype(float)."""
    return np.asarray(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _np_bool(arr: pa.Array) -> np.ndarray:
    """Boolean Arrow array with nulls -> numpy bool (null -> False)."""
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _np_isin(arr: pa.Array, values) -> np.ndarray:
    return _np_bool(pc.is_in(arr, value_set=pa.array(sorted(values), pa.string())))


def finkclass_flags_arrow(table: pa.Table, tracklet: pa.Array | None = None) -> dict[str, np.ndarray]:
    """The eight Fink flags as numpy bool arrays (same keys and rules as the Spark version)."""
    cds = pc.cast(arrow_field(table, "cdsxmatch"), pa.string())
    roid = _np_num(arrow_field(table, "roid"))
    ndethist = _np_num(arrow_field(table, "candidate.ndethist"))
    # astype(float) first: a float32 0.4 is 0.4000000059604645 > 0.4 (numpy would compare
    # a float32 array with 0.4 in float32)
    drb = _np_num(arrow_field(table, "candidate.drb"))
    classtar = _np_num(arrow_field(table, "candidate.classtar"))
    age = _np_num(arrow_field(table, "candidate.jd")) - _np_num(
        arrow_field(table, "candidate.jdstarthist")
    )
    with np.errstate(invalid="ignore"):
        snn = (_np_num(arrow_field(table, "snn_snia_vs_nonia")) > 0.5) | (
            _np_num(arrow_field(table, "snn_sn_vs_all")) > 0.5
        )
        high_drb = drb > 0.5
        high_classtar = classtar > 0.4
        eg_host = _np_isin(cds, EXTRAGALACTIC_HOSTS)
        not_mpc = roid != 3
        trk = pc.cast(arrow_field(table, "tracklet") if tracklet is None else tracklet, pa.string())
        simbad = (
            ~_np_isin(cds, SIMBAD_NO_COUNTERPART)
            & ~_np_bool(pc.starts_with(cds, "Fail"))
            & ~_np_bool(pc.starts_with(cds, "Galaxy"))
            & _np_bool(pc.is_valid(cds))
        )
        return {
            "tracklet": _np_bool(pc.starts_with(trk, "TRCK_")),
            "simbad": simbad,
            "sn_early": snn & eg_host & high_drb & high_classtar & (ndethist <= 20)
            & (_np_num(arrow_field(table, "rf_snia_vs_nonia")) > 0.5),
            "sn": snn & eg_host & (age <= 90) & high_drb & high_classtar & (ndethist > 1) & not_mpc,
            "mulens": _np_num(arrow_field(table, "mulens")) > 0.0,
            "kn": (_np_num(arrow_field(table, "rf_kn_vs_nonkn")) > 0.5)
            & high_drb & high_classtar & (age < 5) & not_mpc & (ndethist < 20) & eg_host,
            "roid_3": roid == 3,
            "roid_2": roid == 2,
        }  # fmt: skip


def _finkclass_from_flags_np(flags: Mapping[str, np.ndarray], cdsxmatch: pa.Array) -> pa.Array:
    n = len(cdsxmatch)
    label = np.full(n, UNKNOWN, dtype=object)
    for flag, name in _LABEL_ORDER:  # later wins, as the successive pandas .mask calls
        label[flags[flag]] = name
    ambiguity = sum(flags[flag].astype(np.int64) for flag in _AMBIGUITY_FLAGS)
    label[ambiguity > 1] = AMBIGUOUS
    cds = pc.cast(cdsxmatch, pa.string()).to_numpy(zero_copy_only=False)
    label[flags["simbad"]] = cds[flags["simbad"]]
    return pa.array(label, type=pa.string())


def finkclass_arrow(table: pa.Table) -> pa.Array:
    """Fink's `finkclass` label for every row of an Arrow table (vectorised numpy/pyarrow).

    `table` holds the 13 inputs of `FINKCLASS_INPUT_COLUMNS`, nested (`candidate` struct) or
    as flat dotted column names.
    """
    flags = finkclass_flags_arrow(table)
    return _finkclass_from_flags_np(flags, arrow_field(table, "cdsxmatch"))


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
    return _np_num(values)


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
    order = np.argsort(_np_num(catalog.column("declination").combine_chunks()), kind="stable")
    c_dec = _np_num(catalog.column("declination").combine_chunks())[order]
    c_ra = _np_num(catalog.column("ra").combine_chunks())[order]
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
    """
    from pyspark.sql import functions as F

    if tns_catalog_df is None:
        return df, F.lit(UNKNOWN)
    cat = _tns_catalog_to_spark(df.sparkSession, tns_catalog_df)
    cells = _explode_catalog(cat, radius_arcsec)
    height, nzones = _grid(radius_arcsec)

    ra, dec = as_number("candidate.ra"), as_number("candidate.dec")
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
) -> "DataFrame":
    """`df` plus the `tnsclass` column ("Unknown" everywhere when no catalogue is given)."""
    prepared, expr = tnsclass_column(df, tns_catalog_df, radius_arcsec)
    out = prepared.withColumn(column, expr)
    return out.drop(TNS_HELPER_COLUMN) if TNS_HELPER_COLUMN in prepared.columns else out


# --------------------------------------------------------------------------------------------
# Both columns
# --------------------------------------------------------------------------------------------


def classify(df: "DataFrame", tns_catalog_df: "DataFrame | pa.Table | None" = None) -> "DataFrame":
    """Add `finkclass` and `tnsclass` to an archive DataFrame, as the ZTF transfer job does.

    `tns_catalog_df`: TNS catalogue (Spark DataFrame, Arrow table from `load_tns_catalog`, or
    None for `tnsclass` = "Unknown" everywhere).
    """
    return with_tnsclass(df.withColumn("finkclass", finkclass_column()), tns_catalog_df)


def classify_arrow(table: pa.Table, tns_catalog: pa.Table | None = None) -> dict[str, pa.Array]:
    """Arrow version of `classify`: {"finkclass": ..., "tnsclass": ...}."""
    if tns_catalog is None:
        tns = pa.array([UNKNOWN] * table.num_rows, type=pa.string())
    else:
        ra, dec = arrow_field(table, "candidate.ra"), arrow_field(table, "candidate.dec")
        tns = tnsclass_arrow(ra, dec, tns_catalog)
    return {"finkclass": finkclass_arrow(table), "tnsclass": tns}
