"""Identity, position, class and photometry of a block's alerts: visits, static pool objects,
new objects and asteroids, then their fluxes, templates, light-curve parameters and quality scores.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from fink_pipeline.surveys.lsst.generator.arrays import mag_to_njy
from fink_pipeline.surveys.lsst.generator.constants import (
    BAND_DEPTH,
    EXPOSURE_SECONDS,
    FRACTION_FAST,
    FRACTION_NEO,
    FRACTION_NEW,
    FRACTION_SSO,
    N_DETECTORS,
    POOL_PER_FIELD,
    VISIT_SECONDS,
)
from fink_pipeline.surveys.lsst.generator.night_plan import _field_centres, mjd_of_night
from fink_pipeline.surveys.lsst.generator.populations import (
    AGN,
    BOGUS,
    HOSTLESS,
    MDWARF,
    MDWARF_SHARE,
    MDWARF_SLOTS,
    PEAK_ABS_MAG,
    SN,
    STAR,
    galactic_latitude,
    object_classes,
    peak_phase,
    redshift_of_modulus,
    transient_curve,
)
from fink_pipeline.surveys.lsst.generator.streams import _hash_uniform


@dataclass(frozen=True)
class _BlockAlerts:
    """Visit, identity, position, class and age of each alert of a block."""

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
    cls: np.ndarray  # populations class (asteroids: STAR, a real point source)
    gal_b: np.ndarray
    object_key: np.ndarray  # pool key (known objects) or diaSourceId: per-object hashed draws
    fast: np.ndarray  # planted fast transients (FRACTION_FAST)


@dataclass(frozen=True)
class _BlockPhotometry:
    """Difference, science and template fluxes (nJy), light-curve parameters, quality scores."""

    snr: np.ndarray
    flux_err: np.ndarray
    sign: np.ndarray
    psf_flux: np.ndarray
    template_flux: np.ndarray  # the template's true flux in the alert band
    science_flux: np.ndarray
    reliability: np.ndarray
    extendedness: np.ndarray
    level: np.ndarray  # stars, AGN: mean difference flux of the light curve (nJy)
    amplitude: np.ndarray  # stars, AGN: flux amplitude of the variability (nJy)
    period: np.ndarray  # days
    phi: np.ndarray  # phase of the sine at MJD 0
    tau_rise: np.ndarray  # transients (days)
    tau_fall: np.ndarray
    phase: np.ndarray  # transients: days since explosion now
    redshift: np.ndarray  # transients
    peak_mag: np.ndarray  # transients: apparent magnitude at maximum
    trail_length: np.ndarray  # arcsec
    trail_angle: np.ndarray  # degrees
    ss_rate: np.ndarray  # asteroids: sky motion (deg/day)


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

    # static objects from the field pool (recurring across nights); the first MDWARF_SLOTS are M
    # dwarfs, whose flares make a share of the alerts that depends on the band
    mdwarf = (rng.random(n) < MDWARF_SHARE[band]) & ~is_sso
    slot = np.where(mdwarf, rng.integers(0, MDWARF_SLOTS, n), rng.integers(MDWARF_SLOTS, POOL_PER_FIELD, n))
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
    object_key = np.where(is_known, key.astype(np.int64), dia_source_id)

    # the object's class, then its age: transients are days to months old, the others up to a year
    gal_b = galactic_latitude(ra, dec)
    cls = object_classes(np.where(is_known, _hash_uniform(key, seed, 4), rng.random(n)), is_new, mdwarf, gal_b)
    # fast transients off the Galactic plane (a floor, so that Fink's fast-transient filters
    # have a few a night): young supernova-like objects, first seen in the same band 1-3 days ago
    fast = is_known & (np.abs(gal_b) > 20) & (rng.random(n) < FRACTION_FAST / 0.4)
    cls = np.where(fast, SN, np.where(is_sso, STAR, cls))  # asteroids: real point sources (flags, shape)
    transient_age = np.where(fast, rng.uniform(1.05, 3.0, n), 0.02 + rng.exponential(15.0, n))
    first_mjd = np.where((cls == SN) | (cls == HOSTLESS), mjd - transient_age, first_mjd)
    first_mjd = np.where(is_known, first_mjd, mjd)
    ss_object_id = np.where(is_sso, np.int64(10**15) + rng.integers(0, 10**12, n), 0)
    return _BlockAlerts(mjd, band, v_id[visit], detector, days, dia_source_id, is_sso, is_new, is_known, ra, dec,
                        dia_object_id, first_mjd, ss_object_id, cls, gal_b, object_key, fast)  # fmt: skip


def _block_photometry(rng: np.random.Generator, n: int, alerts: _BlockAlerts) -> _BlockPhotometry:
    """Fluxes (nJy): magnitudes up to the visit depth, S/N >= 5 (samples: p50 5.9, p90 34);
    templates, light-curve parameters and redshifts by class (see `populations`)."""
    band, cls, is_sso, fast = alerts.band, alerts.cls, alerts.is_sso, alerts.fast
    depth = BAND_DEPTH[band] + rng.normal(0, 0.3, n)
    flux_err = mag_to_njy(depth) / 5.0 * rng.uniform(0.9, 1.1, n)
    # first detections are caught near the threshold (steeper tail); flares are bright
    snr = 5.0 + rng.pareto(np.where(alerts.is_new, 2.5, 1.6), n) * np.where(cls == MDWARF, 5.0, 2.5)
    # stars and AGN: a detection of their light curve (mean level + sine, in S/N units), whose
    # earlier detections (history) are drawn the same way
    level, amplitude, theta = _variable_levels(rng, n)
    variable = ((cls == STAR) | (cls == AGN)) & ~is_sso
    snr = np.where(variable, level[0], snr)
    # a few near-Earth objects: close, hence bright (18-22.5 mag), and fast (1.8-4.5 deg/day);
    # planted fast transients (FRACTION_FAST): bright (18.5-20.8 mag) and rising fast
    bright = np.where(is_sso, rng.uniform(18.0, 22.5, n), rng.uniform(18.5, 20.8, n))
    neo = is_sso & (rng.random(n) < FRACTION_NEO)
    snr = np.minimum(np.where(neo | fast, np.maximum(mag_to_njy(bright) / flux_err, 5.0), snr), 400.0)
    ss_rate = np.where(neo, rng.uniform(1.8, 4.5, n), rng.uniform(0.1, 1.2, n))
    # negative differences: variable stars and AGN fainter than their template, artefacts
    negative = np.array([0.05, 0.0, 0.06, 0.0, 0.0, 0.15])[cls] * ~is_sso
    sign = np.where(rng.random(n) < negative, -1.0, 1.0)  # ~5 % in all (sample: 3/62)
    psf_flux = sign * snr * flux_err

    # template at the position: the star, the host galaxy, or blank sky (artefacts: 35 % on stars)
    excursion = np.where(cls == MDWARF, rng.lognormal(np.log(3.0), 1.0, n), rng.lognormal(np.log(0.25), 0.7, n))
    excursion = np.where(cls == AGN, excursion * 0.6, excursion)
    host = rng.lognormal(7.0, 1.2, n)
    blank = rng.normal(0, 150, n)
    template = np.select(
        [is_sso, (cls == STAR) | (cls == MDWARF) | (cls == AGN), cls == SN, cls == BOGUS],
        [rng.normal(0, 300, n), np.abs(psf_flux) / excursion, host + blank,
         np.where(rng.random(n) < 0.35, rng.lognormal(9.5, 2.0, n), blank * 2)],
        blank,
    )  # fmt: skip
    science_flux = template + psf_flux + rng.normal(0, flux_err * 0.2)
    real = rng.random(n) < np.where(cls == BOGUS, 0.1, 0.75)
    reliability = np.where(real, rng.beta(6, 1.2, n), rng.beta(1.2, 2.5, n))
    extended = (cls == SN) | ((cls == BOGUS) & (rng.random(n) < 0.5))
    extendedness = np.where(extended, rng.beta(3, 0.5, n), rng.beta(0.4, 4, n))

    # variability (stars: 0.25 d to 300 d periods; AGN: months) and transients
    period = np.where(cls == AGN, rng.uniform(60, 400, n), 10 ** rng.uniform(-0.6, 2.5, n))
    phi = np.mod(theta - 2 * np.pi / period * alerts.mjd, 2 * np.pi)
    tau_rise = np.where(fast, rng.uniform(1.5, 3.0, n), rng.uniform(1.0, 5.0, n))
    tau_fall = rng.uniform(15.0, 60.0, n)
    peak = peak_phase(tau_rise, tau_fall)
    first_phase = np.where(fast, rng.uniform(0.05, 0.3, n), rng.uniform(0.1, 0.6, n) * peak)  # on the rise
    phase = first_phase + (alerts.mjd - alerts.first_mjd)
    redshift, peak_mag = _transient_redshift(rng, n, cls, psf_flux, tau_rise, tau_fall, peak, phase)
    trail_length = np.where(is_sso, np.hypot(ss_rate * EXPOSURE_SECONDS / 24.0, rng.lognormal(-0.3, 0.4, n)),
                            rng.lognormal(0.0, 0.45, n))  # fmt: skip
    trail_angle = rng.uniform(-180, 180, n)
    return _BlockPhotometry(snr, flux_err, sign, psf_flux, template, science_flux, reliability, extendedness,
                            sign * level[1] * flux_err, sign * amplitude * flux_err, period, phi, tau_rise, tau_fall,
                            phase, redshift, peak_mag, trail_length, trail_angle, ss_rate)  # fmt: skip


def _variable_levels(rng: np.random.Generator, n: int, tries: int = 8):
    """((measured S/N now, mean level), amplitude, phase now) of variable stars and AGN in S/N
    units: level + amplitude sin(phase) + noise, the first of `tries` draws that is a detection."""
    mean = 3.5 + rng.pareto(1.6, n) * 2.5
    amplitude = mean * rng.uniform(0.1, 0.6, n)
    theta = rng.uniform(0, 2 * np.pi, (tries, n))
    draws = mean + amplitude * np.sin(theta) + rng.normal(0, 1, (tries, n))
    first = np.argmax(draws >= 5.0, axis=0)
    found = draws[first, np.arange(n)] >= 5.0
    measured = np.where(found, draws[first, np.arange(n)], 5.0 + np.abs(rng.normal(0, 0.3, n)))
    return (measured, mean), amplitude, theta[first, np.arange(n)]


def _transient_redshift(rng, n, cls, psf_flux, tau_rise, tau_fall, peak, phase):
    """(redshift, peak apparent magnitude) of transients from the peak flux of their light curve and
    a peak absolute magnitude (K-correction neglected): brighter supernovae are closer. Zero
    redshift for the other classes."""
    mean = np.where(cls == HOSTLESS, PEAK_ABS_MAG[HOSTLESS][0], PEAK_ABS_MAG[SN][0])
    sigma = np.where(cls == HOSTLESS, PEAK_ABS_MAG[HOSTLESS][1], PEAK_ABS_MAG[SN][1])
    abs_mag = np.clip(rng.normal(mean, sigma), -21.5, -15.5)
    ratio = transient_curve(peak, tau_rise, tau_fall) / np.maximum(transient_curve(phase, tau_rise, tau_fall), 1e-6)
    peak_mag = 31.4 - 2.5 * np.log10(np.maximum(np.abs(psf_flux) * ratio, 1.0))
    z = np.maximum(redshift_of_modulus(peak_mag - abs_mag), 0.002)
    return np.where((cls == SN) | (cls == HOSTLESS), z, 0.0), peak_mag
