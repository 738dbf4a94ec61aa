"""The candidate struct of the synthetic ZTF alerts (ZTF 4.02 `candidate` record)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.ztf.generator.arrays import (
    _arrow_struct,
    _chars,
    _const,
    _digits,
    _fixed_strings,
    _hash,
    _hu,
    _utc_ymd,
    _vocab,
)
from fink_pipeline.surveys.ztf.generator.detection import (
    _misc_fields,
    _Morphology,
    _Photometry,
    _ps1_fields,
    _Reference,
    _SolarSystem,
)
from fink_pipeline.surveys.ztf.generator.history import _History
from fink_pipeline.surveys.ztf.generator.objects import _Block, _Exposures, _Objects, _Positions
from fink_pipeline.surveys.ztf.generator.sky import _grid
from fink_pipeline.surveys.ztf.schema import CANDIDATE


def _candidate_struct(blk: _Block, exp: _Exposures, obj: _Objects, pos: _Positions,
                      ids: tuple[np.ndarray, np.ndarray, np.ndarray], phot: _Photometry, ref: _Reference,
                      morph: _Morphology, sso: _SolarSystem, hist: _History) -> pa.StructArray:
    """candidate: exposure, ids, photometry, reference source, PS1/Gaia neighbours, history counts."""
    n, rng, plan, grid, uo = blk.n, blk.rng, blk.plan, _grid(), obj.uo
    e, f_idx, jd, fid = exp.e, exp.f_idx, exp.jd, exp.fid
    ra0, dec0, rcid, xpos, ypos, ra, dec = pos.ra0, pos.dec0, pos.rcid, pos.xpos, pos.ypos, pos.ra, pos.dec
    pid, tblid, candid = ids
    lim, magap, magpsf, snr, sigmapsf, isdiffpos_t = (
        phot.lim, phot.magap, phot.magpsf, phot.snr, phot.sigmapsf, phot.isdiffpos_t
    )  # fmt: skip
    starlike, bogus_star, nuclear, distnr_obj, distnr, magnr, sigmagnr, ranr, decnr = (
        ref.starlike, ref.bogus_star, ref.nuclear, ref.distnr_obj, ref.distnr, ref.magnr, ref.sigmagnr, ref.ranr,
        ref.decnr,
    )  # fmt: skip
    drb, rb, classtar, fwhm, elong = morph.drb, morph.rb, morph.classtar, morph.fwhm, morph.elong
    ssdistnr, ssmagnr, ssnamenr = sso.ssdistnr, sso.ssmagnr, sso.ssnamenr
    ndethist, ncovhist, jdstarthist = hist.ndethist, hist.ncovhist, hist.jdstarthist
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
    return _arrow_struct(CANDIDATE, cand, n)
