"""Solar-system detections: the ssSource and mpc_orbits records (null for static objects)."""

from __future__ import annotations

import numpy as np

from fink_pipeline.surveys.lsst.generator.arrays import strings, struct_array
from fink_pipeline.surveys.lsst.schema import MPC_ORBITS, SS_SOURCE


def _solar_system_structs(rng, n, is_sso, source_id, ss_object_id, ra, dec, mjd, phot):
    """ssSource and mpc_orbits of solar-system detections (null records elsewhere): the sky motion
    is the one that trailed the detection (near-Earth objects: > 1.8 deg/day, closer), the
    predicted magnitude the observed one, the absolute magnitude H follows from the distances."""
    rate, angle = phot.ss_rate, np.radians(phot.trail_angle)
    mag = 31.4 - 2.5 * np.log10(np.maximum(np.abs(phot.psf_flux), 1.0))
    year = rng.integers(2000, 2026, n)
    letters = np.array(list("ABCDEFGHJKLMNOPQRSTUVWXY"))
    designation = np.char.add(np.char.add(year.astype(str), " "), np.char.add(
        letters[rng.integers(0, 24, n)], np.char.add(letters[rng.integers(0, 24, n)], rng.integers(1, 200, n).astype(str))))
    neo = rate > 1.8
    helio = np.where(neo, rng.uniform(1.0, 1.3, n), rng.uniform(1.8, 3.6, n))
    topo = np.where(neo, rng.uniform(0.02, 0.3, n), np.abs(helio - 1) + rng.uniform(0, 0.8, n))
    phase = rng.uniform(2, 30, n)
    ss = {
        "diaSourceId": source_id, "ssObjectId": ss_object_id, "designation": strings(designation),
        "eclLambda": np.mod(ra + rng.normal(0, 3, n), 360), "eclBeta": rng.normal(0, 8, n),
        "galLon": rng.uniform(0, 360, n), "galLat": rng.uniform(-60, 60, n),
        "elongation": rng.uniform(90, 180, n).astype(np.float32), "phaseAngle": phase.astype(np.float32),
        "topoRange": topo.astype(np.float32), "topoRangeRate": rng.normal(0, 10, n).astype(np.float32),
        "helioRange": helio.astype(np.float32), "helioRangeRate": rng.normal(0, 3, n).astype(np.float32),
        "ephRa": ra + rng.normal(0, 0.3 / 3600, n), "ephDec": dec + rng.normal(0, 0.3 / 3600, n),
        "ephVmag": (mag + rng.normal(0.2, 0.3, n)).astype(np.float32),
        "ephRate": rate.astype(np.float32), "ephRateRa": (rate * np.cos(angle)).astype(np.float32),
        "ephRateDec": (rate * np.sin(angle)).astype(np.float32), "ephOffset": rng.uniform(0, 2, n).astype(np.float32),
        "ephOffsetRa": rng.normal(0, 0.5, n), "ephOffsetDec": rng.normal(0, 0.5, n),
        "ephOffsetAlongTrack": rng.normal(0, 0.5, n).astype(np.float32),
        "ephOffsetCrossTrack": rng.normal(0, 0.3, n).astype(np.float32),
        "diaDistanceRank": np.ones(n, np.int32),
    }  # fmt: skip
    for name in ("helio", "topo"):
        for axis in ("x", "y", "z", "vx", "vy", "vz", "vtot"):
            ss[f"{name}_{axis}"] = rng.normal(0, 1.5 if not axis.startswith("v") else 0.01, n).astype(np.float32)
    a = helio * rng.uniform(0.9, 1.15, n)
    e = rng.beta(2, 8, n)
    orbits = {
        "id": rng.integers(1, 2**31 - 1, n).astype(np.int32), "designation": strings(designation),
        "packed_primary_provisional_designation": strings(np.char.add("K", np.char.replace(designation, " ", ""))),
        "unpacked_primary_provisional_designation": strings(designation),
        "orbit_type_int": np.full(n, 11, np.int32), "u_param": rng.integers(0, 9, n).astype(np.int32),
        "nopp": rng.integers(1, 20, n).astype(np.int32), "arc_length_total": rng.uniform(5, 9000, n),
        "nobs_total": rng.integers(10, 3000, n).astype(np.int32), "a": a, "q": a * (1 - e), "e": e,
        "i": rng.gamma(2, 4, n), "node": rng.uniform(0, 360, n), "argperi": rng.uniform(0, 360, n),
        "mean_anomaly": rng.uniform(0, 360, n), "period": 365.25 * a**1.5, "mean_motion": 0.9856 / a**1.5,
        "epoch_mjd": np.floor(mjd / 100) * 100, "h": mag - 5 * np.log10(helio * topo) - 0.03 * phase, "g": np.full(n, 0.15),
        "normalized_rms": rng.uniform(0.3, 1.2, n), "earth_moid": np.abs(a * (1 - e) - 1) * rng.uniform(0.5, 1, n),
    }  # fmt: skip
    return struct_array(SS_SOURCE, ss, n, mask=~is_sso), struct_array(MPC_ORBITS, orbits, n, mask=~is_sso)
