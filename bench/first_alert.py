"""Time from the first Spark task of a transfer to its first alert in the topic, vs to the whole topic.

Uses a cached archive (default 4 nights x 3,000 ZTF alerts, no cutouts, seed 16, under
bench/results/archive_ztf_<nights>x<alerts>, the layout bench/crossmatch.py generates and reuses:
`--nights 4 --alerts-per-night 250000` reuses its 1M-alert archive), or `--archive PATH`.
Starts a private embedded broker and a local Spark session (its start-up is reported, not
counted), then launches one transfer the way `request submit` does
(`orchestration.launch.run_transfer`: one Dagster run of validation -> Spark job -> topic ->
Delta table) in a thread, while a consumer in the main thread polls the topic as a user would
(`read_committed`, from the beginning, as soon as the topic exists). It reports when the topic
appeared, when the first alert could be read, when every alert had been read (the `_status` end
record's total reached), and when the run (table included) ended.

Times are counted from the launch and from the first task of the publishing job: its launch
time comes from Spark's own status store (`statusStore().lastStageAttempt(stage)
.firstTaskLaunchedTime()` of the stages of the job groups `fink-publish-<topic>-*` and
`fink-warm-up`: the publishing job and the Python-worker warm-up job that the run starts while
it validates the request (the session is fresh: the warm-up is this run's); fed by Spark's
listener bus, kept with the UI disabled), in epoch milliseconds like the bench's own
`time.time()` marks. Other Spark jobs of the run (an estimate's sample) do not count.

Published alerts are readable at once (exactly once comes from partition ownership, not Kafka
transactions) and tasks publish each selection batch's content as Spark hands it over, so the
first alert follows the first task's first batch.

Last line: `first alert vs whole topic: X` (seconds from the first Spark task to the first
alert / to the last alert).

    .venv/bin/python bench/first_alert.py [--nights 4] [--alerts-per-night 3000] [--archive PATH]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "bench" / "results"
START = dt.date(2024, 3, 1)


def ensure_archive(nights: int, per_night: int) -> tuple[Path, float | None]:
    """The cached archive (generated when missing; bench/crossmatch.py's layout and seed):
    (root, seconds spent generating it or None)."""
    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.surveys import get_survey

    root = RESULTS / f"archive_ztf_{nights}x{per_night}"
    marker = root / "complete.json"
    wanted = {"nights": nights, "alerts_per_night": per_night, "start": START.isoformat()}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return root, None
    began = time.perf_counter()
    report = generate_archive(get_survey("ztf"), str(root), START, nights=nights, alerts_per_night=per_night,
                              seed=16, with_cutouts=False)
    assert report.total_alerts == nights * per_night
    marker.write_text(json.dumps(wanted))
    return root, time.perf_counter() - began


def first_task_launch(spark, topic: str) -> float:
    """Epoch seconds when the first task of the publishing job of `topic` started, from Spark's
    status store (`publish_dataframe` runs its job in the group `fink-publish-<topic>-<id>`)."""
    jsc = spark.sparkContext._jsc.sc()
    jsc.listenerBus().waitUntilEmpty()  # the status store is fed asynchronously
    store = jsc.statusStore()
    jobs = store.jobsList(None)
    launches = []
    for i in range(jobs.length()):  # a Scala Seq
        job = jobs.apply(i)
        group = job.jobGroup()
        # the run's Python-worker warm-up (SparkResource.warm_up, during validation) counts too
        if not (group.isDefined() and (str(group.get()).startswith(f"fink-publish-{topic}-")
                                       or str(group.get()) == "fink-warm-up")):
            continue
        stage_ids = job.stageIds()
        for k in range(stage_ids.length()):
            try:
                launched = store.lastStageAttempt(stage_ids.apply(k)).firstTaskLaunchedTime()
            except Exception:  # a skipped stage has no attempt
                continue
            if launched.isDefined():
                launches.append(launched.get().getTime() / 1000)
    if not launches:
        raise RuntimeError(f"no task of the publishing job of {topic} in Spark's status store")
    return min(launches)


def watch_topic(settings, topic: str, run_done: threading.Event, timeout_s: float) -> dict:
    """Poll `topic` like a client; epoch seconds of each milestone."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from fink_pipeline.kafka.status import read_status

    consumer = Consumer({
        **settings.librdkafka_config(), "group.id": f"bench-first-alert-{topic}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "allow.auto.create.topics": False, "auto.offset.reset": "earliest",
    })
    marks: dict[str, float] = {}
    read = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:  # wait for the topic: metadata only, never creates it
            info = consumer.list_topics(topic, timeout=5).topics.get(topic)
            if info is not None and info.error is None and info.partitions:
                marks["topic created"] = time.time()
                break
            if run_done.is_set():
                raise RuntimeError(f"the run ended before {topic} was created")
            time.sleep(0.05)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions])
        last_status = 0.0
        while time.monotonic() < deadline:
            messages = consumer.consume(num_messages=10_000, timeout=0.1)
            good = sum(1 for m in messages if m.error() is None)
            if good and "first alert read" not in marks:
                marks["first alert read"] = time.time()
            read += good
            if time.monotonic() - last_status > 0.5:
                last_status = time.monotonic()
                status = read_status(settings, topic)
                if status.state == "finished" and read >= status.total:
                    marks["whole topic read"] = time.time()
                    marks["alerts"] = read
                    return marks
                if status.state == "failed":
                    raise RuntimeError(f"the transfer failed: {status.error}")
        raise TimeoutError(f"{topic}: {read} alerts read after {timeout_s:.0f} s")
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=4)
    parser.add_argument("--alerts-per-night", type=int, default=3_000)
    parser.add_argument("--archive", type=Path, help="an existing ZTF archive to transfer (all its nights) "
                        "instead of the cached generated one")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before giving up")
    args = parser.parse_args()

    import dagster as dg

    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.spark import build_spark_session
    from fink_pipeline.transfer.request import TransferRequest

    work = tempfile.TemporaryDirectory(prefix="bench-first-alert-")
    root = Path(work.name)
    if args.archive:
        archive, generated = args.archive, None
    else:
        archive, generated = ensure_archive(args.nights, args.alerts_per_night)
    nights = list_nights(str(archive), "ztf")
    print(f"{platform.machine()}, {os.cpu_count()} cores; archive {archive} ({len(nights)} nights"
          + (f", generated in {generated:.0f} s" if generated else "") + "), light packet, all classes")
    began = time.perf_counter()
    spark = build_spark_session("local[2]")  # borrowed by the run's SparkResource
    spark_seconds = time.perf_counter() - began
    broker = EmbeddedBroker()
    settings = KafkaSettings(bootstrap_servers=broker.start())
    request = TransferRequest(start=min(nights).isoformat(), stop=max(nights).isoformat(),
                              content="light").with_identity()
    outcome: dict = {}
    run_done = threading.Event()

    def launch() -> None:
        try:
            with dg.DagsterInstance.ephemeral() as instance:  # disposed in the thread that made it
                outcome["result"] = run_transfer(request, bootstrap=settings.bootstrap_servers,
                                                 archive_root=str(archive), table_root=str(root / "tables"),
                                                 request_root=str(root / "requests"), instance=instance)
        finally:
            outcome["run ended"] = time.time()
            run_done.set()

    try:
        launched = time.time()
        runner = threading.Thread(target=launch, daemon=True)
        runner.start()
        marks = watch_topic(settings, request.topic, run_done, args.timeout)
        runner.join(args.timeout)
        if not outcome.get("result") or not outcome["result"].success:
            raise RuntimeError("the transfer run failed")
        first_task = first_task_launch(spark, request.topic)
    finally:
        broker.stop()
        spark.stop()
        work.cleanup()

    print(f"Spark session start (not counted): {spark_seconds:.1f} s; topic {request.topic}, "
          f"{marks['alerts']:,} alerts\n")
    marks["run ended (table written)"] = outcome["run ended"]
    marks["first Spark task started"] = first_task
    order = ("topic created", "first Spark task started", "first alert read", "whole topic read",
             "run ended (table written)")
    print(f"{'milestone':<30}{'s from launch':>15}{'s from first task':>19}")
    for name in sorted(order, key=lambda n: marks[n]):
        print(f"{name:<30}{marks[name] - launched:>15.1f}{marks[name] - first_task:>19.1f}")
    first, whole = marks["first alert read"] - first_task, marks["whole topic read"] - first_task
    print(f"\nfirst alert {first:.1f} s after the first Spark task started (whole topic {whole:.1f} s)")
    print(f"first alert vs whole topic: {first / whole:.2f}")


if __name__ == "__main__":
    main()
