"""Identity, position and photometry of a block's alerts: visits, static pool objects, new
objects and asteroids, then their fluxes and quality scores.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from fink_pipeline.surveys.lsst.generator.arrays import mag_to_njy
from fink_pipeline.surveys.lsst.generator.constants import (
    BAND_DEPTH,
    FRACTION_NEW,
    FRACTION_SSO,
    N_DETECTORS,
    POOL_PER_FIELD,
    VISIT_SECONDS,
)
from fink_pipeline.surveys.lsst.generator.night_plan import _field_centres, mjd_of_night
from fink_pipeline.surveys.lsst.generator.streams import _hash_uniform


@dataclass(frozen=True)
class _BlockAlerts:
    """Visit, identity and position of each alert of a block."""

    mjd: np.ndarray
    band: np.ndarray
    visit_id: np.ndarray
    detector: np.ndarray
    days: int  # days since 2020-01-01 (diaSourceId prefix)
    dia_source_id: np.ndarray
    is_sso: np.ndarray
    is_new: np.ndarray
    is_known: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    dia_object_id: np.ndarray
    first_mjd: np.ndarray
    ss_object_id: np.ndarray


@dataclass(frozen=True)
class _BlockPhotometry:
    """Difference, science and template fluxes (nJy) and quality scores of each alert."""

    snr: np.ndarray
    flux_err: np.ndarray
    sign: np.ndarray
    psf_flux: np.ndarray
    template_flux: np.ndarray
    science_flux: np.ndarray
    reliability: np.ndarray
    extendedness: np.ndarray


def _block_alerts(rng: np.random.Generator, night: dt.date, seed: int, n: int, start: int, plan) -> _BlockAlerts:
    """Visits of the alerts, then their objects: field-pool statics, new objects, asteroids."""
    v_mjd, v_field, v_band, v_id = plan
    visit = np.sort(rng.integers(0, len(v_mjd), n))
    mjd = v_mjd[visit] + rng.uniform(0, VISIT_SECONDS / 86400.0 * 0.9, n)
    band = v_band[visit]
    field = v_field[visit]
    detector = rng.integers(0, N_DETECTORS, n)
    field_ra, field_dec = _field_centres()
    days = (night - dt.date(2020, 1, 1)).days
    index = start + np.arange(n)
    dia_source_id = np.int64(10**17) + np.int64(days) * np.int64(10**10) + index.astype(np.int64)

    kind = rng.random(n)
    is_sso = kind < FRACTION_SSO
    is_new = (~is_sso) & (kind < FRACTION_SSO + FRACTION_NEW)
    is_known = ~(is_sso | is_new)

    # static objects from the field pool (recurring across nights)
    slot = rng.integers(0, POOL_PER_FIELD, n)
    key = field * POOL_PER_FIELD + slot
    u1, u2 = _hash_uniform(key, seed, 1), _hash_uniform(key, seed, 2)
    cosd = np.cos(np.radians(field_dec[field]))
    pool_ra = np.mod(field_ra[field] + (u1 - 0.5) * 3.5 / np.maximum(cosd, 0.05), 360.0)
    pool_dec = np.clip(field_dec[field] + (u2 - 0.5) * 3.5, -89.9, 89.9)
    first_mjd = mjd_of_night(night) - 1 - 365 * _hash_uniform(key, seed, 3) ** 1.5
    pool_id = np.int64(10**17) + (key.astype(np.int64) * 7919 + np.int64(seed % 1000)) % np.int64(10**16)
    ra = np.where(is_known, pool_ra, np.mod(field_ra[field] + rng.uniform(-1.75, 1.75, n) / np.maximum(cosd, 0.05), 360))
    dec = np.where(is_known, pool_dec, np.clip(field_dec[field] + rng.uniform(-1.75, 1.75, n), -89.9, 89.9))
    ra = ra + rng.normal(0, 0.05 / 3600, n)
    dec = dec + rng.normal(0, 0.05 / 3600, n)
    dia_object_id = np.where(is_known, pool_id, np.where(is_new, dia_source_id, 0))
    first_mjd = np.where(is_known, first_mjd, mjd)
    ss_object_id = np.where(is_sso, np.int64(10**15) + rng.integers(0, 10**12, n), 0)
    return _BlockAlerts(mjd, band, v_id[visit], detector, days, dia_source_id, is_sso, is_new, is_known, ra, dec,
                        dia_object_id, first_mjd, ss_object_id)  # fmt: skip


def _block_photometry(rng: np.random.Generator, n: int, alerts: _BlockAlerts) -> _BlockPhotometry:
    """Fluxes (nJy): magnitudes up to the visit depth, S/N >= 5 (samples: p50 5.9, p90 34)."""
    band, is_known = alerts.band, alerts.is_known
    depth = BAND_DEPTH[band] + rng.normal(0, 0.3, n)
    snr = 5.0 + rng.pareto(1.6, n) * 2.5
    snr = np.minimum(snr, 400.0)
    flux_err = mag_to_njy(depth) / 5.0 * rng.uniform(0.9, 1.1, n)
    sign = np.where(rng.random(n) < 0.05, -1.0, 1.0)  # 5 % negative differences (sample: 3/62)
    psf_flux = sign * snr * flux_err
    template_flux = np.where(is_known & (rng.random(n) < 0.5), rng.lognormal(9.5, 2.0, n), rng.normal(0, 300, n))
    science_flux = template_flux + psf_flux + rng.normal(0, flux_err * 0.2)
    reliability = np.where(rng.random(n) < 0.55, rng.beta(6, 1.2, n), rng.beta(1.2, 2.5, n))
    extendedness = np.where(rng.random(n) < 0.5, rng.beta(0.4, 4, n), rng.beta(3, 0.5, n))
    return _BlockPhotometry(snr, flux_err, sign, psf_flux, template_flux, science_flux, reliability, extendedness)
