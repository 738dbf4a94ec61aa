"""LSST: Rubin Observatory alerts as archived by Fink (archive schema, time axis, ids, generator)."""

from __future__ import annotations

import datetime as dt

from fink_pipeline.surveys.base import Survey
from fink_pipeline.surveys.lsst.generator import BANDS, generate_night
from fink_pipeline.surveys.lsst.packets import PACKETS
from fink_pipeline.surveys.lsst.schema import ARCHIVE_SCHEMA
from fink_pipeline.surveys.lsst.selections import RUBIN_BLOCKS, RUBIN_FILTERS, resolve_rubin_block, resolve_rubin_filter
from fink_pipeline.surveys.lsst.tns import LSST_TNS
from fink_pipeline.surveys.ztf.schema import MANGROVE_KEYS

SURVEY = Survey(
    name="lsst",
    description="Vera C. Rubin Observatory (LSST) alerts as archived by Fink (lsst.v7_4..v11_1 packets "
    "plus Fink added values), one night per UTC date of diaSource.midpointMjdTai",
    archive_schema=ARCHIVE_SCHEMA,
    time_column="diaSource.midpointMjdTai",
    # MJD in TAI: 37 s ahead of UTC, negligible for the night of an alert
    time_scale="mjd",
    alert_id="diaSourceId",
    # null for solar-system alerts (their object is diaSource.ssObjectId)
    object_id="diaSource.diaObjectId",
    # Fink's LSST service has no finkclass/tnsclass and forbids class partitioning (reference
    # 9.1, 5.4): selections use filters and blocks; tns_type_recomputed is an ordinary column.
    class_columns=(),
    default_partitionby="time",
    topic_prefix="ftransfer_lsst",
    # earliest Rubin nights Fink processed (lsst.v7_4 commissioning alerts of April 2025); the
    # public portal offers nights from 2025-10-25 on
    first_night=dt.date(2025, 4, 1),
    # Fink's Full, Medium, Light static and Light SSO packets
    packets=PACKETS,
    generate_night=generate_night,
    # Mangrove as for ZTF; lc_features holds one record of features per band
    map_keys={"mangrove": MANGROVE_KEYS, "lc_features": BANDS},
    # Fink's LSST job matches TNS again at transfer time (before the extra conditions)
    tns_recompute=LSST_TNS,
    # Fink's Rubin live-stream filters and blocks (fink-filters 7.45) as Spark expressions
    resolve_livestream_filter=resolve_rubin_filter,
    livestream_filters=RUBIN_FILTERS,
    blocks=RUBIN_BLOCKS,
    resolve_block=resolve_rubin_block,
    # lsst.v7_4 packets have `alertId` and no root diaSourceId: the triggering source's id is it
    extra={"alert_id_fallbacks": ("diaSource.diaSourceId",)},
    position_fields=("diaSource.ra", "diaSource.dec"),
)
