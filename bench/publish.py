"""Publishing throughput: the real publish path vs a raw produce loop of the same bytes, one run.

A night of light-packet ZTF alerts (synthetic, no cutouts; generated once under bench/results/
and reused) is published to a private embedded broker (Tansu) by `publish_dataframe`, as the transfer
asset runs it (`build_publication`): Spark `local[2]` selects the night's alerts, its
`mapInArrow` tasks read their content with Arrow, encode Avro batch-wise and publish with
idempotent producers (one per Python worker, kept for its later tasks and runs), status
records included; `--spark-content` makes Spark read and project the content instead. Then, in the same run, the same rows are
collected, encoded beforehand (not timed) and sent by a plain confluent-kafka producer loop
(same partition count, compression, keys and linger) to a fresh topic: the ceiling of this
machine and broker for these bytes.

Printed: archive generation and Spark start-up times (not counted in any rate), the publish rate
of every run (the first runs of a session also pay the JVM's warm-up: its JIT compiler settles after a
few runs; hence 5 runs by default), the
CPU seconds each run cost per process (Spark JVM, Python workers, broker) with the rate they
would allow on 2 idle cores (the machine is shared: wall rates depend on its load, printed
too), the wall and CPU seconds of the tasks per phase (input: waiting for Spark's selection
rows; content: reading and classifying their content with Arrow; route, encode, produce, flush,
commit), and the raw produce rate. Last line:
`publish vs raw produce: X` (best warm publish rate / raw produce rate).

`--spark connect` measures warm Spark instead (issue 18): a Spark Connect server (`local[2]`,
started as `fink-pipeline spark connect start` starts it, then warmed by `--warm-runs`
publications from a throwaway process) against today's cold local session. `--runs` times,
interleaved, a fresh Python process publishes the night once: `local` builds its own
`local[2]` session (a cold JVM, as every Dagster run does today), `connect` attaches to the warm
server's shared session (FINK_SPARK_REMOTE as `spark connect start` prints it: its Python
workers and their producers stay warm between processes). Printed per mode: the first
publication's rate (`publish_dataframe` alone, the session's start not counted) and the whole
process's wall time (interpreter start, imports, session, publication), medians of the runs.
Last line:
`connect first run vs cold local: X` (median first-publication rates).

    .venv/bin/python bench/publish.py [--alerts 100000] [--runs 5] [--conf spark.key=value ...]
    .venv/bin/python bench/publish.py --spark connect [--alerts 100000] [--runs 3] [--warm-runs 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
NIGHT = dt.date(2024, 3, 1)
DEFAULT_CONF: dict[str, str] = {}  # the embedded stack's own defaults (fink_pipeline.spark)


def archive_root(alerts: int) -> Path:
    return RESULTS / f"archive_ztf_1x{alerts}"


def ensure_archive(alerts: int) -> tuple[Path, float | None]:
    """The 1-night archive (generated when missing or incomplete); generation seconds or None."""
    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.archive.layout import night_dir
    from fink_pipeline.surveys import get_survey

    root = archive_root(alerts)
    marker = root / "complete.json"
    if marker.exists() and json.loads(marker.read_text()).get("alerts") == alerts:
        return root, None
    started = time.perf_counter()
    report = generate_archive(get_survey("ztf"), str(root), NIGHT, nights=1, alerts_per_night=alerts,
                              seed=11, with_cutouts=False)
    assert report.total_alerts == alerts and Path(night_dir(str(root), "ztf", NIGHT)).exists()
    marker.write_text(json.dumps({"alerts": alerts}))
    return root, time.perf_counter() - started


def light_plan(root: Path):
    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.transfer.plan import plan_transfer
    from fink_pipeline.transfer.request import TransferRequest

    request = TransferRequest(survey="ztf", start=NIGHT.isoformat(), stop=NIGHT.isoformat(), content="light")
    return plan_transfer(request, str(root), list_nights(str(root), "ztf"))


def light_dataframe(spark, root: Path):
    """The light packet projected by Spark (what the raw produce loop sends)."""
    from fink_pipeline.transfer.select import build_transfer_dataframe

    return build_transfer_dataframe(spark, light_plan(root))


def cpu_seconds(broker_pid: int) -> dict[str, float]:
    """CPU seconds used so far by the driver's Python, its Spark JVM, the JVM's Python workers
    and the broker (exited children included once reaped): what the publication costs the
    machine, whatever else runs on it."""
    import psutil

    def used(process) -> float:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system + times.children_user + times.children_system

    def own(process) -> float:
        times = process.cpu_times()
        return times.user + times.system

    me = psutil.Process()
    jvms = [child for child in me.children() if child.name() == "java"]
    # the JVM's Python daemon and its live workers; the daemon's times include exited workers
    workers = [w for jvm in jvms for w in jvm.children(recursive=True)]
    return {
        "driver": own(me),
        "jvm": sum(own(jvm) for jvm in jvms),
        "python workers": sum(used(w) for w in workers),
        "broker": used(psutil.Process(broker_pid)),
    }


def raw_produce(settings, df, options) -> tuple[int, float]:
    """Send the same rows, encoded beforehand, with a plain producer loop: (messages, seconds)."""
    import numpy as np
    from fink_pipeline.avro import avro_schema_from_arrow, encode_batch
    from fink_pipeline.kafka.clients import make_producer
    from fink_pipeline.kafka.wire import kafka_partition_of
    from fink_pipeline.spark import spark_to_arrow_schema
    from fink_pipeline.kafka.topics import ensure_topic

    table = df.toArrow()
    avro_schema = avro_schema_from_arrow(spark_to_arrow_schema(df))
    values = encode_batch(table, avro_schema).to_pylist()
    ids = table["candid"].to_numpy()
    keys = [str(v) for v in ids.tolist()]
    parts = kafka_partition_of(ids, np.arange(options.partitions)).tolist()
    topic = f"ftransfer_ztf_bench_raw_{uuid.uuid4().hex[:8]}"
    ensure_topic(settings, topic, partitions=options.partitions, retention_ms=options.retention_ms,
                 compression=options.compression)
    producer = make_producer(settings, {
        "compression.type": options.compression, "linger.ms": options.linger_ms,
        "batch.size": options.batch_bytes, "batch.num.messages": 100_000,
        "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1024 * 1024,
    })
    producer.produce(topic, b"warm-up", partition=0)  # connection and metadata, not timed
    producer.flush(30)
    started = time.perf_counter()
    produce = producer.produce
    for value, key, partition in zip(values, keys, parts):
        produce(topic, value, key, partition)
    remaining = producer.flush(120)
    seconds = time.perf_counter() - started
    assert remaining == 0, f"{remaining} raw messages not delivered"
    return len(values), seconds


def publish_once(mode: str, bootstrap: str, root: Path, remote: str | None, runs: int = 1) -> list[dict]:
    """In this (fresh) process: a session (`local`: a new local[2] JVM; `connect`: a client of
    `remote`), then `runs` publications of the night; what each took."""
    from fink_pipeline.kafka.publish import PublicationTarget, publish_dataframe
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.spark import build_spark_session, connect_session, shares_connect_session
    from fink_pipeline.surveys.base import JD_UNIX_EPOCH
    from fink_pipeline.transfer.select import build_publication

    started = time.perf_counter()
    spark = connect_session(remote) if mode == "connect" else build_spark_session("local[2]", "bench-publish-cold")
    session_s = time.perf_counter() - started
    results = []
    try:
        for _ in range(runs):
            publication = build_publication(spark, light_plan(root))
            topic = f"ftransfer_ztf_bench_{mode}_{uuid.uuid4().hex[:8]}"
            target = PublicationTarget(topic=topic, request_id=topic, time_column="candidate.jd",
                                       time_epoch=JD_UNIX_EPOCH)
            report = publish_dataframe(publication.rows, target, KafkaSettings(bootstrap_servers=bootstrap),
                                       arrow_content=publication.arrow_content)
            results.append({"alerts": report.total, "seconds": report.seconds, "session_s": session_s,
                            "tasks": report.spark_partitions, "task_seconds": report.task_seconds})
    finally:
        if not shares_connect_session(remote):  # as SparkResource: a shared session stays
            spark.stop()
    return results


def run_child(mode: str, bootstrap: str, alerts: int, remote: str | None, runs: int = 1) -> tuple[list[dict], float]:
    """`publish_once` in a fresh Python process: (its results, whole-process wall seconds)."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK_", "SPARK_CONNECT"))}
    args = [sys.executable, __file__, "--child", mode, "--bootstrap", bootstrap, "--alerts", str(alerts),
            "--child-runs", str(runs)] + (["--remote", remote] if remote else [])
    started = time.perf_counter()
    completed = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{mode} child failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}")
    line = next(x for x in completed.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):]), wall


