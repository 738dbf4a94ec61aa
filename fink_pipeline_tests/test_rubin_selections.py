"""Rubin live-stream filters and blocks as Spark expressions (fink_pipeline/surveys/lsst/selections).

Hand-made alerts at the edges of Fink's rules: nulls and NaNs (pandas semantics), a missing or
unknown band, galactic latitudes just inside and outside the cuts, RA 0 and 360, float32
thresholds, zero errors, previous sources at the same time, the quirks each module's docstring
lists. Equality with Fink's own code on real and generated alerts is the opt-in compat test
(test_compat_fink_filters.py); here, each rule's expected answer is worked out by hand.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.lsst.selections import (
    RUBIN_BLOCKS,
    RUBIN_FILTERS,
    resolve_rubin_block,
    resolve_rubin_filter,
)

LSST = get_survey("lsst")
ALL = {**RUBIN_FILTERS, **RUBIN_BLOCKS}

# fink-filters 7.45: fink_filters/rubin/livestream/filter_* and the b_* of fink_filters/rubin/blocks.py
FINK_FILTERS = (
    "extragalactic_lt20mag_candidate", "extragalactic_new_candidate", "extragalactic_svom", "faint_trails",
    "fast_transient_gvom", "hostless_candidate", "in_simbad", "in_tns", "is_solar_system", "mdwarf_flare",
    "most_likely_sn", "remove_unlikely_transients", "sn_near_galaxy_candidate", "uniform_sample",
)  # fmt: skip
FINK_BLOCKS = (
    "b_is_solar_system", "b_outside_galactic_plane_20_deg", "b_outside_galactic_plane_5_deg",
    "b_xmatched_simbad_galaxy", "b_xmatched_simbad_unknown", "b_xmatched_mangrove", "b_xmatched_gaia_star",
    "b_xmatched_vsx_star", "b_xmatched_vsx", "b_is_rising", "b_is_fading", "b_is_new", "b_good_quality",
    "b_extragalactic_near_galaxy_candidate", "b_extragalactic_loose_candidate", "b_mag_rate_mc_sampling",
)  # fmt: skip

# FlatLambdaCDM(H0=70, Om0=0.3).luminosity_distance(z) in Mpc, astropy 8.0.2 (+ scipy 1.17.1)
ASTROPY_LUMINOSITY_DISTANCE = (
    (1e-06, 0.004282752720826643), (0.001, 4.286067358418558), (0.01, 43.158235071933476),
    (0.05, 222.28905465961708), (0.1, 460.2999363904721), (0.2, 980.067886865555),
    (0.3479999899864197, 1844.562417167055), (0.5, 2832.9380939001253), (0.75, 4635.387104266818),
    (1.0, 6607.6576117749355), (1.5, 10909.639415584015), (2.0, 15539.58622322812),
    (3.0, 25422.741745189862), (5.0, 46652.22297277719), (7.5, 74734.90349426192),
    (10.0, 103842.74589040258), (30.0, 351728.77541861584), (100.0, 1272472.1177041333),
    (1000.0, 13674189.826212961),
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_every_fink_rubin_filter_and_block_is_registered():
    assert sorted(RUBIN_FILTERS) == sorted(FINK_FILTERS)
    assert sorted(RUBIN_BLOCKS) == sorted(FINK_BLOCKS)
    for tag, selection in RUBIN_FILTERS.items():
        assert selection.fink_module == f"fink_filters.rubin.livestream.filter_{tag}.filter.{tag}"
    for name, selection in RUBIN_BLOCKS.items():
        assert selection.fink_module == f"fink_filters.rubin.blocks.{name}"
    for selection in ALL.values():
        assert selection.description and "\n" not in selection.description


def _archive_has(dotted: str) -> bool:
    dtype: pa.DataType = pa.struct(list(LSST.archive_schema))
    for part in dotted.split("."):
        while pa.types.is_list(dtype):
            dtype = dtype.value_type
        if not pa.types.is_struct(dtype) or dtype.get_field_index(part) < 0:
            return False
        dtype = dtype.field(part).type
    return True


def test_columns_read_are_archive_fields():
    for name, selection in ALL.items():
        assert selection.columns_read, name
        assert [c for c in selection.columns_read if not _archive_has(c)] == [], name


def test_the_lsst_survey_offers_them():
    assert LSST.livestream_filters == RUBIN_FILTERS
    assert LSST.blocks == RUBIN_BLOCKS
    assert LSST.resolve_livestream_filter is resolve_rubin_filter


@pytest.mark.parametrize("query", [
    "in_tns", "filter_in_tns", " in_tns ", "fink_filters.rubin.livestream.filter_in_tns.filter.in_tns",
    "fink_filters.rubin.livestream.filter_in_tns.filter",
])  # fmt: skip
def test_resolve_accepts_short_names_and_module_paths(query):
    assert resolve_rubin_filter(query) is RUBIN_FILTERS["in_tns"]


def test_resolve_blocks():
    assert resolve_rubin_block("b_is_new") is RUBIN_BLOCKS["b_is_new"]
    assert resolve_rubin_block("is_new") is RUBIN_BLOCKS["b_is_new"]
    assert resolve_rubin_block("fink_filters.rubin.blocks.b_good_quality") is RUBIN_BLOCKS["b_good_quality"]


def test_resolve_errors_suggest_a_close_name():
    with pytest.raises(ValueError, match=r"unknown Rubin filter 'in_tsn': did you mean in_tns"):
        resolve_rubin_filter("in_tsn")
    with pytest.raises(ValueError, match=r"did you mean mdwarf_flare"):
        resolve_rubin_filter("fink_filters.rubin.livestream.filter_mdwarf_flares.filter.mdwarf_flares")
    with pytest.raises(ValueError, match=r"valid names: extragalactic_lt20mag_candidate"):
        resolve_rubin_filter("zzz")
    with pytest.raises(ValueError, match="empty filter name"):
        resolve_rubin_filter("  ")
    with pytest.raises(ValueError, match=r"unknown Rubin block 'b_god_quality': did you mean b_good_quality"):
        resolve_rubin_block("b_god_quality")


def test_a_block_is_not_a_filter_and_back():
    with pytest.raises(ValueError, match="'b_is_new' is a Rubin block, not a filter: list it under blocks"):
        resolve_rubin_filter("b_is_new")
    with pytest.raises(ValueError, match="'fink_filters.rubin.blocks.b_is_rising' is a Rubin block"):
        resolve_rubin_filter("fink_filters.rubin.blocks.b_is_rising")
    with pytest.raises(ValueError, match="'in_tns' is a Rubin filter, not a block: list it under filters"):
        resolve_rubin_block("in_tns")


# --------------------------------------------------------------------------------------------
# Hand-made alerts
# --------------------------------------------------------------------------------------------

NIGHT = dt.date(2026, 6, 2)
MJD = 61193.25  # 2026-06-02 06:00 TAI (exact in binary: hour differences stay exact)


def _blank(dtype: pa.DataType):
    """A value of `dtype` with every leaf null (structs as dicts, lists empty)."""
    if pa.types.is_struct(dtype):
        return {f.name: _blank(f.type) for f in dtype}
    return [] if pa.types.is_list(dtype) else None


@pytest.fixture(scope="module")
def template() -> dict:
    """A plain static alert: band r, flux 1000 +- 10 nJy (mag 23.9), good quality, at (30, -60)
    (galactic latitude -54), first seen 10 days ago, 3 sources, no cross-match, no history."""
    row = {f.name: _blank(f.type) for f in LSST.archive_schema}
    source = row["diaSource"]
    for flag in ("isDipole", "pixelFlags", "pixelFlags_bad", "pixelFlags_saturated", "pixelFlags_streakCenter",
                 "pixelFlags_interpolated", "pixelFlags_cr", "pixelFlags_nodata", "pixelFlags_streak",
                 "pixelFlags_edge", "psfFlux_flag", "apFlux_flag", "forced_PsfFlux_flag", "forced_PsfFlux_flag_edge",
                 "shape_flag", "centroid_flag", "isNegative"):  # fmt: skip
        source[flag] = False
    source.update(psfFlux=1000.0, psfFluxErr=10.0, snr=100.0, ra=30.0, dec=-60.0, midpointMjdTai=MJD, band="r",
                  templateFlux=500.0, trailLength=0.5, trailFlux=0.0)  # fmt: skip
    row["diaObject"].update(nDiaSources=3)
    row["pred"]["is_sso"] = False
    row["misc"]["firstDiaSourceMjdTaiFink"] = MJD - 10.0
    row["clf"].update(elephant_kstest_template=0.5)
    return row


def alert(template: dict, i: int, prv: list[dict] | None = None, **fields) -> dict:
    """A copy of `template` with diaSourceId `i`, fields given as section__field=value (or
    section=None), and previous sources (partial dicts over the alert's own diaSource)."""
    import copy

    row = copy.deepcopy(template)
    row["diaSourceId"] = i
    for key, value in fields.items():
        section, _, name = key.partition("__")
        if name:
            row[section][name] = value
        else:
            row[section] = value
    if prv is not None:
        row["prvDiaSources"] = [{**template["diaSource"], **p} for p in prv]
    return row


_FILES = itertools.count()  # a new file name per query: Spark caches file listings by path


def evaluate(spark, tmp_path, rows: list[dict], *names: str) -> dict[str, list[bool]]:
    """Each named selection's column on `rows` (in order), asserted null-free."""
    path = tmp_path / f"rows_{next(_FILES)}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=LSST.archive_schema), path)
    df = spark.read.parquet(str(path))
    cols = [ALL[n].column().alias(n) for n in names]
    out = df.select("diaSourceId", *cols).orderBy("diaSourceId").toPandas()
    order = sorted(r["diaSourceId"] for r in rows)
    assert out["diaSourceId"].tolist() == order
    result = {}
    for n in names:
        assert out[n].notna().all(), n
        result[n] = [bool(v) for v in out[n]]
    return result


def pick(rows: list[dict], result: list[bool]) -> list[int]:
    """diaSourceIds selected, in row order."""
    ids = sorted(r["diaSourceId"] for r in rows)
    return [i for i, keep in zip(ids, result) if keep]


@pytest.mark.spark
def test_every_name_gives_a_null_free_boolean_on_null_rows(spark, tmp_path, template):
    empty = {k: None for k in template}
    rows = [alert(template, 1), {**empty, "diaSourceId": 2}, alert(template, 3, diaObject=None, xm=None, pred=None),
            alert(template, 4, prv=[{"band": None, "psfFlux": float("nan")}], diaSource__band=None)]
    result = evaluate(spark, tmp_path, rows, *sorted(ALL))
    assert set(result) == set(ALL)
    # an all-null alert is selected by nothing but the rules Fink fills with True for null inputs
    assert sorted(n for n in ALL if result[n][1]) == ["b_good_quality", "b_xmatched_simbad_unknown"]


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------

F32_BELOW_6 = float(np.nextafter(np.float32(60.0), np.float32(0)))  # psfFlux / 10 just under 6 in float32


@pytest.mark.spark
def test_good_quality_keeps_pandas_null_and_float32_rules(spark, tmp_path, template):
    nan = float("nan")
    cases = [
        ({}, True),
        ({"diaSource__isDipole": None, "diaSource__pixelFlags": True}, True),  # null first operand drops the second
        ({"diaSource__pixelFlags": True}, False),
        ({"diaSource__isDipole": True}, False),
        ({"diaSource__pixelFlags_bad": None}, True),  # any other null flag counts as False
        ({"diaSource__centroid_flag": None}, True),
        ({"diaSource__psfFluxErr": 0.0}, True),  # 1000 / 0 = inf, not < 6
        ({"diaSource__psfFlux": -1.0, "diaSource__psfFluxErr": 0.0}, False),
        ({"diaSource__psfFlux": nan}, True),  # NaN < 0 and NaN / err < 6 are both False
        ({"diaSource__psfFluxErr": nan}, True),
        ({"diaSource__psfFlux": 60.0}, True),  # exactly 6
        ({"diaSource__psfFlux": F32_BELOW_6}, False),  # 5.9999995 in float32
    ]
    rows = [alert(template, i, **fields) for i, (fields, _) in enumerate(cases)]
    result = evaluate(spark, tmp_path, rows, "b_good_quality")["b_good_quality"]
    assert result == [keep for _, keep in cases]


def _galactic_positions():
    from fink_pipeline_tests.rubin_edge_night import icrs_of_galactic

    out = []
    for edge in (5.0, 20.0):
        for sign in (1, -1):
            for delta, outside in ((1e-7, True), (-1e-7, False)):
                ra, dec = icrs_of_galactic(123.0, sign * (edge + delta))
                out.append((ra, dec, edge, outside))
    return out


@pytest.mark.spark
def test_galactic_plane_blocks_at_the_boundary_and_at_ra_0_and_360(spark, tmp_path, template):
    positions = _galactic_positions()
    rows = [alert(template, i, diaSource__ra=ra, diaSource__dec=dec) for i, (ra, dec, _, _) in enumerate(positions)]
    extra = [(0.0, -40.0), (360.0, -40.0), (359.9999999999, -40.0), (0.0, -90.0), (None, -40.0), (float("nan"), -40.0)]
    base = len(rows)
    rows += [alert(template, base + i, diaSource__ra=ra, diaSource__dec=dec) for i, (ra, dec) in enumerate(extra)]
    result = evaluate(spark, tmp_path, rows, "b_outside_galactic_plane_20_deg", "b_outside_galactic_plane_5_deg")
    for i, (_, _, edge, outside) in enumerate(positions):
        name = "b_outside_galactic_plane_20_deg" if edge == 20.0 else "b_outside_galactic_plane_5_deg"
        assert result[name][i] == outside, (i, edge, outside)
    # (0, -40) lies at b = -74.4: RA 0, 360 and just under 360 agree; the pole is outside; no position is not
    assert result["b_outside_galactic_plane_20_deg"][base:] == [True, True, True, True, False, False]


@pytest.mark.spark
def test_galactic_latitude_equals_astropys(spark):
    from astropy.coordinates import SkyCoord
    from pyspark.sql import functions as F

    from fink_pipeline.surveys.lsst.selections.sky import galactic_latitude

    rng = np.random.default_rng(3)
    ra = np.concatenate([rng.uniform(0, 360, 2000), [0.0, 360.0, 266.405, 192.859]])
    dec = np.concatenate([np.degrees(np.arcsin(rng.uniform(-1, 1, 2000))), [-90.0, 90.0, -28.936, 27.128]])
    expected = SkyCoord(ra, dec, unit="deg").galactic.b.deg
    df = spark.createDataFrame([(float(a), float(d)) for a, d in zip(ra, dec)], "ra double, dec double")
    got = np.array([r[0] for r in df.select(galactic_latitude(F.col("ra"), F.col("dec"))).collect()])
    assert np.max(np.abs(got - expected)) < 1e-9


@pytest.mark.spark
def test_luminosity_distance_equals_astropys_to_1e_9(spark):
    from pyspark.sql import functions as F

    from fink_pipeline.surveys.lsst.selections.cosmology import luminosity_distance_mpc

    df = spark.createDataFrame([(z, d) for z, d in ASTROPY_LUMINOSITY_DISTANCE], "z double, d double")
    rows = df.select("z", "d", luminosity_distance_mpc(F.col("z")).alias("ours")).collect()
    errors = {r["z"]: abs(r["ours"] / r["d"] - 1) for r in rows}
    assert max(errors.values()) < 1e-9  # 4e-10 at z = 1e-6 (the table's own rounding)
    assert max(e for z, e in errors.items() if z >= 0.01) < 1e-12


def _offline_astropy():
    from astropy.utils import iers

    iers.conf.auto_download = False
    iers.conf.auto_max_age = None
    iers.conf.iers_degraded_accuracy = "warn"


@pytest.mark.spark
def test_airmass_at_cerro_pachon_is_astropys_to_1e_4(spark):
    """The airmass mdwarf_flare cuts at 1.3, against astropy's AltAz with its bundled IERS
    tables, 2025-2027: measured max |error| 6.3e-5 at airmass <= 3 (about 1.3 arcsec)."""
    import warnings

    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time
    from pyspark.sql import functions as F

    from fink_pipeline.surveys.lsst.selections import sky

    _offline_astropy()
    rng = np.random.default_rng(7)
    n = 4000
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 0.6, n)))
    mjd = rng.uniform(60676.0, 61406.0, n)
    site = EarthLocation.from_geodetic(sky.CERRO_PACHON_LON_DEG, sky.CERRO_PACHON_LAT_DEG, sky.CERRO_PACHON_HEIGHT_M)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        coords = SkyCoord(ra=ra, dec=dec, unit="deg", obstime=Time(mjd, format="mjd", scale="tai"), location=site)
        expected = coords.transform_to("altaz").secz.value
    df = spark.createDataFrame([(float(a), float(d), float(t)) for a, d, t in zip(ra, dec, mjd)],
                               "ra double, dec double, mjd double")  # fmt: skip
    airmass = sky.airmass_cerro_pachon(F.col("ra"), F.col("dec"), F.col("mjd"))
    got = np.array([r[0] for r in df.select(airmass).collect()])
    up = (expected >= 1) & (expected <= 3)
    error = np.max(np.abs(got[up] - expected[up]))
    print(f"\nairmass error vs astropy (airmass 1..3, {up.sum()} positions): max {error:.2e}")
    assert up.sum() > 1000 and error < 1e-4
    assert np.all(np.sign(got) == np.sign(expected))  # below the horizon stays negative
    decided = np.abs(expected - 1.3) > 1e-4
    assert np.all((got[decided] > 1.3) == (expected[decided] > 1.3))


