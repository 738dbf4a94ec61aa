"""The user catalogue reader, at the path first announced for it: it lives in the transfer layer
(fink_pipeline.transfer.crossmatch.catalog), where the request and the cross-match plan use it."""

from fink_pipeline.transfer.crossmatch.catalog import (
    MAX_CATALOG_ROWS,
    MAX_RADIUS_ARCSEC,
    Catalog,
    CatalogError,
    file_sha256,
    read_catalog,
)

__all__ = ["MAX_CATALOG_ROWS", "MAX_RADIUS_ARCSEC", "Catalog", "CatalogError", "file_sha256", "read_catalog"]
