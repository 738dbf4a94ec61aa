"""The night plan: observing hours at Cerro Pachon, the field grid and the night's visits
(time, field, band and visit id), drawn once per night.
"""

from __future__ import annotations

import datetime as dt
import math
from functools import lru_cache

import numpy as np

from fink_pipeline.surveys.lsst.generator.constants import (
    BAND_WEIGHTS,
    BANDS,
    FIELDS_DEC,
    MIDNIGHT_UTC_H,
    MJD_UNIX_EPOCH,
    PACHON_LAT_DEG,
    PACHON_LON_DEG,
    VISIT_SECONDS,
)
from fink_pipeline.surveys.lsst.generator.streams import block_rng


def mjd_of_night(night: dt.date) -> float:
    """MJD at 00:00 UTC of a night."""
    return (night - dt.date(1970, 1, 1)).days + MJD_UNIX_EPOCH


def night_half_length_h(night: dt.date) -> float:
    """Half the astronomical night at Cerro Pachon (hours): 4.3 h in December, 5.5 h in June."""
    doy = night.timetuple().tm_yday
    return 4.9 + 0.6 * math.cos(2 * math.pi * (doy - 172) / 365.25)


def observing_hours(night: dt.date, u: np.ndarray) -> np.ndarray:
    """UTC hours within the date `night` at which Rubin observes, from uniforms `u` in [0, 1).

    The date holds the morning part of one Chilean night, [0, midnight + h), and the evening of
    the next, [24 + midnight - h, 24) (empty when the night starts after 00:00 UTC).
    """
    h = night_half_length_h(night)
    morning = MIDNIGHT_UTC_H + h
    evening = max(0.0, 24.0 - (24.0 + MIDNIGHT_UTC_H - h))
    total = morning + evening
    t = u * total
    return np.where(t < morning, t, 24.0 - (t - morning))


@lru_cache(maxsize=1)
def _field_centres() -> tuple[np.ndarray, np.ndarray]:
    """Field centres (ra, dec) of a ~3.5 deg grid over the Rubin footprint (dec -87..+8)."""
    ras, decs = [], []
    for dec in FIELDS_DEC:
        n = max(1, int(round(360.0 * math.cos(math.radians(dec)) / 3.5)))
        ras.append((np.arange(n) + 0.5) * 360.0 / n)
        decs.append(np.full(n, dec))
    return np.concatenate(ras), np.concatenate(decs)


def _local_sidereal_time_deg(mjd: np.ndarray) -> np.ndarray:
    """Local sidereal time at Cerro Pachon (degrees)."""
    gmst = 280.46061837 + 360.98564736629 * (mjd - 51544.5)
    return np.mod(gmst + PACHON_LON_DEG, 360.0)


def _night_visits(night: dt.date, n_alerts: int, seed: int):
    """(visit mjd, field index, band index, visit id) of the visits holding the night's alerts."""
    rng = block_rng(seed, night, 0, 99)
    h = night_half_length_h(night)
    max_visits = int(2 * h * 3600 / VISIT_SECONDS)
    n_visits = int(np.clip(n_alerts // 40 + 1, 1, max_visits))
    hours = np.sort(observing_hours(night, (np.arange(n_visits) + rng.random(n_visits)) / n_visits))
    mjd = mjd_of_night(night) + hours / 24.0
    field_ra, field_dec = _field_centres()
    lst = _local_sidereal_time_deg(mjd)
    # a field within 3 h of the meridian, away from the celestial pole and the horizon: airmass
    # median 1.15, 18 % above 1.3 (Rubin's baseline cadence: median ~1.2)
    target_ra = np.mod(lst + rng.uniform(-45, 45, n_visits), 360.0)
    target_dec = np.clip(PACHON_LAT_DEG + rng.normal(0, 25, n_visits), -85, 5)
    cosd = np.cos(np.radians(field_dec))
    field = np.empty(n_visits, dtype=np.int64)
    for k in range(n_visits):
        d_ra = np.abs(((field_ra - target_ra[k]) + 180) % 360 - 180) * cosd
        field[k] = int(np.argmin(d_ra**2 + (field_dec - target_dec[k]) ** 2))
    band = rng.choice(len(BANDS), size=n_visits, p=BAND_WEIGHTS)
    # visit = dayObs (local date, UTC-12h) * 100000 + sequence number within that dayObs
    day_obs = np.floor(mjd - 0.5)
    seq = np.zeros(n_visits, dtype=np.int64)
    for d in np.unique(day_obs):
        idx = np.flatnonzero(day_obs == d)
        seq[idx] = np.arange(len(idx)) + 1 + (0 if d >= mjd_of_night(night) else 200)
    dates = [dt.date(1970, 1, 1) + dt.timedelta(days=int(d - MJD_UNIX_EPOCH)) for d in day_obs]
    visit_id = np.array([int(x.strftime("%Y%m%d")) * 100000 for x in dates], dtype=np.int64) + seq
    return mjd, field, band, visit_id
