"""Time from launching a transfer to its first alert in the topic, vs to the whole topic.

Generates an archive (default 4 nights x 3,000 ZTF alerts, no cutouts), starts a private
embedded broker and a local Spark session (its start-up is reported, not counted), then
launches one transfer the way `request submit` does (`orchestration.launch.run_transfer`:
one Dagster run of validation -> Spark job -> topic -> Delta table) in a thread, while a
consumer in the main thread polls the topic as a user would (`read_committed`, from the
beginning, as soon as the topic exists). It reports, from the launch:

* when the topic appeared, when the first alert could be read, when every alert had been read
  (the `_status` end record's total reached), and when the run (table included) ended.

Published alerts are readable at once (exactly once comes from partition ownership, not Kafka
transactions), so the first one arrives with the first Arrow batch a Spark task publishes.

Last line: `first alert vs whole topic: X` (seconds to the first alert / seconds to the last).

    .venv/bin/python bench/first_alert.py [--nights 4] [--alerts-per-night 3000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = dt.date(2024, 3, 1)


def watch_topic(settings, topic: str, launched: float, run_done: threading.Event, timeout_s: float) -> dict:
    """Poll `topic` like a client; seconds since `launched` of each milestone."""
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
                marks["topic created"] = time.monotonic() - launched
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
                marks["first alert read"] = time.monotonic() - launched
            read += good
            if time.monotonic() - last_status > 0.5:
                last_status = time.monotonic()
                status = read_status(settings, topic)
                if status.state == "finished" and read >= status.total:
                    marks["whole topic read"] = time.monotonic() - launched
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
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before giving up")
    args = parser.parse_args()

    import dagster as dg

    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.spark import build_spark_session
    from fink_pipeline.surveys import get_survey
    from fink_pipeline.transfer.request import TransferRequest

    work = tempfile.TemporaryDirectory(prefix="bench-first-alert-")
    root = Path(work.name)
    print(f"{platform.machine()}, {os.cpu_count()} cores; {args.nights} nights x {args.alerts_per_night:,} alerts, "
          "light packet, all classes")
    generate_archive(get_survey("ztf"), str(root / "archive"), START, nights=args.nights,
                     alerts_per_night=args.alerts_per_night, seed=31, with_cutouts=False)
    began = time.perf_counter()
    spark = build_spark_session("local[2]")  # borrowed by the run's SparkResource
    spark_seconds = time.perf_counter() - began
    broker = EmbeddedBroker()
    settings = KafkaSettings(bootstrap_servers=broker.start())
    request = TransferRequest(start=START.isoformat(), stop=(START + dt.timedelta(days=args.nights - 1)).isoformat(),
                              content="light").with_identity()
    outcome: dict = {}
    run_done = threading.Event()

    def launch() -> None:
        try:
            with dg.DagsterInstance.ephemeral() as instance:  # disposed in the thread that made it
                outcome["result"] = run_transfer(request, bootstrap=settings.bootstrap_servers,
                                                 archive_root=str(root / "archive"), table_root=str(root / "tables"),
                                                 request_root=str(root / "requests"), instance=instance)
        finally:
            outcome["run ended"] = time.monotonic() - launched
            run_done.set()

    try:
        launched = time.monotonic()
        runner = threading.Thread(target=launch, daemon=True)
        runner.start()
        marks = watch_topic(settings, request.topic, launched, run_done, args.timeout)
        runner.join(args.timeout)
        if not outcome.get("result") or not outcome["result"].success:
            raise RuntimeError("the transfer run failed")
    finally:
        broker.stop()
        spark.stop()
        work.cleanup()

    print(f"Spark session start (not counted): {spark_seconds:.1f} s; topic {request.topic}, "
          f"{marks['alerts']:,} alerts\n")
    print(f"{'milestone, from the launch':<34}{'seconds':>9}")
    for name in ("topic created", "first alert read", "whole topic read"):
        print(f"{name:<34}{marks[name]:>9.1f}")
    print(f"{'run ended (table written)':<34}{outcome['run ended']:>9.1f}")
    print(f"first alert vs whole topic: {marks['first alert read'] / marks['whole topic read']:.2f}")


if __name__ == "__main__":
    main()
