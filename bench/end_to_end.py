"""End to end: light alerts from the archive to a complete Delta table, as a user runs it.

Default (the headline): an archive of 4 nights of ZTF alerts *with cutouts* (generated once
under bench/results/ with `generate_archive`, then its nightly statistics stored, as
`fink-pipeline archive generate` does), then, `--runs` times,
`fink-pipeline request submit --content light --wait` as a subprocess: a cold JVM and a fresh
Dagster run each time, as a user meets it, against a broker started beforehand with
`fink-pipeline broker start` (restarted for each run; its start is not counted, and it is left
out of the memory figures: it stands for the Kafka cluster). Per run:

* whole-process wall time, from the command to its exit: the table is complete by then;
* the stages, from the run's own log: the `transfer_request` step (validation, exact estimate;
  the JVM starts meanwhile), the Spark selection and publication (`alerts published in`), the
  table fill (`alerts appended to ... in`), how long both ran at once and how long the table
  took to be complete once the topic was (`Table complete ... overlapped for`), and the rest
  (interpreter start, imports, request naming, Dagster run set-up and tear-down);
* peak RSS and PSS of the command's process tree (driver, Spark JVM, Python workers);
* a check: the table holds exactly the published alerts, every alert of the 4 nights once.

Last line: `<N> light alerts archive to Delta: X s` (median whole-process wall time).

`--scaling` runs the earlier bench instead: in-process Dagster runs (or `--cli` subprocesses) of
1, 3 and 10 nights of 1,000 alerts without cutouts, a warm-up first; last line
`10 nights vs 1 night cost per alert: X`.

    .venv/bin/python bench/end_to_end.py [--alerts 100000] [--runs 3]
    .venv/bin/python bench/end_to_end.py --alerts 1000000          # the issue-17 headline
    .venv/bin/python bench/end_to_end.py --alerts 1000000 --checkout /tmp/old   # an older commit's code
    .venv/bin/python bench/end_to_end.py --scaling [--alerts-per-night 1000] [--nights 1 3 10] [--cli]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from procs import run_sampled  # noqa: E402  (bench/ is on sys.path)

RESULTS = REPO / "bench" / "results"
HEADLINE_NIGHTS = 4

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


def scaling(args: argparse.Namespace) -> None:
    """--scaling: whole transfers of 1, 3 and 10 nights, cost per alert as the work grows."""
    sizes = sorted(set(args.nights))
    args.alerts_per_night = args.alerts_per_night or 1_000

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


# ---------------------------------------------------------------- headline


def headline_archive(alerts: int) -> Path:
    """The 4-night archive with cutouts (generated when missing), with its nightly statistics."""
    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.archive.stats import stored_nights, update_statistics
    from fink_pipeline.surveys import get_survey

    per_night = alerts // HEADLINE_NIGHTS
    root = RESULTS / f"archive_ztf_{HEADLINE_NIGHTS}x{per_night}_cutouts"
    marker = root / "complete.json"
    wanted = {"nights": HEADLINE_NIGHTS, "alerts_per_night": per_night, "start": START.isoformat(), "cutouts": True}
    survey = get_survey("ztf")
    if not (marker.exists() and json.loads(marker.read_text()) == wanted):
        print(f"generating {HEADLINE_NIGHTS} nights x {per_night:,} alerts with cutouts into {root} ...", flush=True)
        began = time.perf_counter()
        report = generate_archive(survey, str(root), START, nights=HEADLINE_NIGHTS, alerts_per_night=per_night,
                                  seed=17, with_cutouts=True)
        assert report.total_alerts == HEADLINE_NIGHTS * per_night
        marker.write_text(json.dumps(wanted))
        print(f"archive written in {time.perf_counter() - began:.0f} s", flush=True)
    nights = [START + dt.timedelta(days=i) for i in range(HEADLINE_NIGHTS)]
    if stored_nights(str(root), "ztf") != nights:
        began = time.perf_counter()
        update_statistics(survey, str(root), nights)  # as `fink-pipeline archive generate` does
        print(f"nightly statistics stored in {time.perf_counter() - began:.1f} s (not counted)", flush=True)
    return root


def _duration(text: str) -> float:
    """Dagster's step durations: `950ms`, `14.2s`, `2m39s`."""
    match = re.fullmatch(r"(?:(\d+)m)?(?:([\d.]+)s)?(?:([\d.]+)ms)?", text)
    if not match or not any(match.groups()):
        raise ValueError(f"unknown duration {text!r}")
    minutes, seconds, millis = match.groups()
    return 60 * float(minutes or 0) + float(seconds or 0) + float(millis or 0) / 1000


