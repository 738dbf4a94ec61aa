"""Temporary shim (moved here when the reader lands)."""
from fink_pipeline.crossmatch.catalog import *  # noqa
from fink_pipeline.crossmatch.catalog import CatalogError, file_sha256, read_catalog  # noqa
