"""Rubin `tns_type_recomputed`: the TNS type of the nearest TNS source within 1.5 arcsec of
`diaSource.ra/dec`, recomputed by the transfer job from the current catalogue, as Fink's LSST
job does before the extra conditions (reference section 9.1), "Unknown" when none is that close.

The match is ZTF's `tnsclass` one (same catalogue preparation, grid and tie-breaking) on the
diaSource position. Values carry no "(TNS) " prefix: Fink's LSST column holds bare TNS types
(the Data Transfer sample in shared/data has "Unknown"; the generator writes bare types), while
ZTF's tnsclass keeps the prefix its class filter needs. Without a catalogue the archived value
stays as Fink stored it at processing time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from fink_pipeline.surveys.base import TnsRecompute
from fink_pipeline.surveys.ztf.tns import TNS_PREFIX, TNS_RADIUS_ARCSEC, prepare_tns_catalog, with_tnsclass

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

TNS_COLUMN = "tns_type_recomputed"
POSITION = ("diaSource.ra", "diaSource.dec")


def with_tns_type_recomputed(df: "DataFrame", catalog: Any) -> "DataFrame":
    """`df` with `tns_type_recomputed` matched again against the prepared `catalog`."""
    from pyspark.sql import functions as F

    matched = with_tnsclass(df, catalog, TNS_RADIUS_ARCSEC, column=TNS_COLUMN, position=POSITION)
    prefix = "^" + re.escape(TNS_PREFIX)
    return matched.withColumn(TNS_COLUMN, F.regexp_replace(F.col(TNS_COLUMN), prefix, ""))


def _prepare(catalog: Any) -> pa.Table:
    return prepare_tns_catalog(catalog)


LSST_TNS = TnsRecompute(column=TNS_COLUMN, inputs=POSITION, prepare=_prepare, apply=with_tns_type_recomputed)