@pytest.mark.spark
def test_simbad_vsx_mangrove_blocks(spark, tmp_path, template):
    otypes = [None, "Unknown", "Fail", "Fail 504", "Galaxy", "SN", "Star", "EB*"]
    rows = [alert(template, i, xm={**template["xm"], "simbad_otype": t}) for i, t in enumerate(otypes)]
    r = evaluate(spark, tmp_path, rows, "b_xmatched_simbad_galaxy", "b_xmatched_simbad_unknown", "in_simbad")
    # fink-utils' host list holds Unknown, Fail, Fail 504 and SN: "xmatched to a galaxy"
    assert r["b_xmatched_simbad_galaxy"] == [False, True, True, True, True, True, False, False]
    assert r["b_xmatched_simbad_unknown"] == [True, True, True, True, False, False, False, False]
    assert r["in_simbad"] == [False, False, False, False, True, True, True, True]

    vsx = [None, "EW", "QSO", "Transient"]
    rows = [alert(template, i, xm={**template["xm"], "vsx_Type": t}) for i, t in enumerate(vsx)]
    r = evaluate(spark, tmp_path, rows, "b_xmatched_vsx_star", "b_xmatched_vsx")
    assert r["b_xmatched_vsx_star"] == [False, True, False, True]  # VSX "Transient" is in the stellar list
    assert r["b_xmatched_vsx"] == [False, True, True, True]

    distances = [None, float("nan"), 0.0, 1.5]
    rows = [alert(template, i, xm={**template["xm"], "mangrove_lum_dist": d}) for i, d in enumerate(distances)]
    assert evaluate(spark, tmp_path, rows, "b_xmatched_mangrove")["b_xmatched_mangrove"] == [False, False, False, True]


