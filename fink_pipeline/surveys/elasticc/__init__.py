"""ELAsTiCC: the simulated Rubin alert challenge as archived by Fink (schema, time axis, ids, generator)."""

from __future__ import annotations

import datetime as dt

from fink_pipeline.surveys.base import Survey
from fink_pipeline.surveys.elasticc.generator import generate_night
from fink_pipeline.surveys.elasticc.schema import ARCHIVE_SCHEMA, CUTOUT_COLUMNS
from fink_pipeline.surveys.elasticc.taxonomy import CLASS_NAMES
from fink_pipeline.surveys.packets import fink_packets

SURVEY = Survey(
    name="elasticc",
    description="ELAsTiCC simulated Rubin alerts (elasticc.v0_9 / v0_9_1) with their true classId, as "
    "archived by Fink, one night per UTC date of diaSource.midPointTai",
    archive_schema=ARCHIVE_SCHEMA,
    time_column="diaSource.midPointTai",
    time_scale="mjd",
    alert_id="alertId",
    object_id="diaSource.diaObjectId",
    # stored with the alerts (curated truth), filtered and partitioned on (reference 9.2)
    class_columns=("classId",),
    default_partitionby="classId",
    topic_prefix="ftransfer_elasticc",
    # the simulated survey starts in 2023 (earliest sample alert 2023-03-27)
    first_night=dt.date(2023, 1, 1),
    # Fink's ELAsTiCC service has the Full packet only; Medium and Light as for the other surveys
    packets=fink_packets(
        CUTOUT_COLUMNS,
        light_fields=tuple(f"diaSource.{name}" for name in (
            "diaObjectId", "midPointTai", "filterName", "ra", "decl", "psFlux", "psFluxErr", "snr")),
        light_excludes=(
            "diaSource", "prvDiaSources", "prvDiaForcedSources", "prvDiaNondetectionLimits", "diaObject",
            "cmidPointTai", "cfilterName", "cpsFlux", "cpsFluxErr",
        ),
    ),  # fmt: skip
    generate_night=generate_night,
    class_labels={str(class_id): name for class_id, name in CLASS_NAMES.items()},
    position_fields=("diaSource.ra", "diaSource.decl"),
)
