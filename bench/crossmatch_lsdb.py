"""LSDB's cross-match of the bench's alerts against a catalogue; run by bench/crossmatch.py with
the interpreter of bench/.venv-lsdb (LSDB is installed for the bench only, never imported by the
project).

Done as an LSDB user does it, with LSDB's defaults except where said:

* load: the alerts' `candid`, `candidate.ra`, `candidate.dec` from the archive's Parquet files
  (pyarrow) and the catalogue Parquet file (pandas), then `lsdb.from_dataframe` for both
  (defaults: HEALPix orders 0-7, a 5 arcsec margin cache, MOC), left = alerts, right = catalogue;
* match: `alerts.crossmatch(catalogue, radius_arcsec=R, n_neighbors=K, suffix_method=
  "overlapping_columns")` then `.compute()` on dask's default scheduler (threads, one per core).
  Deviation from LSDB's defaults: n_neighbors=K (default 1, nearest neighbour only) so that
  every source within the radius is returned; LSDB has no all-matches mode, so the output
  reports the largest number of matches of one alert, which must stay below K.

With --hats DIR the catalogue is instead opened with `lsdb.open_catalog(DIR)`, a HATS collection
(catalogue + margin) written beforehand by `from_dataframe(...).to_hats(DIR)` when missing (that
write is reported as hats_write_s and not counted in load_s; the bench runs it apart): the way
LSDB's published catalogues are used.

Prints one JSON line: seconds of import, load and match, pairs, the largest matches per alert,
the versions and the scheduler. Writes the (candid, id) pairs to --pairs when given.

    bench/.venv-lsdb/bin/python bench/crossmatch_lsdb.py ARCHIVE_ROOT CATALOGUE.parquet [--radius-arcsec 1.5]
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", help="the archive root (<root>/ztf/science/year=.../*.parquet)")
    parser.add_argument("catalogue", help="Parquet file with columns ra, dec, id")
    parser.add_argument("--radius-arcsec", type=float, default=1.5)
    parser.add_argument("--n-neighbors", type=int, default=16)
    parser.add_argument("--pairs", help="write the (candid, id) pairs to this Parquet file")
    parser.add_argument("--hats", help="a HATS collection of the catalogue (with its margin): opened with "
                        "lsdb.open_catalog instead of from_dataframe; written first (not timed) when missing")
    args = parser.parse_args()

    import dask
    import lsdb
    import pandas as pd
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    imported = time.perf_counter()
    warnings.filterwarnings("ignore", category=FutureWarning)

    files = ds.dataset(os.path.join(args.archive, "ztf", "science"), format="parquet", partitioning="hive")
    alerts = files.to_table(columns={"candid": pc.field("candid"), "ra": pc.field("candidate", "ra"),
                                     "dec": pc.field("candidate", "dec")}).to_pandas()
    hats_s = None
    if args.hats and not os.path.exists(os.path.join(args.hats, "collection.properties")):
        began = time.perf_counter()
        sources = pd.read_parquet(args.catalogue, columns=["ra", "dec", "id"])
        lsdb.from_dataframe(sources, catalog_name="catalogue", ra_column="ra", dec_column="dec").to_hats(
            args.hats, progress_bar=False)
        del sources
        hats_s = time.perf_counter() - began
        imported += hats_s  # the import to HATS stands for a catalogue already published as HATS
    left = lsdb.from_dataframe(alerts, catalog_name="alerts", ra_column="ra", dec_column="dec")
    if args.hats:
        right = lsdb.open_catalog(args.hats)
        n_sources = right.hc_structure.catalog_info.total_rows
    else:
        sources = pd.read_parquet(args.catalogue, columns=["ra", "dec", "id"])
        right = lsdb.from_dataframe(sources, catalog_name="catalogue", ra_column="ra", dec_column="dec")
        n_sources = len(sources)
        del sources
    n_alerts = len(alerts)
    del alerts
    loaded = time.perf_counter()

    matched = left.crossmatch(right, radius_arcsec=args.radius_arcsec, n_neighbors=args.n_neighbors,
                              suffix_method="overlapping_columns", log_changes=False).compute()
    done = time.perf_counter()

    candid = next(c for c in matched.columns if c.startswith("candid"))
    source_id = next(c for c in matched.columns if c.startswith("id"))
    per_alert = matched.groupby(candid).size()
    if args.pairs:
        pairs = pd.DataFrame({"candid": matched[candid].astype("int64").to_numpy(),
                              "id": matched[source_id].astype("int64").to_numpy()})
        pairs.to_parquet(args.pairs, index=False)
    print(json.dumps({
        "import_s": imported - _STARTED - (hats_s or 0), "hats_write_s": hats_s, "load_s": loaded - imported,
        "match_s": done - loaded,
        "pairs": int(len(matched)), "max_per_alert": int(per_alert.max()) if len(per_alert) else 0,
        "alerts": n_alerts, "sources": n_sources,
        "left_partitions": left.npartitions, "right_partitions": right.npartitions,
        "right_margin": right.margin is not None,
        "lsdb": lsdb.__version__, "dask": dask.__version__,
        "scheduler": dask.config.get("scheduler", None) or "default (threads for dask dataframes)",
        "cpus": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
