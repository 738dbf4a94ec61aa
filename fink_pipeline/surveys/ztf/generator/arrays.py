"""Array helpers of the synthetic ZTF generator: hashing, fixed-width strings, Arrow builders.

Hashes give per-object attributes that must not depend on the night; strings are built as
fixed-width byte matrices; struct and map columns are assembled from flat numpy arrays.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.surveys.ztf.generator.constants import JD_UNIX_EPOCH

# --------------------------------------------------------------------------------------------
# Hashing (per-object attributes that must not depend on the night)
# --------------------------------------------------------------------------------------------

_U = np.uint64
_GOLDEN = _U(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrap-around arithmetic)."""
    x = np.atleast_1d(x)
    with np.errstate(over="ignore"):
        x = x ^ (x >> _U(30))
        x = x * _U(0xBF58476D1CE4E5B9)
        x = x ^ (x >> _U(27))
        x = x * _U(0x94D049BB133111EB)
        return x ^ (x >> _U(31))


def _hash(*keys) -> np.ndarray:
    """Combine integer keys (scalars or arrays) into one uint64 hash per element."""
    h = None
    for k in keys:
        k = np.asarray(k).astype(np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = _mix64(k + _GOLDEN) if h is None else _mix64(h ^ _mix64(k + _GOLDEN))
    return np.atleast_1d(h)


def _hu(h: np.ndarray, j: int) -> np.ndarray:
    """j-th independent uniform [0, 1) derived from a hash."""
    with np.errstate(over="ignore"):
        x = _mix64(h + _U((j * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF))
    return (x >> _U(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _hi(h: np.ndarray, j: int) -> np.ndarray:
    """j-th independent 63-bit non-negative integer derived from a hash."""
    with np.errstate(over="ignore"):
        x = _mix64(h + _U((j * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF))
    return (x >> _U(1)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# String helpers: fixed-width byte matrices -> Arrow strings
# --------------------------------------------------------------------------------------------


def _digits(values: np.ndarray, width: int) -> np.ndarray:
    """Zero-padded decimal digits of non-negative integers, as an (n, width) uint8 matrix."""
    v = np.asarray(values, dtype=np.int64)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((v[:, None] // powers) % 10 + 48).astype(np.uint8)


def _const(text: str, n: int) -> np.ndarray:
    """One text repeated on n rows, as an (n, len(text)) uint8 matrix."""
    return np.broadcast_to(np.frombuffer(text.encode(), dtype=np.uint8), (n, len(text)))


def _chars(codes: np.ndarray) -> np.ndarray:
    """One column of ASCII characters from an array of byte codes."""
    return np.asarray(codes, dtype=np.uint8)[:, None]


def _fixed_strings(parts: list[np.ndarray]) -> pa.Array:
    """Concatenate (n, w_i) uint8 matrices into a UTF-8 string array of fixed width."""
    mat = np.ascontiguousarray(np.hstack(parts))
    n, width = mat.shape
    offsets = np.arange(0, n * width + 1, width, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(mat)])


def _vocab(words: list[str], idx: np.ndarray) -> pa.Array:
    """Strings picked from a small vocabulary."""
    return pa.array(words, type=pa.string()).take(pa.array(np.asarray(idx, dtype=np.int32)))


def _with_nulls(arr: pa.Array, null_mask: np.ndarray) -> pa.Array:
    """`arr` with nulls where `null_mask` is set."""
    if not null_mask.any():
        return arr
    return pc.if_else(pa.array(null_mask), pa.scalar(None, arr.type), arr)


def _sexagesimal(ra: np.ndarray, dec: np.ndarray, ra_dec: int, dec_dec: int) -> list[np.ndarray]:
    """HHMMSS.s(+/-)DDMMSS style designation parts (decimals of the RA and Dec seconds)."""
    n = len(ra)
    ra_s = np.floor((ra % 360.0) / 15.0 * 3600.0 * 10**ra_dec).astype(np.int64)
    ra_s = np.minimum(ra_s, 24 * 3600 * 10**ra_dec - 1)
    hh, rem = np.divmod(ra_s, 3600 * 10**ra_dec)
    mm, ss = np.divmod(rem, 60 * 10**ra_dec)
    sign = np.where(dec < 0, ord("-"), ord("+"))
    de_s = np.floor(np.abs(dec) * 3600.0 * 10**dec_dec).astype(np.int64)
    dd, rem = np.divmod(de_s, 3600 * 10**dec_dec)
    dm, ds = np.divmod(rem, 60 * 10**dec_dec)
    out = [_digits(hh, 2), _digits(mm, 2), _digits(ss // 10**ra_dec, 2)]
    if ra_dec:
        out += [_const(".", n), _digits(ss % 10**ra_dec, ra_dec)]
    out += [_chars(sign), _digits(dd, 2), _digits(dm, 2), _digits(ds // 10**dec_dec, 2)]
    if dec_dec:
        out += [_const(".", n), _digits(ds % 10**dec_dec, dec_dec)]
    return out


def _utc_ymd(jd: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTC calendar year, month, day of Julian dates (vectorised)."""
    days = np.floor(jd - JD_UNIX_EPOCH).astype(np.int64).astype("datetime64[D]")
    months = days.astype("datetime64[M]")
    year = months.astype("datetime64[Y]").astype(np.int64) + 1970
    month = months.astype(np.int64) % 12 + 1
    day = (days - months.astype("datetime64[D]")).astype(np.int64) + 1
    return year, month, day


def _encode_object_ids(yy: np.ndarray, number: np.ndarray) -> pa.Array:
    """`ZTF<yy><7 lowercase letters>`: the letters are `number` in base 26."""
    n = len(number)
    letters = np.empty((n, 7), dtype=np.uint8)
    rest = np.asarray(number, dtype=np.int64).copy()
    for col in range(6, -1, -1):
        rest, r = np.divmod(rest, 26)
        letters[:, col] = r + ord("a")
    return _fixed_strings([_const("ZTF", n), _digits(yy % 100, 2), letters])

# --------------------------------------------------------------------------------------------
# Arrow builders
# --------------------------------------------------------------------------------------------

_NUMPY_TYPES = {
    pa.float64(): np.float64, pa.float32(): np.float32, pa.int64(): np.int64, pa.int32(): np.int32,
    pa.bool_(): np.bool_,
}


def _f32(x) -> np.ndarray:
    """float32 copy of an array (float columns of the schema)."""
    return np.asarray(x, dtype=np.float32)


def _arrow_struct(struct_type: pa.StructType, values: dict[str, object], n: int,
                  masks: dict[str, np.ndarray] | None = None, struct_mask: np.ndarray | None = None) -> pa.StructArray:
    """StructArray from a name -> numpy array / Arrow array dict (None: all null)."""
    masks = masks or {}
    arrays = []
    for fld in struct_type:
        if fld.name not in values:
            raise KeyError(f"no values for field {fld.name!r}")
        v = values[fld.name]
        if v is None:
            arrays.append(pa.nulls(n, fld.type))
            continue
        if isinstance(v, (pa.Array, pa.ChunkedArray)):
            arr = v if v.type == fld.type else v.cast(fld.type)
            mask = masks.get(fld.name)
            arrays.append(_with_nulls(arr, mask) if mask is not None else arr)
            continue
        values_np = np.asarray(v).astype(_NUMPY_TYPES[fld.type], copy=False)
        mask = masks.get(fld.name)
        arrays.append(pa.array(values_np, type=fld.type, mask=mask))
    mask_arr = pa.array(struct_mask) if struct_mask is not None and struct_mask.any() else None
    return pa.StructArray.from_arrays(arrays, fields=list(struct_type), mask=mask_arr)


def _sorted_group_stats(key: np.ndarray, x: np.ndarray, n_keys: int):
    """Sort points by (key, x): order, group starts and counts per key."""
    order = np.lexsort((x, key))
    counts = np.bincount(key, minlength=n_keys)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return order, starts, counts


def _gauss(u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
    """Standard normal deviates from two uniforms (Box-Muller): hash-derived normals."""
    return np.sqrt(-2.0 * np.log(np.maximum(u1, 1e-300))) * np.cos(2 * np.pi * u2)


def _map_of_strings(keys: tuple[str, ...], items: list[pa.Array], n: int) -> pa.MapArray:
    """map<string, string> column: the same `keys` on every row, values from `items`."""
    k = len(keys)
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    key_arr = pa.array(list(keys) * n, pa.string())
    interleaved = pa.concat_arrays([it.cast(pa.string()) for it in items]).take(
        pa.array((np.arange(n)[:, None] + np.arange(k)[None, :] * n).ravel())
    )
    return pa.MapArray.from_arrays(offsets, key_arr, interleaved)


def _map_of_floats(keys: tuple[str, ...], items: list[np.ndarray], n: int) -> pa.MapArray:
    """map<string, float> column: the same `keys` on every row, values from `items`."""
    k = len(keys)
    offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
    key_arr = pa.array(list(keys) * n, pa.string())
    values = np.stack(items, axis=1).ravel().astype(np.float32)
    return pa.MapArray.from_arrays(offsets, key_arr, pa.array(values))

