"""What the camera measured: photometry, reference source, morphology and solar-system fields.

The `_misc_fields` and `_ps1_fields` generators are shared by the candidate and its history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.surveys.ztf.generator.arrays import _gauss
from fink_pipeline.surveys.ztf.generator.constants import (
    _LABEL_INDEX,
    _QUAD_NX,
    _QUAD_NY,
    P_BOGUS,
    P_EXTRAGAL,
    P_MULENS,
    P_SSO,
    P_TRACKLET,
    P_VARSTAR,
    SSO_MPC,
)
from fink_pipeline.surveys.ztf.generator.objects import _Block, _Exposures, _Objects, _Population, _Positions


@dataclass(frozen=True)
class _Photometry:
    """PSF and aperture photometry of the detection against its limiting magnitude."""

    lim: np.ndarray
    magap: np.ndarray
    magpsf: np.ndarray
    snr: np.ndarray
    sigmapsf: np.ndarray
    isdiffpos_t: np.ndarray  # positive difference (isdiffpos 't')


@dataclass(frozen=True)
class _Reference:
    """Nearest source of the reference image: a star for variables, a host for transients."""

    starlike: np.ndarray
    nuclear: np.ndarray
    bogus_star: np.ndarray
    host_dist: np.ndarray
    distnr_obj: np.ndarray  # true distance to the reference source (arcsec)
    distnr: np.ndarray  # measured distance
    magnr: np.ndarray
    sigmagnr: np.ndarray
    ranr: np.ndarray
    decnr: np.ndarray


@dataclass(frozen=True)
class _Morphology:
    """Real/bogus scores and shape of the detection."""

    drb: np.ndarray
    rb: np.ndarray
    classtar: np.ndarray
    fwhm: np.ndarray
    elong: np.ndarray


@dataclass(frozen=True)
class _SolarSystem:
    """Known asteroid (MPC) match of the detection."""

    sso_mpc: np.ndarray
    ssdistnr: np.ndarray
    ssmagnr: np.ndarray
    ssnamenr: pa.Array


def _photometry(blk: _Block, pop: _Population, exp: _Exposures) -> _Photometry:
    """Magnitudes a little above the exposure's limit; S/N fitted on the real packets."""
    n, rng, plan, profile = blk.n, blk.rng, blk.plan, pop.profile
    lim = plan.exp_lim[exp.e] + rng.normal(0, 0.06, n)
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
    return _Photometry(lim, magap, magpsf, snr, sigmapsf, isdiffpos_t)


def _reference_source(blk: _Block, pop: _Population, obj: _Objects, pos: _Positions,
                      phot: _Photometry) -> _Reference:
    """Stars sit on their reference source, transients near a host, asteroids far from anything."""
    n, rng, profile, uo, stable = blk.n, blk.rng, pop.profile, obj.uo, obj.stable
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
        [13.5 + 8.0 * uo(6), phot.magpsf - rng.uniform(0.1, 2.5, n), 16.0 + 4.5 * uo(6), 11.5 + 5.0 * uo(6)],
        17.5 + 5.7 * uo(6),
    )  # fmt: skip
    magnr = np.clip(magnr, 11.0, 23.3)
    sigmagnr = 0.01 + 0.33 * np.clip((magnr - 16.0) / 7.0, 0, 1) ** 1.6 * (0.7 + 0.4 * uo(26))
    theta = 2 * np.pi * uo(27)
    decnr = pos.dec0 + distnr_obj * np.sin(theta) / 3600.0
    ranr = (pos.ra0 + distnr_obj * np.cos(theta) / 3600.0 / np.cos(np.radians(pos.dec0))) % 360.0
    return _Reference(starlike, nuclear, bogus_star, host_dist, distnr_obj, distnr, magnr, sigmagnr, ranr, decnr)


def _morphology(blk: _Block, pop: _Population, exp: _Exposures, ref: _Reference) -> _Morphology:
    """Real/bogus scores (drb, rb), star/galaxy score, FWHM and elongation."""
    n, rng, profile = blk.n, blk.rng, pop.profile
    real_drb = 1.0 - 10 ** (-rng.uniform(0.7, 6.5, n))
    marginal = rng.random(n) < 0.08
    drb = np.where(marginal, rng.uniform(0.5, 0.95, n), real_drb)
    drb = np.where(profile == P_BOGUS, 0.5 * 10 ** (-rng.uniform(0.0, 3.5, n)), drb)
    drb = np.where(profile == P_TRACKLET, rng.uniform(0.2, 1.0, n), drb)
    rb = np.where(profile == P_BOGUS, rng.uniform(0.18, 0.62, n), 0.4 + 0.58 * rng.beta(2.2, 1.3, n))
    classtar = np.select(
        [ref.starlike | np.isin(profile, (P_SSO,)), profile == P_TRACKLET],
        [1.0 - rng.exponential(0.015, n), 1.0 - rng.exponential(0.15, n)],
        np.where(rng.random(n) < 0.88, 1.0 - rng.exponential(0.04, n), rng.uniform(0.02, 0.95, n)),
    )  # fmt: skip
    classtar = np.clip(classtar, 0.0, 1.0)
    fwhm = blk.plan.exp_fwhm[exp.e] * rng.uniform(0.97, 1.03, n)
    elong = 1.0 + rng.exponential(0.12, n)
    elong[profile == P_TRACKLET] += rng.uniform(0.5, 3.0, (profile == P_TRACKLET).sum())
    return _Morphology(drb, rb, classtar, fwhm, elong)


def _solar_system(blk: _Block, pop: _Population, phot: _Photometry) -> _SolarSystem:
    """MPC asteroid match of Solar System MPC alerts (-999 and "null" otherwise, as ZTF writes)."""
    n, rng = blk.n, blk.rng
    sso_mpc = pop.label == _LABEL_INDEX[SSO_MPC]
    ssdistnr = np.where(sso_mpc, np.round(rng.exponential(0.5, n)), -999.0)
    ssmagnr = np.where(sso_mpc, np.round(phot.magpsf + rng.normal(0.2, 0.4, n), 1), -999.0)
    ssnum = np.floor(np.exp(rng.uniform(0, np.log(700000), n))).astype(np.int64) + 1
    # MPC number of the asteroid; ZTF writes the string "null" when there is none
    ssnamenr = pc.if_else(pa.array(sso_mpc), pc.cast(pa.array(ssnum), pa.string()), pa.scalar("null"))
    return _SolarSystem(sso_mpc, ssdistnr, ssmagnr, ssnamenr)


# --------------------------------------------------------------------------------------------
# Field generators shared by the candidate and its history
# --------------------------------------------------------------------------------------------


def _misc_fields(rng, n, magpsf, magap, sigmapsf, lim, fwhm, xpos, ypos, elong) -> dict[str, np.ndarray]:
    """Aperture photometry, image moments, zero points and quality fields around the PSF photometry."""
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

