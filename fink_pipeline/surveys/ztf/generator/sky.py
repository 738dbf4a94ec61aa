"""Sky and night plan of the synthetic ZTF generator.

A ZTF-like field grid (~570 fields of 7.4 x 7.4 deg, 64 readout quadrants) and a night of
~40 s exposures between evening and morning twilight at Palomar, each on a field near the
meridian; blocks of alerts draw their exposures from that plan.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fink_pipeline.surveys.ztf.generator.arrays import _hash, _hu
from fink_pipeline.surveys.ztf.generator.constants import (
    _FIELD_HALF_H,
    _FIELD_HALF_W,
    _QUAD_H_DEG,
    _QUAD_NX,
    _QUAD_NY,
    _QUAD_W_DEG,
    BLOCK_SIZE,
    JD_NID_EPOCH,
    JD_UNIX_EPOCH,
    PALOMAR_LON_DEG,
)

# --------------------------------------------------------------------------------------------
# Sky: a ZTF-like field grid
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """Field centres of the sky grid with their visit rate and alert density."""

    field_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    glat: np.ndarray
    cadence: np.ndarray  # relative visit rate of the field (prv_candidates length)
    density: np.ndarray  # relative alert density (higher in the Galactic plane)


def _galactic_latitude(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Galactic latitude (degrees) of equatorial coordinates."""
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
    """Exposures of one night and how its blocks of alerts share them."""

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
    """Seed sequence of one random stream of a night, tagged by block and purpose."""
    return np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, night.toordinal(), *tags])


def _night_jd0(night: dt.date) -> float:
    """Julian date of 00:00 UTC of the night date."""
    return JD_UNIX_EPOCH + (night - dt.date(1970, 1, 1)).days


def _plan_night(night: dt.date, n_alerts: int, seed: int) -> _NightPlan:
    """Exposures of the night: time, field (near the meridian), filter and image quality."""
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