@pytest.mark.spark
def test_gaia_star_block_divides_in_float32_with_ieee_results(spark, tmp_path, template):
    above_5 = float(np.nextafter(np.float32(5.0), np.float32(6)))
    cases = [
        (("Gaia DR3 1", 6.0, 1.0), True), (("Gaia DR3 1", 5.0, 1.0), False), (("Gaia DR3 1", above_5, 1.0), True),
        (("Gaia DR3 1", 1.0, 0.0), True),  # +inf
        (("Gaia DR3 1", -1.0, 0.0), False), (("Gaia DR3 1", 0.0, 0.0), False),  # -inf, NaN
        (("Unknown", 10.0, 1.0), False), ((None, 10.0, 1.0), False), (("Gaia DR3 1", None, 1.0), False),
    ]  # fmt: skip
    rows = [alert(template, i, xm={**template["xm"], "gaiadr3_DR3Name": n, "gaiadr3_Plx": p, "gaiadr3_e_Plx": e})
            for i, ((n, p, e), _) in enumerate(cases)]  # fmt: skip
    assert evaluate(spark, tmp_path, rows, "b_xmatched_gaia_star")["b_xmatched_gaia_star"] == [k for _, k in cases]


def _object(template, **values):
    return {**template["diaObject"], **values}


@pytest.mark.spark
def test_rising_and_fading_read_the_alerts_band(spark, tmp_path, template):
    cases = [
        ({"diaObject": _object(template, r_psfFluxMean=900.0, r_psfFluxMeanErr=50.0)}, (True, False)),
        ({"diaObject": _object(template, r_psfFluxMean=1100.0, r_psfFluxMeanErr=50.0)}, (False, True)),
        ({"diaObject": _object(template, r_psfFluxMean=990.0, r_psfFluxMeanErr=10.0)}, (False, False)),  # |d| = err
        ({"diaObject": _object(template, r_psfFluxMean=900.0, r_psfFluxMeanErr=50.0), "diaSource__band": None},
         (False, False)),
        ({"diaObject": _object(template, r_psfFluxMean=900.0, r_psfFluxMeanErr=50.0), "diaSource__band": "x"},
         (False, False)),
        ({"diaObject": _object(template, r_psfFluxMean=None, r_psfFluxMeanErr=50.0)}, (False, False)),
        ({"diaObject": None}, (False, False)),  # solar-system alerts have no diaObject
        ({"diaObject": _object(template, u_psfFluxMean=500.0, u_psfFluxMeanErr=1.0, r_psfFluxMean=2000.0),
          "diaSource__band": "u"}, (True, False)),
    ]  # fmt: skip
    rows = [alert(template, i, **fields) for i, (fields, _) in enumerate(cases)]
    r = evaluate(spark, tmp_path, rows, "b_is_rising", "b_is_fading")
    assert list(zip(r["b_is_rising"], r["b_is_fading"])) == [expected for _, expected in cases]