def connect_main(args) -> int:
    """`--spark connect`: first runs of fresh processes on a warm Connect server vs cold local sessions."""
    import statistics
    import tempfile

    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.spark_services import shared_session_url, start_connect_server

    root, generated = ensure_archive(args.alerts)
    rows: list[tuple[str, str, str]] = [("archive", f"{args.alerts:,} alerts, 1 night, no cutouts",
                                         f"generated in {generated:.1f} s" if generated else "reused")]
    rates: dict[str, list[float]] = {"local": [], "connect": []}
    walls: dict[str, list[float]] = {"local": [], "connect": []}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="bench-connect-") as work:
        started = time.perf_counter()
        server, url = start_connect_server(Path(work), master="local[2]")
        url = shared_session_url(url)  # as `fink-pipeline spark connect start` prints it
        try:
            rows.append(("connect server start (not counted)", f"{time.perf_counter() - started:.1f} s", url))
            warm, wall = run_child("connect", broker.address, args.alerts, url, runs=args.warm_runs)
            rows.append(("server warm-up (not counted)", f"{wall:.1f} s", ", ".join(
                f"{r['alerts'] / r['seconds']:,.0f}" for r in warm) + " alerts/s (one process)"))
            for run in range(1, args.runs + 1):
                for mode in ("local", "connect"):  # interleaved: both meet the same machine load
                    load = os.getloadavg()[0]
                    (result,), wall = run_child(mode, broker.address, args.alerts, url if mode == "connect" else None)
                    assert result["alerts"] == args.alerts, f"{mode}: published {result['alerts']} of {args.alerts}"
                    rate = result["alerts"] / result["seconds"]
                    rates[mode].append(rate)
                    walls[mode].append(wall)
                    rows.append((f"run {run} {mode}", f"{rate:,.0f} alerts/s",
                                 f"publication {result['seconds']:.2f} s ({result['tasks']} Spark tasks), session "
                                 f"{result['session_s']:.1f} s, whole process {wall:.1f} s, machine load {load:.1f}"))
                    rows.append(("  task wall s by phase", "", ", ".join(f"{k} {v:.2f}" for k, v in sorted(
                        result["task_seconds"].items(), key=lambda kv: -kv[1]))))
        finally:
            server.stop()
    for mode, label in (("local", "cold local session"), ("connect", "fresh process, warm Connect server")):
        rows.append((f"median first run: {label}", f"{statistics.median(rates[mode]):,.0f} alerts/s",
                     f"whole process {statistics.median(walls[mode]):.1f} s (median of {args.runs})"))
    width = max(len(r[0]) for r in rows)
    for name, value, detail in rows:
        print(f"{name:<{width}}  {value:>18}  {detail}")
    ratio = statistics.median(rates["connect"]) / statistics.median(rates["local"])
    print(f"connect first run vs cold local: {ratio:.2f}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spark", choices=("local", "connect"), default="local",
                        help="local: warm runs in this process (default); connect: fresh processes on a warm "
                             "Spark Connect server vs cold local sessions")
    parser.add_argument("--warm-runs", type=int, default=3, help="--spark connect: publications warming the server")
    parser.add_argument("--child", choices=("local", "connect"), help=argparse.SUPPRESS)
    parser.add_argument("--child-runs", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--remote", help=argparse.SUPPRESS)
    parser.add_argument("--alerts", type=int, default=100_000, help="alerts in the night (default 100000)")
    parser.add_argument("--runs", type=int, default=5, help="publications to fresh topics (default 5)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help=f"extra Spark conf (defaults: {DEFAULT_CONF})")
    parser.add_argument("--spark-content", action="store_true",
                        help="let Spark read and project the content (the path taken for object storage "
                             "and map-key fields) instead of the tasks reading it with Arrow")
    args = parser.parse_args()
    if args.child:
        results = publish_once(args.child, args.bootstrap, archive_root(args.alerts), args.remote, args.child_runs)
        print("RESULT " + json.dumps(results), flush=True)
        return 0
    if args.spark == "connect":
        if args.runs == parser.get_default("runs"):
            args.runs = 3
        return connect_main(args)

    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.kafka.options import PublishOptions
    from fink_pipeline.kafka.publish import PublicationTarget, publish_dataframe
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.spark import build_spark_session
    from fink_pipeline.surveys.base import JD_UNIX_EPOCH
    from fink_pipeline.transfer.select import build_publication

    root, generated = ensure_archive(args.alerts)
    conf = dict(DEFAULT_CONF)
    conf.update(item.split("=", 1) for item in args.conf)
    options = PublishOptions()
    rows: list[tuple[str, str, str]] = []
    rows.append(("archive", f"{args.alerts:,} alerts, 1 night, no cutouts",
                 f"generated in {generated:.1f} s" if generated else "reused"))
    with EmbeddedBroker() as broker:
        settings = KafkaSettings(bootstrap_servers=broker.address)
        started = time.perf_counter()
        spark = build_spark_session("local[2]", app_name="bench-publish", conf=conf)
        rows.append(("spark start (not counted)", f"{time.perf_counter() - started:.2f} s", f"conf {conf}"))
        try:
            publication = build_publication(spark, light_plan(root), arrow_content=not args.spark_content)
            best = best_cpu_bound = 0.0
            for run in range(1, args.runs + 1):
                topic = f"ftransfer_ztf_bench_{uuid.uuid4().hex[:8]}"
                cpu_before, load_before = cpu_seconds(broker.pid), os.getloadavg()[0]
                target = PublicationTarget(topic=topic, request_id=topic, time_column="candidate.jd",
                                           time_epoch=JD_UNIX_EPOCH)
                report = publish_dataframe(publication.rows, target, settings, options=options,
                                           arrow_content=publication.arrow_content)
                cpu_by = {k: v - cpu_before[k] for k, v in cpu_seconds(broker.pid).items()}
                cpu = sum(cpu_by.values())
                assert report.total == args.alerts, f"published {report.total} of {args.alerts}"
                rate = report.alerts_per_second
                cpu_bound = report.total / (cpu / 2)
                if run > 1 or args.runs == 1:
                    best, best_cpu_bound = max(best, rate), max(best_cpu_bound, cpu_bound)
                label = "publish run 1 (cold session)" if run == 1 else f"publish run {run}"
                rows.append((label, f"{rate:,.0f} alerts/s",
                             f"{report.seconds:.2f} s, {report.spark_partitions} Spark tasks, "
                             f"{report.bytes_published / 1e6:.0f} MB Avro, {cpu:.1f} CPU-s "
                             f"(CPU-bound on 2 idle cores: {cpu_bound:,.0f} alerts/s), "
                             f"machine load {load_before:.1f}"))
                if run == 1:
                    rows[-1] = (rows[-1][0], rows[-1][1], rows[-1][2] + (
                        ", content read by Spark" if publication.arrow_content is None else ", content read with Arrow"))
                rows.append(("  CPU s by process", "", ", ".join(f"{k} {v:.2f}" for k, v in cpu_by.items())))
                rows.append(("  task wall s by phase", "", ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(report.task_seconds.items(), key=lambda kv: -kv[1]))))
                rows.append(("  task CPU s by phase", "", ", ".join(
                    f"{k} {v:.2f}" for k, v in sorted(report.task_cpu_seconds.items(), key=lambda kv: -kv[1]))))
            rows.append(("best warm run", f"{best:,.0f} alerts/s",
                         f"CPU-bound on 2 idle cores: {best_cpu_bound:,.0f} alerts/s (best of runs 2-{args.runs})"))
            messages, seconds = raw_produce(settings, light_dataframe(spark, root), options)
            raw_rate = messages / seconds
            rows.append(("raw produce (same bytes)", f"{raw_rate:,.0f} alerts/s", f"{messages:,} messages in {seconds:.2f} s"))
        finally:
            spark.stop()
    width = max(len(r[0]) for r in rows)
    for name, value, detail in rows:
        print(f"{name:<{width}}  {value:>18}  {detail}")
    print(f"publish vs raw produce: {best / raw_rate:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
