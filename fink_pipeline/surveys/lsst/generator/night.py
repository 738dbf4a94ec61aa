"""Public entry point of the synthetic Rubin generator: one night as record batches."""

from __future__ import annotations

import datetime as dt
import math
from typing import Iterator

import pyarrow as pa

from fink_pipeline.surveys.lsst.generator.arrays import rechunk
from fink_pipeline.surveys.lsst.generator.block import _generate_block
from fink_pipeline.surveys.lsst.generator.constants import BLOCK_SIZE
from fink_pipeline.surveys.lsst.generator.night_plan import _night_visits


def generate_night(night: dt.date, n_alerts: int, seed: int = 0, with_cutouts: bool = True,
                   batch_size: int = 5000) -> Iterator[pa.RecordBatch]:  # fmt: skip
    """Record batches (exactly `ARCHIVE_SCHEMA`) of `n_alerts` synthetic Rubin alerts of `night`.

    Every `diaSource.midpointMjdTai` falls on the UTC date `night`. Deterministic in (night,
    n_alerts, seed) and independent of `batch_size`. Raises ValueError for negative counts.
    """
    if n_alerts < 0 or batch_size <= 0:
        raise ValueError(f"n_alerts ({n_alerts}) must be >= 0 and batch_size ({batch_size}) > 0")
    if n_alerts == 0:
        return
    plan = _night_visits(night, n_alerts, seed)
    yield from rechunk(
        (_generate_block(night, seed, b, min(BLOCK_SIZE, n_alerts - b * BLOCK_SIZE), b * BLOCK_SIZE, plan, with_cutouts)
         for b in range(math.ceil(n_alerts / BLOCK_SIZE))),
        batch_size,
    )  # fmt: skip