@pytest.mark.spark
def test_is_new_and_solar_system(spark, tmp_path, template):
    firsts = [MJD, float("nan"), None, MJD - 1e-9]
    rows = [alert(template, i, misc={"firstDiaSourceMjdTaiFink": f}) for i, f in enumerate(firsts)]
    assert evaluate(spark, tmp_path, rows, "b_is_new")["b_is_new"] == [True, False, False, False]
    rows = [alert(template, i, pred={**template["pred"], "is_sso": v}) for i, v in enumerate([True, False, None])]
    r = evaluate(spark, tmp_path, rows, "b_is_solar_system", "is_solar_system")
    assert r["b_is_solar_system"] == r["is_solar_system"] == [True, False, False]


@pytest.mark.spark
def test_mag_rate_block_is_the_deterministic_limit_of_finks_monte_carlo(spark, tmp_path, template):
    """Alert: band r, flux 1000 +- 10; threshold 0.3 ln(10) / 2.5 * 1000 = 276.3 nJy/day."""
    cases = [
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 500.0}], True),  # 500 nJy/day, SNR 35
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 800.0}], False),  # 200 nJy/day: too slow
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 500.0, "band": "g"}], False),  # no same-band source
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 500.0}, {"midpointMjdTai": MJD - 2, "psfFlux": 990.0}], False),
        ([{"midpointMjdTai": MJD, "psfFlux": 500.0}], False),  # dt = 0: inf / inf
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 500.0, "psfFluxErr": 300.0}], False),  # SNR 1.7
        ([], False),
        (None, False),
    ]
    rows = [alert(template, i, prv=prv) for i, (prv, _) in enumerate(cases)]
    rows[-1]["prvDiaSources"] = None
    rows.append(alert(template, len(rows), prv=[{"midpointMjdTai": MJD - 1, "psfFlux": -600.0}],
                      diaSource__psfFlux=-100.0))  # negative flux: NaN threshold  # fmt: skip
    rows.append(alert(template, len(rows), prv=[{"midpointMjdTai": MJD - 1, "psfFlux": 500.0, "band": None}],
                      diaSource__band=None))  # Python None == None: the null bands match  # fmt: skip
    expected = [keep for _, keep in cases] + [False, True]
    assert evaluate(spark, tmp_path, rows, "b_mag_rate_mc_sampling")["b_mag_rate_mc_sampling"] == expected


