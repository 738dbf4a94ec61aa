"""A generated Rubin night bent towards the edges of Fink's filters and blocks (compat input).

`edge_night(spark, source, target)` rewrites a generated night so that every group of alerts
(by a hash of diaSourceId) hits one kind of edge: null first quality flag, zero or negative-zero
flux errors, NaN fluxes, each SIMBAD/VSX label class, infinite parallax ratios, missing bands,
galactic latitudes just inside and outside 5 and 20 degrees, RA at 0 and 360, float32 thresholds
met exactly, first-detection ties, photo-z edge values, previous sources at the same time, NaN
times, M-dwarf-like and trail-like alerts with valid FITS cutouts, zero-error flux rates.
Every science cutout is replaced by a valid FITS image (the generator's do not decode with
astropy, see test_compat_fink_filters.py), round or elongated.

Nulls that make Fink's pandas code raise for the whole batch (`~` on a null is_sso, isNegative or
pixelFlags_cr; a null value in a previous source's time or flux) are not produced: the
comparison is about selections, not failures.
"""

from __future__ import annotations

import io
import math

import numpy as np

from fink_pipeline.surveys.lsst.selections.sky import ICRS_TO_GALACTIC

GROUPS = 24
SIMBAD_TYPES = ("Unknown", "Fail", "Fail 504", "Galaxy", "SN", "Star", "EB*", None, "Candidate_SN*")
VSX_TYPES = ("EW", "QSO", "RRAB", None, "SN Ia")


