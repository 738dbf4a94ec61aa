"""Cutouts: uncompressed 30x30 float32 FITS stamps from a per-night pool, each stamped with its
alert id (unique bytes). They use their own random streams.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.streams import block_rng


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


_POOL_SIZE = 48


@lru_cache(maxsize=4)
def _stamp_pools(seed: int, night: dt.date) -> dict[str, np.ndarray]:
    """Per-night pools of science, template and difference stamps (their own stream)."""
    rng = block_rng(seed, night, 0, 7)
    return {
        # 10 or 12 header blocks + 2 data blocks: 34,560 / 40,320 bytes, the common real sizes
        "cutoutScience": fits_stamp_pool(rng, _POOL_SIZE, 30, 10, True),
        "cutoutTemplate": fits_stamp_pool(rng, _POOL_SIZE, 30, 12, True),
        "cutoutDifference": fits_stamp_pool(rng, _POOL_SIZE, 30, 10, False),
    }


def _cutout_columns(seed: int, night: dt.date, b: int, n: int, ids: np.ndarray) -> dict[str, pa.Array]:
    """Three FITS stamps per alert (34,560 / 40,320 / 34,560 bytes as the common real sizes)."""
    rng = block_rng(seed, night, b, 3)
    pools = _stamp_pools(seed, night)
    pick = rng.integers(0, _POOL_SIZE, n)
    return {name: stamp_column(pool, pick, ids) for name, pool in pools.items()}
