"""Synthetic Rubin (LSST) alerts as Fink archives them (one night, exactly `ARCHIVE_SCHEMA`).

Packets follow lsst.v10_0 (the version of Fink's 2026 Data Transfer sample): the fields of
older or newer versions that the unified schema also holds stay null, as they would in a real
v10 night. Fink's added values (`clf`, `xm`, `pred`, `misc`, `lc_features`,
`tns_type_recomputed`) are filled as Fink 4.1 / science 8.39 writes them. Distributions are
calibrated on the Rubin samples of ../shared/data and the portal yields of reference 7.3 (see
docs/generator_calibration.md).

Design (as the ZTF generator):

* Deterministic and batch-size independent: a night is cut into blocks of `BLOCK_SIZE` alerts,
  each with its own random stream from (seed, night, block); the cutouts use separate streams,
  so every other column is identical with and without cutouts.
* Vectorised: numpy on whole blocks; nested columns assembled from flat arrays.
* Night plan: the UTC date D holds the end of the Cerro Pachon night that began on D-1 and the
  start of the next one (local midnight ~04:43 UTC, night half-length 4.3-5.5 h by season);
  ~34 s visits, each on one of ~1,900 southern fields near the meridian, one band per visit.
* Objects: static objects live in a per-field pool keyed by the seed only (same diaObjectId,
  position and first detection night after night); 22 % of alerts are a first detection (new
  object, empty history, Fink `is_first`), 4.6 % are solar-system detections (no diaObject,
  `ssSource` + `mpc_orbits`), as the portal's block yields.
* History: prvDiaSources/prvDiaForcedSources of up to a year, consistent with diaObject's
  per-band aggregates and Fink's light-curve features.
* Cutouts: uncompressed 30x30 float32 FITS stamps (Rubin sends plain FITS), 34-46 kB each,
  from a per-night pool with a per-alert header card, hence unique bytes.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.schema import (
    ARCHIVE_SCHEMA,
    CLF,
    DIA_FORCED_SOURCE,
    DIA_OBJECT,
    DIA_SOURCE,
    LC_FEATURES,
    MISC,
    MPC_ORBITS,
    PRED,
    SS_SOURCE,
    XM,
)

BLOCK_SIZE = 1000
MJD_UNIX_EPOCH = 40587.0
SCHEMA_VERSION = "lsst.v10_0"
FINK_BROKER_VERSION = "4.1"
FINK_SCIENCE_VERSION = "8.39.0"
PUBLISHER = "Fink"

#: Cerro Pachon longitude: local solar midnight at 04:43 UTC.
PACHON_LON_DEG = -70.7366
PACHON_LAT_DEG = -30.2407
MIDNIGHT_UTC_H = 24.0 * (-PACHON_LON_DEG / 360.0)
VISIT_SECONDS = 34.0
BANDS = ("u", "g", "r", "i", "z", "y")
#: Visits per band over the survey (Rubin baseline cadence, roughly).
BAND_WEIGHTS = np.array([0.07, 0.09, 0.22, 0.22, 0.20, 0.20])
#: 5-sigma depth of the difference images (AB mag) per band: Rubin's design single-visit depths
#: made 0.9 mag shallower, as the samples' i-band psfFluxErr (p50 491 nJy, i.e. i = 23.0) show.
BAND_DEPTH = np.array([23.0, 24.1, 23.8, 23.1, 22.4, 21.2])
N_DETECTORS = 189
FIELDS_DEC = np.arange(-87.0, 8.0, 3.5)  # field centres every 3.5 deg in dec...
#: Static objects per field pool.
POOL_PER_FIELD = 4000
FRACTION_SSO = 0.046  # b_is_solar_system yield (reference 7.3)
FRACTION_NEW = 0.219  # b_is_new yield
FRACTION_IN_TNS = 0.0032  # in_tns yield
#: Fink CATS broad classes (11 SN-like, 12 fast, 13 long, 21 periodic, 22 non-periodic, ...).
CATS_CLASSES = np.array([11, 12, 13, 21, 22, 221])
CATS_WEIGHTS = np.array([0.34, 0.06, 0.20, 0.22, 0.15, 0.03])
TNS_TYPES = ("SN Ia", "SN II", "SN IIn", "SN Ic", "TDE", "CV")
AB_ZERO_NJY = 3631e9  # flux of AB mag 0 in nJy

# a tuple, in schema order: random draws happen per field, and a set's order changes with
# Python's hash seed (the same seed gave other alerts in another process)
_DIA_SOURCE_FIELDS = tuple(f.name for f in DIA_SOURCE)
_LCF_NAMES = [f.name for f in LC_FEATURES]


# --------------------------------------------------------------------------------------------
# Helpers shared with the ELAsTiCC generator
# --------------------------------------------------------------------------------------------


def block_rng(seed: int, night: dt.date, block: int, tag: int) -> np.random.Generator:
    """Random stream of one block (independent of the batch size)."""
    return np.random.default_rng(np.random.SeedSequence([seed & 0xFFFFFFFF, night.toordinal(), block, tag]))


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


def struct_array(struct_type: pa.StructType, values: dict, n: int, mask: np.ndarray | None = None) -> pa.StructArray:
    """A struct column from numpy/Arrow values by field name; missing fields are all null."""
    children = []
    for f in struct_type:
        v = values.get(f.name)
        if v is None:
            children.append(pa.nulls(n, f.type))
        elif isinstance(v, (pa.Array, pa.ChunkedArray)):
            children.append(v.cast(f.type) if v.type != f.type else v)
        else:
            arr = np.asarray(v)
            if arr.dtype.kind == "f" and not pa.types.is_floating(f.type):
                children.append(pa.array(arr, from_pandas=True).cast(f.type))
            else:
                children.append(pa.array(arr, type=f.type, from_pandas=True))
    return pa.StructArray.from_arrays(children, fields=list(struct_type),
                                      mask=pa.array(mask) if mask is not None else None)  # fmt: skip


def list_array(counts: np.ndarray, items: pa.Array, list_type: pa.DataType) -> pa.ListArray:
    """Lists of consecutive `items`, `counts[i]` for row i."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int32)
    np.cumsum(counts, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), items, type=list_type)