# --------------------------------------------------------------------------------------------
# Light-curve helpers
# --------------------------------------------------------------------------------------------


def _history_values(spark, tmp_path, template, histories, column_fn) -> list:
    from fink_pipeline.surveys.lsst.selections import lightcurve

    rows = [alert(template, i, prv=prv) for i, prv in enumerate(histories)]
    path = tmp_path / f"history_{next(_FILES)}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=LSST.archive_schema), path)
    df = spark.read.parquet(str(path)).orderBy("diaSourceId")
    return [r[0] for r in df.select(column_fn(lightcurve)).collect()]


@pytest.mark.spark
def test_latest_same_band_source_is_pythons_max(spark, tmp_path, template):
    nan = float("nan")
    histories = [
        [{"midpointMjdTai": MJD - 1, "psfFlux": 100.0}, {"midpointMjdTai": MJD - 1, "psfFlux": 200.0}],  # tie: first
        [{"midpointMjdTai": nan, "psfFlux": 100.0}, {"midpointMjdTai": MJD - 1, "psfFlux": 200.0}],  # NaN stays
        [{"midpointMjdTai": MJD - 2, "psfFlux": 100.0}, {"midpointMjdTai": nan, "psfFlux": 200.0},
         {"midpointMjdTai": MJD - 1, "psfFlux": 300.0}],
        [{"midpointMjdTai": MJD - 1, "psfFlux": 100.0, "band": "g"}],
        [],
    ]  # fmt: skip
    got = _history_values(spark, tmp_path, template, histories, lambda lc: lc.latest_same_band_source()["psfFlux"])
    assert got == [100.0, 100.0, 300.0, None, None]


