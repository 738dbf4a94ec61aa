"""Fink's Rubin building blocks (fink-filters 7.45 `fink_filters/rubin/blocks.py`, every `b_*`)
as native Spark expressions.

Each `b_*` function below returns the block's null-free boolean Column; `BLOCKS` lists them as
`SelectionFunction`s. The Rubin filters (`filters.py`) are built from the same functions, as
Fink's filters call its blocks.

Fink's semantics kept, quirks included (pandas rules in `columns.py`):

* `b_xmatched_simbad_galaxy` matches fink-utils' `return_list_of_eg_host()`, which holds
  "Unknown", "Fail", "Fail 504", "SN", "Transient", "Candidate_SN*", "SN*_Candidate" besides the
  galaxy types: an alert with SIMBAD type "Unknown" is "xmatched to a galaxy". A null type is not
  (pandas `isin`), while `b_xmatched_simbad_unknown` counts null as unknown (its list holds
  None and NaN).
* `b_good_quality`: the flags are OR-ed left to right in pandas, where a null *first* operand
  (`isDipole`) makes `isDipole | pixelFlags` False whatever `pixelFlags` is; any other null flag
  counts as False. The SNR cut is `psfFlux / psfFluxErr < 6` in float32, a zero error giving
  +-inf (so a negative flux over a zero error is flagged, a NaN ratio is not).
* `b_xmatched_gaia_star`: `Plx / e_Plx > 5` in float32 with IEEE division; the name must not be
  null nor "Unknown"/"Fail"/"Fail 504".
* `b_is_rising` / `b_is_fading`: the alert's flux minus `diaObject.<band>_psfFluxMean` of its
  band, in double, significant when its absolute value exceeds `<band>_psfFluxMeanErr`; no
  band, an unknown band or a missing mean give False.
* Extragalactic blocks: `~is_sso` raises in pandas when `is_sso` is null (the batch fails);
  here such an alert is not selected.
* `b_mag_rate_mc_sampling` is a Monte Carlo estimate in Fink (1,000 normal draws of both
  fluxes, `seed=None`: two runs may disagree near the thresholds). This is its deterministic
  limit: mean = (f - f_prv) / dt and std = sqrt(e^2 + e_prv^2) / |dt| for the *last* previous
  source of the same band in list order; fast when mean > 0.3 ln(10) / 2.5 * psfFlux (Fink's
  -0.3 mag/day converted at the alert's flux, NaN for a negative flux) and
  |mean| / (std + 1e-10) > 3. A null value in the chosen previous source makes Fink's job fail
  (object array in `np.isnan`); here it gives False.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fink_pipeline.surveys.base import SelectionFunction
from fink_pipeline.surveys.lsst.selections.columns import (
    as_f32,
    col,
    eq,
    fill,
    gt,
    ieee_divide,
    is_true,
    isin,
    let,
    lt,
    number,
    or_chain,
)
from fink_pipeline.surveys.lsst.selections.labels import (
    BAD_VALUE_LABELS,
    SIMBAD_EG_HOST_LABELS,
    VSX_NONSTELLAR_LABELS,
    VSX_STELLAR_LABELS,
)
from fink_pipeline.surveys.lsst.selections.lightcurve import mc_flux_rate, per_band
from fink_pipeline.surveys.lsst.selections.sky import galactic_latitude

if TYPE_CHECKING:
    from pyspark.sql import Column

BLOCKS_MODULE = "fink_filters.rubin.blocks"

# diaSource flags b_good_quality ORs, in Fink's order (the first one's null matters, see above)
QUALITY_FLAGS: tuple[str, ...] = (
    "isDipole", "pixelFlags", "pixelFlags_bad", "pixelFlags_saturated", "pixelFlags_streakCenter",
    "pixelFlags_interpolated", "pixelFlags_cr", "pixelFlags_nodata", "pixelFlags_streak",
    "pixelFlags_edge", "psfFlux_flag", "apFlux_flag", "forced_PsfFlux_flag",
    "forced_PsfFlux_flag_edge", "shape_flag", "centroid_flag",
)  # fmt: skip
QUALITY_COLUMNS = (*(f"diaSource.{f}" for f in QUALITY_FLAGS), "diaSource.psfFlux", "diaSource.psfFluxErr")
GALACTIC_COLUMNS = ("diaSource.ra", "diaSource.dec")
GAIA_COLUMNS = ("xm.gaiadr3_DR3Name", "xm.gaiadr3_Plx", "xm.gaiadr3_e_Plx")
RATE_COLUMNS = (
    "diaSource.midpointMjdTai", "diaSource.psfFlux", "diaSource.psfFluxErr", "diaSource.band",
    "prvDiaSources.band", "prvDiaSources.midpointMjdTai", "prvDiaSources.psfFlux", "prvDiaSources.psfFluxErr",
)  # fmt: skip
BAND_MEAN_COLUMNS = (
    "diaSource.psfFlux", "diaSource.band",
    *(f"diaObject.{b}_psfFluxMean{e}" for b in "ugrizy" for e in ("", "Err")),
)  # fmt: skip
EXTRAGALACTIC_COLUMNS = (
    *QUALITY_COLUMNS, *GALACTIC_COLUMNS, "xm.simbad_otype", "xm.mangrove_lum_dist", "pred.is_sso",
    *GAIA_COLUMNS, "xm.vsx_Type", "xm.legacydr8_zphot",
)  # fmt: skip

# b_mag_rate_mc_sampling: -0.3 mag/day as a flux rate, per unit of flux
MAX_MAG_RATE = -0.3
FLUX_RATE_PER_FLUX = -(math.log(10) / 2.5) * MAX_MAG_RATE
RATE_SNR_MIN = 3.0


def b_is_solar_system() -> "Column":
    """`pred.is_sso` (null: not selected)."""
    return is_true("pred.is_sso")


def b_outside_galactic_plane(min_abs_latitude: float) -> "Column":
    """|galactic latitude| > `min_abs_latitude` degrees."""
    from pyspark.sql import functions as F

    b = galactic_latitude(col("diaSource.ra"), col("diaSource.dec"))
    return gt(F.abs(b), min_abs_latitude)


def b_xmatched_simbad_galaxy() -> "Column":
    """SIMBAD type in fink-utils' extragalactic-host list (see the module docstring)."""
    return isin("xm.simbad_otype", SIMBAD_EG_HOST_LABELS)


