"""Synthetic ELAsTiCC alerts as Fink archives them (one night, exactly `ARCHIVE_SCHEMA`).

ELAsTiCC alerts are themselves simulations (SNANA light curves of the taxonomy classes on a
Rubin cadence); this generator reproduces their packet structure and the value ranges of the
samples in ../shared/data/elasticc (see docs/generator_calibration.md): elasticc.v0_9 fields as
Fink stores them (`ccdVisitId` -1, no cutouts, no non-detection limits), the true `classId`,
and Fink's added values (`cdsxmatch`, `pIa`, the concatenated light curve `c*`, `len`).

Deterministic and batch-size independent (blocks of `BLOCK_SIZE` alerts with their own random
stream from (seed, night, block)); vectorised with numpy.

Identifiers follow the samples: `alertId` = `diaSourceId` = diaObjectId * 2000 + the detection's
rank in the light curve (ELAsTiCC packs them so), forced sources likewise.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Iterator

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.elasticc.taxonomy import CLASS_NAMES
from fink_pipeline.surveys.elasticc.schema import (
    ARCHIVE_SCHEMA,
    DIA_FORCED_SOURCE,
    DIA_OBJECT,
    DIA_SOURCE,
)
from fink_pipeline.surveys.lsst.generator import (
    block_rng,
    list_array,
    mjd_of_night,
    observing_hours,
    rechunk,
    struct_array,
    timestamps_from_mjd,
    vocab,
)

BLOCK_SIZE = 1000
FILTERS = ("u", "g", "r", "i", "z", "Y")
#: Filter of the triggering detection (120 sample alerts: r 33 %, i 28 %, z 13 %, Y 12 %, g 11 %, u 3 %).
FILTER_WEIGHTS = np.array([0.03, 0.11, 0.33, 0.28, 0.13, 0.12])
#: Assumed shares of the alert stream per taxonomy class (`taxonomy.CLASS_NAMES`; the class
#: counts of Fink's portal, `elasticc_*_classes.csv`, are not in the samples).
CLASSES = {
    111: 0.20, 112: 0.06, 113: 0.18, 114: 0.03, 115: 0.03,  # SN Ia, Ib/c, II, Iax, 91bg
    121: 0.002, 122: 0.03, 123: 0.03, 124: 0.01,  # KN, M-dwarf flare, dwarf nova, microlensing
    131: 0.02, 132: 0.02, 133: 0.005, 134: 0.005, 135: 0.005,  # SLSN, TDE, ILOT, CART, PISN
    211: 0.02, 212: 0.09, 213: 0.04, 214: 0.08,  # Cepheid, RR Lyrae, delta Scuti, EB
    221: 0.128,  # AGN
}  # fmt: skip
CLASS_IDS = np.array(list(CLASSES), dtype=np.int32)
CLASS_WEIGHTS = np.array(list(CLASSES.values())) / sum(CLASSES.values())
assert set(CLASSES) == set(CLASS_NAMES), "every generated classId is a taxonomy class"
#: ELAsTiCC campaign (alerts streamed to brokers) started 2022-09-28.
CAMPAIGN_START_MJD = 59850.0
NO_VALUE = -9.0  # ELAsTiCC's "no measurement" for host quantities


def _generate_block(night: dt.date, seed: int, b: int, n: int, start: int) -> pa.RecordBatch:
    rng = block_rng(seed, night, b, 11)
    hours = observing_hours(night, rng.random(n))
    mjd = np.floor((mjd_of_night(night) + hours / 24.0) * 1e4) / 1e4  # 4 decimals, as the samples
    class_id = rng.choice(CLASS_IDS, size=n, p=CLASS_WEIGHTS)
    periodic = class_id >= 200
    # object ids: the simulation numbers objects; the same object alerts again on later nights
    days = (night - dt.date(2023, 1, 1)).days
    object_id = (np.int64(10_000_000) * (1 + max(days, 0)) + start + np.arange(n)).astype(np.int64)
    n_prv = np.minimum(np.where(periodic, rng.lognormal(3.5, 0.8, n), rng.lognormal(2.4, 1.0, n)).astype(np.int64), 200)
    n_prv = np.where(rng.random(n) < 0.12, 0, n_prv)  # first detections
    n_forced = np.minimum(n_prv + rng.integers(0, 40, n) + (rng.random(n) < 0.8) * rng.integers(0, 80, n), 300)
    n_forced = np.where(n_prv == 0, rng.integers(0, 2, n) * rng.integers(0, 8, n), n_forced)
    source_rank = n_prv + 1
    dia_source_id = object_id * 2000 + source_rank
    ra = rng.uniform(0, 360, n)
    decl = np.degrees(np.arcsin(rng.uniform(-1.0, math.sin(math.radians(8)), n)))
    band = rng.choice(len(FILTERS), size=n, p=FILTER_WEIGHTS)
    # fluxes in ELAsTiCC's units (zero point 27.5): p50 ~2,000, errors p50 ~180, S/N p50 ~13
    flux_err = rng.lognormal(5.1, 0.9, n)
    snr = np.clip(rng.lognormal(2.6, 0.85, n), 3.0, 400.0)
    flux = snr * flux_err
    source = {
        "diaSourceId": dia_source_id, "ccdVisitId": np.full(n, -1, np.int64), "diaObjectId": object_id,
        "midPointTai": mjd, "filterName": vocab(FILTERS, band), "ra": ra, "decl": decl,
        "psFlux": flux.astype(np.float32), "psFluxErr": flux_err.astype(np.float32), "snr": snr.astype(np.float32),
        "nobs": (n_prv + n_forced + rng.integers(20, 80, n)).astype(np.float32),
    }  # fmt: skip
    dia_source = struct_array(DIA_SOURCE, source, n)

    # history: earlier detections (detections of the same object on earlier nights)
    total = int(n_prv.sum())
    owner = np.repeat(np.arange(n), n_prv)
    span = np.where(periodic, rng.uniform(100, 900, n), rng.uniform(10, 120, n))
    t = np.round(mjd[owner] - rng.random(total) * span[owner] - 0.01, 4)
    t = t[np.lexsort((t, owner))]
    rank = np.arange(total) - np.repeat(np.cumsum(n_prv) - n_prv, n_prv) + 1
    p_err = flux_err[owner] * rng.uniform(0.5, 1.8, total)
    p_flux = flux[owner] * rng.lognormal(-0.3, 0.6, total)
    p_band = rng.choice(len(FILTERS), size=total, p=FILTER_WEIGHTS)
    prv_items = struct_array(DIA_SOURCE, {
        "diaSourceId": object_id[owner] * 2000 + rank, "ccdVisitId": np.full(total, -1, np.int64),
        "diaObjectId": object_id[owner], "midPointTai": t, "filterName": vocab(FILTERS, p_band),
        "ra": ra[owner], "decl": decl[owner], "psFlux": p_flux.astype(np.float32),
        "psFluxErr": p_err.astype(np.float32), "snr": (p_flux / p_err).astype(np.float32),
        "nobs": np.repeat(source["nobs"], n_prv),
    }, total)  # fmt: skip
    prv = list_array(n_prv, prv_items, ARCHIVE_SCHEMA.field("prvDiaSources").type)

    f_total = int(n_forced.sum())
    f_owner = np.repeat(np.arange(n), n_forced)
    f_t = np.round(mjd[f_owner] - rng.random(f_total) * (span[f_owner] + 30) - 0.01, 4)
    f_t = f_t[np.lexsort((f_t, f_owner))]
    f_rank = np.arange(f_total) - np.repeat(np.cumsum(n_forced) - n_forced, n_forced) + 1
    f_err = flux_err[f_owner] * rng.uniform(0.5, 6.0, f_total)
    forced_items = struct_array(DIA_FORCED_SOURCE, {
        "diaForcedSourceId": object_id[f_owner] * 2000 + f_rank,
        "ccdVisitId": rng.integers(-(2**62), 2**62, f_total), "diaObjectId": object_id[f_owner], "midPointTai": f_t,
        "filterName": vocab(FILTERS, rng.choice(len(FILTERS), size=f_total, p=FILTER_WEIGHTS)),
        "psFlux": (rng.normal(0, f_err) + flux[f_owner] * rng.uniform(0, 0.8, f_total)).astype(np.float32),
        "psFluxErr": f_err.astype(np.float32), "totFlux": np.full(f_total, -1.0, np.float32),
        "totFluxErr": np.ones(f_total, np.float32),
    }, f_total)  # fmt: skip
    forced = list_array(n_forced, forced_items, ARCHIVE_SCHEMA.field("prvDiaForcedSources").type)

    dia_object = _dia_object(rng, n, object_id, ra, decl, periodic)

    # Fink: concatenated light curve (history + the alert), SN Ia probability, SIMBAD cross-match
    c_counts = n_prv + 1
    c_owner = np.concatenate([owner, np.arange(n)])
    c_order = np.lexsort((np.concatenate([t, mjd]), c_owner))
    c_t = np.concatenate([t, mjd])[c_order]
    c_band = np.concatenate([p_band, band])[c_order]
    c_flux = np.concatenate([p_flux, flux])[c_order].astype(np.float32)
    c_err = np.concatenate([p_err, flux_err])[c_order].astype(np.float32)
    in_band = np.bincount(c_owner, weights=(np.concatenate([p_band, band]) == band[c_owner]), minlength=n)
    is_ia = class_id == 111
    p_ia = np.where(is_ia, rng.beta(4, 2, n), rng.beta(1.2, 4, n))
    cds = np.where(rng.random(n) < 0.01, 1, 0)

    columns = {
        "alertId": pa.array(dia_source_id, pa.int64()),
        "diaSource": dia_source,
        "prvDiaSources": prv,
        "prvDiaForcedSources": forced,
        "diaObject": dia_object,
        "brokerIngestTimestamp": timestamps_from_mjd(CAMPAIGN_START_MJD + rng.uniform(0, 100, n)),
        "timestamp": timestamps_from_mjd(mjd),
        "classId": pa.array(class_id, pa.int32()),
        "cdsxmatch": vocab(("Unknown", "Galaxy"), cds),
        "pIa": pa.array(np.round(p_ia, 3)),
        "cmidPointTai": list_array(c_counts, pa.array(c_t), pa.list_(pa.float64())),
        "cfilterName": list_array(c_counts, vocab(FILTERS, c_band), pa.list_(pa.string())),
        "cpsFlux": list_array(c_counts, pa.array(c_flux), pa.list_(pa.float32())),
        "cpsFluxErr": list_array(c_counts, pa.array(c_err), pa.list_(pa.float32())),
        # points in the alert's filter (the samples' `len` is well below the light-curve length)
        "len": pa.array(in_band.astype(np.int32)),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(n, f.type) for f in ARCHIVE_SCHEMA]
    arrays = [a.cast(f.type) if a.type != f.type else a for a, f in zip(arrays, ARCHIVE_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=ARCHIVE_SCHEMA)


def _dia_object(rng, n, object_id, ra, decl, periodic):
    """Host-galaxy properties (ELAsTiCC's -9 when absent); galactic (periodic) objects have none."""
    has_host = ~periodic & (rng.random(n) < 0.9)
    z = rng.lognormal(-0.9, 0.6, n)
    zspec = np.where(has_host & (rng.random(n) < 0.1), z, NO_VALUE)
    zphot = np.where(has_host, np.abs(z + rng.normal(0, 0.05 * (1 + z), n)), NO_VALUE)
    vals = {
        "diaObjectId": object_id, "ra": ra, "decl": decl,
        "mwebv": rng.lognormal(-3.3, 0.8, n).astype(np.float32),
        "mwebv_err": rng.lognormal(-5.5, 0.5, n).astype(np.float32),
        "z_final": np.where(has_host, zphot, NO_VALUE).astype(np.float32),
        "z_final_err": np.where(has_host, 0.05 * (1 + zphot), NO_VALUE).astype(np.float32),
        "hostgal_ellipticity": np.where(has_host, rng.uniform(0, 0.8, n), NO_VALUE).astype(np.float32),
        "hostgal_sqradius": np.where(has_host, rng.lognormal(0.5, 1.0, n), NO_VALUE).astype(np.float32),
        "hostgal_zspec": zspec.astype(np.float32),
        "hostgal_zspec_err": np.where(zspec > 0, 0.001, NO_VALUE).astype(np.float32),
        "hostgal_zphot": zphot.astype(np.float32),
        "hostgal_zphot_err": np.where(has_host, 0.05 * (1 + zphot), NO_VALUE).astype(np.float32),
        "hostgal_zphot_p50": zphot.astype(np.float32),
        "hostgal_snsep": np.where(has_host, rng.lognormal(-2.5, 1.2, n), NO_VALUE).astype(np.float32),
        "hostgal_ra": np.where(has_host, ra, NO_VALUE).astype(np.float32),
        "hostgal_dec": np.where(has_host, decl, NO_VALUE).astype(np.float32),
    }  # fmt: skip
    for k, q in enumerate(range(0, 101, 10)):
        spread = 0.1 * (1 + np.maximum(zphot, 0)) * (q - 50) / 50
        vals[f"hostgal_zphot_q{q:03d}"] = np.where(has_host, np.maximum(zphot + spread, 0), NO_VALUE).astype(np.float32)
    mag_r = np.where(has_host, 21 + 5 * np.log10(np.maximum(zphot, 0.01) / 0.3) + rng.normal(0, 1, n), NO_VALUE)
    for band, offset in zip("ugrizY", (1.8, 0.9, 0.0, -0.4, -0.6, -0.8)):
        vals[f"hostgal_mag_{band}"] = np.where(has_host, mag_r + offset + rng.normal(0, 0.1, n), 999.0).astype(np.float32)
        vals[f"hostgal_magerr_{band}"] = np.where(has_host, rng.lognormal(-3, 0.8, n), 999.0).astype(np.float32)
    for name in [f.name for f in DIA_OBJECT if f.name.startswith("hostgal2_")]:
        vals[name] = np.full(n, NO_VALUE if "mag" not in name else 999.0, np.float32)
    return struct_array(DIA_OBJECT, vals, n)


def generate_night(night: dt.date, n_alerts: int, seed: int = 0, with_cutouts: bool = True,
                   batch_size: int = 5000) -> Iterator[pa.RecordBatch]:  # fmt: skip
    """Record batches (exactly `ARCHIVE_SCHEMA`) of `n_alerts` synthetic ELAsTiCC alerts of `night`.

    Every `diaSource.midPointTai` falls on the UTC date `night`. ELAsTiCC alerts carry no cutouts
    in Fink's archive, so `with_cutouts` changes nothing (accepted for the common interface).
    Deterministic in (night, n_alerts, seed), independent of `batch_size`.
    Raises ValueError for negative counts.
    """
    del with_cutouts
    if n_alerts < 0 or batch_size <= 0:
        raise ValueError(f"n_alerts ({n_alerts}) must be >= 0 and batch_size ({batch_size}) > 0")
    if n_alerts == 0:
        return
    blocks = (
        _generate_block(night, seed, b, min(BLOCK_SIZE, n_alerts - b * BLOCK_SIZE), b * BLOCK_SIZE)
        for b in range(math.ceil(n_alerts / BLOCK_SIZE))
    )
    yield from rechunk(blocks, batch_size)