@pytest.mark.spark
def test_median_template_magnitude_and_availability(spark, tmp_path, template):
    r = [{"band": "r", "templateFlux": f} for f in (100.0, 300.0, 200.0)]
    histories = [
        r,
        r + [{"band": "r", "templateFlux": 400.0}],  # even: (200 + 300) / 2
        r + [{"band": "r", "templateFlux": None}],  # nulls skipped
        r + [{"band": "r", "templateFlux": float("nan")}],  # NaN median
        [{"band": "r", "templateFlux": -5.0}],  # not positive: no magnitude
        [{"band": "g", "templateFlux": 100.0}],  # no r source: not available
    ]
    mags = _history_values(spark, tmp_path, template, histories, lambda lc: lc.median_template_mag("r"))
    available = _history_values(spark, tmp_path, template, histories, lambda lc: lc.has_template_flux("r"))
    expected = [31.4 - 2.5 * math.log10(200.0), 31.4 - 2.5 * math.log10(250.0), 31.4 - 2.5 * math.log10(200.0)]
    assert mags[:3] == pytest.approx(expected, rel=1e-15)
    assert mags[3:] == [None, None, None]
    assert available == [True, True, True, True, True, False]


@pytest.mark.spark
def test_isolated_in_time_between_4_and_48_hours_inclusive(spark, tmp_path, template):
    offsets = [0.25, 2.0, 2.25, 0.125, float("nan")]  # days before the alert: 6 h, 48 h, 54 h, 3 h, NaN
    histories = [[{"midpointMjdTai": MJD - d}] for d in offsets] + [[]]
    got = _history_values(spark, tmp_path, template, histories, lambda lc: lc.isolated_in_time())
    assert got == [False, False, True, True, True, True]


# --------------------------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------------------------


@pytest.mark.spark
def test_most_likely_sn_and_remove_unlikely_transients_keep_bad_quality_alerts(spark, tmp_path, template):
    """Both AND `~f_good_quality` (Fink's code, whatever its comments say)."""
    below_07 = float(np.nextafter(np.float32(0.7), np.float32(0)))
    scores = {"snnSnVsOthers_score": 0.7, "cats_class": 11, "cats_score": 0.9}  # float32 thresholds met exactly
    flagged = {"diaSource__pixelFlags": True}
    cases = [
        ({}, (False, False)),  # good quality: not kept
        (flagged, (True, True)),
        ({"diaSource__isNegative": True}, (True, True)),
        ({**flagged, "diaSource__snr": 10.0}, (False, False)),
        ({**flagged, "pred": {"is_sso": True}}, (False, False)),
        ({**flagged, "diaObject": _object(template, nDiaSources=1)}, (False, False)),
        ({**flagged, "clf": {**scores, "snnSnVsOthers_score": below_07}}, (False, True)),
        ({**flagged, "clf": {**scores, "cats_class": 10}}, (False, True)),
        ({**flagged, "diaSource__isNegative": None}, (False, False)),  # Fink's batch fails on ~None
        ({**flagged, "pred": {"is_sso": None}}, (False, False)),
    ]
    rows = []
    for i, (fields, _) in enumerate(cases):
        fields = {"clf": scores, **fields}
        rows.append(alert(template, i, **fields))
    r = evaluate(spark, tmp_path, rows, "most_likely_sn", "remove_unlikely_transients")
    assert list(zip(r["most_likely_sn"], r["remove_unlikely_transients"])) == [e for _, e in cases]


BRIGHT_21 = 10 ** ((31.4 - 21.0) / 2.5)  # nJy of magnitude 21


@pytest.mark.spark
def test_hostless_candidate_float32_ks_threshold(spark, tmp_path, template):
    below = float(np.nextafter(np.float32(0.95), np.float32(0)))
    values = [-99.0, 0.95, below, float("nan")]  # Fink's placeholder -99 passes
    rows = [alert(template, i, clf={"elephant_kstest_template": v}, diaSource__psfFlux=BRIGHT_21)
            for i, v in enumerate(values)]  # fmt: skip
    rows.append(alert(template, 9, clf={"elephant_kstest_template": 0.5}))  # mag 23.9 > 21.5
    assert evaluate(spark, tmp_path, rows, "hostless_candidate")["hostless_candidate"] == [True, False, True, False,
                                                                                          False]  # fmt: skip


@pytest.mark.spark
def test_uniform_sample_and_in_tns(spark, tmp_path, template):
    ids = [113 * 7, 113 * 10**15, 113 * 10**15 + 1, 170094456272322680]  # the last: 102 mod 113
    rows = [alert(template, i) for i in ids]
    assert evaluate(spark, tmp_path, rows, "uniform_sample")["uniform_sample"] == [True, True, False, False]
    names = [None, "", "SN 2026abc"]
    rows = [alert(template, i, xm={**template["xm"], "tns_fullname": n}) for i, n in enumerate(names)]
    assert evaluate(spark, tmp_path, rows, "in_tns")["in_tns"] == [False, True, True]