def b_xmatched_simbad_unknown() -> "Column":
    """SIMBAD type null, "Unknown", "Fail" or "Fail 504"."""
    return isin("xm.simbad_otype", BAD_VALUE_LABELS, null_matches=True)


def b_xmatched_mangrove() -> "Column":
    """Mangrove luminosity distance > 0."""
    return gt("xm.mangrove_lum_dist", 0)


def b_xmatched_gaia_star(parallax: str = "xm.gaiadr3_Plx") -> "Column":
    """A Gaia DR3 name and parallax / error > 5 (float32). `parallax` is the field passed as
    the parallax (fast_transient_gvom passes the error twice)."""
    named = ~isin("xm.gaiadr3_DR3Name", BAD_VALUE_LABELS, null_matches=True)
    ratio = as_f32(ieee_divide(col(parallax), col("xm.gaiadr3_e_Plx")))
    return named & gt(ratio, 5)


def b_xmatched_vsx_star() -> "Column":
    """VSX type in the stellar list."""
    return isin("xm.vsx_Type", VSX_STELLAR_LABELS)


def b_xmatched_vsx() -> "Column":
    """VSX type in the non-stellar or stellar list."""
    return isin("xm.vsx_Type", VSX_NONSTELLAR_LABELS + VSX_STELLAR_LABELS)


def flux_change_from_mean() -> tuple["Column", "Column"]:
    """(flux - band mean, |difference| > band mean error) of extract_flux_information_static and
    compute_diff_flux_from_mean, in double."""
    from pyspark.sql import functions as F

    diff = number("diaSource.psfFlux") - number(per_band("psfFluxMean"))
    return diff, gt(F.abs(diff), number(per_band("psfFluxMeanErr")))


def b_is_rising() -> "Column":
    """Significantly above the band's mean flux."""
    diff, significant = flux_change_from_mean()
    return significant & gt(diff, 0)


def b_is_fading() -> "Column":
    """Significantly below the band's mean flux."""
    diff, significant = flux_change_from_mean()
    return significant & lt(diff, 0)


def b_is_new() -> "Column":
    """diaSource.midpointMjdTai == misc.firstDiaSourceMjdTaiFink."""
    return eq("diaSource.midpointMjdTai", "misc.firstDiaSourceMjdTaiFink")


def b_good_quality() -> "Column":
    """No quality flag set, psfFlux >= 0 and psfFlux / psfFluxErr >= 6 (see the docstring)."""
    flags = [col(f"diaSource.{f}") for f in QUALITY_FLAGS]
    snr = as_f32(ieee_divide(col("diaSource.psfFlux"), col("diaSource.psfFluxErr")))
    flagged = or_chain([*flags, lt("diaSource.psfFlux", 0), lt(snr, 6)])
    return ~flagged


