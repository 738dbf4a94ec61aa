"""Fink cross-matches of the synthetic ZTF alerts: Gaia DR3, VSX/GCVS, SPICY, blazar
catalogues (4LAC, 3HSP), Mangrove host galaxies and the TNS label.

Catalogue attributes of known objects come from per-object uniforms (`_Objects.uo`), so an
object keeps its counterparts night after night.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.surveys.ztf.generator.arrays import (
    _chars,
    _const,
    _digits,
    _f32,
    _fixed_strings,
    _gauss,
    _hi,
    _map_of_strings,
    _sexagesimal,
    _vocab,
)
from fink_pipeline.surveys.ztf.generator.constants import (
    _BLAZARS,
    _GAIA_CLASS,
    _LABEL_NAMES,
    _VSX_TYPES,
    _YSOS,
    P_NEW,
    P_TRANSIENT,
)
from fink_pipeline.surveys.ztf.generator.detection import _Reference
from fink_pipeline.surveys.ztf.generator.objects import _Block, _Objects, _Population, _Positions

Columns = dict[str, pa.Array]


def _cross_matches(blk: _Block, pop: _Population, obj: _Objects, pos: _Positions, ref: _Reference,
                   spicy_trend: np.ndarray) -> tuple[np.ndarray, np.ndarray, Columns]:
    """(Gaia match, blazar label, cross-match columns), drawn in catalogue order."""
    gaia, columns = _gaia_columns(blk, pop, obj, ref)
    columns.update(_variable_star_columns(blk, pop, obj, ref, gaia, spicy_trend))
    is_blazar, blazars = _blazar_columns(blk, pop, obj, pos)
    columns.update(blazars)
    columns["mangrove"] = _mangrove_column(blk, pop, obj, ref)
    columns["tns"] = _tns_column(pop, obj)
    return gaia, is_blazar, columns


def _gaia_columns(blk: _Block, pop: _Population, obj: _Objects, ref: _Reference) -> tuple[np.ndarray, Columns]:
    """Gaia DR3 source, parallax and variability class; the match mask comes first."""
    n, rng, label, profile = blk.n, blk.rng, pop.label, pop.profile
    uo, stable, h_obj = obj.uo, obj.stable, obj.h_obj
    starlike, bogus_star, nuclear = ref.starlike, ref.bogus_star, ref.nuclear
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
    return gaia, {
        "DR3Name": dr3,
        "Plx": pa.array(_f32(plx)),
        "e_Plx": pa.array(_f32(e_plx)),
        "gaiaVarFlag": pa.array(var_flag.astype(np.int32)),
        "gaiaClass": _vocab(gaia_class_words, gc_idx),
    }


def _variable_star_columns(blk: _Block, pop: _Population, obj: _Objects, ref: _Reference, gaia: np.ndarray,
                           spicy_trend: np.ndarray) -> Columns:
    """VSX and GCVS types of catalogued variables, SPICY matches of young stellar objects."""
    n, rng, uo, stable, h_obj, magnr = blk.n, blk.rng, obj.uo, obj.stable, obj.h_obj, ref.magnr
    label_name = _LABEL_NAMES[pop.label]
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
    return {
        "vsx": _vocab(vsx_words, vsx_idx),
        "spicy_id": pa.array(spicy_id.astype(np.int32)),
        "spicy_class": _vocab(spicy_words, spicy_idx),
        "gcvs": _vocab(gcvs_words, gcvs_idx),
    }


def _blazar_columns(blk: _Block, pop: _Population, obj: _Objects, pos: _Positions) -> tuple[np.ndarray, Columns]:
    """4LAC and 3HSP designations of blazars; the blazar mask comes first."""
    n, uo, ra0, dec0 = blk.n, obj.uo, pos.ra0, pos.dec0
    label_name = _LABEL_NAMES[pop.label]
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
    return is_blazar, {"x3hsp": x3hsp, "x4lac": x4lac}


def _mangrove_column(blk: _Block, pop: _Population, obj: _Objects, ref: _Reference) -> pa.MapArray:
    """Mangrove host galaxy (1 arcmin): some extragalactic transients and nuclei."""
    n, uo, profile, nuclear, host_dist, ranr, decnr = (
        blk.n, obj.uo, pop.profile, ref.nuclear, ref.host_dist, ref.ranr, ref.decnr
    )  # fmt: skip
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
    return _map_of_strings(("HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist"), m_items, n)


def _tns_column(pop: _Population, obj: _Objects) -> pa.Array:
    """TNS label stored at processing time: some transients, cataclysmic variables and novae."""
    uo, profile = obj.uo, pop.profile
    label_name = _LABEL_NAMES[pop.label]
    tns_words = ["", "SN Ia", "SN II", "SN IIn", "SN Ic", "SN Ib", "SLSN-I", "TDE", "CV", "AGN", "Nova"]
    tns_p = np.array([0, 0.6, 0.2, 0.05, 0.04, 0.03, 0.03, 0.05, 0, 0, 0])
    u_tns = uo(46)
    tns_type = np.minimum(np.searchsorted(np.cumsum(tns_p / tns_p.sum()), uo(47)), len(tns_words) - 1)
    tns_idx = np.where((profile == P_TRANSIENT) & (u_tns < 0.15), tns_type, 0)
    tns_idx = np.where((label_name == "CataclyV*") & (u_tns < 0.2), tns_words.index("CV"), tns_idx)
    tns_idx = np.where((label_name == "Nova") & (u_tns < 0.5), tns_words.index("Nova"), tns_idx)
    return _vocab(tns_words, tns_idx)
