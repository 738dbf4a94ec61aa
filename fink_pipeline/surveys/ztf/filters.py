"""ZTF livestream filters replayed as native Spark expressions (reference section 3.2).

Fink's transfer job imports a `fink_filters` pandas UDF by module path and keeps the alerts for
which it returns True. Here every filter that can be expressed on the archive columns is a
Spark Column (no Python UDF): `LIVESTREAM_FILTERS[name].column()`. History arrays are built
like Fink's `concat_col`: `concat(prv_candidates.<f>, array(candidate.<f>))`, or just
`array(candidate.<f>)` when there is no history.

Filters that define a Fink class reuse the flags of `classification.finkclass_flag_columns`,
so they select exactly the alerts whose flag is set in the `finkclass` rule.

Null handling follows pandas semantics, as in `classification`: a comparison with a missing
value is False, except `!=` which is True (e.g. a null `spicy_class` never matches, a null
`tns` counts as "not empty" in `tns_match`). The side effects of the real filters (Telegram,
Slack posts) are deliberately not reproduced.

Filters whose result depends on external services, image analysis or catalogues shipped with
fink-filters are listed in `UNSUPPORTED_FILTERS`; `resolve_filter` raises
`UnsupportedFilterError` for them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from fink_pipeline.surveys.base import SelectionFunction, filter_name_candidates
from fink_pipeline.surveys.ztf.classification import (
    EARLY_SN_IA,
    FINKCLASS_INPUT_COLUMNS,
    KILONOVA,
    MICROLENSING,
    SN_CANDIDATE,
    SSO_CANDIDATE,
    SSO_MPC,
    TRACKLET,
    UNKNOWN,
    as_number,
    fill_null,
    finkclass_flag_columns,
    finkclass_from_flags,
)

if TYPE_CHECKING:
    from pyspark.sql import Column

LIVESTREAM_PACKAGE = "fink_filters.ztf.livestream"

# cdsxmatch label sets of the SIMBAD-based filters (old and new SIMBAD taxonomy)
BLAZAR_LABELS: tuple[str, ...] = ("Blazar", "Blazar_Candidate", "BLLac", "BLLac_Candidate")
YSO_LABELS: tuple[str, ...] = ("Candidate_YSO", "Candidate_TTau*", "YSO_Candidate", "TTau*_Candidate")
GRAVITATION_LABELS: tuple[str, ...] = (
    "Gravitation", "LensingEv", "GravLensSystem", "GravLens", "LensedImage",
    "LensedG", "LensedQ", "BlackHole", "GravWaveEvent",
)  # fmt: skip

# yso_spicy_candidates thresholds
SPICY_SLOPE_MIN = 0.025
SPICY_R2_MIN = 0.6
SPICY_MIN_POINTS = 5


class UnsupportedFilterError(ValueError):
    """A known Fink filter that cannot be replayed as a Spark expression."""


@dataclass(frozen=True)
class LivestreamFilter(SelectionFunction):
    """One replayable Fink ZTF livestream filter (the survey-wide `SelectionFunction`, plus the
    finkclass label or flag the filter defines, None for the others)."""

    fink_class: str | None = None
    fink_flag: str | None = None


# --------------------------------------------------------------------------------------------
# Column helpers
# --------------------------------------------------------------------------------------------


def history(name: str) -> "Column":
    """Fink's `c<name>c` history array: previous values then the current one.

    Same as `fink_utils.spark.utils.concat_col`: `prv_candidates.<name>` followed by
    `candidate.<name>`, or just `[candidate.<name>]` when the history is null.
    """
    from pyspark.sql import functions as F

    past = F.col(f"prv_candidates.{name}")
    current = F.array(F.col(f"candidate.{name}"))
    return F.when(past.isNotNull(), F.concat(past, current)).otherwise(current)


def _isin(column: str, values: tuple[str, ...]) -> "Column":
    from pyspark.sql import functions as F

    return fill_null(F.col(column).isin(*values))


def _flag(key: str) -> Callable[[], "Column"]:
    return lambda: finkclass_flag_columns()[key]


def _unknowns() -> "Column":
    """finkclass computed with an empty tracklet equals "Unknown" (filter_unknowns)."""
    from pyspark.sql import functions as F

    flags = finkclass_flag_columns(tracklet=F.lit(""))
    return fill_null(finkclass_from_flags(flags) == F.lit(UNKNOWN))


def _tns_match() -> "Column":
    """tns != "" (None != "" is True in pandas) and jd - jdstarthist <= 30."""
    from pyspark.sql import functions as F

    in_tns = fill_null(F.col("tns") != F.lit(""), when_null=True)
    age = as_number("candidate.jd") - as_number("candidate.jdstarthist")
    return in_tns & fill_null(age <= 30)


def _vra() -> "Column":
    """cdsxmatch == "Unknown", roid != 3, magpsf > 19.5, drb > 0.5 (filter_vra)."""
    from pyspark.sql import functions as F

    return (
        fill_null(F.col("cdsxmatch") == F.lit("Unknown"))
        & fill_null(as_number("roid") != 3, when_null=True)
        & fill_null(as_number("candidate.magpsf") > 19.5)
        & fill_null(as_number("candidate.drb") > 0.5)
    )


def r_band_r2() -> "Column":
    """Coefficient of determination of a straight line fitted to the r-band history.

    `r2_score` of filter_yso_spicy_candidates: points of the history with a valid magpsf and
    fid == 2, at least 5 of them, magpsf fitted linearly against jd; null when not computable
    (too few points, all points at the same jd, constant magnitude).
    """
    from pyspark.sql import functions as F

    pts = F.zip_with(history("jd"), history("magpsf"), lambda x, y: F.struct(x.alias("x"), y.alias("y")))
    pts = F.zip_with(
        pts, history("fid"), lambda p, f: F.struct(p["x"].alias("x"), p["y"].alias("y"), f.alias("fid"))
    )
    pts = F.filter(pts, lambda p: p["y"].isNotNull() & ~F.isnan(p["y"]) & (p["fid"] == 2))
    pts = F.transform(
        pts, lambda p: F.struct(p["x"].cast("double").alias("x"), p["y"].cast("double").alias("y"))
    )
    n = F.size(pts).cast("double")

    def total(fn) -> "Column":
        return F.aggregate(pts, F.lit(0.0), lambda acc, p: acc + fn(p))

    mx = F.try_divide(total(lambda p: p["x"]), n)
    my = F.try_divide(total(lambda p: p["y"]), n)
    sxx = total(lambda p: F.pow(p["x"] - mx, 2))
    sxy = total(lambda p: (p["x"] - mx) * (p["y"] - my))
    beta1 = F.try_divide(sxy, sxx)
    beta0 = my - beta1 * mx
    ss_res = total(lambda p: F.pow(p["y"] - (beta0 + beta1 * p["x"]), 2))
    ss_tot = total(lambda p: F.pow(p["y"] - my, 2))
    r2 = F.lit(1.0) - F.try_divide(ss_res, ss_tot)
    ok = (F.size(pts) >= SPICY_MIN_POINTS) & (sxx != 0) & (ss_tot != 0)
    return F.when(ok, F.nanvl(r2, F.lit(None).cast("double")))


def _yso_spicy() -> "Column":
    """SPICY match, |r-band linear_fit_slope| > 0.025 and r-band R^2 > 0.6."""
    from pyspark.sql import functions as F

    spicy = F.col("spicy_class").isNotNull() & fill_null(F.col("spicy_class") != F.lit("Unknown"))
    slope = fill_null(F.abs(as_number("lc_features_r.linear_fit_slope")) > SPICY_SLOPE_MIN)
    return spicy & slope & fill_null(r_band_r2() > SPICY_R2_MIN)


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def _module(short: str, livestream: bool = True) -> str:
    package = LIVESTREAM_PACKAGE if livestream else "fink_filters.ztf"
    return f"{package}.filter_{short}.filter.{short}"


_SN_COLUMNS = (
    "cdsxmatch", "snn_snia_vs_nonia", "snn_sn_vs_all", "candidate.drb", "candidate.classtar",
    "candidate.jd", "candidate.jdstarthist", "roid", "candidate.ndethist",
)  # fmt: skip
_EARLY_SN_COLUMNS = (
    "cdsxmatch", "snn_snia_vs_nonia", "snn_sn_vs_all", "rf_snia_vs_nonia",
    "candidate.ndethist", "candidate.drb", "candidate.classtar",
)  # fmt: skip
_KN_COLUMNS = (
    "rf_kn_vs_nonkn", "candidate.drb", "candidate.classtar", "candidate.jd",
    "candidate.jdstarthist", "candidate.ndethist", "cdsxmatch", "roid",
)  # fmt: skip

_FILTERS: tuple[LivestreamFilter, ...] = (
    LivestreamFilter(
        name="early_sn_candidates",
        description="Alerts considered as early Type Ia supernova candidates (SuperNNova and "
        "early-SN Ia random-forest scores, extragalactic or no SIMBAD host, good quality, "
        "at most 20 detections).",
        fink_module=_module("early_sn_candidates"),
        columns_read=_EARLY_SN_COLUMNS,
        builder=_flag("sn_early"),
        fink_class=EARLY_SN_IA,
        fink_flag="sn_early",
    ),
    LivestreamFilter(
        name="sn_candidates",
        description="Alerts considered as supernova candidates (SuperNNova scores, "
        "extragalactic or no SIMBAD host, at most 90 days old, more than one detection, "
        "not an MPC asteroid).",
        fink_module=_module("sn_candidates"),
        columns_read=_SN_COLUMNS,
        builder=_flag("sn"),
        fink_class=SN_CANDIDATE,
        fink_flag="sn",
    ),
    LivestreamFilter(
        name="kn_candidates",
        description="Alerts considered as kilonova candidates from the machine-learning "
        "kilonova score (new object, fewer than 20 detections, extragalactic or no SIMBAD host).",
        fink_module=_module("kn_candidates"),
        columns_read=_KN_COLUMNS,
        builder=_flag("kn"),
        fink_class=KILONOVA,
        fink_flag="kn",
        notes="The Slack notifications of the real filter are not reproduced.",
    ),
    LivestreamFilter(
        name="microlensing_candidates",
        description="Alerts considered as microlensing candidates (LIA score > 0).",
        fink_module=_module("microlensing_candidates"),
        columns_read=("mulens",),
        builder=_flag("mulens"),
        fink_class=MICROLENSING,
        fink_flag="mulens",
    ),
    LivestreamFilter(
        name="sso_ztf_candidates",
        description="Alerts linked to a Solar System object of the Minor Planet Center (roid == 3).",
        fink_module=_module("sso_ztf_candidates"),
        columns_read=("roid",),
        builder=_flag("roid_3"),
        fink_class=SSO_MPC,
        fink_flag="roid_3",
    ),
    LivestreamFilter(
        name="sso_fink_candidates",
        description="Alerts considered as new Solar System object candidates by Fink (roid == 2).",
        fink_module=_module("sso_fink_candidates"),
        columns_read=("roid",),
        builder=_flag("roid_2"),
        fink_class=SSO_CANDIDATE,
        fink_flag="roid_2",
    ),
    LivestreamFilter(
        name="tracklet_candidates",
        description="Alerts belonging to a tracklet (likely space debris or satellite glint).",
        fink_module=_module("tracklet_candidates", livestream=False),
        columns_read=("tracklet",),
        builder=_flag("tracklet"),
        fink_class=TRACKLET,
        fink_flag="tracklet",
    ),
    LivestreamFilter(
        name="simbad_candidates",
        description="Alerts with a counterpart in the SIMBAD database (excluding failed "
        "cross-matches and galaxies).",
        fink_module=_module("simbad_candidates", livestream=False),
        columns_read=("cdsxmatch",),
        builder=_flag("simbad"),
        fink_flag="simbad",
    ),
    LivestreamFilter(
        name="unknowns",
        description="Unclassified alerts: the Fink classification (re-applied without "
        "tracklet information) is Unknown.",
        fink_module=_module("unknowns"),
        columns_read=tuple(c for c in FINKCLASS_INPUT_COLUMNS if c != "tracklet"),
        builder=_unknowns,
        fink_class=UNKNOWN,
        notes="Tracklets are not known in real time, so the rule runs with an empty tracklet: "
        "a tracklet alert otherwise Unknown is kept.",
    ),
    LivestreamFilter(
        name="blazar",
        description="Alerts identified as Blazar or BL Lac (or candidates) in SIMBAD.",
        fink_module=_module("blazar"),
        columns_read=("cdsxmatch",),
        builder=lambda: _isin("cdsxmatch", BLAZAR_LABELS),
    ),
    LivestreamFilter(
        name="yso_candidates",
        description="Alerts identified as young stellar object or T Tauri candidates in SIMBAD.",
        fink_module=_module("yso_candidates"),
        columns_read=("cdsxmatch",),
        builder=lambda: _isin("cdsxmatch", YSO_LABELS),
    ),
    LivestreamFilter(
        name="yso_spicy_candidates",
        description="Alerts with a match in the SPICY young-stellar-object catalogue whose "
        "r-band light curve shows a steady trend (|slope| > 0.025, R^2 > 0.6).",
        fink_module=_module("yso_spicy_candidates"),
        columns_read=(
            "spicy_class", "lc_features_r.linear_fit_slope", "candidate.jd", "candidate.magpsf",
            "candidate.fid", "prv_candidates.jd", "prv_candidates.magpsf", "prv_candidates.fid",
        ),  # fmt: skip
        builder=_yso_spicy,
        notes="linear_fit_slope is taken from lc_features_r as the Fink livestream does "
        "(fink-broker distribute.py); R^2 is computed in double precision.",
    ),
    LivestreamFilter(
        name="tns_match",
        description="Alerts with a counterpart in TNS (non-empty `tns`) appeared at most 30 days ago.",
        fink_module=_module("tns_match"),
        columns_read=("tns", "candidate.jd", "candidate.jdstarthist"),
        builder=_tns_match,
    ),
    LivestreamFilter(
        name="simbad_grav_candidates",
        description="Alerts with a gravitational counterpart (lensing, black hole, "
        "gravitational wave event) in SIMBAD.",
        fink_module=_module("simbad_grav_candidates"),
        columns_read=("cdsxmatch",),
        builder=lambda: _isin("cdsxmatch", GRAVITATION_LABELS),
    ),
    LivestreamFilter(
        name="vra",
        description="Alerts entering the Virtual Research Assistant: no SIMBAD counterpart, "
        "not an MPC asteroid, magpsf > 19.5, drb > 0.5.",
        fink_module=_module("vra"),
        columns_read=("cdsxmatch", "roid", "candidate.magpsf", "candidate.drb"),
        builder=_vra,
    ),
)

LIVESTREAM_FILTERS: dict[str, LivestreamFilter] = {f.name: f for f in _FILTERS}

# Known Fink filters that are not replayable as Spark expressions: name -> (module, why)
UNSUPPORTED_FILTERS: dict[str, tuple[str, str]] = {
    "early_kn_candidates": (
        _module("early_kn_candidates"),
        "matches candidates against the Mangrove host-galaxy catalogue bundled with "
        "fink-filters and queries SDSS online for every candidate",
    ),
    "rate_based_kn_candidates": (
        _module("rate_based_kn_candidates"),
        "fits a magnitude rate with scipy on DC magnitudes and queries SDSS online",
    ),
    "new_hostless": (
        _module("new_hostless"),
        "decides hostlessness by image analysis of the science and template cutouts",
    ),
    "intra_night_hostless": (
        _module("intra_night_hostless"),
        "decides hostlessness by image analysis of the science and template cutouts",
    ),
    "inter_night_hostless": (
        _module("inter_night_hostless"),
        "decides hostlessness by image analysis of the science and template cutouts",
    ),
    "magnetic_cvs": (
        _module("magnetic_cvs"),
        "cross-matches fink-filters' bundled magnetic-CV catalogue, keeping for each source "
        "only its nearest alert within the same processing batch",
    ),
}


def resolve_filter(name_or_module_path: str) -> LivestreamFilter:
    """The replayable filter named by a short name or a Fink module path.

    Accepts e.g. `sn_candidates`, `filter_sn_candidates` or
    `fink_filters.ztf.livestream.filter_sn_candidates.filter.sn_candidates` (older layouts
    such as `fink_filters.filter_sn_candidates.filter.sn_candidates` too). Raises
    `UnsupportedFilterError` for a known filter that cannot be replayed, `ValueError` naming
    the closest valid names otherwise.
    """
    if not isinstance(name_or_module_path, str) or not name_or_module_path.strip():
        raise ValueError(f"empty filter name; valid names: {', '.join(sorted(LIVESTREAM_FILTERS))}")
    by_module = {f.fink_module: f for f in _FILTERS}
    if name_or_module_path.strip() in by_module:
        return by_module[name_or_module_path.strip()]
    for candidate in filter_name_candidates(name_or_module_path):
        if candidate in LIVESTREAM_FILTERS:
            return LIVESTREAM_FILTERS[candidate]
    for candidate in filter_name_candidates(name_or_module_path):
        if candidate in UNSUPPORTED_FILTERS:
            module, why = UNSUPPORTED_FILTERS[candidate]
            raise UnsupportedFilterError(f"Fink filter {module} cannot be replayed natively: it {why}")
    key = name_or_module_path.strip().rsplit(".", 1)[-1].removeprefix("filter_")
    choices = sorted(LIVESTREAM_FILTERS)
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ValueError(
        f"unknown livestream filter {name_or_module_path!r}: {hint}valid names: {', '.join(choices)}"
    )
