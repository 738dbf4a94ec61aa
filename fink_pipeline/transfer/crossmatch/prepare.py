"""A request's catalogue, checked and indexed before Spark starts: the `CrossmatchPlan`.

The index is stored under `<state>/catalogs/` named by the catalogue file's SHA-256 and the
request's column and radius choices, so validating, estimating, submitting and running a
request build it once; a retry or a replay of a submitted request (which records the hash in
`catalog_sha256`) uses the stored index even when the file was edited or removed since.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from fink_pipeline.surveys.base import Survey
from fink_pipeline.transfer.crossmatch.catalog import CatalogError, file_sha256, read_catalog
from fink_pipeline.transfer.crossmatch.index import build_index, index_schema, write_index
from fink_pipeline.transfer.request import RequestError, TransferRequestFields

CATALOG_DIR_ENV = "FINK_PIPELINE_CATALOG_DIR"


@dataclass(frozen=True)
class CrossmatchPlan:
    """The catalogue step of a transfer: which index, which alert fields, which output column."""

    catalog_filename: str
    sha256: str
    index_path: str
    id_col: str
    id_type: pa.DataType
    sources: int
    position: tuple[str, str]
    radius: str  # for people: "1.5 arcsec" or "column r (0.5 to 3 arcsec)"

    @property
    def description(self) -> str:
        return f"{Path(self.catalog_filename).name} ({self.sources:,} sources, radius {self.radius})"


def catalog_dir() -> Path:
    """Where catalogue indexes are kept: `$FINK_PIPELINE_CATALOG_DIR`, else `<state>/catalogs`."""
    from fink_pipeline import paths

    configured = os.environ.get(CATALOG_DIR_ENV)
    return Path(configured).expanduser() if configured else paths.state_dir() / "catalogs"


def _choices_digest(request: TransferRequestFields) -> str:
    choices = {k: getattr(request, k) for k in ("ra_col", "dec_col", "id_col", "radius_arcsec", "radius_col")}
    return hashlib.sha256(json.dumps(choices, sort_keys=True).encode()).hexdigest()[:16]


def prepare_crossmatch(request: TransferRequestFields, survey: Survey,
                       directory: Path | None = None) -> CrossmatchPlan | None:
    """The request's `CrossmatchPlan` (None without a catalogue): the catalogue read and
    validated (CatalogError naming the column and row), indexed once per content and choices."""
    if request.catalog_filename is None:
        return None
    if survey.position_fields is None:
        raise RequestError(f"catalog_filename: {survey.name} alerts have no position to cross-match")
    directory = directory or catalog_dir()
    filename = request.catalog_filename
    recorded = getattr(request, "catalog_sha256", None)  # set on submitted requests only
    digest = _choices_digest(request)
    if recorded is not None:
        stored = directory / f"{recorded}-{digest}.arrow"
        if stored.exists():
            return _plan(request, survey, stored)
    try:
        sha256 = file_sha256(filename)
    except (CatalogError, OSError) as exc:
        if recorded is not None:
            raise CatalogError(f"{filename}: the catalogue this request was submitted with (sha256 {recorded[:12]}…) "
                               f"is no longer there, nor its index under {directory}; resubmit the request") from None
        if isinstance(exc, OSError):
            # the reader names what is wrong (missing, a folder, unreadable) in its own words
            read_catalog(filename, ra_col=request.ra_col, dec_col=request.dec_col, id_col=request.id_col,
                         radius_arcsec=request.radius_arcsec, radius_col=request.radius_col)
        raise
    if recorded is not None and sha256 != recorded:
        raise CatalogError(
            f"{filename} changed since the request was submitted (sha256 {recorded[:12]}… then, {sha256[:12]}… now) "
            f"and its index is gone from {directory}: resubmit the request to match the new file")
    path = directory / f"{sha256}-{digest}.arrow"
    if not path.exists():
        catalog = read_catalog(filename, ra_col=request.ra_col, dec_col=request.dec_col, id_col=request.id_col,
                               radius_arcsec=request.radius_arcsec, radius_col=request.radius_col)
        if catalog.sha256 != sha256:
            # the index is named after the hash taken above: it must hold those very bytes
            raise CatalogError(f"{filename} changed while it was being read; run again once it is written")
        table = catalog.table
        index = build_index(table.column("ra").to_numpy(), table.column("dec").to_numpy(),
                            table.column("radius_arcsec").to_numpy(), table.column("id").combine_chunks())
        radius = table.column("radius_arcsec").to_numpy()
        write_index(index, path, metadata={
            "catalog_filename": filename, "sha256": catalog.sha256, "id_col": request.id_col,
            "sources": str(catalog.num_rows),
            "radius": (f"{request.radius_arcsec:g} arcsec" if request.radius_arcsec is not None else
                       f"column {request.radius_col} ({radius.min():g} to {radius.max():g} arcsec)"
                       if len(radius) else f"column {request.radius_col}"),
        })
    return _plan(request, survey, path)


def _plan(request: TransferRequestFields, survey: Survey, path: Path) -> CrossmatchPlan:
    schema = index_schema(path)
    meta = {key.decode(): value.decode() for key, value in (schema.metadata or {}).items()}
    return CrossmatchPlan(
        catalog_filename=request.catalog_filename or meta["catalog_filename"],
        sha256=meta["sha256"],
        index_path=str(path),
        id_col=request.id_col,
        id_type=schema.field("id").type,
        sources=int(meta["sources"]),
        position=survey.position_fields,
        radius=meta["radius"],
    )
