"""One block of synthetic Rubin alerts: the sections in the order they draw from the block's
random stream, then the assembly into an `ARCHIVE_SCHEMA` record batch.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.alerts import _block_alerts, _block_photometry
from fink_pipeline.surveys.lsst.generator.arrays import timestamps_from_mjd
from fink_pipeline.surveys.lsst.generator.constants import (
    FINK_BROKER_VERSION,
    FINK_SCIENCE_VERSION,
    PUBLISHER,
    SCHEMA_VERSION,
)
from fink_pipeline.surveys.lsst.generator.cutouts import _cutout_columns
from fink_pipeline.surveys.lsst.generator.dia_source import _dia_source_struct
from fink_pipeline.surveys.lsst.generator.fink_values import _fink_columns, _observation_reason_columns
from fink_pipeline.surveys.lsst.generator.history import _history_columns
from fink_pipeline.surveys.lsst.generator.streams import block_rng
from fink_pipeline.surveys.lsst.schema import ARCHIVE_SCHEMA


def _generate_block(night: dt.date, seed: int, b: int, n: int, start: int, plan, with_cutouts: bool) -> pa.RecordBatch:
    """Alerts `start` .. `start + n` of the night: sections drawn in turn from the block's stream."""
    rng = block_rng(seed, night, b, 1)
    alerts = _block_alerts(rng, night, seed, n, start, plan)
    phot = _block_photometry(rng, n, alerts)
    dia_source = _dia_source_struct(rng, n, alerts, phot)
    history = _history_columns(rng, n, alerts, phot, start)
    fink = _fink_columns(rng, n, alerts, phot, seed)
    columns = {
        "diaSourceId": pa.array(alerts.dia_source_id, pa.int64()),
        "diaSource": dia_source,
        "lsst_schema_version": pa.array(np.full(n, SCHEMA_VERSION, dtype=object), pa.string()),
        "fink_broker_version": pa.array([FINK_BROKER_VERSION] * n, pa.string()),
        "fink_science_version": pa.array([FINK_SCIENCE_VERSION] * n, pa.string()),
        "publisher": pa.array([PUBLISHER] * n, pa.string()),
        "timestamp": timestamps_from_mjd(alerts.mjd),
        **history, **fink, **_observation_reason_columns(rng, n),
    }  # fmt: skip
    if with_cutouts:
        columns.update(_cutout_columns(seed, night, b, n, alerts.dia_source_id, alerts, phot))
    arrays = [columns[f.name] if columns.get(f.name) is not None else pa.nulls(n, f.type) for f in ARCHIVE_SCHEMA]
    arrays = [a.cast(f.type) if a.type != f.type else a for a, f in zip(arrays, ARCHIVE_SCHEMA)]
    return pa.RecordBatch.from_arrays(arrays, schema=ARCHIVE_SCHEMA)
