"""Values Fink adds to each alert: processing times, cross-matches, classifier scores,
predictions, TNS type, and the scheduler's observation reason.

Cross-matches follow the object's class (`populations`): Gaia DR3 finds the stars (with a
significant parallax for the nearby ones and every M dwarf), SIMBAD labels a quarter of the
stars, a third of the AGN and of the nearby hosts, Legacy Survey DR8 (off the Galactic plane) gives
the photometric redshift of hosts (the transient's redshift within errors), Mangrove the nearby
(z < 0.1) galaxies, TNS the brighter transients. Catalogue draws of a pool object are hashed from
its key, so that it keeps its matches; no match leaves the field null, as in the samples.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.alerts import _BlockAlerts, _BlockPhotometry
from fink_pipeline.surveys.lsst.generator.arrays import struct_array, timestamps_from_mjd, vocab
from fink_pipeline.surveys.lsst.generator.constants import CATS_CLASSES, TNS_TYPES
from fink_pipeline.surveys.lsst.generator.populations import (
    AGN,
    BOGUS,
    HOSTLESS,
    MDWARF,
    SN,
    STAR,
    luminosity_distance_mpc,
)
from fink_pipeline.surveys.lsst.generator.streams import _hash_uniform
from fink_pipeline.surveys.lsst.schema import CLF, MISC, PRED, XM

#: CATS broad class probabilities (columns: CATS_CLASSES 11, 12, 13, 21, 22, 221) per population.
_CATS_BY_CLASS = np.array([
    [0.08, 0.02, 0.20, 0.50, 0.17, 0.03],  # star
    [0.05, 0.15, 0.10, 0.30, 0.37, 0.03],  # M dwarf
    [0.10, 0.02, 0.20, 0.08, 0.30, 0.30],  # AGN
    [0.70, 0.08, 0.12, 0.03, 0.05, 0.02],  # supernova
    [0.60, 0.15, 0.15, 0.03, 0.05, 0.02],  # hostless transient
    [0.25, 0.10, 0.15, 0.20, 0.25, 0.05],  # bogus
])
_SIMBAD = {  # labels and the probability that SIMBAD knows the object
    STAR: (0.12, ("Star", "EB*", "RRLyr", "LPV*", "V*", "Mira", "HighPM*", "delSctV*")),
    MDWARF: (0.30, ("low-mass*", "Flare*", "BYDra*", "Star")),
    AGN: (0.25, ("QSO", "Seyfert_1", "AGN", "BLLac", "Blazar")),
    SN: (0.30, ("Galaxy", "EmG", "GinPair", "GinGroup", "Seyfert_2", "LINER", "StarburstG")),  # hosts z < 0.15
    BOGUS: (0.04, ("Star",)),
}
_VSX = {STAR: (0.006, ("RRAB", "EW", "EA", "SR", "M", "DSCT", "BY")), MDWARF: (0.03, ("UV",)), AGN: (0.005, ("AGN", "QSO"))}


def _fink_columns(rng: np.random.Generator, n: int, alerts: _BlockAlerts, phot: _BlockPhotometry,
                  seed: int) -> dict[str, pa.Array]:  # fmt: skip
    """Fink added values: processing times, cross-matches, classifiers, predictions, TNS type."""
    mjd, is_sso, is_new, is_known, cls = alerts.mjd, alerts.is_sso, alerts.is_new, alerts.is_known, alerts.cls
    ingest = mjd + rng.normal(2.6, 0.25, n) / 1440.0
    start_proc = ingest + rng.uniform(3.0, 6.0, n) / 1440.0
    end_proc = start_proc + rng.uniform(1.2, 2.2, n) / 1440.0
    xm, cataloged, tns_index = _crossmatch_struct(rng, n, alerts, phot, seed)
    cum = np.cumsum(_CATS_BY_CLASS[cls], axis=1)
    cats_class = np.where(is_known, CATS_CLASSES[(rng.random((n, 1)) >= cum[:, :-1]).sum(axis=1)], -1).astype(np.int32)
    transient = (cls == SN) | (cls == HOSTLESS)
    # ELEPHANT (hostless) runs on new objects; it fails (-99) on most of them, as in the samples
    elephant = is_new & (rng.random(n) < 0.2)
    clf = struct_array(CLF, {
        "snnSnVsOthers_score": np.select([is_sso, is_new, transient], [rng.uniform(0.6, 0.8, n),
                                         0.719 + rng.normal(0, 0.0008, n), rng.beta(5, 1.8, n)],
                                         rng.beta(1.2, 2.5, n)).astype(np.float32),  # fmt: skip
        "cats_class": cats_class,
        "cats_score": np.where(is_known, rng.beta(5, 1.2, n), 0.0).astype(np.float32),
        "earlySNIa_score": np.full(n, -1.0),
        "elephant_kstest_science": np.where(is_new, np.where(elephant, rng.uniform(0.05, 0.6, n), -99.0), np.nan).astype(np.float32),
        "elephant_kstest_template": np.where(is_new, np.where(elephant, np.where(cls == HOSTLESS, rng.uniform(0, 0.5, n),
                                             rng.uniform(0.3, 1.0, n)), -99.0), np.nan).astype(np.float32),  # fmt: skip
    }, n)  # fmt: skip
    pred = struct_array(PRED, {
        "is_sso": is_sso, "is_first": pa.array(np.where(is_sso, None, is_new), pa.bool_()),
        "is_cataloged": cataloged, "main_label_classifier": cats_class,
    }, n)  # fmt: skip
    misc = struct_array(MISC, {"firstDiaSourceMjdTaiFink": alerts.first_mjd}, n)
    return {
        "brokerIngestMjd": pa.array(ingest),
        "brokerStartProcessTimestamp": timestamps_from_mjd(start_proc),
        "clf": clf,
        "xm": xm,
        "pred": pred,
        "misc": misc,
        "brokerEndProcessTimestamp": timestamps_from_mjd(end_proc),
        "tns_type_recomputed": vocab(("Unknown", *TNS_TYPES), tns_index),
    }


def _labels(u_match: np.ndarray, u_label: np.ndarray, cls: np.ndarray, table: dict, allowed: np.ndarray):
    """Catalogue labels (object array, None = no match) drawn per class from `table`, and the matches."""
    out = np.full(len(cls), None, dtype=object)
    matched = np.zeros(len(cls), bool)
    for k, (p, names) in table.items():
        hit = allowed & (cls == k) & (u_match < p)
        out[hit] = np.array(names, dtype=object)[np.minimum((u_label[hit] * len(names)).astype(int), len(names) - 1)]
        matched |= hit
    return out, matched


def _crossmatch_struct(rng, n, alerts: _BlockAlerts, phot: _BlockPhotometry, seed: int):
    """Fink `xm` by class (see the module docstring); also whether anything matched."""
    cls, static, z = alerts.cls, ~alerts.is_sso, phot.redshift
    u = [_hash_uniform(alerts.object_key, seed, salt) for salt in range(10, 22)]
    gaia = static & (u[0] < np.array([0.75, 0.95, 0.35, 0.04, 0.0, 0.25])[cls])
    true_plx = np.select([cls == STAR, cls == MDWARF], [10 ** (-1.0 + 1.6 * u[1]), 10 ** (0.5 + 1.2 * u[1])], 0.0)
    e_plx = 0.04 + 0.6 * u[2] ** 2
    nearby_host = (cls == SN) & (z < 0.15)
    simbad, in_simbad = _labels(u[3], u[4], cls, _SIMBAD, static & ((cls != SN) | nearby_host))
    vsx, in_vsx = _labels(u[5], u[6], cls, _VSX, static)
    legacy_p = np.array([0.5, 0.5, 0.85, 0.9, 0.0, 0.3])[cls] * np.where((cls == SN) & (z > 0.6), 0.5, 1.0)
    legacy = static & (np.abs(alerts.gal_b) > 18) & (u[7] < legacy_p)
    e_zphot = np.select([cls == SN, cls == AGN], [0.03 * (1 + z), np.full(n, 0.3)], 0.5) * (0.7 + 1.3 * u[8])
    z_agn = 0.3 + 2.2 * u[9] ** 1.5
    zphot = np.select([cls == SN, cls == AGN], [z, z_agn], 0.8 * u[9] - 0.05) + rng.normal(0, e_zphot)
    pstar = np.select([(cls == STAR) | (cls == MDWARF), cls == AGN, cls == SN], [0.8 + 0.2 * u[10], 0.3 + 0.7 * u[10],
                      0.2 * u[10]], u[10])  # fmt: skip
    mangrove = static & (cls == SN) & (z < 0.1) & (u[11] < 0.8)
    tns_name, tns_index, tns_z = _tns(alerts, phot, seed)
    tns_type = np.where(tns_index > 0, np.array((None, *TNS_TYPES), dtype=object)[tns_index], None)
    dr3 = np.char.add("Gaia DR3 ", (10**18 + (u[1] * 5e18).astype(np.int64)).astype(str))
    xm = struct_array(XM, {
        "simbad_otype": pa.array(simbad, pa.string()),
        "gaiadr3_DR3Name": pa.array(np.where(gaia, dr3.astype(object), None), pa.string()),
        "gaiadr3_Plx": np.where(gaia, true_plx + rng.normal(0, e_plx), np.nan).astype(np.float32),
        "gaiadr3_e_Plx": np.where(gaia, e_plx, np.nan).astype(np.float32),
        "gaiadr3_VarFlag": (gaia & (cls != SN) & (u[5] < 0.3)).astype(np.int32),
        "legacydr8_zphot": np.where(legacy, zphot, np.nan).astype(np.float32),
        "legacydr8_e_zphot": np.where(legacy, e_zphot, np.nan).astype(np.float32),
        "legacydr8_pstar": np.where(legacy, pstar, np.nan).astype(np.float32),
        "legacydr8_fqual": pa.array((u[8] < 0.3).astype(np.int32), mask=~legacy),
        "tns_fullname": pa.array(tns_name, pa.string()), "tns_type": pa.array(tns_type, pa.string()),
        "tns_redshift": tns_z.astype(np.float32),
        "vsx_Type": pa.array(vsx, pa.string()),
        "mangrove_HyperLEDA_name": pa.array(np.where(mangrove, np.char.add("PGC", (u[11] * 5e6).astype(np.int64).astype(str)).astype(object), None), pa.string()),
        "mangrove_lum_dist": np.where(mangrove, luminosity_distance_mpc(z) * (1 + 0.05 * (u[9] - 0.5)), np.nan).astype(np.float32),
        "mangrove_ang_dist": np.where(mangrove, 1 + 29 * u[10], np.nan).astype(np.float32),
    }, n)  # fmt: skip
    return xm, gaia | legacy | in_simbad | in_vsx | mangrove, tns_index


def _tns(alerts: _BlockAlerts, phot: _BlockPhotometry, seed: int):
    """TNS name, type (index in TNS_TYPES + 1, 0 = none or unclassified) and spectroscopic
    redshift of the transients reported there (5 % of the ones peaking brighter than 21 mag, fewer
    fainter); a third of the brightest are classified."""
    transient = ((alerts.cls == SN) | (alerts.cls == HOSTLESS)) & ~alerts.is_sso
    u = [_hash_uniform(alerts.object_key, seed, salt) for salt in (30, 31, 32, 33)]
    peak = phot.peak_mag
    reported = transient & (u[0] < np.select([peak < 21.0, peak < 22.5], [0.05, 0.004], 0.0004))
    classified = reported & (u[1] < np.where(peak < 20.5, 0.35, 0.1))
    kind = np.minimum((u[2] * 10).astype(int), 9)  # SN Ia 60 %, II 20 %, IIn, Ic, TDE (hostless: TDE)
    type_index = np.where(alerts.cls == HOSTLESS, 4, np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 3])[kind])
    year = 2020 + ((alerts.first_mjd - 58849.0) // 365.25).astype(int)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    code = (u[3] * 26**3).astype(int)
    suffix = np.char.add(np.char.add(letters[code // 676], letters[(code // 26) % 26]), letters[code % 26])
    name = np.char.add(np.char.add(np.where(classified, "SN ", "AT "), year.astype(str)), suffix)
    return (np.where(reported, name.astype(object), None), np.where(classified, type_index + 1, 0),
            np.where(classified, phot.redshift, np.nan))


def _observation_reason_columns(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    """Deep-drilling fields carry a scheduler reason (samples: ddf_cosmos, ddf_edfs_a/b, ddf_ecdfs)."""
    ddf = rng.random(n) < 0.08
    ddf_name = rng.integers(0, 4, n)
    names = ("ddf_cosmos", "ddf_edfs_a", "ddf_edfs_b", "ddf_ecdfs")
    reason = vocab(names, ddf_name)
    return {
        "observation_reason": pa.array(np.where(ddf, np.array(reason.to_pylist(), dtype=object), None), pa.string()),
        "target_name": pa.array(
            np.where(ddf, np.array([f"{r}, lowdust" for r in reason.to_pylist()], dtype=object), None), pa.string()
        ),
    }