def extragalactic(flavor: str, parallax: str = "xm.gaiadr3_Plx") -> "Column":
    """`extragalactic_base` of fink-filters: good quality, a host (or, for "loose", no SIMBAD
    match), outside the galactic plane (20 deg), not an asteroid, not a Gaia or VSX star."""
    unknown = b_xmatched_simbad_unknown()
    galaxy = b_xmatched_simbad_galaxy()
    legacy_valid = gt("xm.legacydr8_zphot", 0) & (unknown | galaxy)
    hosts = galaxy | b_xmatched_mangrove() | legacy_valid
    if flavor == "loose":
        hosts = hosts | unknown
    elif flavor != "near_galaxy":
        raise ValueError(f"unknown extragalactic flavor {flavor!r}: 'loose' or 'near_galaxy'")
    not_sso = fill(~col("pred.is_sso"))
    not_star = ~b_xmatched_gaia_star(parallax) & ~b_xmatched_vsx_star()
    # cheap terms first (Spark skips the rest of an AND once a term is False), the trigonometry last
    return not_sso & hosts & b_good_quality() & not_star & b_outside_galactic_plane(20)


def b_mag_rate_mc_sampling() -> "Column":
    """Deterministic limit of Fink's Monte Carlo flux-rate block (see the module docstring)."""
    from pyspark.sql import functions as F

    def fast(b: "Column") -> "Column":
        mean, std, flux = b["rate"]["mean"], b["rate"]["std"], b["flux"]
        threshold = F.when(flux >= 0, F.lit(FLUX_RATE_PER_FLUX) * flux)
        snr = ieee_divide(F.abs(mean), std + F.lit(1e-10))
        return gt(mean, threshold) & gt(snr, RATE_SNR_MIN)

    return let({"rate": mc_flux_rate(), "flux": number("diaSource.psfFlux")}, fast)


def _block(name: str, description: str, columns: tuple[str, ...], builder, notes: str = "") -> SelectionFunction:
    return SelectionFunction(name=name, description=description, fink_module=f"{BLOCKS_MODULE}.{name}",
                             columns_read=tuple(dict.fromkeys(columns)), builder=builder, notes=notes)  # fmt: skip


BLOCKS: tuple[SelectionFunction, ...] = (
    _block("b_is_solar_system", "Return alerts that are asteroids according to Rubin", ("pred.is_sso",),
           b_is_solar_system),
    _block("b_outside_galactic_plane_20_deg", "Return alerts outside the galactic plane (+/- |20| deg)",
           GALACTIC_COLUMNS, lambda: b_outside_galactic_plane(20)),
    _block("b_outside_galactic_plane_5_deg", "Return alerts outside the galactic plane (+/- |5| deg)",
           GALACTIC_COLUMNS, lambda: b_outside_galactic_plane(5)),
    _block("b_xmatched_simbad_galaxy", "Return alerts xmatched to a galaxy with SIMBAD.", ("xm.simbad_otype",),
           b_xmatched_simbad_galaxy, notes="fink-utils' host list includes Unknown, Fail, SN and Transient."),
    _block("b_xmatched_simbad_unknown", "Return alerts xmatched as unknown or failed with SIMBAD.",
           ("xm.simbad_otype",), b_xmatched_simbad_unknown),
    _block("b_xmatched_mangrove", "Return alerts xmatched with a Mangrove galaxy.", ("xm.mangrove_lum_dist",),
           b_xmatched_mangrove),
    _block("b_xmatched_gaia_star", "Return alerts xmatched to stars with good parallax with Gaia.", GAIA_COLUMNS,
           b_xmatched_gaia_star),
    _block("b_xmatched_vsx_star", "Return alerts xmatched with stellar sources from VSX catalogue.",
           ("xm.vsx_Type",), b_xmatched_vsx_star),
    _block("b_xmatched_vsx", "Return alerts xmatched with stellar and non-stellar sources from VSX catalogue.",
           ("xm.vsx_Type",), b_xmatched_vsx),
    _block("b_is_rising", "Return alerts with rising lightcurve in one filter.", BAND_MEAN_COLUMNS, b_is_rising),
    _block("b_is_fading", "Return alerts with fading lightcurve in one filter.", BAND_MEAN_COLUMNS, b_is_fading),
    _block("b_is_new", "Return alerts for which the underlying object is seen for the first time by Rubin",
           ("diaSource.midpointMjdTai", "misc.firstDiaSourceMjdTaiFink"), b_is_new),
    _block("b_good_quality", "Select alerts with good quality for science", QUALITY_COLUMNS, b_good_quality),
    _block("b_extragalactic_near_galaxy_candidate",
           "Flag for alerts in Rubin that are extragalactic candidates near a known galaxy", EXTRAGALACTIC_COLUMNS,
           lambda: extragalactic("near_galaxy")),
    _block("b_extragalactic_loose_candidate", "Flag for alerts in Rubin that are extragalactic candidates",
           EXTRAGALACTIC_COLUMNS, lambda: extragalactic("loose")),
    _block("b_mag_rate_mc_sampling", "Flag for alerts with a fast-evolving flux rate via Monte Carlo sampling",
           RATE_COLUMNS, b_mag_rate_mc_sampling,
           notes="Deterministic limit of Fink's Monte Carlo estimate (N=1000, unseeded): alerts near the "
           "thresholds may differ from one Fink run to the next."),
)  # fmt: skip
