"""FITS cutouts of the synthetic ZTF generator.

Per night a pool of consistent science/template/difference images; each alert gets its own
copy with random low-order mantissa bits, gzipped (unique bytes, real sizes). Cutouts use
their own random stream, so every other column is identical with and without them.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.surveys.ztf.generator.constants import JD_UNIX_EPOCH
from fink_pipeline.surveys.ztf.generator.sky import _NightPlan, _seed_seq
from fink_pipeline.surveys.ztf.schema import CUTOUT

_STAMP_N = 63
_FITS_HEADER = b"".join(
    card.ljust(80).encode()
    for card in (
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {_STAMP_N:20d}",
        f"NAXIS2  = {_STAMP_N:20d}",
        "BUNIT   = 'DN      '",
        "END",
    )
).ljust(2880, b" ")
_FITS_DATA_BYTES = _STAMP_N * _STAMP_N * 4
_FITS_PAD = b"\x00" * (-_FITS_DATA_BYTES % 2880)
_POOL_STAMPS = 96  # image triples per night
_POOL_POSITIVE = 64  # triples with a positive difference
_STAMP_CHUNK = 256  # alerts per compression task
_executor: ThreadPoolExecutor | None = None


def _thread_pool() -> ThreadPoolExecutor:
    """Shared compression threads."""
    # zlib releases the GIL: two threads compress twice as fast on the 2-core target machine.
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)))
    return _executor


@lru_cache(maxsize=4)
def _stamp_pool(seed: int, ordinal: int) -> np.ndarray:
    """(3, P, 63*63) big-endian float32 (science, template, difference) triples, as uint32.

    Science = sky + host galaxy + field stars + the candidate's PSF at the centre; the
    template (a co-add) has the same sky, host and stars, less noise and no candidate; the
    difference has the candidate's PSF (positive or negative) over subtraction noise.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, ordinal, 0xC07])))
    P, N = _POOL_STAMPS, _STAMP_N
    yy, xx = np.mgrid[0:N, 0:N]

    def psf(cx, cy, sigma):
        return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))

    sigma = rng.uniform(0.8, 1.6, (P, 1, 1))
    candidate = psf(rng.uniform(30, 32, (P, 1, 1)), rng.uniform(30, 32, (P, 1, 1)), sigma)
    host_r = rng.uniform(2.0, 6.0, (P, 1, 1))
    hx, hy = rng.uniform(24, 38, (2, P, 1, 1))
    has_host = rng.random((P, 1, 1)) < 0.6
    host = has_host * np.exp(-np.sqrt((xx - hx) ** 2 + (yy - hy) ** 2) / host_r) * rng.uniform(20, 400, (P, 1, 1))
    stars = np.zeros((P, N, N))
    for _ in range(5):  # up to 5 field stars
        present = rng.random((P, 1, 1)) < 0.5
        amp_star = rng.lognormal(np.log(150), 1.0, (P, 1, 1))
        stars += present * amp_star * psf(rng.uniform(0, N, (P, 1, 1)), rng.uniform(0, N, (P, 1, 1)), sigma)
    sky = rng.uniform(120, 420, (P, 1, 1))
    amp = rng.lognormal(np.log(300), 0.9, (P, 1, 1))
    # noise levels set so that the gzipped sizes match real stamps (sci ~13.1 kB, ref ~12.4 kB,
    # diff ~14.9 kB)
    # the first _POOL_POSITIVE triples brighten (isdiffpos 't'), the others fade ('f')
    positive = (np.arange(P) < _POOL_POSITIVE)[:, None, None]
    science = sky + host + stars + positive * amp * candidate
    science += rng.normal(0, 1, (P, N, N)) * np.sqrt(sky) * rng.uniform(0.35, 0.9, (P, 1, 1))
    template = sky + host + stars + ~positive * amp * candidate
    template += rng.normal(0, 1, (P, N, N)) * np.sqrt(sky) * rng.uniform(0.07, 0.25, (P, 1, 1))
    sign = np.where(positive, 1.0, -1.0)
    difference = sign * amp * candidate + rng.normal(0, 1, (P, N, N)) * rng.uniform(4, 12, (P, 1, 1))
    stack = np.stack([science, template, difference])
    # a few stamps at the edge of a CCD: part of the image is empty, the file smaller
    edge = rng.random(P) < 0.05
    width = rng.integers(4, 24, P)
    for i in np.flatnonzero(edge):
        stack[:, i, :, : width[i]] = 0.0
    stack = stack.astype(">f4").reshape(3, P, N * N)
    return stack.view(">u4")


