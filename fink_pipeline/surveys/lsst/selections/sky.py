"""Positions on the sky as Spark arithmetic: galactic latitude and the airmass at Cerro Pachon.

* `galactic_latitude`: astropy's ICRS -> Galactic transformation (ICRS -> FK5 J2000 frame bias,
  then FK5 -> Galactic, `SkyCoord(ra, dec).galactic.b`) is one fixed rotation; its matrix is
  below, composed from astropy 8.0's own matrices, and the latitude is taken as astropy takes it
  (`atan2(z, hypot(x, y))`). Agreement with astropy: about 1e-14 degree.
* `airmass_cerro_pachon`: the secant of the zenith angle astropy's `AltAz` gives at
  `EarthLocation.of_site("Cerro Pachon")` (astropy-data's Gemini South entry, which is what that
  name resolves to) with no refraction (astropy's default pressure 0). Approximation: TAI -> UTC
  with 37 leap seconds (valid since 2017) and UT1 = UTC, annual aberration (low-precision Sun,
  with the orbit's eccentricity term), IAU 1976 precession, the four largest IAU 1980 nutation
  terms, Greenwich apparent sidereal time (IAU 1982 GMST + equation of the equinoxes). Left out:
  UT1 - UTC (< 0.9 s), polar motion, diurnal aberration, light deflection, frame bias (all below
  1 arcsecond but DUT1). Error against astropy with its bundled IERS tables, measured in
  fink_pipeline_tests/test_rubin_selections.py over 2025-2027: at most 6.3e-5 in airmass for
  airmass <= 3 (about 1.3 arcsecond on the sky; 7e-6 in airmass at the 1.3 cut of mdwarf_flare).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fink_pipeline.surveys.lsst.selections.columns import let

if TYPE_CHECKING:
    from pyspark.sql import Column

# ICRS -> Galactic rotation (astropy: fk5_to_gal(J2000) @ icrs_to_fk5(J2000)), rows x, y, z
ICRS_TO_GALACTIC: tuple[tuple[float, float, float], ...] = (
    (-0.05487565771259163, -0.8734370519556158, -0.4838350736167154),
    (0.4941094371927268, -0.4448297212232952, 0.7469821839866676),
    (-0.8676661375596576, -0.19807633727300053, 0.4559838136873017),
)

# astropy-data coordinates/sites.json "gemini_south" (aliases "Cerro Pachon", "Gemini South"):
# what EarthLocation.of_site("Cerro Pachon") returns (geodetic, WGS84)
CERRO_PACHON_LON_DEG = 289.2633166666667
CERRO_PACHON_LAT_DEG = -30.24074166666667
CERRO_PACHON_HEIGHT_M = 2750.0

TAI_MINUS_UTC_S = 37.0  # since 2017-01-01
TT_MINUS_TAI_S = 32.184
MJD_J2000 = 51544.5
ARCSEC = math.pi / 180.0 / 3600.0
ABERRATION_CONSTANT = 20.49552 * ARCSEC
EARTH_ECCENTRICITY = 0.016708634
EARTH_PERIHELION_DEG = 102.93735
OBLIQUITY_J2000_DEG = 23.4392911


def unit_vector(ra_deg: "Column", dec_deg: "Column") -> tuple["Column", "Column", "Column"]:
    """Cartesian unit vector of a position in degrees."""
    from pyspark.sql import functions as F

    return _unit_vector(F.radians(ra_deg), F.radians(dec_deg))


def _unit_vector(ra: "Column", dec: "Column") -> tuple["Column", "Column", "Column"]:
    from pyspark.sql import functions as F

    return F.cos(dec) * F.cos(ra), F.cos(dec) * F.sin(ra), F.sin(dec)


def galactic_latitude(ra_deg: "Column", dec_deg: "Column") -> "Column":
    """Galactic latitude in degrees of an ICRS position in degrees (astropy's `.galactic.b`)."""
    from pyspark.sql import functions as F

    v = unit_vector(ra_deg.cast("double"), dec_deg.cast("double"))
    x, y, z = (sum((F.lit(m) * c for m, c in zip(row, v)), F.lit(0.0)) for row in ICRS_TO_GALACTIC)
    return F.degrees(F.atan2(z, F.hypot(x, y)))


def _deg(value: "Column") -> "Column":
    from pyspark.sql import functions as F

    return F.radians(value)


def _aberrated(b: "Column") -> dict[str, "Column"]:
    """Annual aberration (first order, with the eccentricity term) of the position in the J2000
    frame: the shifted, not yet normalised, vector."""
    from pyspark.sql import functions as F

    days = b["days"]
    mean_lon = F.lit(280.460) + F.lit(0.9856474) * days
    anomaly = _deg(F.lit(357.528) + F.lit(0.9856003) * days)
    sun_lon = _deg(mean_lon + F.lit(1.915) * F.sin(anomaly) + F.lit(0.020) * F.sin(F.lit(2.0) * anomaly))
    perihelion = math.radians(EARTH_PERIHELION_DEG)
    k, e = ABERRATION_CONSTANT, EARTH_ECCENTRICITY
    # Earth's velocity / c in ecliptic coordinates, then rotated to the equator
    bx = F.lit(k) * (F.sin(sun_lon) - F.lit(e * math.sin(perihelion)))
    by_ecl = F.lit(k) * (F.lit(e * math.cos(perihelion)) - F.cos(sun_lon))
    eps = math.radians(OBLIQUITY_J2000_DEG)
    x, y, z = _unit_vector(b["ra"], b["dec"])
    return {"x": x + bx, "y": y + by_ecl * F.lit(math.cos(eps)), "z": z + by_ecl * F.lit(math.sin(eps)),
            "t": b["t"], "ut": b["ut"]}  # fmt: skip


def _precession_angles(b: "Column") -> dict[str, "Column"]:
    """The normalised aberrated vector and the IAU 1976 precession angles' sines and cosines."""
    from pyspark.sql import functions as F

    t = b["t"]
    zeta = (F.lit(2306.2181) * t + F.lit(0.30188) * t * t + F.lit(0.017998) * t * t * t) * F.lit(ARCSEC)
    zed = (F.lit(2306.2181) * t + F.lit(1.09468) * t * t + F.lit(0.018203) * t * t * t) * F.lit(ARCSEC)
    theta = (F.lit(2004.3109) * t - F.lit(0.42665) * t * t - F.lit(0.041833) * t * t * t) * F.lit(ARCSEC)
    norm = F.sqrt(b["x"] * b["x"] + b["y"] * b["y"] + b["z"] * b["z"])
    return {
        "x": b["x"] / norm, "y": b["y"] / norm, "z": b["z"] / norm, "t": t, "ut": b["ut"],
        # (field names are case-insensitive in Spark: no cz/cZ pair)
        "c_zeta": F.cos(zeta), "s_zeta": F.sin(zeta), "c_z": F.cos(zed), "s_z": F.sin(zed),
        "c_theta": F.cos(theta), "s_theta": F.sin(theta),
    }  # fmt: skip


def _precessed(b: "Column") -> dict[str, "Column"]:
    """Mean of date position (R3(-z) R2(theta) R3(-zeta) v) and the nutation angles."""
    cz, sz, cZ, sZ, ct, st = (b[k] for k in ("c_zeta", "s_zeta", "c_z", "s_z", "c_theta", "s_theta"))
    matrix = (
        (cz * cZ * ct - sz * sZ, -sz * cZ * ct - cz * sZ, -cZ * st),
        (cz * sZ * ct + sz * cZ, -sz * sZ * ct + cz * cZ, -sZ * st),
        (cz * st, -sz * st, ct),
    )
    x, y, z = (row[0] * b["x"] + row[1] * b["y"] + row[2] * b["z"] for row in matrix)
    dpsi, deps, eps = _nutation(b["t"])
    return {"x": x, "y": y, "z": z, "t": b["t"], "ut": b["ut"], "dpsi": dpsi, "deps": deps, "eps": eps}


def _nutation(t: "Column"):
    """(nutation in longitude, in obliquity, mean obliquity of date), radians."""
    from pyspark.sql import functions as F

    node = _deg(F.lit(125.04452) - F.lit(1934.136261) * t)
    sun = _deg(F.lit(280.4665) + F.lit(36000.7698) * t)
    moon = _deg(F.lit(218.3165) + F.lit(481267.8813) * t)

    def series(fn, a, b, c, d):
        return (F.lit(a) * fn(node) + F.lit(b) * fn(F.lit(2.0) * sun) + F.lit(c) * fn(F.lit(2.0) * moon)
                + F.lit(d) * fn(F.lit(2.0) * node)) * F.lit(ARCSEC)  # fmt: skip

    dpsi = series(F.sin, -17.20, -1.32, -0.23, 0.21)
    deps = series(F.cos, 9.20, 0.57, 0.10, -0.09)
    eps0 = _deg(F.lit(OBLIQUITY_J2000_DEG) - F.lit(0.013004167) * t)
    return dpsi, deps, eps0


def _sin_altitude(b: "Column") -> "Column":
    """Nutation (mean -> true equator and equinox, first order) then the altitude's sine."""
    from pyspark.sql import functions as F

    x, y, z, dpsi, deps = b["x"], b["y"], b["z"], b["dpsi"], b["deps"]
    ce, se = F.cos(b["eps"]), F.sin(b["eps"])
    xt = x - dpsi * (y * ce + z * se)
    yt = y + dpsi * x * ce - deps * z
    zt = z + dpsi * x * se + deps * y
    t = b["t"]
    gmst = (F.lit(280.46061837) + F.lit(360.98564736629) * b["ut"] + F.lit(0.000387933) * t * t
            - t * t * t / F.lit(38710000.0))  # fmt: skip
    # local apparent sidereal time (radians), reduced first to keep the trigonometry accurate
    last = _deg(F.pmod(gmst + F.lit(CERRO_PACHON_LON_DEG), F.lit(360.0))) + dpsi * ce
    lat = math.radians(CERRO_PACHON_LAT_DEG)
    # sin(alt) = sin(lat) sin(dec) + cos(lat) cos(dec) cos(LST - ra), with the vector's components
    return F.lit(math.sin(lat)) * zt + F.lit(math.cos(lat)) * (xt * F.cos(last) + yt * F.sin(last))


def airmass_cerro_pachon(ra_deg: "Column", dec_deg: "Column", mjd_tai: "Column") -> "Column":
    """sec(zenith angle) at Cerro Pachon of an ICRS position at an MJD in TAI (negative below
    the horizon, as astropy's `secz`); see the module docstring for the approximation. Each
    stage's values are bound once (`let`), which keeps the generated code small."""
    from pyspark.sql import functions as F

    mjd = mjd_tai.cast("double")
    days_tt = mjd + F.lit(TT_MINUS_TAI_S / 86400.0) - F.lit(MJD_J2000)
    inputs = {
        "ra": F.radians(ra_deg.cast("double")),
        "dec": F.radians(dec_deg.cast("double")),
        "days": days_tt,
        "t": days_tt / F.lit(36525.0),
        "ut": mjd - F.lit(TAI_MINUS_UTC_S / 86400.0) - F.lit(MJD_J2000),
    }
    def secant(d: "Column") -> "Column":
        return let({"s": _sin_altitude(d)}, lambda e: F.lit(1.0) / F.when(e["s"] != 0, e["s"]))

    return let(inputs, lambda a: let(_aberrated(a), lambda b: let(
        _precession_angles(b), lambda c: let(_precessed(c), secant))))  # fmt: skip
