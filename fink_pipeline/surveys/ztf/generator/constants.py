"""Constants and label tables of the synthetic ZTF generator (pure data).

Survey epochs and site, Fink versions, readout-quadrant geometry, the planted classes (Fink
labels and SIMBAD otypes with their fractions, floors and populations), the cdsxmatch
vocabulary and the catalogue attributes of SIMBAD labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """Every planted label: Fink classes, SIMBAD otypes, and Unknown for the remainder."""
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

# YSO labels whose SPICY matches get a steady r-band trend (yso_spicy_candidates filter)
_SPICY_TREND_LABELS = np.array([_LABEL_INDEX[name] for name in ("YSO", "YSO_Candidate", "Orion_V*")])
