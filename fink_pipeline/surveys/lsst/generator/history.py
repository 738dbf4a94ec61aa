"""History of known objects: previous detections and forced photometry, the diaObject
aggregates over them and Fink's light-curve features.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.alerts import _BlockAlerts, _BlockPhotometry
from fink_pipeline.surveys.lsst.generator.arrays import list_array, mag_to_njy, struct_array, vocab
from fink_pipeline.surveys.lsst.generator.constants import BAND_DEPTH, BAND_WEIGHTS, BANDS, N_DETECTORS
from fink_pipeline.surveys.lsst.generator.populations import history_flux, template_in_band
from fink_pipeline.surveys.lsst.generator.solar_system import _solar_system_structs
from fink_pipeline.surveys.lsst.schema import (
    ARCHIVE_SCHEMA,
    DIA_FORCED_SOURCE,
    DIA_OBJECT,
    DIA_SOURCE,
    LC_FEATURES,
)


def _history_columns(rng: np.random.Generator, n: int, alerts: _BlockAlerts, phot: _BlockPhotometry,
                     start: int) -> dict[str, pa.Array]:
    """Previous detections and forced photometry of known objects, diaObject, solar-system records."""
    a = alerts
    is_known, is_sso, dia_object_id, first_mjd, mjd, ra, dec, band, days = (
        a.is_known, a.is_sso, a.dia_object_id, a.first_mjd, a.mjd, a.ra, a.dec, a.band, a.days
    )  # fmt: skip
    flux_err, psf_flux = phot.flux_err, phot.psf_flux
    prv, prv_stats, n_prv = _previous_sources(rng, a, phot, start)
    n_forced = np.where(is_known, np.minimum(n_prv + rng.integers(0, 60, n), 800), 0).astype(np.int64)
    forced = _previous_forced_sources(rng, n_forced, dia_object_id, first_mjd, mjd, ra, dec, flux_err, band, days, start)

    dia_object = _dia_object_struct(rng, n, dia_object_id, ra, dec, first_mjd, mjd, band, psf_flux, flux_err, prv_stats,
                             n_prv, is_sso)  # fmt: skip
    ss_source, mpc_orbits = _solar_system_structs(rng, n, is_sso, a.dia_source_id, a.ss_object_id, ra, dec, mjd, phot)
    return {
        "prvDiaSources": prv,
        "prvDiaForcedSources": forced,
        "diaObject": dia_object,
        "ssSource": ss_source,
        "mpc_orbits": mpc_orbits,
        "lc_features": _lc_features(prv_stats, n),
    }


def _previous_sources(rng, a: _BlockAlerts, p: _BlockPhotometry, start: int):
    """prvDiaSources: the earlier detections (|S/N| >= 5) of each known object on its light curve,
    the first one at `first_mjd` (in the alert's band for 40 %, every fast transient), later
    visits in the alert's band a quarter of the time."""
    n = len(a.mjd)
    age = a.mjd - a.first_mjd
    rate = rng.lognormal(np.log(0.3), 0.9, n)  # visits per day of the object's field
    n_cand = np.where(a.is_known, np.minimum(np.round(age * rate), 399), 0).astype(np.int64)
    first = np.flatnonzero(a.is_known)
    owner = np.concatenate([first, np.repeat(np.arange(n), n_cand)])
    total = len(owner)
    is_first = np.arange(total) < len(first)
    t = a.first_mjd[owner] + np.where(is_first, 0.0, rng.random(total) * age[owner])
    same = rng.random(total) < np.where(is_first, np.where(a.fast[owner], 1.0, 0.4), 0.25)
    p_band = np.where(same, a.band[owner], rng.choice(len(BANDS), size=total, p=BAND_WEIGHTS))
    err = mag_to_njy(BAND_DEPTH[p_band] + rng.normal(0, 0.3, total)) / 5.0 * rng.uniform(0.9, 1.1, total)
    flux = history_flux(rng, a, p, owner, p_band, t) + rng.normal(0, err)
    faint = np.abs(flux) < 5 * err
    flux = np.where(is_first & faint, np.where(flux < 0, -1.0, 1.0) * err * rng.uniform(5.0, 6.0, total), flux)
    keep = np.flatnonzero(is_first | ~faint)
    keep = keep[np.lexsort((t[keep], owner[keep]))]  # chronological within each alert
    owner, t, p_band, err, flux = owner[keep], t[keep], p_band[keep], err[keep], flux[keep]
    total = len(owner)
    counts = np.bincount(owner, minlength=n).astype(np.int64)
    template = template_in_band(a, p, owner, p_band) + rng.normal(0, 20, total)
    snr = np.abs(flux) / err
    ids = np.int64(10**17) + np.int64(a.days - 1) * np.int64(10**10) - (start + np.arange(total)) - 1
    vals = {
        "diaSourceId": ids, "visit": (a.visit_id[owner] - 10_000_000 * rng.integers(1, 300, total)).astype(np.int64),
        "detector": rng.integers(0, N_DETECTORS, total).astype(np.int32), "diaObjectId": a.dia_object_id[owner],
        "ssObjectId": np.zeros(total, np.int64), "parentDiaSourceId": np.zeros(total, np.int64),
        "midpointMjdTai": t, "ra": a.ra[owner] + rng.normal(0, 0.05 / 3600, total),
        "dec": a.dec[owner] + rng.normal(0, 0.05 / 3600, total),
        "raErr": (0.2 / np.maximum(snr, 1) / 3600).astype(np.float32),
        "decErr": (0.2 / np.maximum(snr, 1) / 3600).astype(np.float32),
        "x": rng.uniform(10, 4062, total).astype(np.float32), "y": rng.uniform(10, 3990, total).astype(np.float32),
        "psfFlux": flux.astype(np.float32), "psfFluxErr": err.astype(np.float32), "snr": snr.astype(np.float32),
        "scienceFlux": (template + flux + rng.normal(0, err * 0.2)).astype(np.float32), "scienceFluxErr": err.astype(np.float32),
        "templateFlux": template.astype(np.float32), "templateFluxErr": rng.uniform(10, 30, total).astype(np.float32),
        "band": vocab(BANDS, p_band), "reliability": rng.beta(5, 1.5, total).astype(np.float32),
        "isNegative": flux < 0, "psfNdata": np.full(total, 1681, np.int32),
        "timeProcessedMjdTai": t + 2.5 / 1440.0, "centroid_flag": np.zeros(total, bool),
        "psfFlux_flag": np.zeros(total, bool), "pixelFlags": np.zeros(total, bool),
    }  # fmt: skip
    items = struct_array(DIA_SOURCE, vals, total)
    stats = {"owner": owner, "band": p_band, "flux": flux, "err": err, "t": t}
    return list_array(counts, items, ARCHIVE_SCHEMA.field("prvDiaSources").type), stats, counts


def _previous_forced_sources(rng, counts, object_id, first_mjd, mjd, ra, dec, flux_err, band, days, start):
    """prvDiaForcedSources: `counts[i]` forced measurements from 30 days before the first detection."""
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(counts)), counts)
    t = first_mjd[owner] - 30 + rng.random(total) * (np.maximum(mjd - first_mjd, 1.0)[owner] + 30)
    order = np.lexsort((t, owner))
    t = t[order]
    err = flux_err[owner] * rng.uniform(0.7, 1.3, total)
    flux = rng.normal(0, err) + rng.lognormal(6.5, 1.5, total) * (rng.random(total) < 0.6)
    vals = {
        "diaForcedSourceId": np.int64(2 * 10**17) + np.int64(days) * np.int64(10**10) + start * 1000
        + np.arange(total, dtype=np.int64),
        "diaObjectId": object_id[owner], "ra": ra[owner], "dec": dec[owner],
        "visit": np.int64(2025_06_01_00000) + rng.integers(0, 10**9, total),
        "detector": rng.integers(0, N_DETECTORS, total).astype(np.int32),
        "psfFlux": flux.astype(np.float32), "psfFluxErr": err.astype(np.float32), "midpointMjdTai": t,
        "scienceFlux": (flux + rng.lognormal(9, 2, total)).astype(np.float32), "scienceFluxErr": err.astype(np.float32),
        "band": vocab(BANDS, rng.choice(len(BANDS), size=total, p=BAND_WEIGHTS)),
        "timeProcessedMjdTai": t + 2.1 / 1440.0,
    }  # fmt: skip
    items = struct_array(DIA_FORCED_SOURCE, vals, total)
    return list_array(counts, items, ARCHIVE_SCHEMA.field("prvDiaForcedSources").type)


