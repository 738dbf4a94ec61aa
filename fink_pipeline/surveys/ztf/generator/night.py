"""Public entry point of the synthetic ZTF generator: one night as record batches."""

from __future__ import annotations

import datetime as dt
from typing import Iterator

import pyarrow as pa

from fink_pipeline.surveys.ztf.generator.block import _generate_block
from fink_pipeline.surveys.ztf.generator.sky import _NightPlan, _plan_night


def generate_night(
    night: dt.date,
    n_alerts: int,
    seed: int,
    with_cutouts: bool = True,
    batch_size: int = 20_000,
) -> Iterator[pa.RecordBatch]:
    """Synthetic Fink-processed ZTF alerts of one night, as record batches of `ARCHIVE_SCHEMA`.

    The output depends only on (night, n_alerts, seed) -- not on `batch_size` -- and the
    non-cutout columns are identical with and without cutouts. Batches hold `batch_size`
    rows (the last one fewer); alerts are produced lazily, `BLOCK_SIZE` at a time, so memory
    stays bounded by one batch. With cutouts a row weighs ~45 kB: prefer batches of a few
    thousand rows.

    Args:
        night: UTC date of the night: every candidate.jd falls on that date (02:00-13:30 UTC).
        n_alerts: number of alerts of the night (>= 0).
        seed: archive seed; different seeds give different alerts and objects.
        with_cutouts: when False the three cutout structs are present with null fields.
        batch_size: rows per yielded batch (>= 1).
    """
    if not isinstance(night, dt.date) or isinstance(night, dt.datetime):
        raise TypeError(f"night must be a datetime.date, not {type(night).__name__}")
    if n_alerts < 0:
        raise ValueError(f"n_alerts must be >= 0, got {n_alerts}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    plan = _plan_night(night, n_alerts, int(seed)) if n_alerts else None
    return _iter_batches(plan, with_cutouts, batch_size)


def _iter_batches(plan: _NightPlan | None, with_cutouts: bool, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Blocks of the night re-chunked into batches of `batch_size` rows."""
    if plan is None:
        return
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for b in range(plan.n_blocks):
        block = _generate_block(plan, b, with_cutouts)
        pending.append(block)
        pending_rows += block.num_rows
        while pending_rows >= batch_size:
            merged = pending[0] if len(pending) == 1 else pa.concat_batches(pending)
            yield merged.slice(0, batch_size)
            rest = merged.slice(batch_size)
            pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if pending_rows:
        yield pending[0] if len(pending) == 1 else pa.concat_batches(pending)

