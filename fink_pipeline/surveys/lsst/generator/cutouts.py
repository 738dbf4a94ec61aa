"""Cutouts: uncompressed 30x30 float32 FITS stamps (0.2 arcsec pixels) from a per-night pool,
each stamped with its alert id (unique bytes). Asteroids and bright sources get their own
science and difference stamps: their PSF with their flux, trailed along the asteroids' motion
(`trailLength`, `trailAngle`), so that the long trails of near-Earth objects look elongated
(Fink's faint_trails measures it) and bright static sources round. They use their own random
streams.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.arrays import mag_to_njy
from fink_pipeline.surveys.lsst.generator.streams import block_rng


_FITS_BLOCK = 2880
_CARD = 80
PIXEL_ARCSEC = 0.2
_STAMP = 30


@lru_cache(maxsize=4)
def _header(size: int, header_blocks: int) -> bytes:
    """A primary header of `header_blocks` FITS blocks (blank cards, END in the last card)."""
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
    text = "".join(c.ljust(_CARD) for c in cards).ljust(header_blocks * _FITS_BLOCK - _CARD) + "END".ljust(_CARD)
    return text.encode("ascii")


def fits_rows(images: np.ndarray, header_blocks: int) -> np.ndarray:
    """FITS files (uint8 rows) of float32 `images` (count x size x size), one per row."""
    count, size = images.shape[0], images.shape[1]
    header = _header(size, header_blocks)
    data_bytes = size * size * 4
    out = np.zeros((count, len(header) + data_bytes + (-data_bytes % _FITS_BLOCK)), dtype=np.uint8)
    out[:, : len(header)] = np.frombuffer(header, dtype=np.uint8)
    out[:, len(header) : len(header) + data_bytes] = images.astype(">f4").reshape(count, -1).view(np.uint8)
    return out


def fits_stamp_pool(rng: np.random.Generator, count: int, size: int, header_blocks: int, positive: bool) -> np.ndarray:
    """`count` FITS images (uint8 rows): a header padded to `header_blocks` blocks and a
    `size` x `size` float32 big-endian image of a PSF on noise (difference images: +/- PSF)."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    images = np.empty((count, size, size))
    for k in range(count):
        sigma = rng.uniform(1.2, 2.6)
        amp = rng.lognormal(7.0, 1.0) * (1 if positive or rng.random() < 0.85 else -1)
        images[k] = amp * np.exp(-(xx**2 + yy**2) / (2 * sigma**2)) + rng.normal(0, rng.uniform(80, 300), (size, size))
    return fits_rows(images, header_blocks)


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7)."""
    t = 1 / (1 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1 - poly * np.exp(-(x**2)))


def trail_images(rng: np.random.Generator, length_arcsec: np.ndarray, angle_deg: np.ndarray, flux: np.ndarray,
                 flux_err: np.ndarray, size: int = _STAMP) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Images (nJy per pixel) of sources of total `flux` trailed over `length_arcsec` at
    `angle_deg` (a Gaussian PSF, sigma 1.2-2 px, swept along a segment), and the pixel noise
    giving them their `flux_err`."""
    sigma = rng.uniform(1.2, 2.0, len(flux))[:, None, None]
    half = np.minimum(length_arcsec / PIXEL_ARCSEC, size - 4)[:, None, None] / 2
    angle = np.radians(angle_deg)[:, None, None]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    along, across = xx * np.cos(angle) + yy * np.sin(angle), yy * np.cos(angle) - xx * np.sin(angle)
    scale = np.sqrt(2) * sigma
    swept = (_erf((along + half) / scale) - _erf((along - half) / scale)) / (4 * np.maximum(half, 1e-6))
    point = np.exp(-(along**2) / scale**2) / (np.sqrt(np.pi) * scale)
    profile = np.where(half > 0.25, swept, point) * np.exp(-(across**2) / scale**2) / (np.sqrt(np.pi) * scale)
    noise = flux_err / (np.sqrt(4 * np.pi) * sigma[:, 0, 0])
    return flux[:, None, None] * profile, noise[:, None, None]


_ID_CARD_OFFSET = 9 * _CARD + 10  # value of the ALERTID card


def stamp_column(pool: np.ndarray, pick: np.ndarray, ids: np.ndarray, own: np.ndarray | None = None,
                 own_rows: np.ndarray | None = None) -> pa.Array:  # fmt: skip
    """One binary column: pool images chosen by `pick` (rows `own` replaced by `own_rows`), each
    stamped with its alert id."""
    n, width = len(pick), pool.shape[1]
    rows = pool[pick]
    if own is not None and len(own):
        rows[own] = own_rows
    digits = np.char.zfill(ids.astype(str), 20).astype("S20").view(np.uint8).reshape(n, 20)
    rows[:, _ID_CARD_OFFSET : _ID_CARD_OFFSET + 20] = digits
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * width)
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), n, [None, offsets.buffers()[1], pa.py_buffer(rows.tobytes())]).cast(pa.binary())


_POOL_SIZE = 48
#: Sources brighter than this (difference flux) get their own science and difference stamps.
OWN_STAMP_MAG = 21.5
_HEADER_BLOCKS = {"cutoutScience": 10, "cutoutTemplate": 12, "cutoutDifference": 10}


@lru_cache(maxsize=4)
def _stamp_pools(seed: int, night: dt.date) -> dict[str, np.ndarray]:
    """Per-night pools of science, template and difference stamps (their own stream)."""
    rng = block_rng(seed, night, 0, 7)
    return {
        # 10 or 12 header blocks + 2 data blocks: 34,560 / 40,320 bytes, the common real sizes
        name: fits_stamp_pool(rng, _POOL_SIZE, _STAMP, _HEADER_BLOCKS[name], name != "cutoutDifference")
        for name in ("cutoutScience", "cutoutTemplate", "cutoutDifference")
    }


def _cutout_columns(seed: int, night: dt.date, b: int, n: int, ids: np.ndarray, alerts, phot) -> dict[str, pa.Array]:
    """Three FITS stamps per alert (34,560 / 40,320 / 34,560 bytes as the common real sizes);
    asteroids and bright sources get science and difference stamps of their own: their PSF with
    their flux, trailed along the asteroids' motion."""
    rng = block_rng(seed, night, b, 3)
    pools = _stamp_pools(seed, night)
    pick = rng.integers(0, _POOL_SIZE, n)
    own = np.flatnonzero(alerts.is_sso | (np.abs(phot.psf_flux) > mag_to_njy(OWN_STAMP_MAG)))
    length = np.where(alerts.is_sso[own], phot.trail_length[own], 0.0)
    fluxes = {"cutoutScience": np.maximum(phot.science_flux[own], np.abs(phot.psf_flux[own])),
              "cutoutDifference": phot.psf_flux[own]}  # fmt: skip
    own_rows = {}
    for name, scale in (("cutoutScience", 1.0), ("cutoutDifference", np.sqrt(2))):  # the template's noise too
        image, noise = trail_images(rng, length, phot.trail_angle[own], fluxes[name], phot.flux_err[own])
        own_rows[name] = fits_rows(image + rng.normal(0, 1, image.shape) * noise * scale, _HEADER_BLOCKS[name])
    return {name: stamp_column(pool, pick, ids, own if name in own_rows else None, own_rows.get(name))
            for name, pool in pools.items()}  # fmt: skip
