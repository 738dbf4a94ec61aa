"""The catalogue's sky index and the exact cross-match of alert positions against it.

Method (docs/crossmatch.md has the why): each catalogue source is filed under its HEALPix cell
(nested scheme, `cdshealpix`) at a depth chosen from its own radius, and the index is one
Arrow table sorted by (depth, cell). An alert looks up, at each depth the catalogue uses, its
own cell and that cell's 8 neighbours (binary searches in the sorted cells), then keeps the
candidates whose angular separation (Vincenty's formula, as astropy's `angular_separation`)
is at most the source's radius. Every pair within the radius is found, none twice:

* a source is in exactly one cell per depth and an alert's 9 cells are distinct, so a
  (alert, source) candidate appears once;
* a source within radius r of an alert lies in the alert's cell or one of its neighbours as
  long as r is below the smallest distance from a cell to the cells around its neighbours.
  That distance, measured on every cell of depths 0 to 5 (test_crossmatch.py checks 0 to 4),
  is at least 0.67 times the mean cell size `sqrt(4 pi / n_cells)`, at the poles and at the
  base cells' corners too; the depth is chosen so that r <= `CLEARANCE_FRACTION` (0.5) x mean
  cell size.

HEALPix covers RA = 0/360 and the poles without special cases: cells and neighbours are the
sphere's. There are no partition margins to manage because the whole index is visible to
every lookup (LSDB splits both catalogues into HEALPix partitions and must add margin caches;
here the alert side is split freely by Spark and the catalogue side is not split).

The index is written once per catalogue as an uncompressed Arrow IPC file and memory-mapped
by every reader: the Spark Python workers share the operating system's page cache instead of
each holding a copy, so memory stays flat as the catalogue grows.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

#: An alert's radius of search must be at most this fraction of the mean cell size of the
#: depth it searches (the measured clearance is >= 0.67; see the module docstring).
CLEARANCE_FRACTION = 0.5
MAX_DEPTH = 29  # the deepest HEALPix depth cdshealpix indexes (64-bit nested cells)
INDEX_FORMAT = "fink-pipeline-catalog-index-1"
_BITMAP_DEPTH = 12  # 201M cells of ~3 arcmin: a 25 MB bitmap of the occupied ones per depth
_ARCSEC = math.pi / (180.0 * 3600.0)


def mean_cell_size(depth: int) -> float:
    """Mean size (radians) of a HEALPix cell at `depth`: the side of a square of its area."""
    return math.sqrt(4.0 * math.pi / (12 * 4**depth))


def depth_for_radius(radius_rad: np.ndarray | float) -> np.ndarray:
    """The deepest HEALPix depth whose cell + 8 neighbours surely hold every point within
    `radius_rad` of a point of the cell (per radius, int8)."""
    radius = np.maximum(np.asarray(radius_rad, dtype=np.float64), 1e-300)
    # CLEARANCE_FRACTION * mean_cell_size(0) / 2**d >= r  <=>  d <= log2(C * size0 / r)
    depth = np.floor(np.log2(CLEARANCE_FRACTION * mean_cell_size(0) / radius))
    return np.clip(depth, 0, MAX_DEPTH).astype(np.int8)


def cells(ra_deg: np.ndarray, dec_deg: np.ndarray, depth: int) -> np.ndarray:
    """Nested HEALPix cells (int64) of positions in degrees."""
    import astropy.units as u
    from astropy.coordinates import Latitude, Longitude
    from cdshealpix import nested

    # one thread: Spark already runs one Python worker per core
    return nested.lonlat_to_healpix(Longitude(ra_deg, u.deg), Latitude(dec_deg, u.deg), depth,
                                    num_threads=1).astype(np.int64)


def neighbourhoods(cell: np.ndarray, depth: int) -> np.ndarray:
    """(n, 9) cells: each cell and its neighbours, -1 where a cell has only 7 (base corners)."""
    from cdshealpix import nested

    return nested.neighbours(cell.astype(np.uint64), depth, num_threads=1)


def angular_separation(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray) -> np.ndarray:
    """Angular separation (radians) of positions in radians, Vincenty's formula (astropy's)."""
    from astropy.coordinates import angular_separation as vincenty

    return vincenty(ra1, dec1, ra2, dec2)


@dataclass(frozen=True)
class Level:
    """The sources filed at one depth: rows [start, stop) of the index."""

    depth: int
    start: int
    stop: int


class CatalogIndex:
    """A catalogue sorted by (depth, cell), ready for `match`.

    Columns: `depth` (int8), `cell` (int64), `ra`, `dec`, `radius` (float64, radians), and
    `id` (the user's ids, int64 or string). `source_row` (int64) is the row in the file read.
    """

    def __init__(self, table: pa.Table):
        self.table = table
        self._depth = _numpy(table, "depth")
        self._cell = _numpy(table, "cell")
        self._ra = _numpy(table, "ra")
        self._dec = _numpy(table, "dec")
        self._radius = _numpy(table, "radius")
        self._ids = _array(table, "id")
        self.levels = _levels(self._depth)
        self._occupied: dict[int, tuple[int, np.ndarray]] = {}

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def ids(self) -> pa.Array:
        """The source ids, in index order (one chunk, as written: no copy)."""
        return self._ids

    def match(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Every (alert, source) pair within the source's radius: two int64 arrays (alert
        positions' indices, index rows), sorted by alert then by index row.

        Positions are degrees; a NaN (a null position) matches nothing.
        """
        ra_deg = np.asarray(ra_deg, dtype=np.float64)
        dec_deg = np.asarray(dec_deg, dtype=np.float64)
        usable = np.flatnonzero(np.isfinite(ra_deg) & np.isfinite(dec_deg) & (np.abs(dec_deg) <= 90.0))
        if len(usable) == 0 or self.num_rows == 0:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        ra, dec = np.mod(ra_deg[usable], 360.0), dec_deg[usable]
        ra_rad, dec_rad = np.radians(ra), np.radians(dec)
        alerts, sources = [], []
        for level in self.levels:
            near = neighbourhoods(cells(ra, dec, level.depth), level.depth)
            lo, hi = self._ranges(level, near.ravel())
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                continue
            # candidate k of lookup j: index row start_j + k
            lookup = np.repeat(np.arange(counts.size), counts)
            first = np.cumsum(counts) - counts
            row = lo[lookup] + (np.arange(total) - first[lookup]) + level.start
            alert = lookup // near.shape[1]
            separation = angular_separation(ra_rad[alert], dec_rad[alert], self._ra[row], self._dec[row])
            keep = separation <= self._radius[row]
            alerts.append(usable[alert[keep]])
            sources.append(row[keep])
        if not alerts:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        alert_index, source_index = np.concatenate(alerts), np.concatenate(sources)
        order = np.lexsort((source_index, alert_index))
        return alert_index[order].astype(np.int64), source_index[order].astype(np.int64)

    def _ranges(self, level: Level, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) of each query cell among the level's sorted cells (empty for -1, the
        missing neighbour). Most query cells hold no source: a bitmap of the occupied cells of
        a coarser depth skips their binary searches."""
        keys = self._cell[level.start:level.stop]
        shift, occupied = self._occupancy(level, keys)
        lo = np.zeros(len(queries), dtype=np.int64)
        hi = np.zeros(len(queries), dtype=np.int64)
        valid = queries >= 0
        candidates = np.flatnonzero(valid)
        coarse = queries[candidates] >> shift
        candidates = candidates[(occupied[coarse >> 3] >> (coarse & 7).astype(np.uint8)) & 1 == 1]
        if len(candidates) > 100_000:
            # searched in sorted order: consecutive searches touch the same memory (2x faster)
            candidates = candidates[np.argsort(queries[candidates])]
        wanted = queries[candidates]
        lo[candidates] = np.searchsorted(keys, wanted, side="left")
        hi[candidates] = np.searchsorted(keys, wanted, side="right")
        return lo, hi

    def _occupancy(self, level: Level, keys: np.ndarray) -> tuple[int, np.ndarray]:
        """(shift, bitmap): bit `cell >> shift` is set when that coarser cell holds a source.
        The coarse depth gives ~64 bits per source (mostly empty), at most 2**27.6 bits (25 MB)."""
        found = self._occupied.get(level.depth)
        if found is None:
            bits = 64 * max(len(keys), 1)
            coarse = min(level.depth, _BITMAP_DEPTH, max(0, math.ceil(math.log(bits / 12, 4))))
            shift = 2 * (level.depth - coarse)
            occupied = np.zeros(12 * 4**coarse, dtype=bool)
            occupied[keys >> shift] = True
            found = self._occupied[level.depth] = (shift, np.packbits(occupied, bitorder="little"))
        return found

    def matched_ids(self, ra_deg: np.ndarray, dec_deg: np.ndarray) -> pa.ListArray:
        """For each position, the ids of the sources within their radius (a list, maybe empty)."""
        alert, source = self.match(ra_deg, dec_deg)
        offsets = np.zeros(len(ra_deg) + 1, dtype=np.int32)
        np.add.at(offsets, alert + 1, 1)
        return pa.ListArray.from_arrays(pa.array(np.cumsum(offsets, dtype=np.int32)),
                                        self.ids.take(pa.array(source)))


def _array(table: pa.Table, name: str) -> pa.Array:
    # combine_chunks copies even a single chunk: 0.15 s for 10M ids, once per Arrow batch before
    column = table.column(name)
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _numpy(table: pa.Table, name: str) -> np.ndarray:
    return _array(table, name).to_numpy(zero_copy_only=False)


def _levels(depth: np.ndarray) -> list[Level]:
    if len(depth) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, depth[1:] != depth[:-1]])
    stops = np.r_[starts[1:], len(depth)]
    return [Level(int(depth[s]), int(s), int(e)) for s, e in zip(starts, stops)]


def build_index(ra_deg: np.ndarray, dec_deg: np.ndarray, radius_arcsec: np.ndarray, ids: pa.Array) -> CatalogIndex:
    """Index sources given in degrees with radii in arcsec (all finite, validated before)."""
    ra_deg = np.mod(np.asarray(ra_deg, dtype=np.float64), 360.0)
    dec_deg = np.asarray(dec_deg, dtype=np.float64)
    radius = np.asarray(radius_arcsec, dtype=np.float64) * _ARCSEC
    depth = depth_for_radius(radius)
    cell = np.empty(len(ra_deg), dtype=np.int64)
    for value in np.unique(depth).tolist():
        at = depth == value
        cell[at] = cells(ra_deg[at], dec_deg[at], value)
    # one depth (a fixed radius): a plain sort is faster than lexsort
    one_depth = len(depth) == 0 or depth.min() == depth.max()
    order = np.argsort(cell, kind="stable") if one_depth else np.lexsort((cell, depth))
    table = pa.table({
        "depth": pa.array(depth[order]),
        "cell": pa.array(cell[order]),
        "ra": pa.array(np.radians(ra_deg)[order]),
        "dec": pa.array(np.radians(dec_deg)[order]),
        "radius": pa.array(radius[order]),
        "id": ids.take(pa.array(order)),
        "source_row": pa.array(order.astype(np.int64)),
    })
    return CatalogIndex(table)


def write_index(index: CatalogIndex, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Write the index as one uncompressed Arrow IPC file (memory-mappable), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": INDEX_FORMAT, **(metadata or {})}
    table = index.table.combine_chunks().replace_schema_metadata(meta)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    os.replace(partial, path)
    return path


def read_index(path: str | os.PathLike) -> CatalogIndex:
    """Memory-map an index written by `write_index` (no copy of its columns)."""
    with pa.memory_map(str(path), "r") as source:
        table = pa.ipc.open_file(source).read_all()
    meta = table.schema.metadata or {}
    if meta.get(b"format") != INDEX_FORMAT.encode():
        raise ValueError(f"{path} is not a catalogue index of this version ({INDEX_FORMAT})")
    return CatalogIndex(table)


def index_schema(path: str | os.PathLike) -> pa.Schema:
    """The schema of an index written by `write_index` (its id type, and in its metadata the
    catalogue hash, source count and radius), without reading the columns."""
    with pa.memory_map(str(path), "r") as source:
        return pa.ipc.open_file(source).schema


_OPENED: dict[str, CatalogIndex] = {}
_OPENED_LOCK = threading.Lock()


def cached_index(path: str) -> CatalogIndex:
    """The index at `path`, memory-mapped once per process (Spark reuses its Python workers)."""
    with _OPENED_LOCK:
        index = _OPENED.get(path)
        if index is None:
            index = _OPENED[path] = read_index(path)
        return index