def strings(values: np.ndarray) -> pa.Array:
    return pa.array(values.astype(str).tolist() if values.dtype.kind != "O" else values.tolist(), pa.string())


def vocab(words: tuple[str, ...] | list[str], idx: np.ndarray) -> pa.Array:
    """Strings by index into a small vocabulary (dictionary decode, vectorised)."""
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)), pa.array(list(words))).dictionary_decode()


def timestamps_from_mjd(mjd: np.ndarray) -> pa.Array:
    micros = np.round((mjd - MJD_UNIX_EPOCH) * 86400e6).astype(np.int64)
    return pa.array(micros, pa.timestamp("us", tz="UTC"))


_FITS_BLOCK = 2880


def fits_stamp_pool(rng: np.random.Generator, count: int, size: int, header_blocks: int, positive: bool) -> np.ndarray:
    """`count` FITS images (uint8 rows): a header padded to `header_blocks` blocks and a
    `size` x `size` float32 big-endian image of a PSF on noise (difference images: +/- PSF)."""
    cards = [
        "SIMPLE  =                    T / conforms to FITS standard",
        "BITPIX  =                  -32 / array data type",
        "NAXIS   =                    2 / number of array dimensions",
        f"NAXIS1  = {size:20d}",
        f"NAXIS2  = {size:20d}",
        "EXTEND  =                    T",
        "BUNIT   = 'nJy     '",
        "CTYPE1  = 'RA---TAN'",
        "CTYPE2  = 'DEC--TAN'",
        "ALERTID = 00000000000000000000 / diaSourceId of the alert",
    ]
    header = "".join(c.ljust(80) for c in cards) + "END".ljust(80)
    header = header.ljust(header_blocks * _FITS_BLOCK).encode("ascii")
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    data_bytes = size * size * 4
    pad = -data_bytes % _FITS_BLOCK
    out = np.zeros((count, len(header) + data_bytes + pad), dtype=np.uint8)
    for k in range(count):
        sigma = rng.uniform(1.2, 2.6)
        amp = rng.lognormal(7.0, 1.0) * (1 if positive or rng.random() < 0.85 else -1)
        img = amp * np.exp(-(xx**2 + yy**2) / (2 * sigma**2)) + rng.normal(0, rng.uniform(80, 300), (size, size))
        out[k, : len(header)] = np.frombuffer(header, dtype=np.uint8)
        out[k, len(header) : len(header) + data_bytes] = np.frombuffer(img.astype(">f4").tobytes(), dtype=np.uint8)
    return out