@pytest.mark.spark
def test_faint_trails_measures_only_cutouts_past_the_cheap_cuts(spark, tmp_path, template):
    from fink_pipeline_tests.rubin_edge_night import fits_image

    trail, round_, noise = fits_image("trail", 0), fits_image("round", 0), fits_image("noise", 0)
    trailing = {"diaSource__trailLength": 3.0, "diaSource__trailFlux": 5000.0, "diaSource__psfFlux": 36307.8,
                "diaSource__psfFluxErr": 100.0}  # mag 20, a 3 arcsec trail  # fmt: skip
    cases = [
        ({**trailing, "cutoutScience": trail}, True),
        ({**trailing, "cutoutScience": round_}, False),
        ({**trailing, "cutoutScience": noise}, False),  # too few significant pixels
        ({**trailing, "cutoutScience": b"not a FITS file"}, False),  # Fink's job would fail here
        ({**trailing, "cutoutScience": None}, False),
        ({**trailing, "cutoutScience": trail, "diaSource__trailLength": 2.0}, False),
        ({**trailing, "cutoutScience": trail, "diaSource__psfFlux": 10 ** ((31.4 - 17.0) / 2.5)}, False),  # mag 17
        ({**trailing, "cutoutScience": trail, "diaSource__pixelFlags_cr": True}, False),
        ({**trailing, "cutoutScience": trail, "diaSource__trailFlux": 0.0}, False),
    ]
    rows = [alert(template, i, **fields) for i, (fields, _) in enumerate(cases)]
    assert evaluate(spark, tmp_path, rows, "faint_trails")["faint_trails"] == [keep for _, keep in cases]


def test_elongation_udf_decodes_only_the_cutouts_it_is_given(monkeypatch):
    import pandas as pd

    from fink_pipeline.surveys.lsst.selections import cutouts
    from fink_pipeline_tests.rubin_edge_night import fits_image

    decoded = []
    measure = cutouts.cutout_is_elongated
    monkeypatch.setattr(cutouts, "cutout_is_elongated", lambda c: decoded.append(c) or measure(c))
    trail = fits_image("trail", 1)
    out = cutouts.elongated_batch(pd.Series([None, trail, None, b"garbage", None]))
    assert out.tolist() == [False, True, False, False, False]
    assert decoded == [trail, b"garbage"]
    assert cutouts.elongation_from_image(None) != cutouts.elongation_from_image(None)  # NaN, as Fink's


def _galaxy(template, **xm):
    return {**template["xm"], "simbad_otype": "Galaxy", **xm}


@pytest.mark.spark
def test_sn_near_galaxy_candidate_absolute_magnitude_window(spark, tmp_path, template):
    """Peak flux 1e5 nJy (mag 18.9): M = -17.8 at z = 0.05, -27.1 at z = 2."""
    peak = _object(template, nDiaSources=6, r_psfFluxMax=1e5, g_psfFluxMax=float("nan"))
    cases = [
        ({"xm": _galaxy(template, legacydr8_zphot=0.05), "diaObject": peak}, True),
        ({"xm": _galaxy(template, legacydr8_zphot=2.0), "diaObject": peak}, False),
        ({"xm": _galaxy(template, legacydr8_zphot=0.0), "diaObject": peak}, False),
        ({"xm": _galaxy(template, legacydr8_zphot=float("nan")), "diaObject": peak}, False),
        ({"xm": _galaxy(template, legacydr8_zphot=0.05), "diaObject": _object(template, nDiaSources=6)}, False),
        ({"xm": _galaxy(template, legacydr8_zphot=0.05), "diaObject": {**peak, "nDiaSources": 5}}, False),
        ({"xm": _galaxy(template, legacydr8_zphot=0.05, simbad_otype="Star"), "diaObject": peak}, False),
    ]
    rows = [alert(template, i, **fields) for i, (fields, _) in enumerate(cases)]
    got = evaluate(spark, tmp_path, rows, "sn_near_galaxy_candidate")["sn_near_galaxy_candidate"]
    assert got == [keep for _, keep in cases]


@pytest.mark.spark
def test_extragalactic_filters(spark, tmp_path, template):
    rising = _object(template, nDiaSources=5, r_psfFluxMean=5e4, r_psfFluxMeanErr=100.0, r_psfFluxNdata=2)
    young = {"misc": {"firstDiaSourceMjdTaiFink": MJD - 2.0}}
    star = {"gaiadr3_DR3Name": "Gaia DR3 1", "gaiadr3_Plx": 10.0, "gaiadr3_e_Plx": 1.0}
    rows = [
        alert(template, 0, xm=_galaxy(template), **young),  # svom: near a galaxy, 2 days old, mag 23.9
        alert(template, 1, xm=_galaxy(template), misc={"firstDiaSourceMjdTaiFink": MJD - 5.0}),  # 5 days: too old
        alert(template, 2, diaSource__psfFlux=1e5, diaObject=rising, **young),  # lt20mag: loose (no SIMBAD match)
        alert(template, 3, diaSource__psfFlux=1e5, diaObject={**rising, "nDiaSources": 4}, **young),
        alert(template, 4, diaSource__psfFlux=1e5, diaObject=rising, xm={**template["xm"], **star}, **young),
    ]
    r = evaluate(spark, tmp_path, rows, "extragalactic_svom", "extragalactic_lt20mag_candidate")
    assert r["extragalactic_svom"] == [True, False, False, False, False]  # rows 2-4: no host for near_galaxy
    assert r["extragalactic_lt20mag_candidate"] == [False, False, True, False, False]  # row 4: a Gaia star


