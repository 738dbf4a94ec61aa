"""ZTF: the Fink-processed ZTF public alert stream (archive schema, time axis, ids, generator)."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa

from fink_pipeline.surveys.base import Survey
from fink_pipeline.surveys.packets import fink_packets
from fink_pipeline.surveys.ztf.classes import ZTF_CLASS_RULES, classify, classify_arrow
from fink_pipeline.surveys.ztf.filters import LIVESTREAM_FILTERS, resolve_filter
from fink_pipeline.surveys.ztf.generator import generate_night
from fink_pipeline.surveys.ztf.schema import ARCHIVE_SCHEMA, CUTOUT_COLUMNS, MAP_KEYS

SURVEY = Survey(
    name="ztf",
    description="Zwicky Transient Facility public alerts as archived by Fink (ZTF 4.02 packets "
    "plus Fink added values), one night per UTC date of candidate.jd",
    archive_schema=ARCHIVE_SCHEMA,
    time_column="candidate.jd",
    time_scale="jd",
    alert_id="candid",
    object_id="objectId",
    class_columns=("finkclass", "tnsclass"),
    default_partitionby="finkclass",
    topic_prefix="ftransfer_ztf",
    first_night=dt.date(2019, 11, 1),
    # Fink's packets (reference 4.1): Full, Medium (no cutouts) and Light, these candidate fields
    # flattened to the root plus every root column but the cutouts, the candidate and the history
    packets=fink_packets(
        CUTOUT_COLUMNS,
        light_fields=tuple(f"candidate.{name}" for name in ("magpsf", "sigmapsf", "fid", "jd", "ra", "dec", "ssnamenr")),
        light_excludes=("candidate", "prv_candidates"),
    ),
    classify=classify,
    classify_arrow=classify_arrow,
    # as Spark types them: finkclass nullable, tnsclass (a literal without a TNS catalogue) not
    class_schema=pa.schema([pa.field("finkclass", pa.string(), True), pa.field("tnsclass", pa.string(), False)]),
    generate_night=generate_night,
    map_keys=MAP_KEYS,
    class_rules=ZTF_CLASS_RULES,
    resolve_livestream_filter=resolve_filter,
    livestream_filters=LIVESTREAM_FILTERS,
    position_fields=("candidate.ra", "candidate.dec"),
    crossmatch_topic_prefix="fxmatch_ztf",
)
