"""Transfer runs under failure: a broker restarted mid-publish, a broker gone for good, re-runs.

Everything is real: Spark local, the embedded Tansu broker (memory storage, so a restart loses
every topic), Delta tables. "Correct" after a restart means the final table holds exactly the
selected alerts, each once: the broker forgot the topics and the status records, so the retried
step deletes whatever the dying attempt left behind, re-creates the topics and republishes all.
"""

from __future__ import annotations

import datetime as dt
import shutil
import threading
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import night_dir
from fink_pipeline.consumer.readers import read_delta_table
from fink_pipeline.kafka.broker import EmbeddedBroker
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import read_status
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.ztf.classification import finkclass_arrow
from fink_pipeline.transfer.request import TransferRequest
from fink_pipeline.transfer.store import RequestStore
from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates

START = dt.date(2024, 3, 1)
CLASSES = ["SN candidate", "Unknown", "RRLyr", "Early SN Ia candidate"]


@pytest.fixture(scope="module")
def archive_root(tmp_path_factory) -> str:
    """2 nights x 1,200 ZTF alerts without cutouts."""
    root = str(tmp_path_factory.mktemp("orch_archive"))
    generate_archive(get_survey("ztf"), root, START, nights=2, alerts_per_night=1200, seed=11, with_cutouts=False)
    return root


def expected_candids(root: str) -> list[int]:
    """The candids the request selects, computed without Spark."""
    tables = [ds.dataset(night_dir(root, "ztf", START + dt.timedelta(days=i)), format="parquet").to_table()
              for i in range(2)]
    archive = pa.concat_tables(tables)
    return sorted(archive.filter(pc.is_in(finkclass_arrow(archive), value_set=pa.array(CLASSES)))["candid"].to_pylist())


def materialize(request: TransferRequest, bootstrap: str, archive_root: str, tmp_path: Path, instance,
                selection=None):
    from fink_pipeline.orchestration.launch import TRANSFER_ASSETS
    from fink_pipeline.orchestration.resources import (
        ArchiveResource,
        KafkaResource,
        RequestStoreResource,
        SparkResource,
        TableResource,
    )

    RequestStore(tmp_path / "requests").save(request)
    instance.add_dynamic_partitions("transfer_requests", [request.topic])
    return dg.materialize(
        TRANSFER_ASSETS,
        partition_key=request.topic,
        instance=instance,
        selection=selection,
        resources={
            "spark": SparkResource(master="local[2]"),
            "kafka": KafkaResource(bootstrap_servers=bootstrap),
            "archive": ArchiveResource(root=archive_root),
            "tables": TableResource(root=str(tmp_path / "tables")),
            "requests": RequestStoreResource(root=str(tmp_path / "requests")),
        },
        raise_on_error=False,
    )


def new_request() -> TransferRequest:
    return TransferRequest(survey="ztf", start=START.isoformat(), stop=(START + dt.timedelta(days=1)).isoformat(),
                           classes=CLASSES, content="light").with_identity()


def restart_when_publishing(broker: EmbeddedBroker, topic: str, port: int, down_seconds: float, log: list):
    """Stop the broker as soon as the publication's start record appears, restart it later."""
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if read_status(settings, topic, timeout_s=2).state == "running":
                break
        except Exception:
            pass
        time.sleep(0.02)
    else:
        log.append("publication never started")
        return
    broker.stop()
    log.append(f"stopped at {time.monotonic():.1f}")
    time.sleep(down_seconds)
    broker.start(port=port)
    log.append(f"restarted at {time.monotonic():.1f}")


def step_events(result, step: str, kind: str) -> list:
    return [e for e in result.all_events if e.step_key == step and e.event_type_value == kind]


def table_candids(path: Path) -> list[int]:
    """The alert ids of a Delta table (none when the table was never created)."""
    return read_delta_table(str(path))["candid"].to_pylist() if path.exists() else []


