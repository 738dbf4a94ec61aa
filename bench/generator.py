"""Synthetic alert generator throughput (alerts/min) vs a naive per-row Python generator.

Measured in one run, on one night (2024-03-01), same seed:

* `generate_night` without cutouts: every column of the archive schema (candidate, 30-day
  history, Fink added values, ...), calibrated and mutually consistent;
* `generate_night` with cutouts: the same plus three gzipped FITS stamps per alert (~45 kB);
* `generate_archive` without cutouts: the above written as zstd Parquet (what `fink-pipeline
  archive generate --no-cutouts` does);
* the reference: a naive per-row Python generator of the light-packet columns only (each
  value drawn with `random` by type, one dict per alert, then `pa.Table.from_pylist`). It does
  strictly less work than ours (no history, no calibration, no consistency between fields), so
  the ratio understates the difference.

Last line: `generator vs naive per-row Python: X` (ours without cutouts, all columns, over the
reference's light columns; alerts/min over alerts/min).

    .venv/bin/python bench/generator.py [--alerts 20000] [--cutout-alerts 2000] [--naive-alerts 5000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402

NIGHT = dt.date(2024, 3, 1)
SEED = 7
WORDS = ["Unknown", "RRLyr", "SN candidate", "EB*", "Star", "QSO", "Fail", "ZTF24aaabcde", "(TNS) SN Ia", ""]


def best_of(repeat: int, fn) -> tuple[float, object]:
    """Best wall time of `repeat` calls (the machine may be shared: the minimum is the signal)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def generate(n: int, with_cutouts: bool) -> int:
    from fink_pipeline.surveys import get_survey

    rows = 0
    for batch in get_survey("ztf").generate_night(NIGHT, n, SEED, with_cutouts=with_cutouts,
                                                  batch_size=2_500 if with_cutouts else 20_000):
        rows += batch.num_rows
    return rows


def write_archive(n: int) -> int:
    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.surveys import get_survey

    with tempfile.TemporaryDirectory(prefix="bench-generator-") as root:
        return generate_archive(get_survey("ztf"), root, NIGHT, nights=1, alerts_per_night=n, seed=SEED,
                                with_cutouts=False).total_alerts


def light_schema() -> pa.Schema:
    """The light packet's columns, as the transfer job publishes them."""
    from fink_pipeline_tests.synthetic_topics import synthetic_alerts
    from fink_pipeline.surveys import get_survey

    return next(synthetic_alerts(get_survey("ztf"), 10, "light")).schema


def naive_value(dtype: pa.DataType, rng: random.Random):
    """One random value of `dtype`, the way a per-row generator would draw it."""
    if rng.random() < 0.05 and not pa.types.is_struct(dtype):
        return None
    if pa.types.is_floating(dtype):
        return rng.gauss(18.0, 2.0)
    if pa.types.is_integer(dtype):
        return rng.randint(0, 2**31 - 1) if dtype.bit_width >= 32 else rng.randint(0, 100)
    if pa.types.is_boolean(dtype):
        return rng.random() < 0.5
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        return rng.choice(WORDS)
    if pa.types.is_struct(dtype):
        return {child.name: naive_value(child.type, rng) for child in dtype}
    if pa.types.is_map(dtype):
        return [(f"k{i}", naive_value(dtype.item_type, rng)) for i in range(4)]
    if pa.types.is_list(dtype):
        return [naive_value(dtype.value_type, rng) for _ in range(rng.randint(0, 5))]
    raise TypeError(f"no naive generator for {dtype}")


def naive_generate(n: int, schema: pa.Schema) -> int:
    rng = random.Random(SEED)
    rows = [{f.name: naive_value(f.type, rng) for f in schema} for _ in range(n)]
    return pa.Table.from_pylist(rows, schema=schema).num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts generated without cutouts")
    parser.add_argument("--cutout-alerts", type=int, default=2_000, help="alerts generated with cutouts")
    parser.add_argument("--naive-alerts", type=int, default=5_000, help="alerts of the naive per-row reference")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs of each measurement")
    args = parser.parse_args()

    from fink_pipeline.surveys import get_survey

    schema = light_schema()
    archive_columns = len(get_survey("ztf").archive_schema)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"best of {args.repeat}")
    generate(1000, False)  # warm-up: imports, sky grid and stamp pools are built once per process

    measures = [
        ("generate_night, no cutouts (all columns)", archive_columns, *best_of(args.repeat, lambda: generate(args.alerts, False))),
        ("generate_night, with cutouts", archive_columns, *best_of(args.repeat, lambda: generate(args.cutout_alerts, True))),
        ("generate_archive to Parquet, no cutouts", archive_columns, *best_of(args.repeat, lambda: write_archive(args.alerts))),
        ("naive per-row Python (light columns only)", len(schema), *best_of(args.repeat, lambda: naive_generate(args.naive_alerts, schema))),
    ]
    print(f"\n{'method':<46}{'root cols':>10}{'alerts':>9}{'seconds':>9}{'alerts/min':>13}")
    rates = []
    for method, columns, seconds, alerts in measures:
        rate = alerts / seconds * 60
        rates.append(rate)
        print(f"{method:<46}{columns:>10}{alerts:>9,}{seconds:>9.2f}{rate:>13,.0f}")
    print(f"generator vs naive per-row Python: {rates[0] / rates[3]:.1f}")


if __name__ == "__main__":
    main()