_ID_CARD_OFFSET = 9 * 80 + 10  # value of the ALERTID card


def stamp_column(pool: np.ndarray, pick: np.ndarray, ids: np.ndarray) -> pa.Array:
    """One binary column: pool images chosen by `pick`, each stamped with its alert id."""
    n, width = len(pick), pool.shape[1]
    rows = pool[pick]
    digits = np.char.zfill(ids.astype(str), 20).astype("S20").view(np.uint8).reshape(n, 20)
    rows[:, _ID_CARD_OFFSET : _ID_CARD_OFFSET + 20] = digits
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * width)
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [None, offsets.buffers()[1], pa.py_buffer(rows.tobytes())]).cast(pa.binary())


def mag_to_njy(mag: np.ndarray) -> np.ndarray:
    return AB_ZERO_NJY * 10 ** (-0.4 * mag)


# --------------------------------------------------------------------------------------------
# Night plan
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _fields() -> tuple[np.ndarray, np.ndarray]:
    """Field centres (ra, dec) of a ~3.5 deg grid over the Rubin footprint (dec -87..+8)."""
    ras, decs = [], []
    for dec in FIELDS_DEC:
        n = max(1, int(round(360.0 * math.cos(math.radians(dec)) / 3.5)))
        ras.append((np.arange(n) + 0.5) * 360.0 / n)
        decs.append(np.full(n, dec))
    return np.concatenate(ras), np.concatenate(decs)


def _lst_deg(mjd: np.ndarray) -> np.ndarray:
    """Local sidereal time at Cerro Pachon (degrees)."""
    gmst = 280.46061837 + 360.98564736629 * (mjd - 51544.5)
    return np.mod(gmst + PACHON_LON_DEG, 360.0)