def _dia_object_struct(rng, n, object_id, ra, dec, first_mjd, mjd, band, psf_flux, flux_err, stats, n_prv, is_sso):
    """diaObject: per-band aggregates over the history plus the current detection."""
    owner = np.concatenate([stats["owner"], np.arange(n)])
    b = np.concatenate([stats["band"], band])
    f = np.concatenate([stats["flux"], psf_flux])
    e = np.concatenate([stats["err"], flux_err])
    vals = {
        "diaObjectId": object_id, "validityStartMjdTai": mjd + 2.5 / 1440.0, "ra": ra, "dec": dec,
        "raErr": rng.uniform(1e-6, 4e-5, n).astype(np.float32), "decErr": rng.uniform(1e-6, 4e-5, n).astype(np.float32),
        "ra_dec_Cov": rng.normal(0, 1e-11, n).astype(np.float32),
        "firstDiaSourceMjdTai": first_mjd, "lastDiaSourceMjdTai": mjd, "nDiaSources": (n_prv + 1).astype(np.int32),
    }  # fmt: skip
    for k, name in enumerate(BANDS):
        sel = b == k
        cnt = np.bincount(owner[sel], minlength=n)
        s = np.bincount(owner[sel], weights=f[sel], minlength=n)
        s2 = np.bincount(owner[sel], weights=f[sel] ** 2, minlength=n)
        se = np.bincount(owner[sel], weights=e[sel], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(cnt > 0, s / cnt, np.nan)
            sigma = np.where(cnt > 1, np.sqrt(np.maximum(s2 / cnt - mean**2, 0)), np.nan)
            err_mean = np.where(cnt > 0, se / cnt, np.nan)
        mins = np.full(n, np.inf)
        maxs = np.full(n, -np.inf)
        np.minimum.at(mins, owner[sel], f[sel])
        np.maximum.at(maxs, owner[sel], f[sel])
        vals.update({
            f"{name}_psfFluxMean": mean.astype(np.float32), f"{name}_psfFluxMeanErr": (err_mean / np.sqrt(np.maximum(cnt, 1))).astype(np.float32),
            f"{name}_psfFluxSigma": sigma.astype(np.float32), f"{name}_psfFluxNdata": cnt.astype(np.int32),
            f"{name}_fpFluxMean": np.where(cnt > 0, mean * rng.normal(1, 0.05, n), np.nan).astype(np.float32),
            f"{name}_fpFluxMeanErr": (err_mean / np.sqrt(np.maximum(cnt, 1))).astype(np.float32),
            f"{name}_psfFluxMin": np.where(cnt > 0, mins, np.nan).astype(np.float32),
            f"{name}_psfFluxMax": np.where(cnt > 0, maxs, np.nan).astype(np.float32),
            f"{name}_psfFluxErrMean": err_mean.astype(np.float32),
            f"{name}_psfFluxMaxSlope": np.where(cnt > 1, rng.normal(0, 2000, n), np.nan).astype(np.float32),
            f"{name}_scienceFluxMean": np.where(cnt > 0, mean + rng.lognormal(9, 2, n), np.nan).astype(np.float32),
            f"{name}_scienceFluxMeanErr": (err_mean / np.sqrt(np.maximum(cnt, 1))).astype(np.float32),
        })  # fmt: skip
    return struct_array(DIA_OBJECT, vals, n, mask=is_sso)


def _lc_features(stats: dict, n: int) -> pa.MapArray:
    """Fink light-curve features per band (map band -> 26 features) from the history.

    The moments (mean, weighted mean, standard deviation, median, amplitude, beyond_1_std,
    chi2, mean_variance) are computed; the other features are null.
    """
    owner, band, flux, err = stats["owner"], stats["band"], stats["flux"], stats["err"]
    if len(owner) == 0:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string()),
                                       pa.nulls(0, LC_FEATURES), type=ARCHIVE_SCHEMA.field("lc_features").type)  # fmt: skip
    key = owner * len(BANDS) + band
    order = np.argsort(key, kind="stable")
    key, flux, err = key[order], flux[order], err[order]
    groups, starts, counts = np.unique(key, return_index=True, return_counts=True)
    w = 1.0 / err**2
    mean = np.add.reduceat(flux, starts) / counts
    wmean = np.add.reduceat(flux * w, starts) / np.add.reduceat(w, starts)
    dev = flux - np.repeat(mean, counts)
    std = np.sqrt(np.add.reduceat(dev**2, starts) / np.maximum(counts - 1, 1))
    mx = np.maximum.reduceat(flux, starts)
    mn = np.minimum.reduceat(flux, starts)
    beyond = np.add.reduceat((np.abs(dev) > np.repeat(std, counts)).astype(float), starts) / counts
    chi2 = np.add.reduceat((flux - np.repeat(wmean, counts)) ** 2 * w, starts) / np.maximum(counts - 1, 1)
    by_flux = flux[np.lexsort((flux, key))]  # sorted by group, then by flux: the median is the middle
    median = (by_flux[starts + (counts - 1) // 2] + by_flux[starts + counts // 2]) / 2
    values = {"mean": mean, "weighted_mean": wmean, "standard_deviation": std, "median": median,
              "amplitude": (mx - mn) / 2, "beyond_1_std": beyond, "chi2": chi2,
              "mean_variance": std / np.where(mean == 0, np.nan, np.abs(mean))}  # fmt: skip
    items = struct_array(LC_FEATURES, values, len(groups))
    owners = groups // len(BANDS)
    per_owner = np.bincount(owners, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(per_owner, out=offsets[1:])
    keys = vocab(BANDS, groups % len(BANDS))
    return pa.MapArray.from_arrays(pa.array(offsets), keys, items, type=ARCHIVE_SCHEMA.field("lc_features").type)