def fits_image(kind: str, seed: int) -> bytes:
    """A 31x31 float32 FITS cutout: "trail" (elongated), "round" (a PSF) or "noise"."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:31, :31] - 15.0
    if kind == "trail":
        along, across = xx * 0.8 + yy * 0.6, yy * 0.8 - xx * 0.6
        image = 4000.0 * np.exp(-(along**2) / (2 * 6.0**2) - across**2 / (2 * 1.3**2))
    elif kind == "round":
        image = 4000.0 * np.exp(-(xx**2 + yy**2) / (2 * 1.8**2))
    else:
        image = np.zeros_like(xx)
    image = (image + rng.normal(0, 40, xx.shape)).astype(np.float32)
    buffer = io.BytesIO()
    fits.PrimaryHDU(image).writeto(buffer)
    return buffer.getvalue()


def icrs_of_galactic(lon_deg: float, lat_deg: float) -> tuple[float, float]:
    """(ra, dec) in degrees of a galactic position (inverse of the rotation astropy applies)."""
    l, b = math.radians(lon_deg), math.radians(lat_deg)
    g = np.array([math.cos(b) * math.cos(l), math.cos(b) * math.sin(l), math.sin(b)])
    x, y, z = np.array(ICRS_TO_GALACTIC).T @ g
    return math.degrees(math.atan2(y, x)) % 360.0, math.degrees(math.atan2(z, math.hypot(x, y)))


def boundary_positions() -> list[tuple[float, float]]:
    """Positions just inside and outside |b| = 5 and 20 degrees, RA at 0 and 360, the poles."""
    out = [icrs_of_galactic(lon, sign * (edge + delta))
           for lon in (30.0, 200.0) for sign in (1, -1) for edge in (5.0, 20.0) for delta in (-1e-7, 1e-7)]
    out += [(0.0, -40.0), (360.0, -40.0), (359.9999999, -40.0), (0.0, -90.0), (180.0, 89.9)]
    return out


def edge_night(spark, source: str, target: str) -> str:
    """Write the bent night to `target` (one Parquet file) and return it."""
    from pyspark.sql import functions as F

    df = spark.read.parquet(source)
    group = F.pmod(F.xxhash64("diaSourceId"), F.lit(GROUPS))
    ident = F.col("diaSourceId")
    df = df.withColumn("_g", group).withColumn("_k", F.pmod(ident, F.lit(997)))
    df = _bend_quality(df)
    df = _bend_crossmatch(df)
    df = _bend_positions(df)
    df = _bend_classifiers(df)
    df = _bend_history(df)
    df = _bend_mdwarf(df)
    df = _bend_trails(df)
    df.drop("_g", "_k").coalesce(1).write.mode("overwrite").parquet(target)
    return target


def _set(df, group: int, path: str, value):
    """Set `path` (struct.field or a root column) to `value` on the rows of `group`."""
    from pyspark.sql import functions as F

    value = value if not isinstance(value, (int, float, str, type(None))) else F.lit(value)
    if "." not in path:
        return df.withColumn(path, F.when(F.col("_g") == group, value).otherwise(F.col(path)))
    struct, field = path.split(".", 1)
    current = F.col(path)
    return df.withColumn(struct, F.col(struct).withField(field, F.when(F.col("_g") == group, value).otherwise(current)))


def _pick(values: tuple, dtype: str):
    """One of `values` per row, by diaSourceId."""
    from pyspark.sql import functions as F

    out = None
    for i, v in enumerate(values):
        cond = F.pmod(F.col("_k"), F.lit(len(values))) == i
        lit = F.lit(v).cast(dtype)
        out = F.when(cond, lit) if out is None else out.when(cond, lit)
    return out


def _clean_quality(df, group: int):
    """Flags off and a high SNR on `group` (so that the other cuts decide)."""
    from pyspark.sql import functions as F

    from fink_pipeline.surveys.lsst.selections.blocks import QUALITY_FLAGS

    for flag in QUALITY_FLAGS:
        df = _set(df, group, f"diaSource.{flag}", F.lit(False))
    return _set(df, group, "diaSource.isNegative", F.lit(False))


def _bend_quality(df):
    from pyspark.sql import functions as F

    df = _set(df, 1, "diaSource.isDipole", F.lit(None).cast("boolean"))
    df = _set(df, 1, "diaSource.pixelFlags", F.lit(True))
    df = _set(df, 2, "diaSource.pixelFlags_bad", F.lit(None).cast("boolean"))
    df = _set(df, 2, "diaSource.psfFlux_flag", F.lit(None).cast("boolean"))
    df = _set(df, 3, "diaSource.psfFluxErr", F.lit(0.0).cast("float"))
    df = _set(df, 4, "diaSource.psfFluxErr", F.lit(-0.0).cast("float"))
    df = _set(df, 4, "diaSource.psfFlux", -F.abs(F.col("diaSource.psfFlux")))
    df = _set(df, 5, "diaSource.psfFlux", F.lit(float("nan")).cast("float"))
    return df


def _bend_crossmatch(df):
    from pyspark.sql import functions as F

    df = _set(df, 6, "xm.simbad_otype", _pick(SIMBAD_TYPES, "string"))
    df = _set(df, 7, "xm.vsx_Type", _pick(VSX_TYPES, "string"))
    df = _set(df, 8, "xm.mangrove_lum_dist", _pick((100.0, float("nan"), 0.0, -1.0), "float"))
    df = _set(df, 8, "xm.simbad_otype", F.lit(None).cast("string"))
    df = _set(df, 9, "xm.gaiadr3_DR3Name", _pick(("Gaia DR3 1", "Gaia DR3 2", "Unknown"), "string"))
    df = _set(df, 9, "xm.gaiadr3_Plx", _pick((1.0, 0.0, 10.0), "float"))
    df = _set(df, 9, "xm.gaiadr3_e_Plx", _pick((0.0, 0.0, 1.0), "float"))
    df = _set(df, 10, "diaSource.band", _pick((None, "x"), "string"))
    df = _set(df, 15, "xm.tns_fullname", _pick(("SN 2026xyz", None), "string"))
    df = _set(df, 16, "xm.legacydr8_zphot", _pick((0.0, float("nan"), 0.05, 2.0, 1e-7), "float"))
    df = _set(df, 16, "xm.simbad_otype", F.lit("Galaxy"))
    df = _set(df, 16, "diaObject.nDiaSources", F.lit(10))
    df = _set(df, 16, "diaObject.g_psfFluxMax", _pick((float("nan"), 2000.0), "float"))
    return _clean_quality(df, 16)


def _bend_positions(df):
    from pyspark.sql import functions as F

    positions = boundary_positions()
    df = _set(df, 11, "diaSource.ra", _pick(tuple(p[0] for p in positions), "double"))
    df = _set(df, 11, "diaSource.dec", _pick(tuple(p[1] for p in positions), "double"))
    for group in (12, 13, 16):  # high galactic latitude for the classifier and photo-z groups
        df = _set(df, group, "diaSource.ra", F.lit(30.0))
        df = _set(df, group, "diaSource.dec", F.lit(-60.0))
    return df


def _bend_classifiers(df):
    from pyspark.sql import functions as F

    below_095 = float(np.nextafter(np.float32(0.95), np.float32(0)))
    df = _set(df, 12, "clf.elephant_kstest_template", _pick((0.95, below_095), "float"))
    df = _set(df, 12, "diaSource.psfFlux", F.lit(10 ** ((31.4 - 21.0) / 2.5)).cast("float"))
    df = _set(df, 12, "diaSource.psfFluxErr", F.lit(100.0).cast("float"))
    df = _clean_quality(df, 12)
    below_09 = float(np.nextafter(np.float32(0.9), np.float32(0)))
    df = _set(df, 13, "clf.snnSnVsOthers_score", F.lit(0.7).cast("float"))
    df = _set(df, 13, "clf.cats_class", F.lit(11))
    df = _set(df, 13, "clf.cats_score", _pick((0.9, 0.9, below_09), "float"))
    df = _set(df, 13, "diaSource.snr", _pick((11.0, 10.0, 11.0), "float"))
    df = _set(df, 13, "diaObject.nDiaSources", F.lit(2))
    df = _set(df, 13, "pred.is_sso", F.lit(False))
    df = _clean_quality(df, 13)
    df = _set(df, 13, "diaSource.pixelFlags", F.lit(True))
    first = F.col("diaSource.midpointMjdTai")
    df = _set(df, 14, "misc.firstDiaSourceMjdTaiFink",
              _pick((0.0, float("nan"), 5.0, 1.0), "double") * F.lit(-1.0) + first)  # fmt: skip
    df = _set(df, 17, "diaSource.templateFlux", _pick((0.0, -5.0, 1000.0), "float"))
    df = _set(df, 17, "diaSource.psfFlux", F.lit(100.0).cast("float"))
    return df


def _bend_history(df):
    """Previous sources: same time as the alert, equal times (ties), a leading NaN time, zero
    flux errors (an infinitely significant rate)."""
    from pyspark.sql import functions as F

    now, band = F.col("diaSource.midpointMjdTai"), F.col("diaSource.band")
    prv = "prvDiaSources"
    same_time = F.transform(prv, lambda s: s.withField("band", band).withField("midpointMjdTai", now))
    ties = F.transform(prv, lambda s, i: s.withField("band", band).withField("midpointMjdTai", now - F.lit(1.0))
                       .withField("psfFlux", (i * 100 + 50).cast("float")))  # fmt: skip
    nan_first = F.transform(prv, lambda s, i: s.withField("band", band).withField(
        "midpointMjdTai", F.when(i == 0, F.lit(float("nan"))).otherwise(now - F.lit(0.5) - i.cast("double"))))
    zero_err = F.transform(prv, lambda s: s.withField("band", band).withField("psfFluxErr", F.lit(0.0).cast("float"))
                           .withField("psfFlux", F.lit(10.0).cast("float")))  # fmt: skip
    for group, value in ((18, same_time), (19, ties), (20, nan_first), (22, zero_err)):
        df = _set(df, group, prv, value)
    df = _set(df, 22, "diaSource.psfFluxErr", F.lit(0.0).cast("float"))
    for group in (18, 19, 20, 22):
        df = _set(df, group, "misc.firstDiaSourceMjdTaiFink", now - F.lit(2.0))
    return _clean_quality(df, 19)


def _bend_mdwarf(df):
    """M-dwarf-like alerts: u/g band, dec -75 (airmass > 1.4 above the horizon), red quiescent
    colours from previous r/i/z template fluxes, flux 1.2 x template; variants break one cut."""
    from pyspark.sql import functions as F

    g, now = 21, F.col("diaSource.midpointMjdTai")
    df = _set(df, g, "diaSource.band", _pick(("u", "g"), "string"))
    df = _set(df, g, "diaSource.dec", F.lit(-75.0))
    df = _set(df, g, "diaSource.templateFlux", F.lit(500.0).cast("float"))
    df = _set(df, g, "diaSource.psfFlux", F.lit(600.0).cast("float"))
    df = _set(df, g, "diaSource.psfFluxErr", F.lit(10.0).cast("float"))
    df = _set(df, g, "misc.firstDiaSourceMjdTaiFink", now - F.lit(100.0))
    variant = F.pmod(F.col("_k"), F.lit(4))
    bands = F.array(F.lit("r"), F.lit("i"), F.lit("z"))
    fluxes = F.array(F.lit(1000.0), F.lit(2000.0), F.lit(3000.0))

    def source(s, i):
        k = F.pmod(i, F.lit(3))
        flux = F.element_at(fluxes, k + 1)
        flux = F.when((variant == 1) & (k == 2), F.lit(float("nan"))).otherwise(flux)
        when = F.when((variant == 3) & (i == 0), now - F.lit(10.0 / 24.0)).otherwise(now - F.lit(10.0) - i)
        band = F.when(variant == 2, F.lit("g")).otherwise(F.element_at(bands, k + 1))
        return (s.withField("band", band).withField("templateFlux", flux.cast("float"))
                .withField("midpointMjdTai", when.cast("double")))  # fmt: skip

    df = _set(df, g, "prvDiaSources", F.transform("prvDiaSources", source))
    return _clean_quality(df, g)


def _bend_trails(df):
    """Trail-like alerts (mag 20, trail 3 arcsec) with elongated, round or noise cutouts; every
    other row gets a round PSF cutout."""
    from pyspark.sql import functions as F

    g = 23
    images = {kind: [fits_image(kind, seed) for seed in range(3)] for kind in ("trail", "round", "noise")}
    pool = [images["trail"][0], images["round"][0], images["noise"][0], images["trail"][1], images["round"][1]]
    cutout = None
    for i, image in enumerate(pool):
        cond = F.pmod(F.col("_k"), F.lit(len(pool))) == i
        cutout = F.when(cond, F.lit(image)) if cutout is None else cutout.when(cond, F.lit(image))
    df = df.withColumn("cutoutScience", F.when(F.col("_g") == g, cutout).otherwise(F.lit(images["round"][2])))
    df = _set(df, g, "diaSource.trailLength", _pick((3.0, 3.0, 3.0, 3.0, 1.5), "float"))
    df = _set(df, g, "diaSource.psfFlux", F.lit(10 ** ((31.4 - 20.0) / 2.5)).cast("float"))
    df = _set(df, g, "diaSource.psfFluxErr", F.lit(100.0).cast("float"))
    df = _set(df, g, "diaSource.trailFlux", F.lit(5000.0).cast("float"))
    return _clean_quality(df, g)