@pytest.mark.reliability
@pytest.mark.spark
@pytest.mark.kafka
def test_broker_restart_mid_publish_retries_to_an_exact_table(spark, archive_root, tmp_path, reliability_record):
    broker = EmbeddedBroker()
    address = broker.start()
    port = int(address.rsplit(":", 1)[1])
    request = new_request()
    log: list[str] = []
    try:
        chaos = threading.Thread(target=restart_when_publishing, args=(broker, request.topic, port, 1.0, log))
        chaos.start()
        started = time.monotonic()
        with dg.instance_for_test() as instance:
            result = materialize(request, address, archive_root, tmp_path, instance)
        seconds = time.monotonic() - started
        chaos.join(timeout=60)
        print(f"run took {seconds:.1f} s; broker {log}")
        expected = expected_candids(archive_root)
        first = table_candids(tmp_path / "tables" / request.topic)
        # a re-run of the same partition must be a no-op: nothing republished, nothing appended
        with dg.instance_for_test() as instance:
            again = materialize(request, address, archive_root, tmp_path, instance)
        after_rerun = table_candids(tmp_path / "tables" / request.topic)
        # the table as each run left it, against the selected alerts; recorded before the checks
        counts = [count_lost_and_duplicates(ids, expected) for ids in (first, after_rerun)]
        lost, duplicates = max(c[0] for c in counts), max(c[1] for c in counts)
        reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

        assert log and log[0].startswith("stopped"), log
        assert result.success, [e.message for e in result.all_events if e.is_failure]
        # the publish step failed at least once and was retried
        assert step_events(result, "transferred_alerts", "STEP_UP_FOR_RETRY")
        assert sorted(first) == expected  # every alert, exactly once
        checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
        assert checks == {"row_count_matches_published": True, "candid_unique": True}
        settings = KafkaSettings(bootstrap_servers=address)
        assert read_status(settings, request.topic).total == len(expected)
        assert_run_metadata_tells_the_story(result, request.topic, len(expected))

        assert again.success
        table_meta = next(m.metadata for m in again.asset_materializations_for_node("transferred_alerts") if m.asset_key.path == ["alert_table"])
        assert table_meta["appended_this_run"].value == 0
        assert table_meta["rows"].value == len(expected)
        assert sorted(after_rerun) == expected
        assert lost == duplicates == 0
    finally:
        broker.stop()


def assert_run_metadata_tells_the_story(result, topic: str, published: int) -> None:
    """Counts per stage, bytes read, topic, throughput and the per class/night plot."""
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("transferred_alerts")}
    selected, topic_meta = meta["selected_alerts"], meta["alert_topic"]
    assert selected["alerts"].value == published
    assert selected["nights_read"].value == 2
    assert 0 < selected["archive_bytes_read"].value <= selected["archive_bytes_on_disk"].value
    assert topic_meta["topic"].value == topic
    assert topic_meta["alerts_published"].value == published
    assert topic_meta["alerts_per_second"].value > 0
    assert topic_meta["step_attempt"].value >= 2  # published by a retry
    plot = selected["plot"].value
    assert plot.startswith("![") and "data:image/png;base64," in plot
    png = Path(selected["plot_path"].value)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table_md = selected["alerts_per_class_and_night"].value
    assert f"**{published:,}**" in table_md  # the grand total of the class x night table
    table = next(m.metadata for m in result.asset_materializations_for_node("transferred_alerts") if m.asset_key.path == ["alert_table"])
    assert table["rows"].value == table["published"].value == published


@pytest.mark.reliability(failures_survived=1)
@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.kafka
def test_broker_gone_for_good_fails_after_retries_with_a_clear_message(spark, archive_root, tmp_path, request):
    # ~1 minute of retries and backoff: only when slow tests are selected (pytest -m slow)
    selection = request.config.getoption("markexpr") or ""
    if "slow" not in selection or "not slow" in selection:
        pytest.skip("slow: select it with -m slow")
    broker = EmbeddedBroker()
    address = broker.start()
    broker.stop()  # nothing listens there any more
    transfer = new_request()
    with dg.instance_for_test() as instance:
        result = materialize(transfer, address, archive_root, tmp_path, instance)
    assert not result.success
    assert len(step_events(result, "transferred_alerts", "STEP_UP_FOR_RETRY")) == 3
    failure = step_events(result, "transferred_alerts", "STEP_FAILURE")[0]
    message = failure.event_specific_data.user_failure_data.description
    assert message.startswith(f"publishing {transfer.topic} failed on attempt 4 of 4 (Kafka {address})"), message
    assert not (tmp_path / "tables" / transfer.topic).exists()


