"""End-to-end transfer throughput for 1, 3 and 10 nights: how the cost grows with the work.

Generates an archive of 10 nights (default 1,000 ZTF alerts per night, no cutouts), then runs
whole transfers of the first 1, 3 and 10 nights, light packet, all classes, on the real path:

* default: `orchestration.launch.run_transfer` in this process (one Dagster run per transfer:
  validation -> Spark job -> Kafka topic -> Delta table), on a private embedded broker and a
  local[2] Spark session started once beforehand (its start-up is reported, not counted);
* `--cli`: `fink-pipeline request submit --wait` as a subprocess for each transfer, against a
  broker started with `fink-pipeline broker start` (a fresh JVM per transfer, as a user sees it).

A warm-up transfer (1 night) runs first and is not counted. Each run is checked: the table
holds exactly the alerts published, which are all the alerts of those nights.

Last line: `10 nights vs 1 night cost per alert: X` (seconds per alert at 10 nights over
seconds per alert at 1 night: below 1 means the fixed cost is being amortised).

    .venv/bin/python bench/end_to_end.py [--alerts-per-night 1000] [--nights 1 3 10] [--cli]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = dt.date(2024, 3, 1)


def table_rows(uri: str) -> tuple[int, int]:
    from fink_pipeline.consumer.readers import delta_table_counts

    return delta_table_counts(uri, "candid")


def run_in_process(request, bootstrap: str, root: Path) -> int:
    """One Dagster run of the transfer; returns the number of alerts published."""
    import dagster as dg

    from fink_pipeline.orchestration.launch import run_transfer

    with dg.DagsterInstance.ephemeral() as instance:
        result = run_transfer(request, bootstrap=bootstrap, archive_root=str(root / "archive"),
                              table_root=str(root / "tables"), request_root=str(root / "requests"),
                              instance=instance)
    if not result.success:
        failure = next((e.message for e in result.all_events if e.is_failure), "see the run log")
        raise RuntimeError(f"transfer {request.topic} failed: {failure}")
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("transferred_alerts")}
    return int(meta["alert_topic"]["alerts_published"].value)


def run_cli(start: str, stop: str, root: Path, env: dict) -> tuple[str, int]:
    """`fink-pipeline request submit --wait`; returns (topic, alerts published)."""
    done = subprocess.run(
        [sys.executable, "-m", "fink_pipeline.cli.main", "request", "submit", "--start", start, "--stop", stop,
         "--content", "light", "--archive", str(root / "archive"), "--tables", str(root / "tables"), "--wait"],
        capture_output=True, text=True, env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"request submit failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    topic = lines[0].strip()
    published = next(int(line.split()[0].replace(",", "")) for line in lines if "alerts published to" in line)
    return topic, published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts-per-night", type=int, default=1_000)
    parser.add_argument("--nights", type=int, nargs="+", default=[1, 3, 10],
                        help="transfer sizes in nights; the last line compares the largest with the smallest")
    parser.add_argument("--cli", action="store_true", help="run `fink-pipeline request submit --wait` subprocesses")
    args = parser.parse_args()
    sizes = sorted(set(args.nights))

    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.surveys import get_survey

    work = tempfile.TemporaryDirectory(prefix="bench-end-to-end-")
    root = Path(work.name)
    print(f"{platform.machine()}, {os.cpu_count()} cores; {max(sizes)} nights x {args.alerts_per_night:,} alerts, "
          f"light packet, all classes, {'CLI subprocesses' if args.cli else 'in-process Dagster runs'}")
    generate_archive(get_survey("ztf"), str(root / "archive"), START, nights=max(sizes),
                     alerts_per_night=args.alerts_per_night, seed=41, with_cutouts=False)
    stop_of = {n: (START + dt.timedelta(days=n - 1)).isoformat() for n in sizes}
    rows = []
    try:
        if args.cli:
            env = {**os.environ, "FINK_PIPELINE_HOME": str(root / "state")}
            env.pop("FINK_KAFKA_BOOTSTRAP_SERVERS", None)
            subprocess.run([sys.executable, "-m", "fink_pipeline.cli.main", "broker", "start"], env=env, check=True,
                           capture_output=True)
            try:
                run_cli(START.isoformat(), START.isoformat(), root, env)  # warm-up
                for n in sizes:
                    began = time.perf_counter()
                    topic, published = run_cli(START.isoformat(), stop_of[n], root, env)
                    rows.append((n, published, time.perf_counter() - began, topic))
            finally:
                subprocess.run([sys.executable, "-m", "fink_pipeline.cli.main", "broker", "stop"], env=env,
                               capture_output=True)
        else:
            from fink_pipeline.kafka.broker import EmbeddedBroker
            from fink_pipeline.spark import build_spark_session
            from fink_pipeline.transfer.request import TransferRequest

            began = time.perf_counter()
            spark = build_spark_session("local[2]")  # borrowed by every run's SparkResource
            print(f"Spark session start (not counted): {time.perf_counter() - began:.1f} s")
            broker = EmbeddedBroker()
            bootstrap = broker.start()
            try:
                warm_up = TransferRequest(start=START.isoformat(), stop=START.isoformat(), content="light")
                run_in_process(warm_up.with_identity(), bootstrap, root)
                for n in sizes:
                    request = TransferRequest(start=START.isoformat(), stop=stop_of[n], content="light").with_identity()
                    began = time.perf_counter()
                    published = run_in_process(request, bootstrap, root)
                    rows.append((n, published, time.perf_counter() - began, request.topic))
            finally:
                broker.stop()
                spark.stop()
        for n, published, _, topic in rows:
            rows_in_table, distinct = table_rows(str(root / "tables" / topic))
            expected = n * args.alerts_per_night
            if not published == rows_in_table == distinct == expected:
                raise RuntimeError(f"{n} nights: published {published}, table {rows_in_table} rows "
                                   f"({distinct} distinct), archive {expected}")
    finally:
        work.cleanup()

    print(f"\n{'nights':>6}{'alerts':>9}{'seconds':>9}{'alerts/s':>10}{'ms/alert':>10}")
    for n, published, seconds, _ in rows:
        print(f"{n:>6}{published:>9,}{seconds:>9.1f}{published / seconds:>10,.0f}{1000 * seconds / published:>10.2f}")
    (n_small, a_small, s_small, _), (n_large, a_large, s_large, _) = rows[0], rows[-1]
    print(f"{n_large} nights vs {n_small} night cost per alert: {(s_large / a_large) / (s_small / a_small):.2f}")


if __name__ == "__main__":
    main()
