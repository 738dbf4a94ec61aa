"""Fink's Rubin live-stream filters (fink-filters 7.45 `fink_filters/rubin/livestream/filter_*`)
as native Spark expressions, built from the blocks of `blocks.py` as Fink builds them.

Quirks of Fink's code kept as they are (besides those of the blocks and of `columns.py`):

* `most_likely_sn` and `remove_unlikely_transients` AND `~f_good_quality`, where
  f_good_quality = b_good_quality & ~isNegative: they keep alerts that are *not* of good quality
  (or are negative), whatever their comments say.
* `fast_transient_gvom` passes `gaiadr3_e_Plx` as the parallax too: Plx / e_Plx becomes
  e_Plx / e_Plx (1 or NaN), never > 5, so its Gaia-star veto never fires. Its rate cut is the
  deterministic limit of `b_mag_rate_mc_sampling` (see blocks.py).
* `hostless_candidate` keeps `elephant_kstest_template < 0.95` in float32; Fink's placeholder
  -99 passes.
* `mdwarf_flare`: the quiescent colours use the median templateFlux of the previous sources per
  band (nulls skipped, a NaN makes the median NaN); a band with no such flux makes the colour cut
  pass ("colour not available"), a NaN or non-positive median makes it fail. The airmass is the
  Spark approximation of `sky.airmass_cerro_pachon` (error < 1e-4, see there).
* `extragalactic_new_candidate` takes the same-band previous source with the greatest
  midpointMjdTai (Python `max`: first of equal times), and divides the magnitude change by the
  time difference with IEEE results (a zero time difference gives +-inf, hence "rising" for a
  brighter alert).
* `uniform_sample`: diaSourceId % 113 == 0 on the exact id. On a batch where some diaSourceId is
  null (lsst.v7_4 alerts carry alertId instead), pandas holds the ids as float64 and Fink takes
  the modulo of the rounded id; such mixed batches can differ.
* A negated boolean that is null (`~pixelFlags_cr`, `~isNegative`, `~is_sso`) raises TypeError in
  pandas and fails Fink's whole batch; here the alert is not selected.
* Telegram/Slack side effects of the real filters are not reproduced (none in 7.45's Rubin set).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fink_pipeline.surveys.base import SelectionFunction
from fink_pipeline.surveys.lsst.selections import blocks as fb
from fink_pipeline.surveys.lsst.selections.columns import (
    as_f32,
    between_open,
    col,
    defined,
    f32,
    fill,
    flux_to_apparent_mag,
    ge,
    gt,
    ieee_divide,
    is_true,
    le,
    let,
    lt,
    number,
)
from fink_pipeline.surveys.lsst.selections.cosmology import distance_modulus
from fink_pipeline.surveys.lsst.selections.lightcurve import (
    has_template_flux,
    isolated_in_time,
    latest_same_band_source,
    median_template_mag,
    peak_flux,
    two_points_same_band,
)
from fink_pipeline.surveys.lsst.selections.sky import airmass_cerro_pachon

if TYPE_CHECKING:
    from pyspark.sql import Column

LIVESTREAM_PACKAGE = "fink_filters.rubin.livestream"
FIRST_MJD = "misc.firstDiaSourceMjdTaiFink"


def _mag() -> "Column":
    return flux_to_apparent_mag("diaSource.psfFlux")


def _age() -> "Column":
    """Days since Fink first saw the object (midpointMjdTai - firstDiaSourceMjdTaiFink)."""
    return number("diaSource.midpointMjdTai") - number(FIRST_MJD)


def extragalactic_lt20mag_candidate() -> "Column":
    """Loose extragalactic, brighter than 20 mag, rising, > 4 sources, first seen > 1 day ago."""
    sampling = gt("diaObject.nDiaSources", 4) & gt(_age(), 1)
    return lt(_mag(), 20) & sampling & fb.extragalactic("loose") & fb.b_is_rising()


def extragalactic_new_candidate() -> "Column":
    """Near-galaxy extragalactic, < 5 days old, brighter than 24 mag, two points in the band, and
    a fast magnitude rate against the latest same-band source."""
    def rate_of(b: "Column") -> "Column":
        delta_mag = b["mag"] - flux_to_apparent_mag(b["prev"]["psfFlux"])
        delta_time = b["now"] - number(b["prev"]["midpointMjdTai"])
        return ieee_divide(delta_mag, delta_time)

    rate = let({"prev": latest_same_band_source(), "mag": _mag(), "now": number("diaSource.midpointMjdTai")},
               rate_of)  # fmt: skip
    band = col("diaSource.band")
    rising = lt(rate, -0.2) & lt(_age(), 3)
    fading_ri = fill(band.isin("r", "i")) & gt(rate, 0.2)
    fading_gu = fill(band.isin("g", "u")) & gt(rate, 0.5)
    base = lt(_age(), 5.0) & lt(_mag(), 24) & two_points_same_band() & fb.extragalactic("near_galaxy")
    return base & (rising | fading_ri | fading_gu)


def extragalactic_svom() -> "Column":
    """Near-galaxy extragalactic, < 5 days old, brighter than 24 mag."""
    return lt(_age(), 5.0) & lt(_mag(), 24) & fb.extragalactic("near_galaxy")


def faint_trails() -> "Column":
    """Cheap cuts natively, then the cutout elongation only where they pass."""
    from pyspark.sql import functions as F

    from fink_pipeline.surveys.lsst.selections.cutouts import elongated

    cuts = (
        gt("diaSource.trailLength", 2)
        & between_open(_mag(), 18, 21)
        & fill(~col("diaSource.pixelFlags_cr"))
        & fb.b_good_quality()
        & gt("diaSource.psfFlux", 0)
        & gt("diaSource.trailFlux", 0)
    )
    return cuts & elongated(F.when(cuts, col("cutoutScience")))


def fast_transient_gvom() -> "Column":
    """Loose extragalactic (e_Plx passed as parallax), < 5 days old, brighter than 21 mag, fast
    brightening (deterministic `b_mag_rate_mc_sampling`)."""
    return (lt(_age(), 5.0) & lt(_mag(), 21) & fb.extragalactic("loose", parallax="xm.gaiadr3_e_Plx")
            & fb.b_mag_rate_mc_sampling())  # fmt: skip


def hostless_candidate() -> "Column":
    """Good quality, ELEPHANT template KS test < 0.95, outside the plane, mag <= 21.5."""
    kstest = lt("clf.elephant_kstest_template", f32(0.95))
    return fb.b_good_quality() & kstest & fb.b_outside_galactic_plane(20) & le(_mag(), 21.5)


def in_simbad() -> "Column":
    """SIMBAD type neither null nor Unknown/Fail/Fail 504."""
    return ~fb.b_xmatched_simbad_unknown()


def in_tns() -> "Column":
    """A TNS name."""
    return col("xm.tns_fullname").isNotNull()


def mdwarf_flare() -> "Column":
    """M-dwarf flare: star-like, u or g band, red quiescent colours, airmass > 1.3, flux >= 10 %
    of the template, isolated in time, good quality."""
    new = fb.b_is_new()
    star = ~new | fb.b_xmatched_gaia_star()
    band = fill(col("diaSource.band").isin("u", "g"))
    r, i, z = (median_template_mag(b) for b in ("r", "i", "z"))
    available = has_template_flux("r") & has_template_flux("i") & has_template_flux("z")
    colour = ~available | (gt(r - i, 0.53) & gt(i - z, 0.3))
    airmass = airmass_cerro_pachon(col("diaSource.ra"), col("diaSource.dec"), col("diaSource.midpointMjdTai"))
    excursion = gt("diaSource.templateFlux", 0) & ge(
        as_f32(ieee_divide(col("diaSource.psfFlux"), col("diaSource.templateFlux"))), f32(0.10)
    )
    # cheap and selective cuts first: Spark skips the rest of an AND once a term is False
    return band & excursion & fb.b_good_quality() & star & gt(airmass, 1.3) & colour & isolated_in_time()


def _unlikely_transient_cuts() -> "Column":
    """Shared by most_likely_sn and remove_unlikely_transients, `~f_good_quality` included."""
    good = fb.b_good_quality() & fill(~col("diaSource.isNegative"))
    return (fill(~col("pred.is_sso")) & gt("diaSource.snr", 10) & ~good & ge("diaObject.nDiaSources", 2)
            & defined("diaSource.isNegative", "pred.is_sso"))  # fmt: skip


def most_likely_sn() -> "Column":
    """SuperNNova >= 0.7, CATS class 11 with score >= 0.9, plus the cuts above."""
    snn = ge("clf.snnSnVsOthers_score", f32(0.7))
    cats = fill(col("clf.cats_class") == 11) & ge("clf.cats_score", f32(0.9))
    return snn & cats & _unlikely_transient_cuts()


def remove_unlikely_transients() -> "Column":
    """Not an asteroid, SNR > 10, >= 2 sources and (quirk) not of good quality."""
    return _unlikely_transient_cuts()


def sn_near_galaxy_candidate() -> "Column":
    """Near-galaxy extragalactic, > 5 sources, peak absolute magnitude in (-23, -13)."""
    from pyspark.sql import functions as F

    z = number("xm.legacydr8_zphot")
    apparent = flux_to_apparent_mag(peak_flux())
    valid = gt(z, 0) & lt(z, float("inf")) & apparent.isNotNull()
    absolute = F.when(valid, apparent - distance_modulus(z))
    sampling = gt("diaObject.nDiaSources", 5)
    return sampling & fb.extragalactic("near_galaxy") & between_open(absolute, -23, -13)


def uniform_sample() -> "Column":
    """diaSourceId % 113 == 0 (about 1 % of the alerts)."""
    return fill(col("diaSourceId") % 113 == 0)


def is_solar_system() -> "Column":
    """`pred.is_sso`."""
    return is_true("pred.is_sso")


_MAG = ("diaSource.psfFlux",)
_AGE = ("diaSource.midpointMjdTai", FIRST_MJD)
_PRV_BAND = ("diaSource.band", "prvDiaSources.band", "prvDiaSources.midpointMjdTai")


def _filter(tag: str, description: str, columns: tuple[str, ...], builder, notes: str = "") -> SelectionFunction:
    return SelectionFunction(name=tag, description=description,
                             fink_module=f"{LIVESTREAM_PACKAGE}.filter_{tag}.filter.{tag}",
                             columns_read=tuple(dict.fromkeys(columns)), builder=builder, notes=notes)  # fmt: skip


FILTERS: tuple[SelectionFunction, ...] = (
    _filter("extragalactic_lt20mag_candidate",
            "Select alerts that are rising, bright (mag < 20), and extragalactic candidates",
            (*fb.EXTRAGALACTIC_COLUMNS, *fb.BAND_MEAN_COLUMNS, "diaObject.nDiaSources", *_AGE),
            extragalactic_lt20mag_candidate),
    _filter("extragalactic_new_candidate",
            "Select LSST alerts new (< 5days first apparition), bright (mag < 24), potentially extragalactic "
            "with a fading or rising rate passing the cuts",
            (*fb.EXTRAGALACTIC_COLUMNS, *_AGE, *_PRV_BAND, "prvDiaSources.psfFlux",
             *(f"diaObject.{b}_psfFluxNdata" for b in "ugrizy")),
            extragalactic_new_candidate),
    _filter("extragalactic_svom",
            "Select LSST alerts new (< 5days first apparition), bright (mag < 24), potentially extragalactic",
            (*fb.EXTRAGALACTIC_COLUMNS, *_AGE), extragalactic_svom),
    _filter("faint_trails", "Select faint trails measuring more than 2 arcsec (mag between 18-21)",
            (*fb.QUALITY_COLUMNS, "diaSource.trailLength", "diaSource.trailFlux", "cutoutScience"),
            faint_trails, notes="The cutout elongation runs in a pandas UDF on the rows passing the other cuts."),
    _filter("fast_transient_gvom",
            "Select LSST alerts that are: new (< 5days first apparition), bright (mag < 21), potentially "
            "extragalactic, behaving like fast transient (magnitude rate < 0.3 mag/day)",
            (*fb.EXTRAGALACTIC_COLUMNS, *_AGE, *fb.RATE_COLUMNS), fast_transient_gvom,
            notes="Deterministic limit of Fink's Monte Carlo rate; e_Plx is passed as the parallax, as in Fink."),
    _filter("hostless_candidate",
            "Select LSST alerts that are hostless according to ELEPHANT. See https://arxiv.org/abs/2404.18165.",
            (*fb.QUALITY_COLUMNS, *fb.GALACTIC_COLUMNS, "clf.elephant_kstest_template"), hostless_candidate),
    _filter("in_simbad", "Select alerts with a known counterpart in SIMBAD at the time of emission by Rubin",
            ("xm.simbad_otype",), in_simbad),
    _filter("in_tns",
            "Select alerts with a known counterpart in TNS (AT or confirmed) at the time of emission by Rubin",
            ("xm.tns_fullname",), in_tns),
    _filter("is_solar_system",
            "Select alerts with a known counterpart in the Minor Planet Center at the time of emission by Rubin",
            ("pred.is_sso",), is_solar_system),
    _filter("mdwarf_flare",
            "Select alerts that are likely to be M dwarf flares, in bluer bands, and high airmass for DCR-based "
            "temperature inference",
            (*fb.QUALITY_COLUMNS, *_AGE, *fb.GAIA_COLUMNS, "diaSource.band", "diaSource.ra", "diaSource.dec",
             "diaSource.templateFlux", "prvDiaSources.band", "prvDiaSources.templateFlux",
             "prvDiaSources.midpointMjdTai"),
            mdwarf_flare, notes="Airmass at Cerro Pachon by a native approximation of astropy's AltAz."),
    _filter("most_likely_sn",
            "Selects alerts that are likely to be SN, based on SuperNNova and CATS classifiers.",
            ("clf.cats_class", "clf.cats_score", "clf.snnSnVsOthers_score", *fb.QUALITY_COLUMNS, "diaSource.snr",
             "diaSource.isNegative", "diaObject.nDiaSources", "pred.is_sso"),
            most_likely_sn, notes="Keeps alerts NOT of good quality (~f_good_quality), as Fink's code does."),
    _filter("remove_unlikely_transients",
            "Filters out alerts unlikely to be transients of interest to the DESC community.",
            (*fb.QUALITY_COLUMNS, "diaSource.snr", "diaSource.isNegative", "diaObject.nDiaSources", "pred.is_sso"),
            remove_unlikely_transients,
            notes="Keeps alerts NOT of good quality (~f_good_quality), as Fink's code does."),
    _filter("sn_near_galaxy_candidate",
            "Select alerts matching in catalogs to a galaxy and properties consistent with SNe",
            (*fb.EXTRAGALACTIC_COLUMNS, "diaObject.nDiaSources", *(f"diaObject.{b}_psfFluxMax" for b in "giruzy")),
            sn_near_galaxy_candidate),
    _filter("uniform_sample", "Select 1% of all live alerts in a uniformly random way", ("diaSourceId",),
            uniform_sample),
)  # fmt: skip
