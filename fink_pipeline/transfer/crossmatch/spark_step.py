"""The cross-match as a Spark step: one row per (alert, catalogue source) within the radius.

An Arrow UDF sends only the alerts' positions to the Python workers; each worker memory-maps
the catalogue index once (`index.cached_index`) and returns, per alert, the list of matching
source ids, which `explode` turns into rows (alerts without a match disappear, as in Fink's
Xmatch service). The rest of each row stays in the JVM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from fink_pipeline.transfer.crossmatch.prepare import CrossmatchPlan

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


def crossmatch_dataframe(df: "DataFrame", crossmatch: CrossmatchPlan) -> "DataFrame":
    """`df` restricted to alerts within the radius of a catalogue source, one row per pair,
    with the source's id in a column named `crossmatch.id_col`."""
    from pyspark.sql import functions as F
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import ArrayType

    index_path = crossmatch.index_path

    def match_ids(ra: pa.Array, dec: pa.Array) -> pa.Array:
        from fink_pipeline.transfer.crossmatch.index import cached_index

        index = cached_index(index_path)
        return index.matched_ids(ra.to_numpy(zero_copy_only=False), dec.to_numpy(zero_copy_only=False))

    udf = F.arrow_udf(match_ids, ArrayType(from_arrow_type(crossmatch.id_type), containsNull=False))
    ra, dec = crossmatch.position
    return df.withColumn(crossmatch.id_col, F.explode(udf(F.col(ra).cast("double"), F.col(dec).cast("double"))))