def stages_from_log(log: str) -> dict[str, float]:
    """Stage seconds from the run's log lines (see the module docstring)."""
    stages: dict[str, float] = {}
    for step in ("transfer_request", "transferred_alerts"):
        match = re.search(rf'Finished execution of step "{step}" in (\S+?)\.\s', log)
        if match:
            stages[step] = _duration(match.group(1))
    patterns = {
        "publish": r"alerts published in ([\d.]+) s",
        "consume": r"alerts appended to \S+ in ([\d.]+) s",
        "complete_after_topic": r"Table complete ([\d.]+) s after the topic",
        "overlap": r"consuming overlapped for ([\d.]+) s",
    }
    for name, pattern in patterns.items():
        match = re.search(pattern, log)
        if match:
            stages[name] = float(match.group(1))
    return stages


def headline_run(archive: Path, work: Path, run: int, checkout: Path | None = None) -> dict:
    """One cold `request submit --wait`; the broker is started before and stopped after it.
    `checkout`: run that source tree's fink_pipeline instead (an older commit's worktree)."""
    env = {**os.environ, "FINK_PIPELINE_HOME": str(work / "state")}
    if checkout is not None:
        env["PYTHONPATH"] = str(checkout)
    env.pop("FINK_KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("DAGSTER_HOME", None)  # an ephemeral instance, as a user without one gets
    cli = [sys.executable, "-m", "fink_pipeline.cli.main"]
    subprocess.run([*cli, "broker", "start"], env=env, check=True, capture_output=True)
    broker = broker_process(work / "state")
    broker_cpu = sum(broker.cpu_times()[:2])
    tables = work / f"tables-{run}"
    stop = (START + dt.timedelta(days=HEADLINE_NIGHTS - 1)).isoformat()
    try:
        cmd = [*cli, "request", "submit", "--start", START.isoformat(), "--stop", stop, "--content", "light",
               "--archive", str(archive), "--tables", str(tables), "--wait"]
        # `python -m` puts the working directory first on sys.path: run from the checkout
        done, seconds, peak = run_sampled(cmd, env=env, cwd=str(checkout) if checkout else None)
        broker_cpu = sum(broker.cpu_times()[:2]) - broker_cpu
    finally:
        subprocess.run([*cli, "broker", "stop"], env=env, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"request submit failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    topic = lines[0].strip()
    published = next(int(line.split()[0].replace(",", "")) for line in lines if "alerts published to" in line)
    rows, distinct = table_rows(str(tables / topic))
    shutil.rmtree(tables, ignore_errors=True)
    return {"seconds": seconds, "peak_rss": peak, **run_sampled.last, "published": published, "rows": rows,
            "distinct": distinct, "stages": stages_from_log(done.stderr), "broker_cpu": broker_cpu}


def broker_process(state: Path):
    """The managed broker's process (`fink-pipeline broker start` records it in broker.json)."""
    import psutil

    return psutil.Process(int(json.loads((state / "broker.json").read_text())["pid"]))


def headline(args: argparse.Namespace) -> None:
    alerts = args.alerts
    if alerts % HEADLINE_NIGHTS:
        raise SystemExit(f"--alerts must be a multiple of {HEADLINE_NIGHTS} (nights)")
    print(f"{platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{HEADLINE_NIGHTS} nights x {alerts // HEADLINE_NIGHTS:,} ZTF alerts with cutouts, light content, "
          f"cold `request submit --wait`, {args.runs} runs"
          + (f", code of {args.checkout}" if args.checkout else ""), flush=True)
    archive = headline_archive(alerts)
    on_disk = sum(f.stat().st_size for f in archive.rglob("*.parquet"))
    print(f"archive: {archive} ({on_disk / 1e9:,.1f} GB)", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-end-to-end-") as work:
        for run in range(args.runs):
            result = headline_run(archive, Path(work), run, args.checkout)
            if not result["published"] == result["rows"] == result["distinct"] == alerts:
                raise RuntimeError(f"run {run + 1}: published {result['published']}, table {result['rows']} rows "
                                   f"({result['distinct']} distinct), archive {alerts}")
            results.append(result)
            st = result["stages"]
            cpu = result["cpu"]
            print(f"run {run + 1}: {result['seconds']:.1f} s, peak RSS {result['peak_rss'] / 2**20:,.0f} MiB "
                  f"(PSS {result['peak_pss'] / 2**20:,.0f}; {result['breakdown']}), CPU s: command "
                  f"{cpu.get('root', 0):.1f} + JVM {cpu.get('java', 0):.1f} + Python workers "
                  f"{cpu.get('other', 0):.1f} + broker {result['broker_cpu']:.1f}, stages {st}", flush=True)

    def med(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else float("nan")

    def stage(name):
        return med([r["stages"].get(name) for r in results])

    wall = med([r["seconds"] for r in results])
    rest = med([r["seconds"] - r["stages"].get("transfer_request", 0) - r["stages"].get("transferred_alerts", 0)
                for r in results])
    print()
    print(f"{'stage (median of ' + str(len(results)) + ' runs)':<58}{'seconds':>9}")
    rows = [
        ("validation and exact estimate (transfer_request step)", stage("transfer_request")),
        ("select, publish and fill the table (transferred_alerts step)", stage("transferred_alerts")),
        ("  of which Spark selection + publication", stage("publish")),
        ("  of which table fill (consumer, from its start)", stage("consume")),
        ("  of which both at once (overlap)", stage("overlap")),
        ("  table complete after the topic", stage("complete_after_topic")),
        ("interpreter, imports, run set-up and tear-down", rest),
        ("whole process: command to complete table", wall),
    ]
    for label, value in rows:
        print(f"{label:<58}{value:>9.1f}")
    print(f"alerts per second, whole process: {alerts / wall:,.0f}; published = table rows = {alerts:,} in every run")
    peak = max(r["peak_rss"] for r in results)
    cpu = {kind: med([r["cpu"].get(kind, 0.0) for r in results]) for kind in ("root", "java", "other", "all")}
    broker_cpu = med([r["broker_cpu"] for r in results])
    print(f"CPU seconds (median): command (driver, Dagster, table consumer) {cpu['root']:.1f}, Spark JVM "
          f"{cpu['java']:.1f}, Python workers {cpu['other']:.1f}, broker {broker_cpu:.1f}; "
          f"all {cpu['all'] + broker_cpu:.1f} ({(cpu['all'] + broker_cpu) / wall:.2f} cores busy on average)")
    print(f"peak RSS of the process tree (broker apart): {peak / 2**20:,.0f} MiB, "
          f"PSS {max(r['peak_pss'] for r in results) / 2**20:,.0f} MiB")
    print("runs: " + ", ".join(f"{r['seconds']:.1f}" for r in results) + " s")
    print(f"{_label(alerts)} light alerts archive to Delta: {wall:.1f} s")


def _label(alerts: int) -> str:
    if alerts % 1_000_000 == 0:
        return f"{alerts // 1_000_000}M"
    return f"{alerts // 1000}k" if alerts % 1000 == 0 else f"{alerts:,}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=100_000, help="headline: alerts in the 4-night archive")
    parser.add_argument("--runs", type=int, default=3, help="headline: cold runs (median)")
    parser.add_argument("--checkout", type=Path, default=None,
                        help="headline: run the fink_pipeline of this source tree (e.g. a worktree of an older commit)")
    parser.add_argument("--scaling", action="store_true", help="the 1/3/10-night scaling bench instead")
    parser.add_argument("--alerts-per-night", type=int, default=None, help="--scaling: alerts per night (1,000)")
    parser.add_argument("--nights", type=int, nargs="+", default=[1, 3, 10],
                        help="--scaling: transfer sizes in nights (the last line compares the largest and smallest)")
    parser.add_argument("--cli", action="store_true",
                        help="--scaling: run `fink-pipeline request submit --wait` subprocesses")
    args = parser.parse_args()
    scaling(args) if args.scaling else headline(args)


if __name__ == "__main__":
    main()
