"""Benchmark: columnar schemaless Avro encode/decode vs fastavro per record, on light packets.

Builds a synthetic ZTF light-packet-like batch (about 60 columns: ints, longs, floats,
doubles, short strings, booleans, two 26-double lc_features records, a map<string,string>,
~10 % nulls), then times in the same run:

* `encode_batch` on the whole batch vs a `fastavro.schemaless_writer` loop over the same rows
  (rows converted to Python dicts beforehand, not timed);
* `decode_batch` on the encoded messages (its numpy fast path, `vector_decode`) vs decode.py's
  polars path (its fallback, timed alone) and a `fastavro.schemaless_reader` loop.

Usage: python bench/avro_encode.py [--rows 100000] [--fastavro-rows 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import io
import time

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fink_pipeline.avro import avro_schema_from_arrow, decode_batch, encode_batch
from fink_pipeline.avro import decode as decode_module

LC_FEATURES = [
    "mean", "weighted_mean", "standard_deviation", "median", "amplitude", "beyond_1_std", "cusum",
    "inter_percentile_range_10", "kurtosis", "linear_trend", "linear_trend_sigma", "linear_trend_noise",
    "linear_fit_slope", "linear_fit_slope_sigma", "linear_fit_reduced_chi2",
    "magnitude_percentage_ratio_40_5", "magnitude_percentage_ratio_20_10", "maximum_slope",
    "median_absolute_deviation", "median_buffer_range_percentage_10", "percent_amplitude", "mean_variance",
    "anderson_darling_normal", "chi2", "skew", "stetson_K",
]  # fmt: skip
STRINGS = [
    "objectId", "schemavsn", "publisher", "ssnamenr", "brokerIngestTimestamp", "brokerStartProcessTimestamp",
    "fink_broker_version", "fink_science_version", "cdsxmatch", "tns", "DR3Name", "gaiaClass", "vsx",
    "spicy_class", "gcvs", "x3hsp", "x4lac", "brokerEndProcessTimestamp", "tracklet", "timestamp",
    "finkclass", "tnsclass",
]  # fmt: skip
DOUBLES = [
    "jd", "ra", "dec", "rf_snia_vs_nonia", "snn_snia_vs_nonia", "snn_sn_vs_all", "mulens", "rf_kn_vs_nonkn",
    "anomaly_score", "anomaly_score_beta", "anomaly_score_anais", "anomaly_score_emille",
    "anomaly_score_julien", "anomaly_score_maria", "anomaly_score_emille_30days", "anomaly_score_varvara",
    "jd_first_real_det", "jdstarthist_dt", "mag_rate", "sigma_rate", "lower_rate", "upper_rate",
    "delta_time", "slsn_score",
]  # fmt: skip
FLOATS = ["magpsf", "sigmapsf", "Plx", "e_Plx"]
INTS = ["fid", "gaiaVarFlag", "spicy_id", "roid", "nalerthist"]
BOOLS = ["from_upper", "is_transient"]
VOCABULARY = [
    "ZTF26aaxyzab", "Unknown", "", "RRLyr", "2026-03-22 11:06:52.004176", "SN candidate", "(TNS) SN Ia",
    "Gaia DR3 4836968293033500160", "étoile variable ★", "4.02",
]  # fmt: skip


def _nulls(rng: np.random.Generator, n: int) -> pa.Array:
    return pa.array(rng.random(n) < 0.1)


def light_packet_batch(n: int, seed: int = 0) -> pa.RecordBatch:
    """A synthetic light-packet batch of `n` rows with ~10 % nulls in every nullable column."""
    rng = np.random.default_rng(seed)
    vocabulary = pa.array(VOCABULARY)
    columns: dict[str, pa.Array] = {}
    for name in STRINGS:
        columns[name] = pc.if_else(_nulls(rng, n), None, vocabulary.take(rng.integers(0, len(vocabulary), n)))
    for name in DOUBLES:
        columns[name] = pa.array(rng.normal(100.0, 50.0, n), mask=rng.random(n) < 0.1)
    for name in FLOATS:
        columns[name] = pa.array(rng.normal(18.0, 2.0, n).astype(np.float32), mask=rng.random(n) < 0.1)
    for name in INTS:
        columns[name] = pa.array(rng.integers(-5, 2000, n, dtype=np.int32), mask=rng.random(n) < 0.1)
    columns["candid"] = pa.array(rng.integers(10**17, 4 * 10**18, n), mask=rng.random(n) < 0.1)
    for name in BOOLS:
        columns[name] = pa.array(rng.random(n) < 0.5, mask=rng.random(n) < 0.1)
    keys = pa.array(["HyperLEDA_name", "2MASS_name", "lum_dist", "ang_dist"] * n)
    items = vocabulary.take(rng.integers(0, len(vocabulary), 4 * n))
    offsets = pa.array(np.arange(0, 4 * n + 1, 4, dtype=np.int32))
    columns["mangrove"] = pa.MapArray.from_arrays(offsets, keys, items, mask=_nulls(rng, n))
    for band in "gr":
        children = [pa.array(rng.normal(0.0, 1.0, n), mask=rng.random(n) < 0.1) for _ in LC_FEATURES]
        lc_features = pa.StructArray.from_arrays(children, LC_FEATURES, mask=_nulls(rng, n))
        columns[f"lc_features_{band}"] = lc_features
    return pa.RecordBatch.from_pydict(columns)


def _python_rows(batch: pa.RecordBatch) -> list[dict]:
    """Rows as fastavro wants them: maps as dicts, a null struct as a record of nulls (what
    Spark's struct(X.*) writes, and what encode_batch writes)."""
    rows = batch.to_pylist()
    for row in rows:
        if row["mangrove"] is not None:
            row["mangrove"] = dict(row["mangrove"])
        for band in "gr":
            if row[f"lc_features_{band}"] is None:
                row[f"lc_features_{band}"] = dict.fromkeys(LC_FEATURES)
    return rows


def _best(fn, repeat: int) -> float:
    """Best wall time of `repeat` calls (the machine may be shared: the minimum is the signal)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _table(title: str, rows: list[tuple[str, int, float]]) -> None:
    print(f"\n{title}")
    print(f"{'method':<42}{'rows':>9}{'seconds':>10}{'rows/s':>12}")
    for method, count, seconds in rows:
        print(f"{method:<42}{count:>9}{seconds:>10.3f}{count / seconds:>12,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--fastavro-rows", type=int, default=10_000, help="rows for the per-record loops")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()

    batch = light_packet_batch(args.rows)
    schema = avro_schema_from_arrow(batch.schema)
    parsed = fastavro.parse_schema(schema)
    print(f"batch: {batch.num_rows} rows x {batch.num_columns} columns")

    encoded = encode_batch(batch, schema)
    rows = _python_rows(batch.slice(0, args.fastavro_rows))
    reference: list[bytes] = []

    def fastavro_encode() -> None:
        reference.clear()
        for row in rows:
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, parsed, row)
            reference.append(buf.getvalue())

    t_ours = _best(lambda: encode_batch(batch, schema), args.repeat)
    t_fast = _best(fastavro_encode, args.repeat)
    assert reference == encoded.slice(0, len(rows)).to_pylist(), "encodings differ"
    size = sum(len(m) for m in reference) / len(reference)
    _table(
        f"encode ({size:.0f} bytes/message on average)",
        [
            ("encode_batch (columnar)", batch.num_rows, t_ours),
            ("fastavro.schemaless_writer per row", len(rows), t_fast),
        ],
    )
    print(f"batch encoder vs fastavro per row: {(batch.num_rows / t_ours) / (len(rows) / t_fast):.1f}")

    t_dec = _best(lambda: decode_batch(encoded, schema), args.repeat)
    framing = decode_module._build_framing(schema)

    def polars_path() -> None:
        df, error, _ = decode_module._read(encoded, framing)
        assert error is None
        decode_module._to_arrow(df, framing)

    t_polars = _best(polars_path, args.repeat)
    t_fast_dec = _best(
        lambda: [fastavro.schemaless_reader(io.BytesIO(m), parsed, None) for m in reference], args.repeat
    )
    _table(
        "decode",
        [
            ("decode_batch (numpy fast path, columnar)", batch.num_rows, t_dec),
            ("polars path (decode.py's fallback)", batch.num_rows, t_polars),
            ("fastavro.schemaless_reader per message", len(reference), t_fast_dec),
        ],
    )
    ratio = (batch.num_rows / t_dec) / (len(reference) / t_fast_dec)
    print(f"columnar decoder vs fastavro per message: {ratio:.1f}")


if __name__ == "__main__":
    main()
