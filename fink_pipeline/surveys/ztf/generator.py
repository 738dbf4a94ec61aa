"""Synthetic ZTF alerts as Fink stores them (one night of the science archive).

`generate_night(night, n_alerts, seed)` yields Arrow record batches with exactly
`ARCHIVE_SCHEMA`: ZTF 4.02 packets (candidate, 30-day prv_candidates history, three gzipped FITS
cutouts) plus the values Fink adds (cross-matches, classifier scores, light-curve features...).
Value distributions and null rates are calibrated on the real samples of ../shared/data
(see `scripts/calibrate_ztf_generator.py` and `docs/generator_calibration.md`).

Design
------
* Deterministic and batch-size independent: a night is cut into fixed blocks of `BLOCK_SIZE`
  alerts; each block has its own random stream derived from (seed, night, block), and batches
  are re-chunked from blocks. The cutouts use a separate stream, so every non-cutout column is
  byte-identical with and without cutouts.
* Vectorised: every scalar column is computed with numpy on whole blocks; strings are built as
  fixed-width byte matrices or with pyarrow.compute; list/struct/map columns are assembled from
  flat arrays (`ListArray.from_arrays`, `StructArray.from_arrays`, `MapArray.from_arrays`).
* A sky and a night plan: fields on a ZTF-like grid (~570 fields of 7.4 x 7.4 deg, 64 readout
  quadrants), a night of ~40 s exposures between evening and morning twilight at Palomar, each
  exposure on a field near the meridian. candidate.jd, pid, candid, field, rcid, xpos/ypos and
  ra/dec are mutually consistent (pid = nid|fraction of day|rcid|15, candid = pid * 10^6 + 10000
  + tblid, as real ZTF ids), hence candid is unique within and across nights.
* Objects: known variable sources (SIMBAD and unclassified) live in a per-field pool keyed by
  hashes of the seed only, so the same objectId (same position, first detection, reference
  source and cross-matches) comes back night after night and several times within a night;
  supernova-like transients are keyed by (field, birth day); bogus, asteroids and satellite
  tracklets get a fresh objectId.
* History: 30 days of detections and upper limits (null photometry) consistent with
  candidate.ndethist / jdstarthist / nalerthist; light-curve features and rates computed from it.
* Cutouts: per night a pool of consistent science/template/difference FITS images; each alert
  gets its own copy with random low-order mantissa bits, gzipped (unique bytes, real sizes).
* Classes: every alert is planted with a target `finkclass` (reference section 3.1) drawn with
  realistic fractions (section 7.1) and floors, so each Fink label and the main SIMBAD labels
  appear at least once per `BLOCK_SIZE` alerts; the classifier scores are then adjusted so that
  the alert satisfies exactly the rule of its class. The block generator checks its own output
  against an implementation of the rule and raises if a planted class is not reproduced.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.surveys.ztf.schema import (
    ARCHIVE_SCHEMA,
    CANDIDATE,
    CUTOUT,
    LC_FEATURES,
    PRV_CANDIDATE,
)

# --------------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------------

#: Alerts per internal block: the unit of randomness and of the class floors.
BLOCK_SIZE = 1000

JD_UNIX_EPOCH = 2440587.5
#: ZTF night id (nid) counts days from 2017-01-01 00:00 UTC.
JD_NID_EPOCH = 2457754.5
#: First alerts of the public survey (2018-03-20): earliest first detection of pool objects.
JD_SURVEY_START = 2458197.5
#: Pool objects were first detected before the 2019-11-01 start of the Fink archive.
JD_POOL_FIRSTDET_END = 2458788.5

PALOMAR_LON_DEG = -116.8650
PALOMAR_LAT_DEG = 33.3563

FINK_BROKER_VERSION = "4.1"
FINK_SCIENCE_VERSION = "8.41.0"
SCHEMA_VERSION = "4.02"
PUBLISHER = "Fink"

# Readout-quadrant geometry: 8 x 8 quadrants of 3072 x 3080 pixels at 1.012 arcsec/pixel.
_QUAD_NX, _QUAD_NY = 3072, 3080
_PIXSCALE_DEG = 1.012 / 3600.0
_QUAD_W_DEG = _QUAD_NX * _PIXSCALE_DEG
_QUAD_H_DEG = _QUAD_NY * _PIXSCALE_DEG
_FIELD_HALF_W = 4 * _QUAD_W_DEG
_FIELD_HALF_H = 4 * _QUAD_H_DEG

# Fink classes (reference section 3.1) -----------------------------------------------------
UNKNOWN = "Unknown"
EARLY_SN = "Early SN Ia candidate"
SN = "SN candidate"
KN = "Kilonova candidate"
MULENS = "Microlensing candidate"
SSO_MPC = "Solar System MPC"
SSO_CAND = "Solar System candidate"
TRACKLET = "Tracklet"
AMBIGUOUS = "Ambiguous"
FINK_LABELS = (UNKNOWN, EARLY_SN, SN, KN, MULENS, SSO_MPC, SSO_CAND, TRACKLET, AMBIGUOUS)

#: fink_utils.xmatch.simbad.return_list_of_eg_host() (34 labels).
EG_HOSTS = frozenset(
    (
        "Unknown", "Candidate_SN*", "SN", "Transient", "Fail", "Fail 504", "SN*_Candidate",
        "galaxy", "Galaxy", "EmG", "Seyfert", "Seyfert_1", "Seyfert_2", "BlueCompG",
        "StarburstG", "LSB_G", "HII_G", "High_z_G", "GinPair", "GinGroup", "BClG", "GinCl",
        "PartofG", "Compact_Gr_G", "IG", "PairG", "GroupG", "ClG", "SuperClG", "Void", "LINER",
        "Possible_ClG", "Possible_SClG", "GravLens_Candidate",
    )
)  # fmt: skip

# Physical populations ("profiles") the alerts are drawn from.
P_BOGUS, P_NEW, P_TRANSIENT, P_VARSTAR, P_EXTRAGAL, P_SSO, P_TRACKLET, P_MULENS = range(8)
# Where the object identity comes from.
S_NEW, S_POOL, S_TRANSIENT = range(3)


@dataclass(frozen=True)
class _Label:
    """A planted class: expected finkclass (= cdsxmatch for SIMBAD labels)."""

    name: str
    weight: float  # fraction of alerts (Unknown takes the remainder)
    floor: bool  # at least one per block
    profile: int
    simbad: bool


# Fraction per Fink label: statistics coefficients of the portal (reference section 7.1:
# Unknown 0.546, Solar System MPC 0.110, SN candidate 0.0036, Early SN Ia 4.1e-5, KN 3.2e-6;
# sso_fink 3.9e-3, microlensing 4.8e-5). Tracklet and Ambiguous are not published: a few per mille.
_FINK_WEIGHTS = {
    SSO_MPC: (0.110, P_SSO),
    TRACKLET: (0.006, P_TRACKLET),
    SSO_CAND: (0.0039, P_SSO),
    SN: (0.0036, P_TRANSIENT),
    AMBIGUOUS: (0.0002, P_TRANSIENT),
    MULENS: (0.00005, P_MULENS),
    EARLY_SN: (0.00004, P_TRANSIENT),
    KN: (0.000003, P_TRANSIENT),
}

# SIMBAD otypes (old and new taxonomy as they appear in cdsxmatch), fraction of all alerts,
# floor, population. V* ~ 6.5 % (section 7.1); the rest follows the typical Fink night mix.
_SIMBAD = (
    # galactic variable stars
    ("V*", 0.066, True, P_VARSTAR), ("EB*", 0.035, True, P_VARSTAR),
    ("RRLyr", 0.030, True, P_VARSTAR), ("LPV*", 0.028, True, P_VARSTAR),
    ("Mira", 0.018, True, P_VARSTAR), ("Star", 0.015, True, P_VARSTAR),
    ("EB*_Candidate", 0.008, False, P_VARSTAR), ("LP*_Candidate", 0.008, False, P_VARSTAR),
    ("RRLyr_Candidate", 0.004, False, P_VARSTAR), ("YSO", 0.007, False, P_VARSTAR),
    ("YSO_Candidate", 0.007, True, P_VARSTAR), ("Orion_V*", 0.005, False, P_VARSTAR),
    ("TTau*", 0.003, False, P_VARSTAR), ("TTau*_Candidate", 0.002, False, P_VARSTAR),
    ("Ae*", 0.001, False, P_VARSTAR), ("CataclyV*", 0.005, True, P_VARSTAR),
    ("CV*_Candidate", 0.001, False, P_VARSTAR), ("delSctV*", 0.004, False, P_VARSTAR),
    ("Cepheid", 0.002, False, P_VARSTAR), ("BYDra", 0.003, False, P_VARSTAR),
    ("RSCVn", 0.002, False, P_VARSTAR), ("SB*", 0.002, False, P_VARSTAR),
    ("Em*", 0.003, False, P_VARSTAR), ("Be*", 0.002, False, P_VARSTAR),
    ("PulsV*", 0.003, False, P_VARSTAR), ("WD*", 0.002, False, P_VARSTAR),
    ("HotSubdwarf", 0.001, False, P_VARSTAR), ("Symbiotic*", 0.0005, False, P_VARSTAR),
    ("PM*", 0.002, False, P_VARSTAR), ("RGB*", 0.001, False, P_VARSTAR),
    ("AGB*", 0.001, False, P_VARSTAR), ("C*", 0.0005, False, P_VARSTAR),
    ("Eruptive*", 0.001, False, P_VARSTAR), ("Irregular_V*", 0.002, False, P_VARSTAR),
    ("EllipVar", 0.0005, False, P_VARSTAR), ("XB", 0.0003, False, P_VARSTAR),
    ("HMXB", 0.0002, False, P_VARSTAR), ("Nova", 0.0003, False, P_VARSTAR),
    ("Blue", 0.001, False, P_VARSTAR), ("IR", 0.001, False, P_VARSTAR),
    ("Radio", 0.0005, False, P_VARSTAR), ("X", 0.0005, False, P_VARSTAR),
    ("UV", 0.0005, False, P_VARSTAR),
    # extragalactic variables
    ("QSO", 0.012, True, P_EXTRAGAL), ("AGN", 0.006, True, P_EXTRAGAL),
    ("Seyfert_1", 0.003, True, P_EXTRAGAL), ("Seyfert_2", 0.001, False, P_EXTRAGAL),
    ("Seyfert", 0.0005, False, P_EXTRAGAL), ("Blazar", 0.002, True, P_EXTRAGAL),
    ("BLLac", 0.002, True, P_EXTRAGAL), ("Blazar_Candidate", 0.001, False, P_EXTRAGAL),
    ("BLLac_Candidate", 0.0005, False, P_EXTRAGAL), ("QSO_Candidate", 0.002, False, P_EXTRAGAL),
    ("AGN_Candidate", 0.001, False, P_EXTRAGAL), ("EmG", 0.001, False, P_EXTRAGAL),
    ("LINER", 0.0005, False, P_EXTRAGAL), ("HII_G", 0.0003, False, P_EXTRAGAL),
    ("GinPair", 0.0002, False, P_EXTRAGAL), ("LensedQ", 0.0002, True, P_EXTRAGAL),
    ("GravLens", 0.0001, False, P_EXTRAGAL),
    # catalogued transients
    ("SN", 0.0005, False, P_TRANSIENT), ("SN*_Candidate", 0.0003, False, P_TRANSIENT),
    ("Candidate_SN*", 0.0002, False, P_TRANSIENT),
)  # fmt: skip


def _build_labels() -> tuple[_Label, ...]:
    labels = [_Label(name, w, True, prof, False) for name, (w, prof) in _FINK_WEIGHTS.items()]
    labels += [_Label(name, w, floor, prof, True) for name, w, floor, prof in _SIMBAD]
    rest = 1.0 - sum(lab.weight for lab in labels)
    return (_Label(UNKNOWN, rest, True, P_BOGUS, False), *labels)


LABELS: tuple[_Label, ...] = _build_labels()
_LABEL_NAMES = np.array([lab.name for lab in LABELS], dtype=object)
_LABEL_INDEX = {lab.name: i for i, lab in enumerate(LABELS)}
_LABEL_W = np.array([lab.weight for lab in LABELS])
_LABEL_FLOOR = np.array([lab.floor for lab in LABELS])
_LABEL_PROFILE = np.array([lab.profile for lab in LABELS])
_LABEL_SIMBAD = np.array([lab.simbad for lab in LABELS])
K_UNKNOWN = _LABEL_INDEX[UNKNOWN]

# cdsxmatch vocabulary: the SIMBAD labels plus the non-counterpart values.
_CDS_VOCAB = [UNKNOWN, "Galaxy"] + [name for name, *_ in _SIMBAD]
_CDS_INDEX = {name: i for i, name in enumerate(_CDS_VOCAB)}
_CDS_IS_EG = np.array([name in EG_HOSTS for name in _CDS_VOCAB])
_CDS_OF_LABEL = np.array([_CDS_INDEX.get(lab.name, 0) if lab.simbad else 0 for lab in LABELS])

# Pool sizes per field and cdsxmatch label: small enough for known variables to come back
# several times a night and every night their field is observed.
_POOL_PER_FIELD = 260
# One more "label" after the cdsxmatch vocabulary: recurring artefacts (bogus at fixed places).
_POOL_ARTEFACT = len(_CDS_VOCAB)
_POOL_K = np.maximum(3, np.round(
    np.array([0.22] + [0.0] + [w for _, w, _, _ in _SIMBAD] + [0.02]) / 0.36 * _POOL_PER_FIELD
)).astype(np.int64)  # fmt: skip

# Light-curve / cross-match attributes of SIMBAD labels
_BLAZARS = {"Blazar", "BLLac", "Blazar_Candidate", "BLLac_Candidate"}
_YSOS = {"YSO", "YSO_Candidate", "TTau*", "TTau*_Candidate", "Orion_V*", "Ae*"}
_VSX_TYPES = {
    "RRLyr": ("RRAB", "RRC"), "RRLyr_Candidate": ("RRAB", "RRC"), "EB*": ("EA", "EW", "EB"),
    "EB*_Candidate": ("EA", "EW"), "LPV*": ("SR", "L", "LB"), "LP*_Candidate": ("SR", "L"),
    "Mira": ("M",), "CataclyV*": ("UG", "NL", "UGSU"), "CV*_Candidate": ("UG",),
    "YSO": ("YSO", "INST"), "YSO_Candidate": ("YSO",), "TTau*": ("INST", "CTTS"),
    "Orion_V*": ("INST", "IN"), "delSctV*": ("DSCT", "HADS"), "Cepheid": ("DCEP", "CW"),
    "BYDra": ("BY",), "RSCVn": ("RS",), "V*": ("MISC", "VAR", "SR", "EW", "ROT"),
    "Irregular_V*": ("L", "IS"), "PulsV*": ("MISC", "GDOR"), "Be*": ("GCAS", "BE"),
    "Eruptive*": ("UV", "FLARE"), "EllipVar": ("ELL",),
}  # fmt: skip
_GAIA_CLASS = {
    "RRLyr": "RR", "RRLyr_Candidate": "RR", "EB*": "ECL", "EB*_Candidate": "ECL", "LPV*": "LPV",
    "LP*_Candidate": "LPV", "Mira": "LPV", "QSO": "AGN", "AGN": "AGN", "Seyfert_1": "AGN",
    "Blazar": "AGN", "BLLac": "AGN", "QSO_Candidate": "AGN", "YSO": "YSO",
    "YSO_Candidate": "YSO", "TTau*": "YSO", "Orion_V*": "YSO", "Cepheid": "CEP",
    "delSctV*": "DSCT|GDOR|SXPHE", "CataclyV*": "CV",
}  # fmt: skip

# --------------------------------------------------------------------------------------------
# Hashing (per-object attributes that must not depend on the night)
# --------------------------------------------------------------------------------------------

_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrap-around arithmetic)."""
    x = np.atleast_1d(x)
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U(30))
        x = x * _U(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U(27))
        x = x * _U(0x94D049BB133111EB)
        return x ^ (x >> _U(31))