def _visits(night: dt.date, n_alerts: int, seed: int):
    """(visit mjd, field index, band index, visit id) of the visits holding the night's alerts."""
    rng = block_rng(seed, night, 0, 99)
    h = night_half_length_h(night)
    max_visits = int(2 * h * 3600 / VISIT_SECONDS)
    n_visits = int(np.clip(n_alerts // 40 + 1, 1, max_visits))
    hours = np.sort(observing_hours(night, (np.arange(n_visits) + rng.random(n_visits)) / n_visits))
    mjd = mjd_of_night(night) + hours / 24.0
    field_ra, field_dec = _fields()
    lst = _lst_deg(mjd)
    # a field within 2 h of the meridian, away from the celestial pole and the horizon
    target_ra = np.mod(lst + rng.uniform(-30, 30, n_visits), 360.0)
    target_dec = np.clip(PACHON_LAT_DEG + rng.normal(0, 22, n_visits), -85, 5)
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


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def _hash_uniform(keys: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Deterministic uniforms in [0, 1) from integer keys (same object -> same value)."""
    x = (keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64((seed * 1_000_003 + salt) & 0xFFFFFFFF)
    x ^= x >> np.uint64(31)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


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


def _generate_block(night: dt.date, seed: int, b: int, n: int, start: int, plan, with_cutouts: bool) -> pa.RecordBatch:
    """Alerts `start` .. `start + n` of the night: sections drawn in turn from the block's stream."""
    rng = block_rng(seed, night, b, 1)
    alerts = _block_alerts(rng, night, seed, n, start, plan)
    phot = _block_photometry(rng, n, alerts)
    dia_source = _dia_source_struct(rng, n, alerts, phot)
    history = _history_columns(rng, n, alerts, phot, start)
    fink = _fink_columns(rng, n, alerts, phot)
    columns = {
        "diaSourceId": pa.array(alerts.dia_source_id, pa.int64()),
        "diaSource": dia_source,
        "lsst_schema_version": pa.array(np.full(n, SCHEMA_VERSION, dtype=object), pa.string()),
        "fink_broker_version": pa.array([FINK_BROKER_VERSION] * n, pa.string()),
        "fink_science_version": pa.array([FINK_SCIENCE_VERSION] * n, pa.string()),
        "publisher": pa.array([PUBLISHER] * n, pa.string()),
        "timestamp": timestamps_from_mjd(alerts.mjd),
        **history, **fink, **_observation_reason_columns(rng, n),
    }  # fmt: skip
    if with_cutouts:
        columns.update(_cutouts(seed, night, b, n, alerts.dia_source_id))
    arrays = [columns[f.name] if columns.get(f.name) is not None else pa.nulls(n, f.type) for f in ARCHIVE_SCHEMA]
    arrays = [a.cast(f.type) if a.type != f.type else a for a, f in zip(arrays, ARCHIVE_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=ARCHIVE_SCHEMA)


def _block_alerts(rng: np.random.Generator, night: dt.date, seed: int, n: int, start: int, plan) -> _BlockAlerts:
    """Visits of the alerts, then their objects: field-pool statics, new objects, asteroids."""
    v_mjd, v_field, v_band, v_id = plan
    visit = np.sort(rng.integers(0, len(v_mjd), n))
    mjd = v_mjd[visit] + rng.uniform(0, VISIT_SECONDS / 86400.0 * 0.9, n)
    band = v_band[visit]
    field = v_field[visit]
    detector = rng.integers(0, N_DETECTORS, n)
    field_ra, field_dec = _fields()
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


def _history_columns(rng: np.random.Generator, n: int, alerts: _BlockAlerts, phot: _BlockPhotometry,
                     start: int) -> dict[str, pa.Array]:
    """Previous detections and forced photometry of known objects, diaObject, solar-system records."""
    a = alerts
    is_known, is_sso, dia_object_id, first_mjd, mjd, ra, dec, band, days = (
        a.is_known, a.is_sso, a.dia_object_id, a.first_mjd, a.mjd, a.ra, a.dec, a.band, a.days
    )  # fmt: skip
    flux_err, psf_flux = phot.flux_err, phot.psf_flux
    n_prv = np.where(is_known, np.minimum(np.round(rng.lognormal(3.2, 1.0, n)), 400), 0).astype(np.int64)
    n_prv = np.where(is_sso, 0, n_prv)
    n_forced = np.where(is_known, np.minimum(n_prv + rng.integers(0, 60, n), 800), 0).astype(np.int64)
    prv, prv_stats = _history(rng, n_prv, dia_object_id, first_mjd, mjd, ra, dec, flux_err, band, a.visit_id, days, start)
    forced = _forced(rng, n_forced, dia_object_id, first_mjd, mjd, ra, dec, flux_err, band, days, start)

    dia_object = _dia_object(rng, n, dia_object_id, ra, dec, first_mjd, mjd, band, psf_flux, flux_err, prv_stats,
                             n_prv, is_sso)  # fmt: skip
    ss_source, mpc_orbits = _solar_system(rng, n, is_sso, a.dia_source_id, a.ss_object_id, ra, dec, mjd)
    return {
        "prvDiaSources": prv,
        "prvDiaForcedSources": forced,
        "diaObject": dia_object,
        "ssSource": ss_source,
        "mpc_orbits": mpc_orbits,
        "lc_features": _lc_features(prv_stats, n),
    }


def _fink_columns(rng: np.random.Generator, n: int, alerts: _BlockAlerts,
                  phot: _BlockPhotometry) -> dict[str, pa.Array]:
    """Fink added values: processing times, cross-matches, classifiers, predictions, TNS type."""
    mjd, is_sso, is_new, is_known = alerts.mjd, alerts.is_sso, alerts.is_new, alerts.is_known
    first_mjd, extendedness = alerts.first_mjd, phot.extendedness
    ingest = mjd + rng.normal(2.6, 0.25, n) / 1440.0
    start_proc = ingest + rng.uniform(3.0, 6.0, n) / 1440.0
    end_proc = start_proc + rng.uniform(1.2, 2.2, n) / 1440.0
    xm, cataloged = _crossmatch(rng, n, is_sso, extendedness)
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


def _history(rng, counts, object_id, first_mjd, mjd, ra, dec, flux_err, band, visit, days, start):
    """prvDiaSources: `counts[i]` earlier detections between first detection and the alert."""
    total = int(counts.sum())
    owner = np.repeat(np.arange(len(counts)), counts)
    span = np.maximum(mjd - first_mjd, 1.0)
    t = first_mjd[owner] + rng.random(total) * (span[owner] - 0.5)
    t = t[np.lexsort((t, owner))]  # chronological within each alert
    p_band = rng.choice(len(BANDS), size=total, p=BAND_WEIGHTS)
    err = flux_err[owner] * rng.uniform(0.7, 1.3, total)
    base = rng.lognormal(7.5, 1.2, len(counts))
    variability = rng.uniform(0.2, 1.0, len(counts))
    flux = base[owner] * (1 + variability[owner] * np.sin(t / rng.uniform(0.5, 80, len(counts))[owner])) + rng.normal(0, err)
    snr = np.abs(flux) / err
    ids = np.int64(10**17) + np.int64(days - 1) * np.int64(10**10) - (start + np.arange(total)) - 1
    vals = {
        "diaSourceId": ids, "visit": (visit[owner] - 10_000_000 * rng.integers(1, 300, total)).astype(np.int64),
        "detector": rng.integers(0, N_DETECTORS, total).astype(np.int32), "diaObjectId": object_id[owner],
        "ssObjectId": np.zeros(total, np.int64), "parentDiaSourceId": np.zeros(total, np.int64),
        "midpointMjdTai": t, "ra": ra[owner] + rng.normal(0, 0.05 / 3600, total),
        "dec": dec[owner] + rng.normal(0, 0.05 / 3600, total),
        "raErr": (0.2 / np.maximum(snr, 1) / 3600).astype(np.float32),
        "decErr": (0.2 / np.maximum(snr, 1) / 3600).astype(np.float32),
        "x": rng.uniform(10, 4062, total).astype(np.float32), "y": rng.uniform(10, 3990, total).astype(np.float32),
        "psfFlux": flux.astype(np.float32), "psfFluxErr": err.astype(np.float32), "snr": snr.astype(np.float32),
        "scienceFlux": (flux + rng.normal(0, err * 0.2)).astype(np.float32), "scienceFluxErr": err.astype(np.float32),
        "band": vocab(BANDS, p_band), "reliability": rng.beta(5, 1.5, total).astype(np.float32),
        "isNegative": flux < 0, "psfNdata": np.full(total, 1681, np.int32),
        "timeProcessedMjdTai": t + 2.5 / 1440.0, "centroid_flag": np.zeros(total, bool),
        "psfFlux_flag": np.zeros(total, bool), "pixelFlags": np.zeros(total, bool),
    }  # fmt: skip
    items = struct_array(DIA_SOURCE, vals, total)
    stats = {"owner": owner, "band": p_band, "flux": flux, "err": err, "t": t}
    return list_array(counts, items, ARCHIVE_SCHEMA.field("prvDiaSources").type), stats


def _forced(rng, counts, object_id, first_mjd, mjd, ra, dec, flux_err, band, days, start):
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


def _dia_object(rng, n, object_id, ra, dec, first_mjd, mjd, band, psf_flux, flux_err, stats, n_prv, is_sso):
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


def _solar_system(rng, n, is_sso, source_id, ss_object_id, ra, dec, mjd):
    """ssSource and mpc_orbits of solar-system detections (null records elsewhere)."""
    year = rng.integers(2000, 2026, n)
    letters = np.array(list("ABCDEFGHJKLMNOPQRSTUVWXY"))
    designation = np.char.add(np.char.add(year.astype(str), " "), np.char.add(
        letters[rng.integers(0, 24, n)], np.char.add(letters[rng.integers(0, 24, n)], rng.integers(1, 200, n).astype(str))))
    helio = rng.uniform(1.8, 3.6, n)
    topo = np.abs(helio - 1) + rng.uniform(0, 0.8, n)
    phase = rng.uniform(2, 30, n)
    ss = {
        "diaSourceId": source_id, "ssObjectId": ss_object_id, "designation": strings(designation),
        "eclLambda": np.mod(ra + rng.normal(0, 3, n), 360), "eclBeta": rng.normal(0, 8, n),
        "galLon": rng.uniform(0, 360, n), "galLat": rng.uniform(-60, 60, n),
        "elongation": rng.uniform(90, 180, n).astype(np.float32), "phaseAngle": phase.astype(np.float32),
        "topoRange": topo.astype(np.float32), "topoRangeRate": rng.normal(0, 10, n).astype(np.float32),
        "helioRange": helio.astype(np.float32), "helioRangeRate": rng.normal(0, 3, n).astype(np.float32),
        "ephRa": ra + rng.normal(0, 0.3 / 3600, n), "ephDec": dec + rng.normal(0, 0.3 / 3600, n),
        "ephVmag": (20 + 5 * np.log10(helio * topo) + rng.normal(0, 1, n)).astype(np.float32),
        "ephRate": rng.uniform(0.1, 1.2, n).astype(np.float32), "ephRateRa": rng.normal(0, 0.5, n).astype(np.float32),
        "ephRateDec": rng.normal(0, 0.3, n).astype(np.float32), "ephOffset": rng.uniform(0, 2, n).astype(np.float32),
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
        "epoch_mjd": np.floor(mjd / 100) * 100, "h": rng.normal(16.5, 1.5, n), "g": np.full(n, 0.15),
        "normalized_rms": rng.uniform(0.3, 1.2, n), "earth_moid": np.abs(a * (1 - e) - 1) * rng.uniform(0.5, 1, n),
    }  # fmt: skip
    return struct_array(SS_SOURCE, ss, n, mask=~is_sso), struct_array(MPC_ORBITS, orbits, n, mask=~is_sso)


def _crossmatch(rng, n, is_sso, extendedness):
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
    median = np.array([np.median(flux[s : s + c]) for s, c in zip(starts, counts)]) if len(starts) < 20000 else mean
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


_POOL_SIZE = 48


@lru_cache(maxsize=4)
def _stamp_pools(seed: int, night: dt.date) -> dict[str, np.ndarray]:
    rng = block_rng(seed, night, 0, 7)
    return {
        # 10 or 12 header blocks + 2 data blocks: 34,560 / 40,320 bytes, the common real sizes
        "cutoutScience": fits_stamp_pool(rng, _POOL_SIZE, 30, 10, True),
        "cutoutTemplate": fits_stamp_pool(rng, _POOL_SIZE, 30, 12, True),
        "cutoutDifference": fits_stamp_pool(rng, _POOL_SIZE, 30, 10, False),
    }


def _cutouts(seed: int, night: dt.date, b: int, n: int, ids: np.ndarray) -> dict[str, pa.Array]:
    """Three FITS stamps per alert (34,560 / 40,320 / 34,560 bytes as the common real sizes)."""
    rng = block_rng(seed, night, b, 3)
    pools = _stamp_pools(seed, night)
    pick = rng.integers(0, _POOL_SIZE, n)
    return {name: stamp_column(pool, pick, ids) for name, pool in pools.items()}


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def generate_night(night: dt.date, n_alerts: int, seed: int = 0, with_cutouts: bool = True,
                   batch_size: int = 5000) -> Iterator[pa.RecordBatch]:  # fmt: skip
    """Record batches (exactly `ARCHIVE_SCHEMA`) of `n_alerts` synthetic Rubin alerts of `night`.

    Every `diaSource.midpointMjdTai` falls on the UTC date `night`. Deterministic in (night,
    n_alerts, seed) and independent of `batch_size`. Raises ValueError for negative counts.
    """
    if n_alerts < 0 or batch_size <= 0:
        raise ValueError(f"n_alerts ({n_alerts}) must be >= 0 and batch_size ({batch_size}) > 0")
    if n_alerts == 0:
        return
    plan = _visits(night, n_alerts, seed)
    yield from rechunk(
        (_generate_block(night, seed, b, min(BLOCK_SIZE, n_alerts - b * BLOCK_SIZE), b * BLOCK_SIZE, plan, with_cutouts)
         for b in range(math.ceil(n_alerts / BLOCK_SIZE))),
        batch_size,
    )  # fmt: skip


def rechunk(blocks: Iterator[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of record batches into batches of exactly `batch_size` rows (last shorter)."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for block in blocks:
        pending.append(block)
        rows += block.num_rows
        while rows >= batch_size:
            table = pa.Table.from_batches(pending)
            head, tail = table.slice(0, batch_size), table.slice(batch_size)
            yield head.combine_chunks().to_batches()[0]
            pending = tail.combine_chunks().to_batches() if tail.num_rows else []
            rows = tail.num_rows
    if rows:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