@pytest.mark.spark
def test_extragalactic_new_candidate_rate_against_the_latest_same_band_source(spark, tmp_path, template):
    """Alert r, 1000 nJy, 2 days old near a galaxy; rate = delta mag / delta t vs the latest r source."""
    two = _object(template, r_psfFluxNdata=2, g_psfFluxNdata=2)
    base = {"xm": _galaxy(template), "misc": {"firstDiaSourceMjdTaiFink": MJD - 2.0}, "diaObject": two}
    cases = [
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 2000.0}], {}, True),  # fading 0.75 mag/day in r
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 1100.0}], {}, False),  # 0.10 mag/day
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 500.0}], {}, True),  # rising 0.75 mag/day, 2 days old
        ([{"midpointMjdTai": MJD, "psfFlux": 500.0}], {}, True),  # same time: -inf mag/day is rising
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 2000.0}, {"midpointMjdTai": MJD - 3, "psfFlux": 1000.0}], {}, True),
        ([{"midpointMjdTai": MJD - 3, "psfFlux": 1000.0}, {"midpointMjdTai": MJD - 1, "psfFlux": 2000.0}], {}, True),
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 1500.0, "band": "g"}], {"diaSource__band": "g"}, False),  # < 0.5
        ([{"midpointMjdTai": MJD - 1, "psfFlux": 2000.0}], {"diaObject": _object(template, r_psfFluxNdata=1)}, False),
    ]
    rows = [alert(template, i, prv=prv, **{**base, **extra}) for i, (prv, extra, _) in enumerate(cases)]
    got = evaluate(spark, tmp_path, rows, "extragalactic_new_candidate")["extragalactic_new_candidate"]
    assert got == [keep for _, _, keep in cases]


@pytest.mark.spark
def test_fast_transient_gvom_passes_the_parallax_error_twice(spark, tmp_path, template):
    """Loose, 2 days old, mag 18.9, brightening 5e4 nJy/day; a Gaia star is not vetoed (e_Plx/e_Plx)."""
    prv = [{"midpointMjdTai": MJD - 1, "psfFlux": 5e4}]
    young = {"misc": {"firstDiaSourceMjdTaiFink": MJD - 2.0}, "diaSource__psfFlux": 1e5}
    star = {**template["xm"], "gaiadr3_DR3Name": "Gaia DR3 1", "gaiadr3_Plx": 10.0, "gaiadr3_e_Plx": 1.0}
    rows = [
        alert(template, 0, prv=prv, **young),
        alert(template, 1, prv=prv, xm=star, **young),
        alert(template, 2, prv=[{"midpointMjdTai": MJD - 1, "psfFlux": 9e4}], **young),  # 1e4 nJy/day: slow
        alert(template, 3, prv=prv, **{**young, "misc": {"firstDiaSourceMjdTaiFink": MJD - 6.0}}),
    ]
    r = evaluate(spark, tmp_path, rows, "fast_transient_gvom", "b_xmatched_gaia_star")
    assert r["fast_transient_gvom"] == [True, True, False, False]
    assert r["b_xmatched_gaia_star"] == [False, True, False, False]


@pytest.fixture(scope="module")
def transit_ra() -> float:
    """RA on the meridian of Cerro Pachon at MJD (astropy's apparent sidereal time)."""
    from astropy.time import Time

    from fink_pipeline.surveys.lsst.selections import sky

    _offline_astropy()
    return float(Time(MJD, format="mjd", scale="tai").sidereal_time("apparent", sky.CERRO_PACHON_LON_DEG).deg)


@pytest.mark.spark
def test_mdwarf_flare(spark, tmp_path, template, transit_ra):
    """u band, flux 1.2 x template, at dec -75 on the meridian (airmass 1.42), red quiescent colours
    (r - i = 0.75, i - z = 0.44 from previous template fluxes 1000, 2000, 3000), isolated."""
    quiescent = [{"band": b, "templateFlux": f, "midpointMjdTai": MJD - 10 - k}
                 for k, (b, f) in enumerate((("r", 1000.0), ("i", 2000.0), ("z", 3000.0)))]  # fmt: skip
    flare = {"diaSource__band": "u", "diaSource__psfFlux": 600.0, "diaSource__templateFlux": 500.0,
             "diaSource__ra": transit_ra, "diaSource__dec": -75.0}  # fmt: skip
    cases = [
        (quiescent, {}, True),
        (quiescent, {"diaSource__band": "r"}, False),
        (quiescent, {"diaSource__dec": -30.0}, False),  # at the zenith: airmass 1
        (quiescent, {"diaSource__ra": (transit_ra + 180.0) % 360.0}, True),  # circumpolar: airmass 3.8 below the pole
        (quiescent, {"diaSource__ra": (transit_ra + 180.0) % 360.0, "diaSource__dec": -40.0}, False),  # set
        (quiescent, {"diaSource__templateFlux": 0.0}, False),
        (quiescent, {"diaSource__psfFlux": 49.0}, False),  # < 10 % of the template
        ([{**q, "templateFlux": 3000.0 if q["band"] == "r" else q["templateFlux"]} for q in quiescent], {}, False),
        ([{**q, "band": "g"} for q in quiescent], {}, True),  # colours not available: the cut passes
        (quiescent + [{"band": "z", "templateFlux": float("nan"), "midpointMjdTai": MJD - 20}], {}, False),
        (quiescent + [{"band": "g", "midpointMjdTai": MJD - 1.0}], {}, False),  # a source 24 h earlier
        (quiescent, {"misc": {"firstDiaSourceMjdTaiFink": MJD}}, False),  # new and no Gaia star
    ]
    rows = [alert(template, i, prv=prv, **{**flare, **extra}) for i, (prv, extra, _) in enumerate(cases)]
    assert evaluate(spark, tmp_path, rows, "mdwarf_flare")["mdwarf_flare"] == [keep for _, _, keep in cases]
