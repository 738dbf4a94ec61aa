"""The diaSource record of each alert (lsst.v10_0 fields)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.alerts import _BlockAlerts, _BlockPhotometry
from fink_pipeline.surveys.lsst.generator.arrays import struct_array, vocab
from fink_pipeline.surveys.lsst.generator.constants import _DIA_SOURCE_FIELDS, BANDS
from fink_pipeline.surveys.lsst.schema import DIA_SOURCE


def _dia_source_struct(rng: np.random.Generator, n: int, alerts: _BlockAlerts,
                       phot: _BlockPhotometry) -> pa.StructArray:
    """diaSource record of each alert (lsst.v10_0 fields; pixel flags set on 3 % of sources)."""
    a, p = alerts, phot
    dia_source_id, visit_id, detector, dia_object_id, ss_object_id, mjd, ra, dec, is_sso, band = (
        a.dia_source_id, a.visit_id, a.detector, a.dia_object_id, a.ss_object_id, a.mjd, a.ra, a.dec, a.is_sso, a.band
    )  # fmt: skip
    snr, flux_err, sign, psf_flux, science_flux, template_flux, extendedness, reliability = (
        p.snr, p.flux_err, p.sign, p.psf_flux, p.science_flux, p.template_flux, p.extendedness, p.reliability
    )  # fmt: skip
    ds = {
        "diaSourceId": dia_source_id, "visit": visit_id, "detector": detector.astype(np.int32),
        "diaObjectId": dia_object_id, "ssObjectId": ss_object_id, "parentDiaSourceId": np.zeros(n, np.int64),
        "midpointMjdTai": mjd, "ra": ra, "dec": dec,
        "raErr": (0.2 / snr / 3600 * rng.uniform(0.8, 1.2, n)).astype(np.float32),
        "decErr": (0.2 / snr / 3600 * rng.uniform(0.8, 1.2, n)).astype(np.float32),
        "ra_dec_Cov": (rng.normal(0, 1e-11, n)).astype(np.float32),
        "x": rng.uniform(10, 4062, n).astype(np.float32), "y": rng.uniform(10, 3990, n).astype(np.float32),
        "xErr": (1.0 / snr * 4).astype(np.float32), "yErr": (1.0 / snr * 4).astype(np.float32),
        "centroid_flag": np.zeros(n, bool),
        "apFlux": (psf_flux * rng.normal(1.0, 0.15, n)).astype(np.float32),
        "apFluxErr": (flux_err * 1.7).astype(np.float32), "apFlux_flag": np.zeros(n, bool),
        "apFlux_flag_apertureTruncated": np.zeros(n, bool), "isNegative": sign < 0,
        "snr": snr.astype(np.float32), "psfFlux": psf_flux.astype(np.float32),
        "psfFluxErr": flux_err.astype(np.float32),
        "psfChi2": (1681 * rng.lognormal(0.02, 0.08, n)).astype(np.float32),
        "psfNdata": np.full(n, 1681, np.int32), "psfFlux_flag": np.zeros(n, bool),
        "psfFlux_flag_edge": np.zeros(n, bool), "psfFlux_flag_noGoodPixels": np.zeros(n, bool),
        "trailFlux": (psf_flux * rng.normal(1.1, 0.2, n)).astype(np.float32),
        "trailFluxErr": (flux_err * rng.uniform(0.02, 2, n)).astype(np.float32),
        "trailRa": ra + rng.normal(0, 0.3 / 3600, n), "trailDec": dec + rng.normal(0, 0.3 / 3600, n),
        "trailLength": np.where(is_sso, rng.uniform(2, 12, n), rng.lognormal(0.45, 0.5, n)).astype(np.float32),
        "trailAngle": rng.uniform(-180, 180, n).astype(np.float32), "trailNdata": np.zeros(n, np.int32),
        "trail_flag_edge": np.zeros(n, bool), "dipoleNdata": np.zeros(n, np.int32),
        "scienceFlux": science_flux.astype(np.float32),
        "scienceFluxErr": (flux_err * rng.uniform(0.98, 1.05, n)).astype(np.float32),
        "forced_PsfFlux_flag": np.zeros(n, bool), "forced_PsfFlux_flag_edge": np.zeros(n, bool),
        "forced_PsfFlux_flag_noGoodPixels": np.zeros(n, bool),
        "templateFlux": template_flux.astype(np.float32),
        "templateFluxErr": (np.abs(template_flux) * 0.0002 + rng.uniform(10, 30, n)).astype(np.float32),
        "ixx": rng.lognormal(-1.2, 0.8, n).astype(np.float32), "iyy": rng.lognormal(-1.2, 0.8, n).astype(np.float32),
        "ixy": rng.normal(0, 0.1, n).astype(np.float32),
        "ixxPSF": rng.lognormal(-1.3, 0.6, n).astype(np.float32), "iyyPSF": rng.lognormal(-1.3, 0.6, n).astype(np.float32),
        "ixyPSF": rng.normal(0, 0.01, n).astype(np.float32),
        "shape_flag": np.zeros(n, bool), "shape_flag_no_pixels": np.zeros(n, bool),
        "shape_flag_not_contained": np.zeros(n, bool), "shape_flag_parent_source": np.zeros(n, bool),
        "extendedness": extendedness.astype(np.float32), "reliability": reliability.astype(np.float32),
        "band": vocab(BANDS, band), "isDipole": np.zeros(n, bool), "dipoleFitAttempted": np.zeros(n, bool),
        "timeProcessedMjdTai": mjd + rng.uniform(1.9, 3.7, n) / 1440.0,
        "bboxSize": np.clip(np.round(rng.lognormal(3.1, 0.45, n)), 9, 80).astype(np.int32),
    }  # fmt: skip
    flags = rng.random((n, 1)) < 0.03
    for name in _DIA_SOURCE_FIELDS:
        if name.startswith("pixelFlags") or name == "glint_trail":
            ds[name] = flags[:, 0] & (rng.random(n) < 0.5) if name.startswith("pixelFlags_interp") else np.zeros(n, bool)
    return struct_array(DIA_SOURCE, ds, n)
