"""The diaSource record of each alert (lsst.v10_0 fields)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.alerts import _BlockAlerts, _BlockPhotometry
from fink_pipeline.surveys.lsst.generator.arrays import mag_to_njy, struct_array, vocab
from fink_pipeline.surveys.lsst.generator.constants import _DIA_SOURCE_FIELDS, BANDS
from fink_pipeline.surveys.lsst.generator.populations import BOGUS
from fink_pipeline.surveys.lsst.schema import DIA_SOURCE


def _dia_source_struct(rng: np.random.Generator, n: int, alerts: _BlockAlerts,
                       phot: _BlockPhotometry) -> pa.StructArray:
    """diaSource record of each alert (lsst.v10_0 fields; flags from `_flags`, trails from the photometry)."""
    a, p = alerts, phot
    dia_source_id, visit_id, detector, dia_object_id, ss_object_id, mjd, ra, dec, band = (
        a.dia_source_id, a.visit_id, a.detector, a.dia_object_id, a.ss_object_id, a.mjd, a.ra, a.dec, a.band
    )  # fmt: skip
    snr, flux_err, sign, psf_flux, science_flux, extendedness, reliability, trail = (
        p.snr, p.flux_err, p.sign, p.psf_flux, p.science_flux, p.extendedness, p.reliability, p.trail_length
    )  # fmt: skip
    template_flux = p.template_flux + rng.normal(0, 20, n)
    ds = {
        "diaSourceId": dia_source_id, "visit": visit_id, "detector": detector.astype(np.int32),
        "diaObjectId": dia_object_id, "ssObjectId": ss_object_id, "parentDiaSourceId": np.zeros(n, np.int64),
        "midpointMjdTai": mjd, "ra": ra, "dec": dec,
        "raErr": (0.2 / snr / 3600 * rng.uniform(0.8, 1.2, n)).astype(np.float32),
        "decErr": (0.2 / snr / 3600 * rng.uniform(0.8, 1.2, n)).astype(np.float32),
        "ra_dec_Cov": (rng.normal(0, 1e-11, n)).astype(np.float32),
        "x": rng.uniform(10, 4062, n).astype(np.float32), "y": rng.uniform(10, 3990, n).astype(np.float32),
        "xErr": (1.0 / snr * 4).astype(np.float32), "yErr": (1.0 / snr * 4).astype(np.float32),
        "apFlux": (psf_flux * rng.normal(1.0, 0.15, n)).astype(np.float32),
        "apFluxErr": (flux_err * 1.7).astype(np.float32),
        "isNegative": sign < 0,
        "snr": snr.astype(np.float32), "psfFlux": psf_flux.astype(np.float32),
        "psfFluxErr": flux_err.astype(np.float32),
        "psfChi2": (1681 * rng.lognormal(0.02, 0.08, n)).astype(np.float32),
        "psfNdata": np.full(n, 1681, np.int32),
        "trailFlux": (psf_flux * np.where(trail > 2, 1 + 0.15 * trail, rng.normal(1.1, 0.2, n))).astype(np.float32),
        "trailFluxErr": (flux_err * rng.uniform(0.02, 2, n)).astype(np.float32),
        "trailRa": ra + rng.normal(0, 0.3 / 3600, n), "trailDec": dec + rng.normal(0, 0.3 / 3600, n),
        "trailLength": trail.astype(np.float32),
        "trailAngle": p.trail_angle.astype(np.float32), "trailNdata": np.zeros(n, np.int32),
        "trail_flag_edge": np.zeros(n, bool), "dipoleNdata": np.zeros(n, np.int32),
        "scienceFlux": science_flux.astype(np.float32),
        "scienceFluxErr": (flux_err * rng.uniform(0.98, 1.05, n)).astype(np.float32),
        "templateFlux": template_flux.astype(np.float32),
        "templateFluxErr": (np.abs(template_flux) * 0.0002 + rng.uniform(10, 30, n)).astype(np.float32),
        "ixx": rng.lognormal(-1.2, 0.8, n).astype(np.float32), "iyy": rng.lognormal(-1.2, 0.8, n).astype(np.float32),
        "ixy": rng.normal(0, 0.1, n).astype(np.float32),
        "ixxPSF": rng.lognormal(-1.3, 0.6, n).astype(np.float32), "iyyPSF": rng.lognormal(-1.3, 0.6, n).astype(np.float32),
        "ixyPSF": rng.normal(0, 0.01, n).astype(np.float32),
        "extendedness": extendedness.astype(np.float32), "reliability": reliability.astype(np.float32),
        "band": vocab(BANDS, band),
        "timeProcessedMjdTai": mjd + rng.uniform(1.9, 3.7, n) / 1440.0,
        "bboxSize": np.clip(np.round(rng.lognormal(3.1, 0.45, n)), 9, 80).astype(np.int32),
    }  # fmt: skip
    ds.update(_flags(rng, n, a.cls == BOGUS, science_flux))
    return struct_array(DIA_SOURCE, ds, n)


#: Per-source probabilities of the flags (real / bogus detections): shape_flag is the common
#: one (8 of the 27 Fink-processed samples), then dipoles (3), interpolated and CR pixels.
_FLAG_RATES = {
    "shape_flag": (0.20, 0.45), "isDipole": (0.03, 0.30), "pixelFlags_interpolated": (0.03, 0.10),
    "pixelFlags_cr": (0.01, 0.10), "psfFlux_flag": (0.015, 0.05), "forced_PsfFlux_flag": (0.02, 0.03),
    "pixelFlags_edge": (0.01, 0.03), "centroid_flag": (0.005, 0.05), "apFlux_flag": (0.005, 0.02),
    "pixelFlags_bad": (0.003, 0.02), "pixelFlags_streak": (0.002, 0.01), "pixelFlags_suspect": (0.01, 0.03),
}  # fmt: skip
#: Flags implied by another one.
_FLAG_IMPLIES = {
    "shape_flag": ("shape_flag_no_pixels",), "isDipole": ("dipoleFitAttempted",),
    "pixelFlags_interpolated": ("pixelFlags_interpolatedCenter",), "pixelFlags_cr": ("pixelFlags_crCenter",),
    "psfFlux_flag": ("psfFlux_flag_noGoodPixels",), "forced_PsfFlux_flag": ("forced_PsfFlux_flag_noGoodPixels",),
    "pixelFlags_edge": ("psfFlux_flag_edge", "forced_PsfFlux_flag_edge"), "pixelFlags_streak": ("pixelFlags_streakCenter",),
    "pixelFlags_saturated": ("pixelFlags_saturatedCenter",), "pixelFlags_suspect": ("pixelFlags_suspectCenter",),
}  # fmt: skip


def _flags(rng: np.random.Generator, n: int, bogus: np.ndarray, science_flux: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean flags of the diaSources (every flag field; unset ones False): about a third of the
    real detections and most artefacts carry one; sources brighter than 16.5 mag saturate."""
    draws = rng.random((len(_FLAG_RATES) + 1, n))
    flags = {name: np.zeros(n, bool) for name in _DIA_SOURCE_FIELDS
             if name.startswith(("pixelFlags", "shape_flag", "forced_PsfFlux_flag", "psfFlux_flag", "apFlux_flag"))
             or name in ("glint_trail", "isDipole", "dipoleFitAttempted", "centroid_flag")}  # fmt: skip
    for k, (name, (real, artefact)) in enumerate(_FLAG_RATES.items()):
        flags[name] = draws[k] < np.where(bogus, artefact, real)
    flags["pixelFlags_saturated"] = (science_flux > mag_to_njy(16.5)) & (draws[-1] < 0.8)
    for name, implied in _FLAG_IMPLIES.items():
        for other in implied:
            flags[other] = flags[other] | flags[name]
    return flags