@pytest.mark.spark
@pytest.mark.kafka
def test_the_table_fills_while_the_topic_is_written(spark, archive_root, tmp_path, monkeypatch):
    """The table is filled during the publication, not after it: the publisher's end record is
    held back until the table holds every published alert (only a consumer running alongside
    the publisher can get there), then the table is complete within seconds of that record."""
    from fink_pipeline.kafka.status import StatusWriter
    from fink_pipeline.orchestration.assets import transfer as transfer_assets

    broker = EmbeddedBroker()
    address = broker.start()
    request = new_request()
    table = tmp_path / "tables" / request.topic
    seen: dict[str, float] = {}
    write_end = StatusWriter.end

    def end_once_the_table_caught_up(self, **record):
        deadline = time.monotonic() + 30
        while len(table_candids(table)) < record["total"] and time.monotonic() < deadline:
            time.sleep(0.1)
        seen["rows_before_end_record"] = len(table_candids(table))
        seen["end_written_at"] = time.monotonic()
        return write_end(self, **record)

    monkeypatch.setattr(StatusWriter, "end", end_once_the_table_caught_up)
    try:
        with dg.instance_for_test() as instance:
            result = materialize(request, address, archive_root, tmp_path, instance)
            done_at = time.monotonic()
            # the table alone (alert_table_job, `--select alert_table`): consumes without Spark
            shutil.rmtree(table)
            monkeypatch.setattr(transfer_assets, "build_publication", None)  # any Spark use would fail
            alone = materialize(request, address, archive_root, tmp_path, instance, selection=["alert_table"])
    finally:
        broker.stop()
    assert alone.success, [e.message for e in alone.all_events if e.is_failure]
    alone_meta = next(m.metadata for m in alone.asset_materializations_for_node("transferred_alerts"))
    assert alone_meta["rows"].value == alone_meta["appended_this_run"].value == len(expected_candids(archive_root))
    assert "appended_while_publishing" not in alone_meta
    assert [m.asset_key.path for m in alone.asset_materializations_for_node("transferred_alerts")] == [["alert_table"]]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    expected = expected_candids(archive_root)
    assert seen["rows_before_end_record"] == len(expected)  # every alert in the table before the end record
    assert sorted(table_candids(table)) == expected
    # the follower knows it is done from the end record, at once (not from a time-out)
    assert done_at - seen["end_written_at"] < 15
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("transferred_alerts")}
    table_meta = meta["alert_table"]
    assert table_meta["rows"].value == table_meta["published"].value == len(expected)
    assert table_meta["appended_while_publishing"].value == len(expected)
    assert 0 <= table_meta["complete_after_topic_seconds"].value < 10
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"row_count_matches_published": True, "candid_unique": True}


def test_class_night_chart_drawn_in_a_child_process_equals_the_one_drawn_here(monkeypatch):
    """The run's chart is drawn by a child Python (off the GIL of the table's consumer): the
    same PNG bytes as drawn in this process, hostile class names included; a child that
    cannot start or fails leaves the drawing to this process."""
    import sys

    from fink_pipeline.orchestration.report import class_night_png, start_class_night_png

    counts = {"SN candidate": {"2024-03-01": 120, "2024-03-02": 7}, 'Early "SN Ia"\n<b>\\': {"2024-03-02": 3},
              "Unknown": {"2024-03-01": 5000}}
    here = class_night_png(counts, "t: alerts per class and night")
    assert here[:8] == b"\x89PNG\r\n\x1a\n"
    assert start_class_night_png(counts, "t: alerts per class and night")() == here
    for broken in ("/nonexistent/python", "/bin/false"):  # not started / exits with an error
        monkeypatch.setattr(sys, "executable", broken)
        assert start_class_night_png(counts, "t: alerts per class and night")() == here
