"""Values Fink adds to each alert: processing times, cross-matches, classifier scores,
predictions, TNS type, and the scheduler's observation reason.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.alerts import _BlockAlerts, _BlockPhotometry
from fink_pipeline.surveys.lsst.generator.arrays import struct_array, timestamps_from_mjd, vocab
from fink_pipeline.surveys.lsst.generator.constants import CATS_CLASSES, CATS_WEIGHTS, FRACTION_IN_TNS, TNS_TYPES
from fink_pipeline.surveys.lsst.schema import CLF, MISC, PRED, XM


def _fink_columns(rng: np.random.Generator, n: int, alerts: _BlockAlerts,
                  phot: _BlockPhotometry) -> dict[str, pa.Array]:
    """Fink added values: processing times, cross-matches, classifiers, predictions, TNS type."""
    mjd, is_sso, is_new, is_known = alerts.mjd, alerts.is_sso, alerts.is_new, alerts.is_known
    first_mjd, extendedness = alerts.first_mjd, phot.extendedness
    ingest = mjd + rng.normal(2.6, 0.25, n) / 1440.0
    start_proc = ingest + rng.uniform(3.0, 6.0, n) / 1440.0
    end_proc = start_proc + rng.uniform(1.2, 2.2, n) / 1440.0
    xm, cataloged = _crossmatch_struct(rng, n, is_sso, extendedness)
    cats_class = np.where(is_known, rng.choice(CATS_CLASSES, n, p=CATS_WEIGHTS), -1).astype(np.int32)
    clf = struct_array(CLF, {
        "snnSnVsOthers_score": np.where(is_sso, rng.uniform(0.6, 0.8, n), rng.beta(1.2, 1.5, n)).astype(np.float32),
        "cats_class": cats_class,
        "cats_score": np.where(is_known, rng.uniform(0.5, 1.0, n), 0.0).astype(np.float32),
        "earlySNIa_score": np.full(n, -1.0),
        "elephant_kstest_science": np.where(is_new, -99.0, np.nan).astype(np.float32),
        "elephant_kstest_template": np.where(is_new, -99.0, np.nan).astype(np.float32),
    }, n)  # fmt: skip
    pred = struct_array(PRED, {
        "is_sso": is_sso, "is_first": pa.array(np.where(is_sso, None, is_new), pa.bool_()),
        "is_cataloged": cataloged, "main_label_classifier": cats_class,
    }, n)  # fmt: skip
    misc = struct_array(MISC, {"firstDiaSourceMjdTaiFink": first_mjd}, n)
    in_tns = is_known & (rng.random(n) < FRACTION_IN_TNS)
    tns_type = np.where(in_tns, rng.integers(1, len(TNS_TYPES) + 1, n), 0)
    return {
        "brokerIngestMjd": pa.array(ingest),
        "brokerStartProcessTimestamp": timestamps_from_mjd(start_proc),
        "clf": clf,
        "xm": xm,
        "pred": pred,
        "misc": misc,
        "brokerEndProcessTimestamp": timestamps_from_mjd(end_proc),
        "tns_type_recomputed": vocab(("Unknown", *TNS_TYPES), tns_type),
    }


def _crossmatch_struct(rng, n, is_sso, extendedness):
    """Fink `xm`: Gaia DR3 for ~half of the static detections, Legacy Survey photo-z, rare SIMBAD."""
    static = ~is_sso
    gaia = static & (rng.random(n) < 0.5)
    legacy = static & (rng.random(n) < 0.6)
    simbad = static & (rng.random(n) < 0.03)
    dr3 = np.char.add("Gaia DR3 ", rng.integers(10**18, 6 * 10**18, n).astype(str))
    otypes = ("Star", "EB*", "RRLyr", "QSO", "Galaxy", "LPV*")
    xm = struct_array(XM, {
        "simbad_otype": pa.array(np.where(simbad, np.array(vocab(otypes, rng.integers(0, 6, n)).to_pylist(), dtype=object), None), pa.string()),
        "gaiadr3_DR3Name": pa.array(np.where(gaia, dr3.astype(object), None), pa.string()),
        "gaiadr3_Plx": np.where(gaia, rng.normal(0.4, 0.8, n), np.nan).astype(np.float32),
        "gaiadr3_e_Plx": np.where(gaia, rng.lognormal(-1.2, 0.6, n), np.nan).astype(np.float32),
        "gaiadr3_VarFlag": (gaia & (rng.random(n) < 0.3)).astype(np.int32),
        "legacydr8_zphot": np.where(legacy, rng.lognormal(-0.5, 0.8, n), np.nan).astype(np.float32),
        "legacydr8_e_zphot": np.where(legacy, rng.lognormal(-0.6, 0.7, n), np.nan).astype(np.float32),
        "legacydr8_pstar": np.where(legacy, np.where(extendedness < 0.5, rng.uniform(0.8, 1, n), rng.uniform(0, 0.2, n)), np.nan).astype(np.float32),
        "legacydr8_fqual": pa.array(rng.integers(0, 2, n).astype(np.int32), mask=~legacy),
    }, n)  # fmt: skip
    cataloged = gaia | legacy | simbad
    return xm, cataloged


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
