"""History of an alert: prv_candidates (30 days of detections and upper limits), the history
counts of the candidate (ndethist, jdstarthist, ...), and what Fink computes from the light
curve (rates and light-curve features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.ztf.generator.arrays import (
    _arrow_struct,
    _const,
    _chars,
    _digits,
    _fixed_strings,
    _hu,
    _sorted_group_stats,
    _utc_ymd,
    _vocab,
)
from fink_pipeline.surveys.ztf.generator.constants import (
    _LABEL_INDEX,
    _QUAD_NX,
    _QUAD_NY,
    _SPICY_TREND_LABELS,
    EARLY_SN,
    JD_NID_EPOCH,
    JD_SURVEY_START,
    P_BOGUS,
    P_EXTRAGAL,
    P_MULENS,
    P_SSO,
    P_TRANSIENT,
    P_VARSTAR,
    S_POOL,
    S_TRANSIENT,
)
from fink_pipeline.surveys.ztf.generator.detection import _misc_fields, _Morphology, _Photometry, _Reference
from fink_pipeline.surveys.ztf.generator.objects import _Block, _Exposures, _Objects, _Population, _Positions
from fink_pipeline.surveys.ztf.generator.sky import _grid
from fink_pipeline.surveys.ztf.schema import LC_FEATURES, PRV_CANDIDATE


@dataclass(frozen=True)
class _Lengths:
    """How many history entries each alert has, and how its object behaves over them."""

    length: np.ndarray
    obj_age: np.ndarray  # days since first detection (pool) or birth (transients)
    young: np.ndarray  # transients born within the 30-day window
    p_det: np.ndarray  # probability that a visit is a detection
    spicy_trend: np.ndarray  # YSOs fading or brightening steadily


@dataclass(frozen=True)
class _History:
    """Flat history entries (segment `seg` = alert index, sorted by time) and history counts."""

    length: np.ndarray
    seg: np.ndarray
    det: np.ndarray  # detection (else upper limit)
    jd_k: np.ndarray
    fid_k: np.ndarray
    lim_k: np.ndarray
    mag_k: np.ndarray
    sig_k: np.ndarray
    spicy_trend: np.ndarray
    jdstarthist: np.ndarray
    ndethist: np.ndarray
    ncovhist: np.ndarray
    nalerthist: np.ndarray


def _history(blk: _Block, pop: _Population, exp: _Exposures, obj: _Objects, phot: _Photometry,
             first_det: np.ndarray, birth_jd: np.ndarray) -> _History:
    """30-day history of each alert consistent with candidate.ndethist / jdstarthist / nalerthist."""
    lengths = _history_lengths(blk, pop, exp, obj, first_det, birth_jd)
    seg, det, jd_k, fid_k, lim_k, mag_k, sig_k = _history_points(blk, pop, exp, obj, phot, lengths)
    counts = _history_counts(blk, pop, exp, obj, lengths, first_det, birth_jd, seg, det, jd_k)
    return _History(lengths.length, seg, det, jd_k, fid_k, lim_k, mag_k, sig_k, lengths.spicy_trend, *counts)


def _history_lengths(blk: _Block, pop: _Population, exp: _Exposures, obj: _Objects, first_det: np.ndarray,
                     birth_jd: np.ndarray) -> _Lengths:
    """Entries per alert (more on often visited fields), object ages and detection probabilities."""
    rng, label, profile, source, jd = blk.rng, pop.label, pop.profile, pop.source, exp.jd
    h_obj, stable = obj.h_obj, obj.stable
    cadence = _grid().cadence[exp.f_idx]
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
    return _Lengths(length, obj_age, young, p_det, spicy_trend)


def _history_points(blk: _Block, pop: _Population, exp: _Exposures, obj: _Objects, phot: _Photometry,
                    lengths: _Lengths):
    """Times, filters, limits and magnitudes of the history entries, sorted by time per alert.

    Returns (seg, det, jd_k, fid_k, lim_k, mag_k, sig_k).
    """
    n, rng, profile, jd, h_obj, stable = blk.n, blk.rng, pop.profile, exp.jd, obj.h_obj, obj.stable
    length, obj_age, young, p_det, spicy_trend = (
        lengths.length, lengths.obj_age, lengths.young, lengths.p_det, lengths.spicy_trend
    )  # fmt: skip
    magpsf = phot.magpsf
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
    return seg, det, jd_k, fid_k, lim_k, mag_k, sig_k


def _history_counts(blk: _Block, pop: _Population, exp: _Exposures, obj: _Objects, lengths: _Lengths,
                    first_det: np.ndarray, birth_jd: np.ndarray, seg: np.ndarray, det: np.ndarray,
                    jd_k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(jdstarthist, ndethist, ncovhist, nalerthist), including detections before the window."""
    n, rng, source, jd = blk.n, blk.rng, pop.source, exp.jd
    young, p_det, h_obj = lengths.young, lengths.p_det, obj.h_obj
    cadence = _grid().cadence[exp.f_idx]
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
    return jdstarthist, ndethist, ncovhist, nalerthist


def _prv_candidates_list(blk: _Block, pop: _Population, exp: _Exposures, pos: _Positions, phot: _Photometry,
                         ref: _Reference, morph: _Morphology, hist: _History) -> pa.ListArray:
    """prv_candidates column: one list of history entries per alert."""
    n, rng, plan, grid = blk.n, blk.rng, blk.plan, _grid()
    T = len(hist.seg)
    prv = _prv_candidates(rng, plan, n, T, hist.seg, hist.det, hist.jd_k, hist.fid_k, hist.lim_k, hist.mag_k,
                          hist.sig_k, grid.field_id[exp.f_idx], pos.rcid, pos.ra, pos.dec, pos.xpos, pos.ypos,
                          ref.distnr, ref.magnr, ref.sigmagnr, ref.ranr, ref.decnr, morph.classtar,
                          phot.isdiffpos_t, pop.profile, morph.fwhm)  # fmt: skip
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(hist.length, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), prv)


def _light_curve_columns(blk: _Block, exp: _Exposures, phot: _Photometry, hist: _History) -> dict[str, pa.Array]:
    """lc_features_g / lc_features_r and the rate columns, computed from the history."""
    n, rng, jd, fid, magpsf, sigmapsf = blk.n, blk.rng, exp.jd, exp.fid, phot.magpsf, phot.sigmapsf
    seg, det, jd_k, fid_k, lim_k, mag_k, sig_k = (
        hist.seg, hist.det, hist.jd_k, hist.fid_k, hist.lim_k, hist.mag_k, hist.sig_k
    )  # fmt: skip
    with np.errstate(all="ignore"):  # undefined features are NaN by design
        lc = _light_curve_features(rng, n, seg, det, jd_k, fid_k, mag_k, sig_k, jd, fid, magpsf, sigmapsf)
    rates, jd_first_real = _rates(n, seg, det, jd_k, fid_k, mag_k, sig_k, lim_k, jd, fid, magpsf, sigmapsf, rng)
    rates["jdstarthist_dt"] = pa.array(jd_first_real - hist.jdstarthist)
    return {"lc_features_g": lc["g"], "lc_features_r": lc["r"], **rates}


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

