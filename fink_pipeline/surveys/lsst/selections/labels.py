"""Label lists Fink's Rubin blocks match cross-match types against, copied as data.

Source: fink-utils 0.79.0 (Apache-2.0, AstroLab Software), `fink_utils/xmatch/simbad.py`
(`return_list_of_eg_host()` with its default `full_simbad_conversion=False`) and
`fink_utils/xmatch/vsx.py` (`return_list_of_stellar()`, `return_list_of_nonstellar()`), and
fink-filters 7.45 `fink_filters/rubin/blocks.py` (`BAD_VALUES`). Kept in the order of the source
(the SIMBAD list as `np.unique` returns it: sorted). The compat test
(fink_pipeline_tests/test_compat_fink_filters.py) checks them against the installed packages.
"""

from __future__ import annotations

# `blocks.BAD_VALUES` without its None and NaN: a null type matches by the caller's null rule
# (pandas `isin` finds None/NaN in a list holding them).
BAD_VALUE_LABELS: tuple[str, ...] = ("Unknown", "Fail", "Fail 504")

# simbad.return_list_of_eg_host(): galaxies, failed or unknown matches and supernova labels,
# old SIMBAD taxonomy plus the one renamed label ("SN*_Candidate").
SIMBAD_EG_HOST_LABELS: tuple[str, ...] = (
    "BClG", "BlueCompG", "Candidate_SN*", "ClG", "Compact_Gr_G", "EmG", "Fail", "Fail 504",
    "Galaxy", "GinCl", "GinGroup", "GinPair", "GravLens_Candidate", "GroupG", "HII_G", "High_z_G",
    "IG", "LINER", "LSB_G", "PairG", "PartofG", "Possible_ClG", "Possible_SClG", "SN",
    "SN*_Candidate", "Seyfert", "Seyfert_1", "Seyfert_2", "StarburstG", "SuperClG", "Transient",
    "Unknown", "Void", "galaxy",
)  # fmt: skip

# vsx.return_list_of_nonstellar(): AGN, quasars, supernovae and other extragalactic types.
VSX_NONSTELLAR_LABELS: tuple[str, ...] = (
    "AGN", "BLLAC", "QSO", "GRB", "Microlens", "TDE", "LFBOT", "SN", "SN I", "SN Ia",
    "SN Ia-00cx-like", "SN Ia-02es-like", "SN Ia-06gz-like", "SN Ia-86G-like", "SN Ia-91bg-like",
    "SN Ia-91T-like", "SN Ia-99aa-like", "SN Ia-Ca-rich", "SN Ia-CSM", "SN Iax", "SN Ib", "SN Ic",
    "SN Ic-BL", "SN Icn", "SN Idn", "SN Ien", "SN II", "SN II-L", "SN II-P", "SN IIa", "SN IIb",
    "SN IId", "SN IIn", "SN-pec", "SLSN", "SLSN-I", "SLSN-II",
)  # fmt: skip

# vsx.return_list_of_stellar(): every VSX variable-star type (AAVSO VSX classification).
VSX_STELLAR_LABELS: tuple[str, ...] = (
    "*", "ACEP", "ACEP(B)", "ACEPS", "CEP", "DCEP", "DCEP(B)", "DCEP-FO", "DCEP-FU", "DCEPS",
    "DCEPS(B)", "CW", "CW-FO", "CW-FU", "CWA", "CWB", "CWB(B)", "CWBS", "RR", "RRAB", "RRC", "RRD",
    "RV", "RVA", "RVB", "DSCT", "DSCTC", "DSCTr", "HADS", "HADS(B)", "SXPHE", "SXPHE(B)", "GDOR",
    "BCEP", "BCEPS", "SPB", "SPBe", "ACYG", "M", "SR", "SRA", "SRB", "SRC", "SRD", "SRS", "L", "LB",
    "LC", "I", "IA", "IB", "IS", "ISA", "ISB", "IN", "INA", "INAT", "INB", "INS", "INSA", "INSB",
    "INST", "INT", "TTS", "TTS/ROT", "CTTS", "CTTS/ROT", "WTTS", "WTTS/ROT", "EXOR", "FUOR", "GCAS",
    "BE", "SDOR", "UV", "UVN", "WR", "FF", "V838MON", "N", "NA", "NB", "NC", "NR", "NL", "NL/VY",
    "UG", "UGSS", "UGSU", "UGER", "UGWZ", "UGZ", "UGZ/IW", "ZAND", "CV", "AM", "DQ", "DQ/AE",
    "CBSS", "CBSS/V", "IBWD", "E", "E-DO", "EA", "EB", "EC", "ED", "ELL", "EP", "ESD", "EW", "DPV",
    "HB", "R", "RS", "BY", "FKCOM", "ACV", "SXARI", "SXARI/E", "LERI", "roAp", "roAm", "ROT", "X",
    "HMXB", "IMXB", "LMXB", "PSR", "WDP", "ZZ", "ZZ/GWLIB", "ZZA", "ZZA/O", "ZZB", "ZZLep", "ZZO",
    "V361HYA", "V1093HER", "DWLYN", "BLAP", "FSCMa", "cPNB[e]", "RCB", "DYPer", "BXCIR", "PVTEL",
    "PVTELI", "PVTELII", "PVTELIII", "YHG", "PPN", "ORG", "UXOR", "VBD", "APER", "CST", "MISC",
    "LPV", "NSIN", "NSIN ELL", "PER", "PULS", "S", "SIN", "Transient", "VAR", "YSO", "non-cv",
)  # fmt: skip