def _gzip_stamp(raw: bytes, mtime: int) -> bytes:
    """gzip member of `raw` (fast RLE deflate) with the given modification time."""
    co = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
    body = co.compress(raw) + co.flush()
    header = b"\x1f\x8b\x08\x00" + int(mtime).to_bytes(4, "little") + b"\x04\x03"
    trailer = zlib.crc32(raw).to_bytes(4, "little") + len(raw).to_bytes(4, "little")
    return header + body + trailer


def _compress_chunk(pixels: np.ndarray, mtimes: np.ndarray) -> list[list[bytes]]:
    """pixels: (3, m, 63*63) big-endian uint32 -> per kind, m gzipped FITS files."""
    out = []
    for kind in range(3):
        rows = pixels[kind]
        out.append([_gzip_stamp(_FITS_HEADER + rows[i].tobytes() + _FITS_PAD, mtimes[i]) for i in range(len(rows))])
    return out


def _binary_array(chunks: list[bytes]) -> pa.Array:
    """Arrow binary array from a list of byte strings."""
    lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=len(chunks))
    offsets = np.zeros(len(chunks) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), len(chunks), [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(chunks))])


def _cutout_arrays(plan: _NightPlan, b: int, candid: np.ndarray, pid: np.ndarray, jd: np.ndarray,
                   positive: np.ndarray) -> list[pa.Array]:
    """The three cutout structs of a block: pooled noisy images made unique per alert."""
    n = len(candid)
    rng = np.random.Generator(np.random.PCG64(_seed_seq(plan.seed, plan.night, b, 0xC0C0)))
    pool = _stamp_pool(plan.seed, plan.night.toordinal())
    # one consistent triple per alert, whose difference has the sign of isdiffpos
    pick = np.where(positive, rng.integers(0, _POOL_POSITIVE, n), rng.integers(_POOL_POSITIVE, _POOL_STAMPS, n))
    mtimes = np.floor((jd - JD_UNIX_EPOCH) * 86400.0 + rng.uniform(60, 600, n)).astype(np.int64)
    tasks = []
    for start in range(0, n, _STAMP_CHUNK):
        stop = min(n, start + _STAMP_CHUNK)
        m = stop - start
        # flip the 12 lowest mantissa bits (relative change < 1e-3): every stamp is unique
        # while its size stays set by the image noise, as for a real one
        noise = rng.integers(0, 1 << 12, (3, m, _STAMP_N * _STAMP_N), dtype=np.uint32).astype(">u4")
        base = pool[:, pick[start:stop]]
        # numpy computes in native byte order: store the result back as big-endian (FITS)
        pixels = (base ^ (noise * (base != 0))).astype(">u4")  # empty (zero) pixels stay empty
        tasks.append(_thread_pool().submit(_compress_chunk, pixels, mtimes[start:stop]))
    stamps: list[list[bytes]] = [[], [], []]
    for task in tasks:
        for kind, chunk in enumerate(task.result()):
            stamps[kind].extend(chunk)
    scandid = pc.cast(pa.array(candid), pa.string())
    spid = pc.cast(pa.array(pid), pa.string())
    names = (
        pc.binary_join_element_wise("candid", scandid, "_pid", spid, "_targ_sci.fits.gz", ""),
        pc.binary_join_element_wise("candid", scandid, "_ref.fits.gz", ""),
        pc.binary_join_element_wise("candid", scandid, "_pid", spid, "_targ_scimref.fits.gz", ""),
    )
    return [
        pa.StructArray.from_arrays([names[k], _binary_array(stamps[k])], fields=list(CUTOUT))
        for k in range(3)
    ]


def _empty_cutouts(n: int) -> list[pa.Array]:
    """The three cutout structs with null fields (generation without cutouts)."""
    nulls = [pa.nulls(n, pa.string()), pa.nulls(n, pa.binary())]
    return [pa.StructArray.from_arrays(nulls, fields=list(CUTOUT)) for _ in range(3)]

