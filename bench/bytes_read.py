"""Bytes the transfer job reads from the archive: light packet vs full packet, same nights.

Generates 2 nights of ZTF alerts WITH cutouts (zstd Parquet, as `fink-pipeline archive
generate`), then runs the real Spark job of a transfer (`build_transfer_dataframe` +
`publish_dataframe` to a private embedded broker) once with the light packet and once with
the full packet, in the same Spark session, and reports for each:

* Spark's input metrics: `inputBytes` summed over the stages of the job (read from the status
  store, `spark.sparkContext._jsc.sc().statusStore()`), i.e. what the Parquet reader fetched;
* the compressed size, from the Parquet footers, of the column chunks of the scan's pruned
  read schema (`FileSourceScanExec.requiredSchema`): what column pruning leaves to read
  (`transfer.metrics.footer_input_bytes`).

Spark 4's Parquet reader fetches column chunks with vectored I/O on other threads, which the
per-thread statistics behind `inputBytes` do not see; the bench turns vectored reads off for its
session (see `transfer.metrics`), which changes how the bytes are fetched, not which.

Last line: `light vs full bytes read: X` (light inputBytes / full inputBytes: a fraction).

    .venv/bin/python bench/bytes_read.py [--alerts-per-night 1000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

START = dt.date(2024, 3, 1)
NIGHTS = 2


def job_input_bytes(spark, group_prefix: str) -> tuple[int, int]:
    """(inputBytes, stages) of the jobs whose group starts with `group_prefix`, from Spark's
    status store (kept with the UI disabled). `publish_dataframe` runs its job in a group of
    its own, `fink-publish-<topic>-<id>`."""
    jsc = spark.sparkContext._jsc.sc()
    jsc.listenerBus().waitUntilEmpty()  # the status store is fed asynchronously
    store = jsc.statusStore()
    jobs = store.jobsList(None)
    total = stages = 0
    for i in range(jobs.length()):  # a Scala Seq
        job = jobs.apply(i)
        group = job.jobGroup()
        if not (group.isDefined() and str(group.get()).startswith(group_prefix)):
            continue
        stage_ids = job.stageIds()
        for k in range(stage_ids.length()):
            try:
                attempt = store.lastStageAttempt(stage_ids.apply(k))
            except Exception:  # a skipped stage has no attempt
                continue
            total += int(attempt.inputBytes())
            stages += 1
    return total, stages


def pruned_read_leaves(df) -> list[str]:
    """Dotted leaf paths of the Parquet scan's pruned read schema."""
    from pyspark.sql import types as T

    leaves_out: list[str] = []

    def walk(prefix: str, dtype) -> None:
        if isinstance(dtype, T.StructType):
            for f in dtype.fields:
                walk(f"{prefix}.{f.name}" if prefix else f.name, f.dataType)
        elif isinstance(dtype, T.ArrayType):
            walk(prefix, dtype.elementType)
        elif isinstance(dtype, T.MapType):
            walk(f"{prefix}.key", dtype.keyType)
            walk(f"{prefix}.value", dtype.valueType)
        else:
            leaves_out.append(prefix)

    leaves = df._jdf.queryExecution().sparkPlan().collectLeaves().iterator()
    while leaves.hasNext():
        node = leaves.next()
        if node.nodeName().startswith("Scan parquet"):
            walk("", T.StructType.fromJson(json.loads(node.requiredSchema().json())))
    return leaves_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts-per-night", type=int, default=1_000)
    parser.add_argument("--workdir", default=None, help="where the archive goes (default: a temporary folder)")
    args = parser.parse_args()

    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.archive.layout import list_nights, science_root
    from fink_pipeline.kafka.broker import EmbeddedBroker
    from fink_pipeline.kafka.publish import PublicationTarget, publish_dataframe
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.spark import build_spark_session
    from fink_pipeline.surveys import get_survey
    from fink_pipeline.surveys.base import JD_UNIX_EPOCH
    from fink_pipeline.transfer.plan import plan_transfer
    from fink_pipeline.transfer.select import build_transfer_dataframe
    from fink_pipeline.transfer.metrics import footer_input_bytes
    from fink_pipeline.transfer.request import TransferRequest

    survey = get_survey("ztf")
    temp = None if args.workdir else tempfile.TemporaryDirectory(prefix="bench-bytes-read-")
    root = str(Path(args.workdir or temp.name) / "archive")
    print(f"{platform.machine()}, {os.cpu_count()} cores; {NIGHTS} nights x {args.alerts_per_night:,} alerts with cutouts")
    started = time.perf_counter()
    report = generate_archive(survey, root, START, nights=NIGHTS, alerts_per_night=args.alerts_per_night, seed=21,
                              with_cutouts=True)
    files = sorted(Path(science_root(root, "ztf")).rglob("*.parquet"))
    print(f"archive: {report.total_bytes / 2**20:,.1f} MiB in {len(files)} files, written in "
          f"{time.perf_counter() - started:.1f} s")

    spark = build_spark_session("local[2]", conf={"spark.sql.shuffle.partitions": "2"})
    spark.conf.set("parquet.hadoop.vectored.io.enabled", "false")
    broker = EmbeddedBroker()
    settings = KafkaSettings(bootstrap_servers=broker.start())
    rows = []
    try:
        for packet in ("light", "full"):
            request = TransferRequest(start=START.isoformat(), stop=(START + dt.timedelta(days=NIGHTS - 1)).isoformat(),
                                      content=packet).with_identity()
            plan = plan_transfer(request, root, list_nights(root, "ztf"))
            df = build_transfer_dataframe(spark, plan)
            leaves = pruned_read_leaves(df)
            began = time.perf_counter()
            target = PublicationTarget(topic=request.topic, request_id=request.request_id,
                                       time_column=survey.time_column, time_epoch=JD_UNIX_EPOCH,
                                       key_column=survey.alert_id, class_column="finkclass")
            published = publish_dataframe(df, target, settings)
            seconds = time.perf_counter() - began
            input_bytes, _ = job_input_bytes(spark, f"fink-publish-{request.topic}")
            footer = footer_input_bytes([str(f) for f in files], leaves).bytes
            rows.append((packet, len(plan.content.columns), len(leaves), published.total, input_bytes, footer, seconds))
    finally:
        broker.stop()
        spark.stop()
        if temp is not None:
            temp.cleanup()

    print(f"\n{'packet':<8}{'out cols':>9}{'leaves read':>12}{'alerts':>8}{'Spark inputBytes':>18}"
          f"{'footer bytes':>14}{'B/alert':>9}{'seconds':>9}")
    for packet, columns, leaves, alerts, input_bytes, footer, seconds in rows:
        print(f"{packet:<8}{columns:>9}{leaves:>12}{alerts:>8,}{input_bytes:>18,}{footer:>14,}"
              f"{input_bytes / max(alerts, 1):>9,.0f}{seconds:>9.1f}")
    light, full = rows[0][4], rows[1][4]
    print(f"light vs full bytes read: {light / full:.3f}")


if __name__ == "__main__":
    main()