def _hash(*keys) -> np.ndarray:
    """Combine integer keys (scalars or arrays) into one uint64 hash per element."""
    h = None
    for k in keys:
        k = np.asarray(k).astype(np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = _mix64(k + _GOLDEN) if h is None else _mix64(h ^ _mix64(k + _GOLDEN))
    return np.atleast_1d(h)


def _hu(h: np.ndarray, j: int) -> np.ndarray:
    """j-th independent uniform [0, 1) derived from a hash."""
    with np.errstate(over="ignore"):
        x = _mix64(h + _U((j * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF))
    return (x >> _U(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _hi(h: np.ndarray, j: int) -> np.ndarray:
    """j-th independent 63-bit non-negative integer derived from a hash."""
    with np.errstate(over="ignore"):
        x = _mix64(h + _U((j * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF))
    return (x >> _U(1)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# String helpers: fixed-width byte matrices -> Arrow strings
# --------------------------------------------------------------------------------------------


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative integers, as an (n, width) uint8 matrix."""
    v = np.asarray(values, dtype=np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((v[:, None] // powers) % 10 + 48).astype(np.uint8)


def _const(text: str, n: int) -> np.ndarray:
    return np.broadcast_to(np.frombuffer(text.encode(), dtype=np.uint8), (n, len(text)))


def _chars(codes: np.ndarray) -> np.ndarray:
    """One column of ASCII characters from an array of byte codes."""
    return np.asarray(codes, dtype=np.uint8)[:, None]


def _fixed_strings(parts: list[np.ndarray]) -> pa.Array:
    """Concatenate (n, w_i) uint8 matrices into a UTF-8 string array of fixed width."""
    mat = np.ascontiguousarray(np.hstack(parts))
    n, width = mat.shape
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(mat)])


def _vocab(words: list[str], idx: np.ndarray) -> pa.Array:
    """Strings picked from a small vocabulary."""
    return pa.array(words, type=pa.string()).take(pa.array(np.asarray(idx, dtype=np.int32)))


def _with_nulls(arr: pa.Array, null_mask: np.ndarray) -> pa.Array:
    if not null_mask.any():
        return arr
    return pc.if_else(pa.array(null_mask), pa.scalar(None, arr.type), arr)


def _sexagesimal(ra: np.ndarray, dec: np.ndarray, ra_dec: int, dec_dec: int) -> list[np.ndarray]:
    """HHMMSS.s(+/-)DDMMSS style designation parts (decimals of the RA and Dec seconds)."""
    n = len(ra)
    ra_s = np.floor((ra % 360.0) / 15.0 * 3600.0 * 10**ra_dec).astype(np.int64)
    ra_s = np.minimum(ra_s, 24 * 3600 * 10**ra_dec - 1)
    hh, rem = np.divmod(ra_s, 3600 * 10**ra_dec)
    mm, ss = np.divmod(rem, 60 * 10**ra_dec)
    sign = np.where(dec < 0, ord("-"), ord("+"))
    de_s = np.floor(np.abs(dec) * 3600.0 * 10**dec_dec).astype(np.int64)
    dd, rem = np.divmod(de_s, 3600 * 10**dec_dec)
    dm, ds = np.divmod(rem, 60 * 10**dec_dec)
    out = [_digits(hh, 2), _digits(mm, 2), _digits(ss // 10**ra_dec, 2)]
    if ra_dec:
        out += [_const(".", n), _digits(ss % 10**ra_dec, ra_dec)]
    out += [_chars(sign), _digits(dd, 2), _digits(dm, 2), _digits(ds // 10**dec_dec, 2)]
    if dec_dec:
        out += [_const(".", n), _digits(ds % 10**dec_dec, dec_dec)]
    return out


def _utc_ymd(jd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTC calendar year, month, day of Julian dates (vectorised)."""
    days = np.floor(jd - JD_UNIX_EPOCH).astype(np.int64).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day


def _encode_object_ids(yy: np.ndarray, number: np.ndarray) -> pa.Array:
    """`ZTF<yy><7 lowercase letters>`: the letters are `number` in base 26."""
    n = len(number)
    letters = np.empty((n, 7), dtype=np.uint8)
    rest = np.asarray(number, dtype=np.int64).copy()
    for col in range(6, -1, -1):
        rest, r = np.divmod(rest, 26)
        letters[:, col] = r + ord("a")
    return _fixed_strings([_const("ZTF", n), _digits(yy % 100, 2), letters])


# --------------------------------------------------------------------------------------------
# Sky: a ZTF-like field grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    field_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    glat: np.ndarray
    cadence: np.ndarray  # relative visit rate of the field (prv_candidates length)
    density: np.ndarray  # relative alert density (higher in the Galactic plane)


def _galactic_latitude(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra_gp, dec_gp = np.radians(192.85948), np.radians(27.12825)
    r, d = np.radians(ra), np.radians(dec)
    sin_b = np.sin(d) * np.sin(dec_gp) + np.cos(d) * np.cos(dec_gp) * np.cos(r - ra_gp)
    return np.degrees(np.arcsin(np.clip(sin_b, -1, 1)))


@lru_cache(maxsize=1)
def _grid() -> _Grid:
    """Primary-grid-like tiling: dec bands of 7.3 deg from -31 deg, ~570 fields numbered from 245."""
    ras, decs = [], []
    for dec_c in np.arange(-27.6, 90.0, 7.3):
        n_ra = max(1, int(round(360.0 * math.cos(math.radians(dec_c)) / 7.5)))
        ras.append((np.arange(n_ra) + 0.5) * 360.0 / n_ra)
        decs.append(np.full(n_ra, min(dec_c, 87.0)))
    ra, dec = np.concatenate(ras), np.concatenate(decs)
    field_id = 245 + np.arange(len(ra))
    glat = _galactic_latitude(ra, dec)
    h = _hash(field_id, 7)
    cadence = np.exp(0.3 * np.sqrt(-2 * np.log(_hu(h, 1) + 1e-12)) * np.cos(2 * np.pi * _hu(h, 2)))
    density = (1.0 + 3.0 * np.exp(-np.abs(glat) / 12.0)) * np.exp(0.4 * (_hu(h, 3) - 0.5))
    return _Grid(field_id, ra, dec, glat, cadence, density)


def _field_position(f_idx: np.ndarray, u1: np.ndarray, u2: np.ndarray):
    """Position inside a field from two uniforms: ra, dec, rcid, xpos, ypos."""
    grid = _grid()
    dx = (u1 - 0.5) * 2 * _FIELD_HALF_W * 0.999
    dy = (u2 - 0.5) * 2 * _FIELD_HALF_H * 0.999
    dec = np.clip(grid.dec[f_idx] + dy, -89.9, 89.9)
    ra = (grid.ra[f_idx] + dx / np.cos(np.radians(dec))) % 360.0
    col_f = (dx + _FIELD_HALF_W) / _QUAD_W_DEG
    row_f = (dy + _FIELD_HALF_H) / _QUAD_H_DEG
    col = np.clip(col_f.astype(np.int64), 0, 7)
    row = np.clip(row_f.astype(np.int64), 0, 7)
    ccd = (row // 2) * 4 + col // 2 + 1
    quadrant = (row % 2) * 2 + (col % 2) + 1
    rcid = (ccd - 1) * 4 + quadrant - 1
    xpos = np.clip((col_f - col) * _QUAD_NX, 1.0, _QUAD_NX - 1.0)
    ypos = np.clip((row_f - row) * _QUAD_NY, 1.0, _QUAD_NY - 1.0)
    return ra, dec, rcid, xpos, ypos


# --------------------------------------------------------------------------------------------
# Night plan: exposures of one night
# --------------------------------------------------------------------------------------------


@dataclass
class _NightPlan:
    night: dt.date
    seed: int
    n_alerts: int
    n_blocks: int
    nid: int
    exp_jd: np.ndarray
    exp_field: np.ndarray  # index into the grid
    exp_fid: np.ndarray
    exp_weight: np.ndarray
    exp_lim: np.ndarray
    exp_fwhm: np.ndarray
    exp_zp: np.ndarray
    exp_clrcoeff: np.ndarray
    exp_nmatches: np.ndarray
    exp_programpi: np.ndarray  # 0 Kulkarni, 1 Prince, 2 TESS

    @property
    def n_exposures(self) -> int:
        return len(self.exp_jd)

    def block_exposures(self, b: int) -> tuple[int, int, int]:
        """(lo, hi, rank offset) of the exposures block `b` draws from.

        Blocks walk through the night in time order. With fewer blocks than exposures each
        block owns a disjoint range; otherwise consecutive blocks share one exposure and the
        rank offset keeps their candid suffixes apart.
        """
        E, NB = self.n_exposures, self.n_blocks
        if NB <= E:
            return (b * E) // NB, ((b + 1) * E) // NB, 0
        e = (b * E) // NB
        first_block = -((-e * NB) // E)  # smallest b' with b' * E // NB == e
        return e, e + 1, (b - first_block) * BLOCK_SIZE


def _seed_seq(seed: int, night: dt.date, *tags: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, night.toordinal(), *tags])


def _night_jd0(night: dt.date) -> float:
    """Julian date of 00:00 UTC of the night date."""
    return JD_UNIX_EPOCH + (night - dt.date(1970, 1, 1)).days


def _plan_night(night: dt.date, n_alerts: int, seed: int) -> _NightPlan:
    rng = np.random.Generator(np.random.PCG64(_seed_seq(seed, night, 0x91A7)))
    grid = _grid()
    jd0 = _night_jd0(night)
    doy = night.timetuple().tm_yday
    # Palomar night (UTC hours): long in winter, short in summer.
    summer = 0.5 * (1.0 + math.cos(2 * math.pi * (doy - 172) / 365.25))
    start_h, end_h = 2.2 + 1.8 * summer, 13.3 - 1.8 * summer
    n_exp = int((end_h - start_h) * 3600 / 40.0)
    t_h = start_h + (np.arange(n_exp) + rng.uniform(0.1, 0.9, n_exp)) * (end_h - start_h) / n_exp
    exp_jd = jd0 + t_h / 24.0
    # Local sidereal time -> fields near the meridian; fields are observed in pairs
    # (second filter ~30 min later), as the ZTF public survey does.
    gmst = 280.46061837 + 360.98564736629 * (exp_jd - 2451545.0)
    lst = (gmst + PALOMAR_LON_DEG) % 360.0
    n_exp_pair = 45
    exp_field = np.empty(n_exp, dtype=np.int64)
    exp_fid = np.empty(n_exp, dtype=np.int32)
    fids = np.where(rng.random(n_exp) < 0.35, 1, 2)
    fids[rng.random(n_exp) < 0.015] = 3
    visible_dec = grid.dec > -30.0
    # the public survey favours mid declinations (airmass) over the far north and south
    dec_weight = np.exp(-0.5 * ((grid.dec - 22.0) / 28.0) ** 2)
    for e in range(n_exp):
        exp_fid[e] = fids[e]
        if (e // n_exp_pair) % 2 == 1:  # revisit of the field observed 45 exposures earlier
            exp_field[e] = exp_field[e - n_exp_pair]
            continue
        ha = (grid.ra - lst[e] + 180.0) % 360.0 - 180.0
        ok = visible_dec & (np.abs(ha) < 40.0 / np.maximum(np.cos(np.radians(grid.dec)), 0.25))
        candidates = np.flatnonzero(ok)
        p = dec_weight[candidates]
        exp_field[e] = candidates[rng.choice(len(candidates), p=p / p.sum())]
    weight = grid.density[exp_field] * rng.lognormal(0.0, 0.35, n_exp)
    lim = np.where(rng.random(n_exp) < 0.10, rng.uniform(16.6, 19.3, n_exp),
                   rng.normal(20.3, 0.3, n_exp)) + np.where(exp_fid == 1, 0.1, 0.0)  # fmt: skip
    n_blocks = max(1, -(-n_alerts // BLOCK_SIZE))
    if n_blocks > n_exp * 980:
        raise ValueError(f"n_alerts={n_alerts} is too large for one night (max {n_exp * 980 * BLOCK_SIZE})")
    return _NightPlan(
        night=night,
        seed=seed,
        n_alerts=n_alerts,
        n_blocks=n_blocks,
        nid=int(math.floor(jd0 + 0.5 - JD_NID_EPOCH)),
        exp_jd=exp_jd,
        exp_field=exp_field,
        exp_fid=exp_fid,
        exp_weight=weight,
        exp_lim=np.clip(lim, 16.4, 21.2),
        exp_fwhm=np.clip(rng.lognormal(math.log(2.2), 0.38, n_exp), 1.05, 6.6),
        exp_zp=rng.normal(26.25, 0.12, n_exp) - np.where(rng.random(n_exp) < 0.03, 2.5, 0.0),
        exp_clrcoeff=np.where(exp_fid == 1, rng.normal(-0.06, 0.03, n_exp), rng.normal(0.09, 0.03, n_exp)),
        exp_nmatches=rng.integers(60, 2250, n_exp),
        exp_programpi=rng.choice(3, n_exp, p=[0.975, 0.02, 0.005]),
    )


# --------------------------------------------------------------------------------------------
# Class assignment
# --------------------------------------------------------------------------------------------


def _assign_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """Label index per alert: expected counts (randomised rounding), floors of 1, shuffled.

    Unknown, the largest class, absorbs the rounding and the floors.
    """
    expected = _LABEL_W * n
    counts = np.floor(expected).astype(np.int64)
    counts += rng.random(len(counts)) < expected - counts
    if n >= 4 * int(_LABEL_FLOOR.sum()):
        counts = np.where(_LABEL_FLOOR, np.maximum(counts, 1), counts)
    counts[K_UNKNOWN] = 0
    counts[K_UNKNOWN] = n - counts.sum()
    if counts[K_UNKNOWN] < 0:  # very small blocks: plain draws
        counts = rng.multinomial(n, _LABEL_W)
    labels = np.repeat(np.arange(len(LABELS)), counts)
    return rng.permutation(labels)


# --------------------------------------------------------------------------------------------
# FITS cutouts
# --------------------------------------------------------------------------------------------

_STAMP_N = 63
_FITS_HEADER = b"".join(
    card.ljust(80).encode()
    for card in (
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {_STAMP_N:20d}",
        f"NAXIS2  = {_STAMP_N:20d}",
        "BUNIT   = 'DN      '",
        "END",
    )
).ljust(2880, b" ")
_FITS_DATA_BYTES = _STAMP_N * _STAMP_N * 4
_FITS_PAD = b"\x00" * (-_FITS_DATA_BYTES % 2880)
_POOL_STAMPS = 96  # image triples per night
_POOL_POSITIVE = 64  # triples with a positive difference
_STAMP_CHUNK = 256  # alerts per compression task
_executor: ThreadPoolExecutor | None = None


def _thread_pool() -> ThreadPoolExecutor:
    # zlib releases the GIL: two threads compress twice as fast on the 2-core target machine.
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
    return _executor


@lru_cache(maxsize=4)
def _stamp_pool(seed: int, ordinal: int) -> np.ndarray:
    """(3, P, 63*63) big-endian float32 (science, template, difference) triples, as uint32.

    Science = sky + host galaxy + field stars + the candidate's PSF at the centre; the
    template (a co-add) has the same sky, host and stars, less noise and no candidate; the
    difference has the candidate's PSF (positive or negative) over subtraction noise.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, ordinal, 0xC07])))
    P, N = _POOL_STAMPS, _STAMP_N
    yy, xx = np.mgrid[0:N, 0:N]

    def psf(cx, cy, sigma):
        return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))

    sigma = rng.uniform(0.8, 1.6, (P, 1, 1))
    candidate = psf(rng.uniform(30, 32, (P, 1, 1)), rng.uniform(30, 32, (P, 1, 1)), sigma)
    host_r = rng.uniform(2.0, 6.0, (P, 1, 1))
    hx, hy = rng.uniform(24, 38, (2, P, 1, 1))
    has_host = rng.random((P, 1, 1)) < 0.6
    host = has_host * np.exp(-np.sqrt((xx - hx) ** 2 + (yy - hy) ** 2) / host_r) * rng.uniform(20, 400, (P, 1, 1))
    stars = np.zeros((P, N, N))
    for _ in range(5):  # up to 5 field stars
        present = rng.random((P, 1, 1)) < 0.5
        amp_star = rng.lognormal(np.log(150), 1.0, (P, 1, 1))
        stars += present * amp_star * psf(rng.uniform(0, N, (P, 1, 1)), rng.uniform(0, N, (P, 1, 1)), sigma)
    sky = rng.uniform(120, 420, (P, 1, 1))
    amp = rng.lognormal(np.log(300), 0.9, (P, 1, 1))
    # noise levels set so that the gzipped sizes match real stamps (sci ~13.1 kB, ref ~12.4 kB,
    # diff ~14.9 kB)
    # the first _POOL_POSITIVE triples brighten (isdiffpos 't'), the others fade ('f')
    positive = (np.arange(P) < _POOL_POSITIVE)[:, None, None]
    science = sky + host + stars + positive * amp * candidate
    science += rng.normal(0, 1, (P, N, N)) * np.sqrt(sky) * rng.uniform(0.35, 0.9, (P, 1, 1))
    template = sky + host + stars + ~positive * amp * candidate
    template += rng.normal(0, 1, (P, N, N)) * np.sqrt(sky) * rng.uniform(0.07, 0.25, (P, 1, 1))
    sign = np.where(positive, 1.0, -1.0)
    difference = sign * amp * candidate + rng.normal(0, 1, (P, N, N)) * rng.uniform(4, 12, (P, 1, 1))
    stack = np.stack([science, template, difference])
    # a few stamps at the edge of a CCD: part of the image is empty, the file smaller
    edge = rng.random(P) < 0.05
    width = rng.integers(4, 24, P)
    for i in np.flatnonzero(edge):
        stack[:, i, :, : width[i]] = 0.0
    stack = stack.astype(">f4").reshape(3, P, N * N)
    return stack.view(">u4")


def _gzip_stamp(raw: bytes, mtime: int) -> bytes:
    co = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    body = co.compress(raw) + co.flush()
    header = b"\x1f\x8b\x08\x00" + int(mtime).to_bytes(4, "little") + b"\x04\x03"
    trailer = zlib.crc32(raw).to_bytes(4, "little") + len(raw).to_bytes(4, "little")
    return header + body + trailer


def _compress_chunk(pixels: np.ndarray, mtimes: np.ndarray) -> list[list[bytes]]:
    """pixels: (3, m, 63*63) big-endian uint32 -> per kind, m gzipped FITS files."""
    out = []
    for kind in range(3):
        rows = pixels[kind]
        out.append([_gzip_stamp(_FITS_HEADER + rows[i].tobytes() + _FITS_PAD, mtimes[i]) for i in range(len(rows))])
    return out


def _binary_array(chunks: list[bytes]) -> pa.Array:
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
    offsets = np.zeros(len(chunks) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), len(chunks), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(chunks))])


def _cutout_arrays(plan: _NightPlan, b: int, candid: np.ndarray, pid: np.ndarray, jd: np.ndarray,
                   positive: np.ndarray) -> list[pa.Array]:
    """The three cutout structs of a block: pooled noisy images made unique per alert."""
    n = len(candid)
    rng = np.random.Generator(np.random.PCG64(_seed_seq(plan.seed, plan.night, b, 0xC0C0)))
    pool = _stamp_pool(plan.seed, plan.night.toordinal())
    # one consistent triple per alert, whose difference has the sign of isdiffpos
    pick = np.where(positive, rng.integers(0, _POOL_POSITIVE, n), rng.integers(_POOL_POSITIVE, _POOL_STAMPS, n))
    mtimes = np.floor((jd - JD_UNIX_EPOCH) * 86400.0 + rng.uniform(60, 600, n)).astype(np.int64)
    tasks = []
    for start in range(0, n, _STAMP_CHUNK):
        stop = min(n, start + _STAMP_CHUNK)
        m = stop - start
        # flip the 12 lowest mantissa bits (relative change < 1e-3): every stamp is unique
        # while its size stays set by the image noise, as for a real one
        noise = rng.integers(0, 1 << 12, (3, m, _STAMP_N * _STAMP_N), dtype=np.uint32).astype(">u4")
        base = pool[:, pick[start:stop]]
        # numpy computes in native byte order: store the result back as big-endian (FITS)
        pixels = (base ^ (noise * (base != 0))).astype(">u4")  # empty (zero) pixels stay empty
        tasks.append(_thread_pool().submit(_compress_chunk, pixels, mtimes[start:stop]))
    stamps: list[list[bytes]] = [[], [], []]
    for task in tasks:
        for kind, chunk in enumerate(task.result()):
            stamps[kind].extend(chunk)
    scandid = pc.cast(pa.array(candid), pa.string())
    spid = pc.cast(pa.array(pid), pa.string())
    names = (
        pc.binary_join_element_wise("candid", scandid, "_pid", spid, "_targ_sci.fits.gz", ""),
        pc.binary_join_element_wise("candid", scandid, "_ref.fits.gz", ""),
        pc.binary_join_element_wise("candid", scandid, "_pid", spid, "_targ_scimref.fits.gz", ""),
    )
    return [
        pa.StructArray.from_arrays([names[k], _binary_array(stamps[k])], fields=list(CUTOUT))
        for k in range(3)
    ]


def _empty_cutouts(n: int) -> list[pa.Array]:
    nulls = [pa.nulls(n, pa.string()), pa.nulls(n, pa.binary())]
    return [pa.StructArray.from_arrays(nulls, fields=list(CUTOUT)) for _ in range(3)]


# --------------------------------------------------------------------------------------------
# Block generation
# --------------------------------------------------------------------------------------------


_NUMPY_TYPES = {
    pa.float64(): np.float64, pa.float32(): np.float32, pa.int64(): np.int64, pa.int32(): np.int32,
    pa.bool_(): np.bool_,
}


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _arrow_struct(struct_type: pa.StructType, values: dict[str, object], n: int,
                  masks: dict[str, np.ndarray] | None = None, struct_mask: np.ndarray | None = None) -> pa.StructArray:
    """StructArray from a name -> numpy array / Arrow array dict (None: all null)."""
    masks = masks or {}
    arrays = []
    for fld in struct_type:
        if fld.name not in values:
            raise KeyError(f"no values for field {fld.name!r}")
        v = values[fld.name]
        if v is None:
            arrays.append(pa.nulls(n, fld.type))
            continue
        if isinstance(v, (pa.Array, pa.ChunkedArray)):
            arr = v if v.type == fld.type else v.cast(fld.type)
            mask = masks.get(fld.name)
            arrays.append(_with_nulls(arr, mask) if mask is not None else arr)
            continue
        values_np = np.asarray(v).astype(_NUMPY_TYPES[fld.type], copy=False)
        mask = masks.get(fld.name)
        arrays.append(pa.array(values_np, type=fld.type, mask=mask))
    mask_arr = pa.array(struct_mask) if struct_mask is not None and struct_mask.any() else None
    return pa.StructArray.from_arrays(arrays, fields=list(struct_type), mask=mask_arr)


def _sorted_group_stats(key: np.ndarray, x: np.ndarray, n_keys: int):
    """Sort points by (key, x): order, group starts and counts per key."""
    order = np.lexsort((x, key))
    counts = np.bincount(key, minlength=n_keys)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return order, starts, counts


def _generate_block(plan: _NightPlan, b: int, with_cutouts: bool) -> pa.RecordBatch:
    n = min(BLOCK_SIZE, plan.n_alerts - b * BLOCK_SIZE)
    rng = np.random.Generator(np.random.PCG64(_seed_seq(plan.seed, plan.night, b, 0xB10C)))
    grid = _grid()
    seed = plan.seed

    # ---- classes and populations ----------------------------------------------------------
    label = _assign_labels(n, rng)
    profile = _LABEL_PROFILE[label].copy()
    is_unknown = label == K_UNKNOWN
    sub = rng.random(n)
    profile[is_unknown] = np.select(
        [sub < 0.38, sub < 0.60, sub < 0.82], [P_BOGUS, P_NEW, P_TRANSIENT], P_VARSTAR
    )[is_unknown]
    is_ambiguous = label == _LABEL_INDEX[AMBIGUOUS]
    amb_sso = is_ambiguous & (rng.random(n) < 0.4)
    profile[amb_sso] = P_SSO
    source = np.select(
        [np.isin(profile, (P_VARSTAR, P_EXTRAGAL, P_MULENS)), profile == P_TRANSIENT],
        [S_POOL, S_TRANSIENT], S_NEW,
    )  # fmt: skip
    source[(profile == P_BOGUS) & (rng.random(n) < 0.1)] = S_POOL  # recurring artefacts
    cds = np.where(_LABEL_SIMBAD[label], _CDS_OF_LABEL[label], 0)

    # ---- exposures --------------------------------------------------------------------------
    lo, hi, rank_offset = plan.block_exposures(b)
    w = plan.exp_weight[lo:hi]
    e = lo + rng.choice(hi - lo, size=n, p=w / w.sum())
    is_trk = label == _LABEL_INDEX[TRACKLET]
    trk_idx = np.flatnonzero(is_trk)
    trk_group = np.full(n, -1, dtype=np.int64)
    if len(trk_idx):
        sizes = rng.integers(5, 10, len(trk_idx))
        group_of = np.repeat(np.arange(len(sizes)), sizes)[: len(trk_idx)]
        if group_of[-1] > 0 and (group_of == group_of[-1]).sum() < 5:  # no tracklet under 5 points
            group_of[group_of == group_of[-1]] -= 1
        trk_group[trk_idx] = group_of
        group_exp = lo + rng.choice(hi - lo, size=group_of.max() + 1, p=w / w.sum())
        e[trk_idx] = group_exp[group_of]
    f_idx = plan.exp_field[e]
    jd = plan.exp_jd[e]
    fid = plan.exp_fid[e].astype(np.int64)

    # ---- object identity ------------------------------------------------------------------
    pool_label = np.where(np.isin(profile, (P_VARSTAR, P_EXTRAGAL)), cds, 0)  # Unknown pool
    pool_label = np.where(profile == P_BOGUS, _POOL_ARTEFACT, pool_label)
    # A few pool objects per (night, field, label) are "active": they alert at both visits of
    # their field, while over many nights every pool object comes back.
    n_active = np.where(pool_label == 0, 6, 3)
    slot = (rng.random(n) * n_active).astype(np.int64)
    h_active = _hash(seed, plan.night.toordinal(), grid.field_id[f_idx], pool_label, slot)
    pool_k = _hi(h_active, 1) % _POOL_K[pool_label]
    age_hi = np.select(
        [label == _LABEL_INDEX[KN], label == _LABEL_INDEX[EARLY_SN],
         np.isin(label, (_LABEL_INDEX[SN], _LABEL_INDEX[AMBIGUOUS]))],
        [3.9, 12.0, 80.0], 300.0,  # days: kilonovae < 5 and SN candidates <= 90 (class rules)
    )  # fmt: skip
    age_lo = np.where(label == _LABEL_INDEX[KN], 0.3, 1.0)
    age = np.where(age_hi > 100, np.exp(rng.uniform(np.log(age_lo), np.log(age_hi))), rng.uniform(age_lo, age_hi))
    birth_day = np.floor(jd - age - 0.5).astype(np.int64)
    # transients are born every few days per field (not for kilonovae, which must stay < 5
    # days old), so one transient is picked by several alerts and on several nights
    period = np.where(label == _LABEL_INDEX[KN], 1, 5)
    phase = _hi(_hash(seed, 5, grid.field_id[f_idx]), 1) % 5
    birth_day = birth_day - (birth_day - phase) % period
    # Keys; duplicates of one object within an exposure become new objects.
    obj_key = np.where(
        source == S_POOL, _hash(seed, 1, grid.field_id[f_idx], pool_label, pool_k),
        np.where(source == S_TRANSIENT, _hash(seed, 2, grid.field_id[f_idx], birth_day, cds), _U(0)),
    )  # fmt: skip
    known = source != S_NEW
    # the same object twice in one exposure is impossible: later ones become fresh objects
    pair = _hash(obj_key.view(np.int64), e)
    _, first = np.unique(pair, return_index=True)
    dup = np.ones(n, dtype=bool)
    dup[first] = False
    fresh = dup & known
    stable = known & ~fresh  # identity (position, first detection, objectId) from the hash
    global_index = b * BLOCK_SIZE + np.arange(n)
    h_obj = np.where(stable, obj_key, _hash(seed, 3, plan.night.toordinal(), global_index))

    def uo(j: int) -> np.ndarray:
        """Uniforms for object properties: fixed per object when it has a stable identity."""
        return np.where(stable, _hu(h_obj, j), rng.random(n))

    # host galaxies catalogued in SIMBAD as "Galaxy" (not a SIMBAD class for Fink)
    galaxy_host = np.isin(profile, (P_TRANSIENT, P_NEW)) & ~_LABEL_SIMBAD[label] & (uo(20) < 0.1)
    cds = np.where(galaxy_host, _CDS_INDEX["Galaxy"], cds)

    # ---- positions ------------------------------------------------------------------------
    u1 = np.where(stable, _hu(h_obj, 1), rng.random(n))
    u2 = np.where(stable, _hu(h_obj, 2), rng.random(n))
    if len(trk_idx):  # tracklet members on a straight line across the field
        ng = trk_group.max() + 1
        anchor = rng.uniform(0.15, 0.85, (2, ng))
        angle = rng.uniform(0, 2 * np.pi, ng)
        step = rng.uniform(0.002, 0.02, ng)
        member = np.zeros(n, dtype=np.int64)
        order = np.argsort(trk_group[trk_idx], kind="stable")
        gsorted = trk_group[trk_idx][order]
        firsts = np.searchsorted(gsorted, gsorted)
        member[trk_idx[order]] = np.arange(len(order)) - firsts
        g = trk_group[trk_idx]
        u1[trk_idx] = np.clip(anchor[0, g] + np.cos(angle[g]) * step[g] * member[trk_idx], 0.001, 0.999)
        u2[trk_idx] = np.clip(anchor[1, g] + np.sin(angle[g]) * step[g] * member[trk_idx], 0.001, 0.999)
    ra0, dec0, rcid, xpos, ypos = _field_position(f_idx, u1, u2)  # the object's position
    # astrometric scatter between detections of one object (~0.07 arcsec)
    dec = dec0 + rng.normal(0, 0.07, n) / 3600.0
    ra = (ra0 + rng.normal(0, 0.07, n) / 3600.0 / np.cos(np.radians(dec))) % 360.0

    # ---- identifiers -----------------------------------------------------------------------
    frac5 = np.floor(((jd - 0.5) % 1.0) * 1e5).astype(np.int64)
    pid = plan.nid * 10**9 + frac5 * 10**4 + rcid * 100 + 15
    # tblid: increasing index in the quadrant's candidate table (most candidates are not
    # alerts, hence the random gaps); unique per (exposure, rcid), so candid is unique.
    qkey = e * 64 + rcid
    order = np.argsort(qkey, kind="stable")
    sorted_key = qkey[order]
    first = np.searchsorted(sorted_key, sorted_key)
    gaps = rng.geometric(1.0 / 9.0, n) if rank_offset == 0 else np.ones(n, dtype=np.int64)
    csum = np.cumsum(gaps)
    tblid = np.empty(n, dtype=np.int64)
    tblid[order] = csum - np.concatenate(([0], csum))[first] - 1
    suffix = 10000 + rank_offset + tblid
    candid = pid * 10**6 + suffix

    # objectId: pool objects first detected 2018-2019 (odd numbers), transients by birth day
    # and new objects by night and index (even numbers): never two objects with one id.
    first_det = JD_SURVEY_START + _hu(h_obj, 3) * (JD_POOL_FIRSTDET_END - JD_SURVEY_START)
    birth_jd = birth_day + 0.5 + 0.08 + 0.47 * _hu(h_obj, 4)
    year_first, _, _ = _utc_ymd(first_det)
    year_birth, _, _ = _utc_ymd(birth_jd)
    year_night = np.full(n, plan.night.year)
    doy_birth = (np.floor(birth_jd - 0.5).astype(np.int64) - 2440588 + 719163)  # days since 0001-01-01
    n_fields = len(grid.field_id)
    pool_number = ((pool_k * (len(_CDS_VOCAB) + 1) + pool_label) * n_fields + f_idx) * 2 + 1
    # transients: one per (field, birth day) and per catalogued class (SN, ... or none)
    trans_number = ((cds * 366 + doy_birth % 366) * n_fields + f_idx) * 4  # multiple of 4
    new_number = ((global_index * 366 + plan.night.timetuple().tm_yday) * 2 + 1) * 2  # 2 mod 4
    is_pool, is_trans = stable & (source == S_POOL), stable & (source == S_TRANSIENT)
    yy = np.select([is_pool, is_trans], [year_first, year_birth], year_night)
    number = np.select([is_pool, is_trans], [pool_number, trans_number], new_number)
    object_id = _encode_object_ids(yy, number % (26**7))

    # ---- photometry of the detection ----------------------------------------------------------
    lim = plan.exp_lim[e] + rng.normal(0, 0.06, n)
    magfromlim_target = rng.gamma(1.7, 0.8, n)
    bright = np.isin(profile, (P_VARSTAR, P_MULENS)) & (rng.random(n) < 0.12)
    magfromlim_target[bright] += rng.uniform(0.5, 3.0, bright.sum())
    magap = lim - magfromlim_target + rng.normal(0, 0.02, n)
    magpsf = magap - rng.normal(0.06, 0.12, n)
    magpsf = np.clip(magpsf, 12.5, None)
    # S/N against the distance to the limiting magnitude, fitted on the real packets
    snr = 5.5 * 10 ** (0.16 * (lim - magpsf)) * rng.uniform(0.85, 1.15, n)
    sigmapsf = np.clip(1.0857 / snr, 0.005, 0.2165)
    isdiffpos_t = rng.random(n) < np.select(
        [profile == P_VARSTAR, profile == P_BOGUS, profile == P_EXTRAGAL, profile == P_MULENS],
        [0.5, 0.45, 0.6, 1.0], 0.97,
    )  # fmt: skip

    # reference source: stars sit on it, transients near a host, asteroids far from anything
    starlike = np.isin(profile, (P_VARSTAR, P_MULENS))
    nuclear = profile == P_EXTRAGAL
    bogus_star = (profile == P_BOGUS) & (uo(21) < 0.45)
    host_dist = np.where(uo(22) < 0.7, 2.0 * np.exp(0.8 * _gauss(uo(23), uo(24))), 4.0 + 16.0 * uo(25))
    distnr_obj = np.select(
        [starlike | nuclear, bogus_star, np.isin(profile, (P_SSO, P_TRACKLET))],
        [0.02 + 0.35 * uo(5), 0.05 + 2.45 * uo(5), rng.uniform(3.0, 23.0, n)], host_dist,
    )  # fmt: skip
    distnr = distnr_obj * rng.uniform(0.8, 1.2, n)  # measurement scatter
    # reference-image source: fixed per object (a star for variables, a host for transients)
    magnr = np.select(
        [starlike & stable, starlike, nuclear, bogus_star],
        [13.5 + 8.0 * uo(6), magpsf - rng.uniform(0.1, 2.5, n), 16.0 + 4.5 * uo(6), 11.5 + 5.0 * uo(6)],
        17.5 + 5.7 * uo(6),
    )  # fmt: skip
    magnr = np.clip(magnr, 11.0, 23.3)
    sigmagnr = 0.01 + 0.33 * np.clip((magnr - 16.0) / 7.0, 0, 1) ** 1.6 * (0.7 + 0.4 * uo(26))
    theta = 2 * np.pi * uo(27)
    decnr = dec0 + distnr_obj * np.sin(theta) / 3600.0
    ranr = (ra0 + distnr_obj * np.cos(theta) / 3600.0 / np.cos(np.radians(dec0))) % 360.0

    # real/bogus and morphology
    real_drb = 1.0 - 10 ** (-rng.uniform(0.7, 6.5, n))
    marginal = rng.random(n) < 0.08
    drb = np.where(marginal, rng.uniform(0.5, 0.95, n), real_drb)
    drb = np.where(profile == P_BOGUS, 0.5 * 10 ** (-rng.uniform(0.0, 3.5, n)), drb)
    drb = np.where(profile == P_TRACKLET, rng.uniform(0.2, 1.0, n), drb)
    rb = np.where(profile == P_BOGUS, rng.uniform(0.18, 0.62, n), 0.4 + 0.58 * rng.beta(2.2, 1.3, n))
    classtar = np.select(
        [starlike | np.isin(profile, (P_SSO,)), profile == P_TRACKLET],
        [1.0 - rng.exponential(0.015, n), 1.0 - rng.exponential(0.15, n)],
        np.where(rng.random(n) < 0.88, 1.0 - rng.exponential(0.04, n), rng.uniform(0.02, 0.95, n)),
    )  # fmt: skip
    classtar = np.clip(classtar, 0.0, 1.0)
    fwhm = plan.exp_fwhm[e] * rng.uniform(0.97, 1.03, n)
    elong = 1.0 + rng.exponential(0.12, n)
    elong[profile == P_TRACKLET] += rng.uniform(0.5, 3.0, (profile == P_TRACKLET).sum())

    # solar system
    sso_mpc = label == _LABEL_INDEX[SSO_MPC]
    ssdistnr = np.where(sso_mpc, np.round(rng.exponential(0.5, n)), -999.0)
    ssmagnr = np.where(sso_mpc, np.round(magpsf + rng.normal(0.2, 0.4, n), 1), -999.0)
    ssnum = np.floor(np.exp(rng.uniform(0, np.log(700000), n))).astype(np.int64) + 1
    # MPC number of the asteroid; ZTF writes the string "null" when there is none
    ssnamenr = pc.if_else(pa.array(sso_mpc), pc.cast(pa.array(ssnum), pa.string()), pa.scalar("null"))

    # ---- history: prv_candidates ----------------------------------------------------------------
    cadence = grid.cadence[f_idx]
    mean_len = np.where(profile == P_SSO, 14.0, 20.0 * cadence)
    length = rng.negative_binomial(2.0, 2.0 / (2.0 + mean_len))
    length = np.minimum(length, 120)
    is_early = label == _LABEL_INDEX[EARLY_SN]
    length[is_early] = np.minimum(length[is_early], 17)
    obj_age = np.select([source == S_POOL, source == S_TRANSIENT], [jd - first_det, jd - birth_jd], 0.0)
    obj_age = np.where(source == S_TRANSIENT, np.clip(obj_age, 0.02, None), obj_age)
    young = (source == S_TRANSIENT) & (obj_age < 30.0)
    length = np.where(young, np.maximum(length, 1), length)
    p_det = np.select(
        [profile == P_VARSTAR, profile == P_EXTRAGAL, profile == P_TRANSIENT, profile == P_MULENS, profile == P_BOGUS],
        [0.3 + 0.65 * _hu(h_obj, 7), 0.2 + 0.6 * _hu(h_obj, 7), 0.65, 0.6, np.where(stable, 0.2, 0.03)],
        0.0,
    )  # fmt: skip
    # a few catalogued YSOs fade or brighten steadily (what yso_spicy_candidates looks for)
    spicy_trend = np.isin(label, _SPICY_TREND_LABELS) & stable & (_hu(h_obj, 15) < 0.15)
    p_det = np.where(spicy_trend, 0.95, p_det)

    T = int(length.sum())
    seg = np.repeat(np.arange(n), length)
    starts = np.concatenate(([0], np.cumsum(length)[:-1]))
    pos = np.arange(T) - starts[seg]
    # young transients: the first post-birth entry is the birth detection, earlier ones are
    # upper limits (before birth), later ones detections with probability p_det
    n_post = np.where(young, np.maximum(1, rng.binomial(length, np.clip(obj_age / 30.0, 0, 1))), length)
    post = pos < n_post[seg]
    off_hi = np.where(young, obj_age, 30.0)[seg]
    offset = np.where(post, rng.uniform(0.0025, 1.0, T) * off_hi, off_hi + rng.random(T) * (30.0 - off_hi))
    pinned = young[seg] & (pos == 0)
    offset = np.where(pinned, off_hi, offset)
    det = post & (rng.random(T) < p_det[seg])
    det |= pinned
    jd_k = jd[seg] - offset
    fid_k = np.where(rng.random(T) < 0.45, 1, 2)
    lim_k = np.clip(np.where(rng.random(T) < 0.1, rng.uniform(16.8, 19.3, T), rng.normal(20.25, 0.35, T)), 16.4, 21.2)
    amp_obj = np.where(stable, 0.05 + 0.6 * _hu(h_obj, 8), 0.2)
    trend = np.where(profile == P_TRANSIENT, rng.uniform(-0.02, 0.12, n), 0.0)
    trend = np.where(spicy_trend, np.where(_hu(h_obj, 9) < 0.5, -1, 1) * (0.03 + 0.05 * _hu(h_obj, 10)), trend)
    amp_obj = np.where(spicy_trend, 0.03, amp_obj)
    mag_k = magpsf[seg] + trend[seg] * offset + rng.normal(0, 1, T) * amp_obj[seg]
    mag_k = np.where(pinned, np.minimum(mag_k, lim_k - 0.05), mag_k)
    det &= mag_k < lim_k + 0.05
    det |= pinned
    # sort every history by time
    order = np.lexsort((jd_k, seg))
    seg, offset, det, jd_k, fid_k, lim_k, mag_k = (a[order] for a in (seg, offset, det, jd_k, fid_k, lim_k, mag_k))
    snr_k = 5.5 * 10 ** (0.16 * (lim_k - mag_k)) * rng.uniform(0.85, 1.15, T)
    sig_k = np.clip(1.0857 / snr_k, 0.005, 0.2165)

    n_det_prv = np.bincount(seg, weights=det, minlength=n).astype(np.int64)
    # first detection ever: pool objects years ago, transients at birth, new objects in
    # the 30-day window (or now)
    first_prv_det = np.full(n, np.inf)
    np.minimum.at(first_prv_det, seg[det], jd_k[det])
    jdstarthist = np.select(
        [source == S_POOL, (source == S_TRANSIENT) & ~young],
        [np.minimum(first_det, jd - 30.5), birth_jd],
        np.minimum(first_prv_det, jd),
    )  # fmt: skip
    old = jd - jdstarthist > 30.0
    # detections per day before the 30-day window: broad spread between objects
    rate_obj = p_det * cadence * 0.07 * np.exp(4.4 * (_hu(h_obj, 13) - 0.5))
    extra = np.where(old, rng.poisson(rate_obj * np.clip(jd - jdstarthist - 30.0, 0, None)) + 1, 0)
    ndethist = 1 + n_det_prv + extra
    ncovhist = ndethist + rng.poisson(0.6 * cadence * np.clip(jd - JD_SURVEY_START, 1, None))
    nalerthist = 1 + n_det_prv

    # ---- Fink cross-matches ------------------------------------------------------------------------
    u_gaia = uo(28)
    gaia = (starlike & (u_gaia < 0.92)) | (bogus_star & (u_gaia < 0.5)) | (nuclear & (u_gaia < 0.35)) | (
        (profile == P_TRANSIENT) & (u_gaia < 0.05)
    )
    # Gaia DR3 source_id (19 digits); Fink writes the string "nan" (and NaN parallaxes) when
    # there is no Gaia source within 1 arcsec
    gaia_id = np.where(stable, _hi(h_obj, 11), rng.integers(0, 2**62, n)) % (6_900_000_000_000_000_000 - 10**15)
    dr3 = pc.binary_join_element_wise("Gaia DR3 ", pc.cast(pa.array(gaia_id + 10**15), pa.string()), "")
    dr3 = pc.if_else(pa.array(gaia), dr3, pa.scalar("nan"))
    z_plx = _gauss(uo(29), uo(30))
    plx = np.where(gaia, np.where(nuclear, 0.2 * z_plx, 0.4 * np.exp(0.9 * z_plx) - 0.15), np.nan)
    e_plx = np.where(gaia, 0.06 * np.exp(0.9 * _gauss(uo(31), uo(32))), np.nan)
    label_name = _LABEL_NAMES[label]
    var_flag = gaia & np.isin(label_name, list(_GAIA_CLASS)) & (uo(33) < 0.5)
    gaia_class_words = ["nan", "Unknown"] + sorted(set(_GAIA_CLASS.values()))
    gc_idx = np.where(gaia, 1, 0)
    for name, cls in _GAIA_CLASS.items():
        gc_idx = np.where(var_flag & (label_name == name), gaia_class_words.index(cls), gc_idx)
    vsx_words = ["nan", "Unknown"] + sorted({t for types in _VSX_TYPES.values() for t in types})
    u_vsx, u_gcvs, pick = uo(34), uo(35), uo(36)
    vsx_idx = np.where(gaia & (u_vsx < 0.3), 1, 0)
    gcvs_idx = np.zeros(n, dtype=np.int64)
    for name, types in _VSX_TYPES.items():
        hit = (label_name == name) & (u_vsx < 0.7)
        t_idx = np.array([vsx_words.index(t) for t in types])[(pick * len(types)).astype(int)]
        vsx_idx = np.where(hit, t_idx, vsx_idx)
        gcvs_idx = np.where(hit & (magnr < 15.5) & (u_gcvs < 0.5), t_idx, gcvs_idx)
    gcvs_words = ["Unknown"] + vsx_words[2:]
    gcvs_idx = np.where(gcvs_idx > 0, gcvs_idx - 1, 0)
    is_yso = np.isin(label_name, list(_YSOS))
    spicy = is_yso & ((uo(37) < 0.7) | spicy_trend)
    spicy_id = np.where(spicy, np.where(stable, _hi(h_obj, 12) % 117446 + 1, rng.integers(1, 117447, n)), -1)
    spicy_words = ["Unknown", "ClassI", "FS", "ClassII", "ClassIII"]
    spicy_idx = np.where(spicy, 1 + np.searchsorted([0.15, 0.3, 0.85], uo(38)), 0)  # ClassI FS ClassII ClassIII
    is_blazar = np.isin(label_name, list(_BLAZARS))
    x4lac_hit = is_blazar & (uo(39) < 0.6)
    x3hsp_hit = is_blazar & (uo(40) < 0.45)
    # 4LAC / 3HSP designations from the position (4FGL JHHMM.m+DDMM, 3HSPJHHMMSS.s+DDMMSS)
    ra_h = np.floor((ra0 % 360) / 15 * 600).astype(np.int64)  # tenths of minutes
    dec_m = np.floor(np.abs(dec0) * 60).astype(np.int64)
    x4lac = _fixed_strings([
        _const("4FGL J", n), _digits(ra_h // 600, 2), _digits((ra_h // 10) % 60, 2), _const(".", n),
        _digits(ra_h % 10, 1), _chars(np.where(dec0 < 0, ord("-"), ord("+"))), _digits(dec_m // 60, 2),
        _digits(dec_m % 60, 2),
    ])  # fmt: skip
    x4lac = pc.if_else(pa.array(x4lac_hit), x4lac, pa.scalar("Unknown"))
    x3hsp = _fixed_strings([_const("3HSPJ", n)] + _sexagesimal(ra0, dec0, 1, 0))
    x3hsp = pc.if_else(pa.array(x3hsp_hit), x3hsp, pa.scalar("Unknown"))

    # Mangrove host galaxy (1 arcmin): some extragalactic transients and nuclei
    u_mangrove = uo(41)
    mangrove_hit = (np.isin(profile, (P_TRANSIENT, P_NEW)) & (host_dist < 6) & (u_mangrove < 0.3)) | (
        nuclear & (u_mangrove < 0.2)
    )
    lum_dist = 20.0 + 210.0 * uo(42)
    sexa = _sexagesimal(ranr, decnr, 2, 1)
    two_mass = _fixed_strings([part for i, part in enumerate(sexa) if i not in (3, 9)])  # no dots
    u_leda = uo(43)
    two_mass_ok = mangrove_hit & (uo(44) < 0.75)
    leda_num = pc.cast(pa.array(1000 + (u_leda * 4_999_000).astype(np.int64)), pa.string())
    leda_ngc = pc.binary_join_element_wise("NGC", pc.cast(pa.array(1 + (u_leda * 7839).astype(np.int64)), pa.string()), "")
    leda = pc.if_else(pa.array(uo(45) < 0.2), leda_ngc, leda_num)
    none = pa.scalar("None")
    m_items = [
        pc.if_else(pa.array(mangrove_hit), leda, none),
        pc.if_else(pa.array(two_mass_ok), two_mass, none),
        pc.if_else(pa.array(mangrove_hit), pc.cast(pa.array(np.round(lum_dist, 9)), pa.string()), none),
        pc.if_else(pa.array(mangrove_hit), pc.cast(pa.array(lum_dist / (1 + lum_dist / 4300.0) ** 2), pa.string()), none),
    ]
    mangrove = _map_of_strings(("HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist"), m_items, n)

    # TNS label stored at processing time
    tns_words = ["", "SN Ia", "SN II", "SN IIn", "SN Ic", "SN Ib", "SLSN-I", "TDE", "CV", "AGN", "Nova"]
    tns_p = np.array([0, 0.6, 0.2, 0.05, 0.04, 0.03, 0.03, 0.05, 0, 0, 0])
    u_tns = uo(46)
    tns_type = np.minimum(np.searchsorted(np.cumsum(tns_p / tns_p.sum()), uo(47)), len(tns_words) - 1)
    tns_idx = np.where((profile == P_TRANSIENT) & (u_tns < 0.15), tns_type, 0)
    tns_idx = np.where((label_name == "CataclyV*") & (u_tns < 0.2), tns_words.index("CV"), tns_idx)
    tns_idx = np.where((label_name == "Nova") & (u_tns < 0.5), tns_words.index("Nova"), tns_idx)

    # ---- Fink scores ---------------------------------------------------------------------------
    roid = np.zeros(n, dtype=np.int64)
    roid[np.isin(profile, (P_NEW, P_BOGUS)) & (ndethist == 1) & (rng.random(n) < 0.12)] = 1
    roid[(profile == P_TRACKLET) & (rng.random(n) < 0.4)] = 1
    roid[sso_mpc] = 3
    roid[(label == _LABEL_INDEX[SSO_CAND]) | amb_sso] = 2
    eg = _CDS_IS_EG[cds]
    scored = eg & (roid != 3)
    snn_ia = np.where(scored, rng.beta(1.6, 1.4, n), 0.0)
    snn_all = np.where(scored, rng.beta(0.9, 1.5, n), 0.0)
    rf_ia = np.where(scored & (ndethist <= 20) & (rng.random(n) < 0.8), rng.beta(0.9, 1.6, n), 0.0)
    age_now = jd - jdstarthist
    rf_kn = np.where(scored & (age_now < 20), rng.beta(1.1, 1.9, n), 0.0)
    mulens = np.zeros(n)

    # plant the rules of section 3.1
    k_sn, k_early, k_kn = _LABEL_INDEX[SN], _LABEL_INDEX[EARLY_SN], _LABEL_INDEX[KN]
    k_mulens = _LABEL_INDEX[MULENS]
    wants_sn = (label == k_sn) | (is_ambiguous & ~amb_sso) | (label == k_early)
    quality = wants_sn | (label == k_kn)
    drb = np.where(quality & (drb <= 0.5), rng.uniform(0.8, 1.0, n), drb)
    classtar = np.where(quality & (classtar <= 0.4), rng.uniform(0.5, 1.0, n), classtar)
    high = rng.uniform(0.5, 1.0, n)
    first_high = rng.random(n) < 0.6
    snn_ia = np.where(wants_sn & first_high, np.maximum(snn_ia, high), snn_ia)
    snn_all = np.where(wants_sn & ~first_high, np.maximum(snn_all, high), snn_all)
    snn_ia = np.where(wants_sn, np.where(snn_ia == 0, rng.uniform(0, 1, n), snn_ia), snn_ia)
    rf_ia = np.where(label == k_early, rng.uniform(0.51, 0.98, n), rf_ia)
    rf_kn = np.where(label == k_kn, rng.uniform(0.51, 0.95, n), rf_kn)
    mulens = np.where((label == k_mulens) | is_ambiguous, rng.uniform(0.3, 1.0, n), mulens)
    flags = _fink_flags(cds, roid, mulens, snn_ia, snn_all, rf_ia, ndethist, drb, classtar, jd, jdstarthist, rf_kn, is_trk)
    # switch off every rule an alert must not satisfy
    no_sn = ~wants_sn & (flags["sn"] | flags["early"])
    no_early = (label == k_sn) & flags["early"]
    no_kn = (label != k_kn) & flags["kn"]
    cap = rng.uniform(0.0, 0.5, (3, n))
    snn_ia = np.where(no_sn, np.minimum(snn_ia, cap[0]), snn_ia)
    snn_all = np.where(no_sn, np.minimum(snn_all, cap[1]), snn_all)
    rf_ia = np.where(no_early | (no_sn & (rf_ia > 0.5)), np.minimum(rf_ia, cap[2]), rf_ia)
    rf_kn = np.where(no_kn, np.minimum(rf_kn, cap[2]), rf_kn)
    flags = _fink_flags(cds, roid, mulens, snn_ia, snn_all, rf_ia, ndethist, drb, classtar, jd, jdstarthist, rf_kn, is_trk)
    got = _finkclass_index(flags, cds)
    if not np.array_equal(got, label):  # a generator bug, never a data condition
        bad = np.flatnonzero(got != label)[:5]
        raise RuntimeError(
            "synthetic alert classes not reproduced: "
            + ", ".join(f"{_LABEL_NAMES[label[i]]} -> {_LABEL_NAMES[got[i]] if got[i] >= 0 else '?'}" for i in bad)
        )

    # ---- light-curve features, rates, anomaly scores ------------------------------------------------
    with np.errstate(all="ignore"):  # undefined features are NaN by design
        lc = _light_curve_features(rng, n, seg, det, jd_k, fid_k, mag_k, sig_k, jd, fid, magpsf, sigmapsf)
    rates, jd_first_real = _rates(n, seg, det, jd_k, fid_k, mag_k, sig_k, lim_k, jd, fid, magpsf, sigmapsf, rng)
    rates["jdstarthist_dt"] = pa.array(jd_first_real - jdstarthist)
    # computed from the light-curve features: missing for most single-detection alerts
    has_anomaly = (nalerthist >= 2) | (rng.random(n) < 0.55)
    base = -(0.0145 + 0.0025 * rng.standard_normal(n))
    outlier = rng.random(n) < 0.03
    base = np.where(outlier, -rng.uniform(0.04, 0.42, n), np.minimum(base, -0.008))
    anomaly = {
        "anomaly_score": base,
        "anomaly_score_beta": base * rng.uniform(1.8, 2.6, n),
        "anomaly_score_anais": base * rng.uniform(0.9, 1.1, n),
        "anomaly_score_emille": base * rng.uniform(0.9, 1.1, n),
        "anomaly_score_julien": base * rng.uniform(0.9, 1.1, n),
        "anomaly_score_maria": None,
        "anomaly_score_emille_30days": base * rng.uniform(0.9, 1.1, n),
        "anomaly_score_varvara": base * rng.uniform(0.9, 1.1, n),
    }
    anomaly["anomaly_score_maria"] = anomaly["anomaly_score_beta"]  # identical in Fink's output
    slsn = np.where(np.isin(profile, (P_TRANSIENT, P_NEW)) & (nalerthist >= 2) & (rng.random(n) < 0.9), rng.beta(1, 8, n), -1.0)
    is_transient = np.isin(profile, (P_TRANSIENT, P_NEW, P_SSO, P_TRACKLET)) & ~gaia & (distnr > 1.0) & (rng.random(n) < 0.8)
    blazar_stats = _map_of_floats(
        ("m1", "m2", "m0"),
        [np.where(is_blazar, rng.uniform(0.3, 1.3, n), -1.0), np.where(is_blazar, rng.uniform(0.2, 1.0, n), -1.0),
         np.where(is_blazar, rng.uniform(0.5, 1.6, n), -1.0)],
        n,
    )  # fmt: skip

    # tracklet ids: TRCK_<exposure UTC time>_<index within the exposure>
    trk_null = ~is_trk
    if len(trk_idx):
        y, mo, d = _utc_ymd(jd)
        secs = np.floor(((jd - 0.5) % 1.0) * 86400.0 + 1e-6).astype(np.int64)
        group_rank = np.zeros(n, dtype=np.int64)
        ge = e[trk_idx]
        gk = trk_group[trk_idx]
        uniq_groups, first_pos = np.unique(gk, return_index=True)
        g_exp = ge[first_pos]
        order_g = np.lexsort((uniq_groups, g_exp))
        ranks = np.empty(len(uniq_groups), dtype=np.int64)
        sorted_exp = g_exp[order_g]
        ranks[order_g] = np.arange(len(order_g)) - np.searchsorted(sorted_exp, sorted_exp)
        # blocks sharing one exposure (very large nights) number their tracklets apart
        group_rank[trk_idx] = ranks[np.searchsorted(uniq_groups, gk)] + (rank_offset // BLOCK_SIZE) * 8
        prefix = _fixed_strings([
            _const("TRCK_", n), _digits(y, 4), _digits(mo, 2), _digits(d, 2), _const("_", n),
            _digits(secs // 3600, 2), _digits((secs // 60) % 60, 2), _digits(secs % 60, 2), _const("_", n),
        ])  # fmt: skip
        number_str = pc.utf8_lpad(pc.cast(pa.array(group_rank), pa.string()), 2, "0")
        tracklet = _with_nulls(pc.binary_join_element_wise(prefix, number_str, ""), trk_null)
    else:
        tracklet = pa.nulls(n, pa.string())

    # ---- candidate struct --------------------------------------------------------------------------
    y_n, m_n, d_n = _utc_ymd(jd)
    start_frac6 = np.floor(((jd - 0.5) % 1.0 - 15.0 / 86400.0) * 1e6).astype(np.int64) % 10**6
    ccd = rcid // 4 + 1
    quadrant = rcid % 4 + 1
    band = np.array([0, ord("g"), ord("r"), ord("i")], dtype=np.uint8)[fid]
    pdiff = _fixed_strings([
        _const("ztf_", n), _digits(y_n, 4), _digits(m_n, 2), _digits(d_n, 2), _digits(start_frac6, 6),
        _const("_", n), _digits(grid.field_id[f_idx], 6), _const("_z", n), _chars(band), _const("_c", n),
        _digits(ccd, 2), _const("_o_q", n), _digits(quadrant, 1), _const("_scimrefdiffimg.fits", n),
    ])  # fmt: skip
    programpi_idx = plan.exp_programpi[e]
    misc = _misc_fields(rng, n, magpsf, magap, sigmapsf, lim, fwhm, xpos, ypos, elong)
    ps1 = _ps1_fields(rng, uo, n, ra0, dec0, ranr, decnr, distnr_obj, magnr, starlike | bogus_star, nuclear)
    field_fid = grid.field_id[f_idx] * 10 + fid
    h_ref = _hash(field_fid, rcid, 17)
    jdstartref = 2458150.0 + 300.0 * _hu(h_ref, 1)
    cand = {
        "jd": jd, "fid": fid, "pid": pid, "diffmaglim": lim, "pdiffimfilename": pdiff,
        "programpi": _vocab(["Kulkarni", "Prince", "TESS"], programpi_idx),
        "programid": np.where(programpi_idx == 2, 3, 1), "candid": candid,
        "isdiffpos": _vocab(["f", "t"], isdiffpos_t), "tblid": tblid, "nid": np.full(n, plan.nid),
        "rcid": rcid, "field": grid.field_id[f_idx], "xpos": xpos, "ypos": ypos, "ra": ra, "dec": dec,
        "magpsf": magpsf, "sigmapsf": sigmapsf, "distnr": distnr, "magnr": magnr, "sigmagnr": sigmagnr,
        "chinr": rng.lognormal(np.log(0.85), 0.8, n), "sharpnr": np.clip(rng.normal(-0.02, 0.25, n), -0.9, 0.9),
        "classtar": classtar, "rb": rb, "ssdistnr": ssdistnr, "ssmagnr": ssmagnr, "ssnamenr": ssnamenr,
        "ranr": ranr, "decnr": decnr, "ndethist": ndethist, "ncovhist": ncovhist, "jdstarthist": jdstarthist,
        "jdendhist": jd, "scorr": snr * rng.uniform(0.9, 1.6, n), "tooflag": np.zeros(n),
        "nmtchps": np.minimum(rng.negative_binomial(1.2, 0.1, n), 127),
        "rfid": grid.field_id[f_idx] * 10**6 + 120000 + fid * 100 + rcid,
        "jdstartref": jdstartref, "jdendref": jdstartref + 20.0 + 300.0 * _hu(h_ref, 2),
        "nframesref": np.where(_hu(h_ref, 3) < 0.75, 15, 15 + (_hu(h_ref, 4) * 26).astype(np.int64)),
        "rbversion": _vocab(["t17_f5_c3"], np.zeros(n)), "magzpsci": plan.exp_zp[e] + rng.normal(0, 0.01, n),
        "nmatches": np.maximum(20, (plan.exp_nmatches[e] * rng.uniform(0.6, 1.2, n)).astype(np.int64)),
        "clrcoeff": plan.exp_clrcoeff[e] + rng.normal(0, 0.01, n),
        "exptime": np.full(n, 30.0), "drb": drb, "drbversion": _vocab(["d6_m7"], np.zeros(n)),
        **misc, **ps1,
    }  # fmt: skip
    candidate = _arrow_struct(CANDIDATE, cand, n)

    # ---- prv_candidates list ---------------------------------------------------------------------
    prv = _prv_candidates(rng, plan, n, T, seg, det, jd_k, fid_k, lim_k, mag_k, sig_k, grid.field_id[f_idx], rcid,
                          ra, dec, xpos, ypos, distnr, magnr, sigmagnr, ranr, decnr, classtar, isdiffpos_t,
                          profile, fwhm)  # fmt: skip
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(length, out=offsets[1:])
    prv_list = pa.ListArray.from_arrays(pa.array(offsets), prv)

    # ---- timestamps -------------------------------------------------------------------------------
    obs_us = np.round((jd - JD_UNIX_EPOCH) * 86400e6).astype(np.int64)
    ingest_us = obs_us + (rng.lognormal(np.log(40 * 60), 0.6, n) * 1e6).astype(np.int64)
    start_us = ingest_us + rng.uniform(30e6, 180e6, n).astype(np.int64)
    end_us = start_us + rng.uniform(45e6, 150e6, n).astype(np.int64)
    ts = pa.timestamp("us", tz="UTC")

    # ---- cutouts ---------------------------------------------------------------------------------
    cutouts = _cutout_arrays(plan, b, candid, pid, jd, isdiffpos_t) if with_cutouts else _empty_cutouts(n)

    columns = {
        "candid": pa.array(candid, pa.int64()),
        "schemavsn": _vocab([SCHEMA_VERSION], np.zeros(n)),
        "publisher": _vocab([PUBLISHER], np.zeros(n)),
        "objectId": object_id,
        "candidate": candidate,
        "prv_candidates": prv_list,
        "cutoutScience": cutouts[0],
        "cutoutTemplate": cutouts[1],
        "cutoutDifference": cutouts[2],
        "brokerIngestTimestamp": pa.array(ingest_us, ts),
        "brokerStartProcessTimestamp": pa.array(start_us, ts),
        "fink_broker_version": _vocab([FINK_BROKER_VERSION], np.zeros(n)),
        "fink_science_version": _vocab([FINK_SCIENCE_VERSION], np.zeros(n)),
        "cdsxmatch": _vocab(_CDS_VOCAB, cds),
        "tns": _vocab(tns_words, tns_idx),
        "DR3Name": dr3,
        "Plx": pa.array(_f32(plx)),
        "e_Plx": pa.array(_f32(e_plx)),
        "gaiaVarFlag": pa.array(var_flag.astype(np.int32)),
        "gaiaClass": _vocab(gaia_class_words, gc_idx),
        "vsx": _vocab(vsx_words, vsx_idx),
        "spicy_id": pa.array(spicy_id.astype(np.int32)),
        "spicy_class": _vocab(spicy_words, spicy_idx),
        "gcvs": _vocab(gcvs_words, gcvs_idx),
        "x3hsp": x3hsp,
        "x4lac": x4lac,
        "mangrove": mangrove,
        "roid": pa.array(roid.astype(np.int32)),
        "rf_snia_vs_nonia": pa.array(rf_ia),
        "snn_snia_vs_nonia": pa.array(snn_ia),
        "snn_sn_vs_all": pa.array(snn_all),
        "mulens": pa.array(mulens),
        "nalerthist": pa.array(nalerthist.astype(np.int32)),
        "rf_kn_vs_nonkn": pa.array(rf_kn),
        **{k: pa.array(v, pa.float64(), mask=~has_anomaly) for k, v in anomaly.items()},
        "lc_features_g": lc["g"],
        "lc_features_r": lc["r"],
        **rates,
        "blazar_stats": blazar_stats,
        "is_transient": pa.array(is_transient),
        "slsn_score": pa.array(slsn),
        "brokerEndProcessTimestamp": pa.array(end_us, ts),
        "tracklet": tracklet,
        "timestamp": pa.array(obs_us, ts),
    }
    return pa.RecordBatch.from_arrays([columns[f.name] for f in ARCHIVE_SCHEMA], schema=ARCHIVE_SCHEMA)


# YSO labels whose SPICY matches get a steady r-band trend (yso_spicy_candidates filter)
_SPICY_TREND_LABELS = np.array([_LABEL_INDEX[name] for name in ("YSO", "YSO_Candidate", "Orion_V*")])


def _gauss(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Standard normal deviates from two uniforms (Box-Muller): hash-derived normals."""
    return np.sqrt(-2.0 * np.log(np.maximum(u1, 1e-300))) * np.cos(2 * np.pi * u2)


def _map_of_strings(keys: tuple[str, ...], items: list[pa.Array], n: int) -> pa.MapArray:
    k = len(keys)
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    key_arr = pa.array(list(keys) * n, pa.string())
    interleaved = pa.concat_arrays([it.cast(pa.string()) for it in items]).take(
        pa.array((np.arange(n)[:, None] + np.arange(k)[None, :] * n).ravel())
    )
    return pa.MapArray.from_arrays(offsets, key_arr, interleaved)


def _map_of_floats(keys: tuple[str, ...], items: list[np.ndarray], n: int) -> pa.MapArray:
    k = len(keys)
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    key_arr = pa.array(list(keys) * n, pa.string())
    values = np.stack(items, axis=1).ravel().astype(np.float32)
    return pa.MapArray.from_arrays(offsets, key_arr, pa.array(values))


# --------------------------------------------------------------------------------------------
# Classification rules (the generator's own copy, to check planted classes)
# --------------------------------------------------------------------------------------------


def _fink_flags(cds, roid, mulens, snn_ia, snn_all, rf_ia, ndethist, drb, classtar, jd, jdstarthist, rf_kn, is_trk):
    eg = _CDS_IS_EG[cds]
    snn = (snn_ia > 0.5) | (snn_all > 0.5)
    good = (drb > 0.5) & (classtar > 0.4) & eg
    age = jd - jdstarthist
    return {
        "early": snn & good & (ndethist <= 20) & (rf_ia > 0.5),
        "sn": snn & good & (age <= 90) & (ndethist > 1) & (roid != 3),
        "kn": (rf_kn > 0.5) & good & (age < 5) & (roid != 3) & (ndethist < 20),
        "mulens": mulens > 0.0,
        "roid3": roid == 3,
        "roid2": roid == 2,
        "tracklet": is_trk,
    }


def _finkclass_index(flags: dict[str, np.ndarray], cds: np.ndarray) -> np.ndarray:
    """Label index of extract_fink_classification_ (SIMBAD labels via the cdsxmatch index)."""
    out = np.full(len(cds), K_UNKNOWN)
    for key, name in (("mulens", MULENS), ("sn", SN), ("early", EARLY_SN), ("kn", KN), ("roid2", SSO_CAND),
                      ("tracklet", TRACKLET), ("roid3", SSO_MPC)):  # fmt: skip
        out = np.where(flags[key], _LABEL_INDEX[name], out)
    ambiguous = flags["mulens"].astype(int) + flags["sn"] + flags["roid2"] + flags["roid3"] > 1
    out = np.where(ambiguous, _LABEL_INDEX[AMBIGUOUS], out)
    simbad = cds >= 2  # every vocabulary entry after Unknown and Galaxy is a SIMBAD otype
    label_of_cds = np.array([_LABEL_INDEX.get(name, -1) for name in _CDS_VOCAB])
    return np.where(simbad, label_of_cds[cds], out)


# --------------------------------------------------------------------------------------------
# Field generators shared by the candidate and its history
# --------------------------------------------------------------------------------------------


def _misc_fields(rng, n, magpsf, magap, sigmapsf, lim, fwhm, xpos, ypos, elong) -> dict[str, np.ndarray]:
    sigmagap = sigmapsf * rng.lognormal(0.15, 0.45, n)
    magapbig = magap + rng.normal(-0.01, 0.04, n)
    aimage = fwhm * rng.uniform(0.25, 0.38, n) * np.sqrt(elong)
    bimage = aimage / elong
    ref_fwhm = rng.uniform(1.5, 2.6, n)
    ssnrms = rng.lognormal(np.log(26), 0.9, n)
    dsnrms = ssnrms * rng.uniform(0.25, 0.85, n)
    clrcounc = rng.lognormal(np.log(1.5e-5), 1.4, n)
    return {
        "chipsf": rng.lognormal(np.log(3.6), 1.6, n),
        "magap": magap,
        "sigmagap": sigmagap,
        "sky": rng.normal(0.05, 2.0, n),
        "magdiff": magap - magpsf,
        "fwhm": fwhm,
        "mindtoedge": np.minimum(np.minimum(xpos, ypos), np.minimum(_QUAD_NX - xpos, _QUAD_NY - ypos)),
        "magfromlim": lim - magap,
        "seeratio": np.clip(fwhm / ref_fwhm, 0.35, 2.0),
        "aimage": aimage,
        "bimage": bimage,
        "aimagerat": aimage / fwhm,
        "bimagerat": bimage / fwhm,
        "elong": elong,
        "nneg": np.minimum(rng.poisson(4.2, n), 25),
        "nbad": np.zeros(n),
        "sumrat": np.clip(1.0 - rng.exponential(0.07, n), 0.4, 1.0),
        "magapbig": magapbig,
        "sigmagapbig": sigmagap * rng.uniform(1.1, 1.45, n),
        "dsnrms": dsnrms,
        "ssnrms": ssnrms,
        "dsdiff": dsnrms - ssnrms,
        "magzpsciunc": rng.lognormal(np.log(1.2e-5), 1.6, n),
        "magzpscirms": rng.uniform(0.016, 0.1, n),
        "clrcounc": clrcounc,
        "zpclrcov": -clrcounc * rng.uniform(0.5, 1.0, n),
        "zpmed": 26.25 + rng.normal(0, 0.1, n),
        "clrmed": rng.lognormal(np.log(0.63), 0.2, n),
        "clrrms": rng.uniform(0.12, 0.34, n),
    }


def _ps1_fields(rng, uo, n, ra, dec, ranr, decnr, distnr, magnr, stellar, nuclear) -> dict[str, np.ndarray]:
    """Pan-STARRS1 neighbours and Gaia distances (-999 when missing, as ZTF writes them).

    `uo(j)` gives per-object uniforms, so a known object keeps its neighbours.
    """
    out: dict[str, np.ndarray] = {}

    def objid(r, d):  # PS1 objID: declination zone then right ascension
        zone = np.floor((d + 90.0) * 120.0).astype(np.int64)
        return zone * 10**13 + np.floor(r * 1e10).astype(np.int64) % 10**13

    for i in (1, 2, 3):
        j = 100 + 12 * i
        if i == 1:  # the nearest PS1 source is the reference source of stars and nuclei
            dist = np.where(stellar | nuclear, distnr * (0.7 + 0.6 * uo(j)), 0.3 + 19.7 * uo(j))
            mag_r = np.where(stellar | nuclear, magnr + 0.1 * _gauss(uo(j + 1), uo(j + 2)), 16.0 + 6.8 * uo(j + 1))
            score = np.where(stellar, 0.85 + 0.15 * uo(j + 3), np.where(nuclear, 0.6 * uo(j + 3), uo(j + 3)))
            missing = uo(j + 4) < 0.01
        else:
            dist = 2.0 + 27.0 * uo(j)
            mag_r = 15.5 + 7.4 * uo(j + 1)
            score = np.where(uo(j + 2) < 0.3, 0.5, uo(j + 3))
            missing = uo(j + 4) < 0.04
        theta = 2 * np.pi * uo(j + 5)
        sd = dec + dist * np.sin(theta) / 3600.0
        sr = (ra + dist * np.cos(theta) / 3600.0 / np.cos(np.radians(dec))) % 360.0
        colour = 0.2 + 1.1 * uo(j + 6)
        mags = {"sgmag": mag_r + colour, "srmag": mag_r, "simag": mag_r - colour * 0.35, "szmag": mag_r - colour * 0.5}
        for k, (key, val) in enumerate(mags.items()):
            band_missing = missing | (uo(j + 7 + k) < (0.25 if key == "sgmag" and i > 1 else 0.03))
            out[f"{key}{i}"] = np.where(band_missing, -999.0, val)
        out[f"sgscore{i}"] = np.where(missing, -999.0, score)
        out[f"distpsnr{i}"] = np.where(missing, -999.0, dist)
        out[f"objectidps{i}"] = np.where(missing, -999, objid(sr, sd))
    near_d = np.where(stellar, distnr * (0.5 + uo(150)), 1.5 + 78.5 * uo(150))
    out["neargaia"] = np.where(uo(151) < 0.005, -999.0, near_d)
    out["maggaia"] = np.where(stellar, magnr - 0.4 * uo(152), 14.0 + 7.0 * uo(152))
    bright = uo(153) < 0.45
    out["neargaiabright"] = np.where(bright, np.where(stellar & (magnr < 14), near_d, 0.3 + 89.7 * uo(154)), -999.0)
    out["maggaiabright"] = np.where(bright, 8.8 + 5.2 * uo(155), -999.0)
    return out


_UL_FIELDS = frozenset(
    ("jd", "fid", "pid", "diffmaglim", "pdiffimfilename", "programpi", "programid", "nid", "rcid", "field",
     "magzpsci", "magzpsciunc", "magzpscirms", "clrcoeff", "clrcounc", "rbversion")
)  # fmt: skip


def _prv_candidates(rng, plan, n, T, seg, det, jd_k, fid_k, lim_k, mag_k, sig_k, field, rcid, ra, dec, xpos, ypos,
                    distnr, magnr, sigmagnr, ranr, decnr, classtar, isdiffpos_t, profile, fwhm) -> pa.StructArray:
    """Flat struct array of all history entries: detections and upper limits (nulls)."""
    nid_k = np.floor(jd_k - JD_NID_EPOCH).astype(np.int64)
    frac5 = np.floor(((jd_k - 0.5) % 1.0) * 1e5).astype(np.int64)
    rc = rcid[seg]
    pid_k = nid_k * 10**9 + frac5 * 10**4 + rc * 100 + 15
    y, m, d = _utc_ymd(jd_k)
    frac6 = np.floor(((jd_k - 0.5) % 1.0 - 15.0 / 86400.0) * 1e6).astype(np.int64) % 10**6
    band = np.array([0, ord("g"), ord("r"), ord("i")], dtype=np.uint8)[fid_k]
    ccd = rc // 4 + 1
    quadrant = rc % 4 + 1
    date = [_digits(y, 4), _digits(m, 2), _digits(d, 2)]
    pdiff = _fixed_strings([
        _const("/ztf/archive/sci/", T), _digits(y, 4), _const("/", T), _digits(m, 2), _digits(d, 2), _const("/", T),
        _digits(frac6, 6), _const("/ztf_", T), *date, _digits(frac6, 6), _const("_", T), _digits(field[seg], 6),
        _const("_z", T), _chars(band), _const("_c", T), _digits(ccd, 2), _const("_o_q", T), _digits(quadrant, 1),
        _const("_scimrefdiffimg.fits.fz", T),
    ])  # fmt: skip
    magap = mag_k + rng.normal(0.06, 0.12, T)
    fw = fwhm[seg] * rng.uniform(0.7, 1.4, T)
    elong = 1.0 + rng.exponential(0.12, T)
    xk = np.clip(xpos[seg] + rng.normal(0, 0.15, T), 1, _QUAD_NX - 1)
    yk = np.clip(ypos[seg] + rng.normal(0, 0.15, T), 1, _QUAD_NY - 1)
    misc = _misc_fields(rng, T, mag_k, magap, sig_k, lim_k, fw, xk, yk, elong)
    ok = det
    values = {
        "jd": jd_k, "fid": fid_k, "pid": pid_k, "diffmaglim": lim_k, "pdiffimfilename": pdiff,
        "programpi": _vocab(["Kulkarni"], np.zeros(T)), "programid": np.ones(T),
        "candid": pid_k * 10**6 + 10000 + rng.integers(0, 200, T),
        "isdiffpos": _vocab(["f", "t"], np.where(rng.random(T) < 0.9, isdiffpos_t[seg], ~isdiffpos_t[seg])),
        "tblid": rng.integers(0, 200, T), "nid": nid_k, "rcid": rc, "field": field[seg], "xpos": xk, "ypos": yk,
        "ra": ra[seg] + rng.normal(0, 0.08, T) / 3600.0 / np.cos(np.radians(dec[seg])),
        "dec": dec[seg] + rng.normal(0, 0.08, T) / 3600.0, "magpsf": mag_k, "sigmapsf": sig_k,
        "distnr": np.abs(distnr[seg] + rng.normal(0, 0.08, T)), "magnr": magnr[seg], "sigmagnr": sigmagnr[seg],
        "chinr": rng.lognormal(np.log(0.85), 0.8, T), "sharpnr": np.clip(rng.normal(-0.02, 0.25, T), -0.9, 0.9),
        "classtar": np.clip(classtar[seg] + rng.normal(0, 0.02, T), 0, 1),
        "rb": np.where(profile[seg] == P_BOGUS, rng.uniform(0.18, 0.62, T), rng.uniform(0.42, 0.98, T)),
        "ranr": ranr[seg], "decnr": decnr[seg],
        "scorr": 1.0857 / sig_k * rng.uniform(0.9, 1.35, T),
        "magzpsci": rng.normal(26.25, 0.12, T), "clrcoeff": np.where(fid_k == 1, -0.06, 0.09) + rng.normal(0, 0.03, T),
        "rbversion": _vocab(["t17_f5_c3"], np.zeros(T)),
        **misc,
    }  # fmt: skip
    values.update(ssdistnr=None, ssmagnr=None, ssnamenr=None)  # null in ZTF histories
    masks = {name: ~ok for name in (f.name for f in PRV_CANDIDATE) if name not in _UL_FIELDS}
    return _arrow_struct(PRV_CANDIDATE, values, T, masks)


def _rates(n, seg, det, jd_k, fid_k, mag_k, sig_k, lim_k, jd, fid, magpsf, sigmapsf, rng):
    """Fink rate features against the last previous point (detection or limit) of the same band."""
    idx = np.full(n, -1, dtype=np.int64)
    positions = np.flatnonzero(fid_k == fid[seg])
    np.maximum.at(idx, seg[positions], positions)  # histories are sorted by jd
    has_prev = idx >= 0
    if len(jd_k):
        j = np.where(has_prev, idx, 0)
        prev_det = det[j] & has_prev
        prev_mag = np.where(prev_det, mag_k[j], lim_k[j])
        prev_sig = np.where(prev_det, sig_k[j], 0.1)
        delta = np.where(has_prev, jd - jd_k[j], 1.0)
    else:
        prev_det = np.zeros(n, dtype=bool)
        prev_mag, prev_sig, delta = magpsf, np.full(n, 0.1), np.ones(n)
    delta = np.maximum(delta, 1e-4)
    mag_rate = (magpsf - prev_mag) / delta
    sigma_rate = np.sqrt(sigmapsf**2 + prev_sig**2) / delta
    first_det = np.full(n, np.inf)
    strong = det & (sig_k < 0.2)  # "real" detections: S/N > ~5.4
    np.minimum.at(first_det, seg[strong], jd_k[strong])
    jd_first = np.minimum(first_det, jd)
    mask = ~has_prev
    rates = {
        "jd_first_real_det": pa.array(jd_first),
        "mag_rate": pa.array(mag_rate, mask=mask),
        "sigma_rate": pa.array(sigma_rate, mask=mask),
        "lower_rate": pa.array(mag_rate - 1.96 * sigma_rate * rng.uniform(0.9, 1.1, n), mask=mask),
        "upper_rate": pa.array(mag_rate + 1.96 * sigma_rate * rng.uniform(0.9, 1.1, n), mask=mask),
        "delta_time": pa.array(delta, mask=mask),
        "from_upper": pa.array(has_prev & ~prev_det),
    }
    return rates, jd_first


def _light_curve_features(rng, n, seg, det, jd_k, fid_k, mag_k, sig_k, jd, fid, magpsf, sigmapsf) -> dict:
    """lc_features_g / lc_features_r from the detections in the alert (history + current).

    Exact where cheap (moments, quantiles, fits, slopes); a few shape statistics are drawn
    from their typical range. Undefined features are NaN (too few points) and a band without
    any detection has all fields null, as in Fink's output.
    """
    pts_seg = np.concatenate([seg[det], np.arange(n)])
    pts_fid = np.concatenate([fid_k[det], fid])
    pts_t = np.concatenate([jd_k[det], jd]) - jd[pts_seg]
    pts_m = np.concatenate([mag_k[det], magpsf])
    pts_s = np.concatenate([sig_k[det], sigmapsf])
    out: dict = {}
    for band, name in ((1, "g"), (2, "r")):
        sel = pts_fid == band
        key, t, m, s = pts_seg[sel], pts_t[sel], pts_m[sel], pts_s[sel]
        w = 1.0 / s**2
        cnt = np.bincount(key, minlength=n).astype(np.float64)
        out[f"n_{name}"] = cnt.astype(np.int64)
        safe = np.maximum(cnt, 1)

        def total(v):
            return np.bincount(key, weights=v, minlength=n)

        mean = total(m) / safe
        wsum = total(w)
        wmean = total(w * m) / np.maximum(wsum, 1e-300)
        dev = m - mean[key]
        m2 = total(dev**2)
        std = np.sqrt(m2 / np.maximum(cnt - 1, 1))
        pop_std = np.sqrt(m2 / safe)
        m3 = total(dev**3) / safe
        m4 = total(dev**4) / safe
        skew = m3 / np.maximum(pop_std, 1e-12) ** 3
        kurt = m4 / np.maximum(pop_std, 1e-12) ** 4 - 3.0
        # order statistics on magnitude
        order, starts, counts = _sorted_group_stats(key, m, n)
        ms = m[order]
        last = starts + np.maximum(counts - 1, 0)

        def quantile(q):
            pos = starts + np.floor(q * np.maximum(counts - 1, 0)).astype(np.int64)
            return ms[np.minimum(pos, len(ms) - 1)] if len(ms) else np.zeros(n)

        if len(ms):
            mmin, mmax = ms[np.minimum(starts, len(ms) - 1)], ms[np.minimum(last, len(ms) - 1)]
            median = 0.5 * (quantile(0.5) + ms[np.minimum(starts + counts // 2, len(ms) - 1)])
        else:
            mmin = mmax = median = np.zeros(n)
        beyond = total((np.abs(dev) > std[key]).astype(np.float64)) / safe
        # time-ordered statistics
        order_t, starts_t, _ = _sorted_group_stats(key, t, n)
        kt, tt, mt = key[order_t], t[order_t], m[order_t]
        same = np.zeros(len(kt), dtype=bool)
        same[1:] = kt[1:] == kt[:-1]
        dmdt = np.zeros(len(kt))
        if len(kt) > 1:
            dmdt[1:] = np.abs(np.diff(mt)) / np.maximum(np.diff(tt), 1e-3)
        max_slope = np.zeros(n)
        np.maximum.at(max_slope, kt[same], dmdt[same])
        cmax, cmin = np.zeros(n), np.zeros(n)
        if len(kt):  # cumulative sums of normalised deviations, per light curve
            csum = np.cumsum((mt - mean[kt]) / np.maximum(safe[kt] * std[kt], 1e-12))
            cbase = np.where(starts_t > 0, csum[np.maximum(starts_t - 1, 0)], 0.0)
            cs = csum - cbase[kt]
            np.maximum.at(cmax, kt, cs)
            np.minimum.at(cmin, kt, cs)
        # straight-line fits in time (unweighted trend, weighted fit)
        st, stt, sm, stm = total(t), total(t * t), total(m), total(t * m)
        denom = cnt * stt - st**2
        trend = (cnt * stm - st * sm) / np.where(np.abs(denom) > 1e-12, denom, np.nan)
        resid = m - (sm / safe)[key] - trend[key] * (t - (st / safe)[key])
        trend_noise = np.sqrt(total(resid**2) / np.maximum(cnt - 2, 1))
        trend_sigma = trend_noise / np.sqrt(np.maximum(stt - st**2 / safe, 1e-12))
        swt, swtt, swm, swtm = total(w * t), total(w * t * t), total(w * m), total(w * t * m)
        wden = wsum * swtt - swt**2
        fit_slope = (wsum * swtm - swt * swm) / np.where(np.abs(wden) > 1e-12, wden, np.nan)
        fit_sigma = np.sqrt(wsum / np.where(np.abs(wden) > 1e-12, wden, np.nan))
        fit_icpt = (swm - fit_slope * swt) / np.maximum(wsum, 1e-300)
        fit_chi2 = total(w * (m - fit_icpt[key] - fit_slope[key] * t) ** 2) / np.maximum(cnt - 2, 1)
        chi2 = total(w * (m - wmean[key]) ** 2) / np.maximum(cnt - 1, 1)
        delta = np.sqrt(cnt / np.maximum(cnt - 1, 1))[key] * (m - wmean[key]) / s
        stetson = total(np.abs(delta)) / np.sqrt(safe) / np.sqrt(np.maximum(total(delta**2), 1e-12))
        amplitude = 0.5 * (mmax - mmin)
        spread95 = np.maximum(quantile(0.95) - quantile(0.05), 1e-12)
        feats = {
            "mean": mean, "weighted_mean": wmean, "standard_deviation": std, "median": median,
            "amplitude": amplitude, "beyond_1_std": beyond, "cusum": cmax - cmin,
            "inter_percentile_range_10": quantile(0.9) - quantile(0.1), "kurtosis": kurt,
            "linear_trend": trend, "linear_trend_sigma": trend_sigma, "linear_trend_noise": trend_noise,
            "linear_fit_slope": fit_slope, "linear_fit_slope_sigma": fit_sigma,
            "linear_fit_reduced_chi2": fit_chi2,
            "magnitude_percentage_ratio_40_5": (quantile(0.6) - quantile(0.4)) / spread95,
            "magnitude_percentage_ratio_20_10": (quantile(0.8) - quantile(0.2)) / np.maximum(quantile(0.9) - quantile(0.1), 1e-12),
            "maximum_slope": max_slope, "median_absolute_deviation": 0.6745 * std,
            "median_buffer_range_percentage_10": np.clip(rng.beta(1.2, 3.0, n), 0, 1),
            "percent_amplitude": np.maximum(np.abs(mmax - median), np.abs(mmin - median)),
            "mean_variance": std / np.maximum(mean, 1e-12), "anderson_darling_normal": rng.lognormal(np.log(0.35), 0.6, n),
            "chi2": chi2, "skew": skew, "stetson_K": stetson,
        }  # fmt: skip
        one = cnt == 1
        for key_name in ("amplitude", "inter_percentile_range_10", "median_absolute_deviation",
                         "median_buffer_range_percentage_10", "percent_amplitude"):  # fmt: skip
            feats[key_name] = np.where(one, 0.0, feats[key_name])
        need = {  # minimum number of points per feature (light-curve package conventions)
            "standard_deviation": 2, "beyond_1_std": 2, "cusum": 2, "kurtosis": 4, "linear_trend": 3,
            "linear_trend_sigma": 3, "linear_trend_noise": 3, "linear_fit_slope": 3, "linear_fit_slope_sigma": 3,
            "linear_fit_reduced_chi2": 3, "magnitude_percentage_ratio_40_5": 2, "magnitude_percentage_ratio_20_10": 2,
            "maximum_slope": 2, "mean_variance": 2, "anderson_darling_normal": 4, "chi2": 2, "skew": 3,
            "stetson_K": 2,
        }  # fmt: skip
        for key_name, k in need.items():
            feats[key_name] = np.where(cnt >= k, feats[key_name], np.nan)
        empty = cnt == 0
        out[name] = _arrow_struct(
            LC_FEATURES, {k: np.asarray(v, dtype=np.float64) for k, v in feats.items()}, n,
            masks={k: empty for k in feats},
        )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def generate_night(
    night: dt.date,
    n_alerts: int,
    seed: int,
    with_cutouts: bool = True,
    batch_size: int = 20_000,
) -> Iterator[pa.RecordBatch]:
    """Synthetic Fink-processed ZTF alerts of one night, as record batches of `ARCHIVE_SCHEMA`.

    The output depends only on (night, n_alerts, seed) -- not on `batch_size` -- and the
    non-cutout columns are identical with and without cutouts. Batches hold `batch_size`
    rows (the last one fewer); alerts are produced lazily, `BLOCK_SIZE` at a time, so memory
    stays bounded by one batch. With cutouts a row weighs ~45 kB: prefer batches of a few
    thousand rows.

    Args:
        night: UTC date of the night: every candidate.jd falls on that date (02:00-13:30 UTC).
        n_alerts: number of alerts of the night (>= 0).
        seed: archive seed; different seeds give different alerts and objects.
        with_cutouts: when False the three cutout structs are present with null fields.
        batch_size: rows per yielded batch (>= 1).
    """
    if not isinstance(night, dt.date) or isinstance(night, dt.datetime):
        raise TypeError(f"night must be a datetime.date, not {type(night).__name__}")
    if n_alerts < 0:
        raise ValueError(f"n_alerts must be >= 0, got {n_alerts}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plan = _plan_night(night, n_alerts, int(seed)) if n_alerts else None
    return _iter_batches(plan, with_cutouts, batch_size)


def _iter_batches(plan: _NightPlan | None, with_cutouts: bool, batch_size: int) -> Iterator[pa.RecordBatch]:
    if plan is None:
        return
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for b in range(plan.n_blocks):
        block = _generate_block(plan, b, with_cutouts)
        pending.append(block)
        pending_rows += block.num_rows
        while pending_rows >= batch_size:
            merged = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            yield merged.slice(0, batch_size)
            rest = merged.slice(batch_size)
            pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if pending_rows:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)

