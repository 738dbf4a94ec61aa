"""Issue 13, hole 7: a publishing attempt that dies with messages in flight must not let them
land after its retry has read its Kafka partitions back.

The broker is paused (SIGSTOP) while the first attempts of both Spark partitions hand their
last rows to their producers and fail: those messages are in flight, in the paused broker's
socket buffers. The broker stays paused longer than any give-up delay of the failure path
(the old one flushed for 30 s, then let Spark retry), then resumes. A retry that started while
the broker was paused could read its partitions back before the dead attempt's messages land,
and publish them a second time.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import types

import pytest

from fink_pipeline.kafka.broker import EmbeddedBroker
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import read_status
from fink_pipeline_tests.test_publish import new_topic, publish, selection, topic_counts

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

# longer than the old failure path's give-up delay (flush(30) then retry)
PAUSE_S = 33.0


@pytest.fixture(scope="module")
def two_nights(spark, tmp_path_factory):
    """2 nights x 1,200 light ZTF alerts: two Spark partitions; the DataFrame and its ids."""
    import datetime as dt

    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.surveys import get_survey

    root = str(tmp_path_factory.mktemp("archive_zombie"))
    generate_archive(get_survey("ztf"), root, dt.date(2024, 3, 1), nights=2, alerts_per_night=1200, seed=27,
                     with_cutouts=False)
    df = selection(spark, root)
    sizes = df.rdd.glom().map(len).collect()
    return df, sorted(df.select("candid").toArrow()["candid"].to_pylist()), sizes


@pytest.fixture
def own_broker():
    """A broker of this test alone (it gets paused)."""
    broker = EmbeddedBroker()
    broker.start()
    yield broker
    signal_group(broker.pid, signal.SIGCONT)  # a paused broker must be able to stop
    broker.stop()


def signal_group(pgid: int | None, sig: int) -> None:
    if pgid is None:
        return
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def failed_tasks(spark) -> int:
    """Failed task attempts of the running stages: a retry is scheduled once one is reported."""
    tracker = spark.sparkContext.statusTracker()
    failed = 0
    for stage_id in tracker.getActiveStageIds():
        info = tracker.getStageInfo(stage_id)
        failed += info.numFailedTasks if info else 0
    return failed


@pytest.mark.reliability
def test_zombie_attempt_cannot_land_after_its_retry(spark, two_nights, own_broker, tmp_path, reliability_record):
    df, source, sizes = two_nights
    non_empty = [i for i, n in enumerate(sizes) if n]
    assert len(non_empty) == 2 and min(sizes) > 400, sizes
    settings = KafkaSettings(bootstrap_servers=own_broker.address)
    topic = new_topic()
    gate = tmp_path / "gate"
    gate.mkdir()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["report"] = publish(df, topic, settings, fail_first_attempt_in_flight_after=300,
                                        test_gate_dir=str(gate))
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    publisher = threading.Thread(target=run, daemon=True)
    publisher.start()
    deadline = time.monotonic() + 90
    while not all((gate / f"reached-{i}").exists() for i in non_empty):
        assert time.monotonic() < deadline and publisher.is_alive(), f"the attempts never reached the gate: {outcome}"
        time.sleep(0.05)

    # the first attempts delivered 300 messages each; the rest goes in flight to a paused broker
    signal_group(own_broker.pid, signal.SIGSTOP)
    paused_at = time.monotonic()
    retry_while_paused = 0.0
    try:
        (gate / "go").touch()
        while time.monotonic() - paused_at < PAUSE_S:
            if failed_tasks(spark):
                # Spark now schedules the retry: the dead attempt's messages are still in flight
                retry_while_paused = time.monotonic() - paused_at
                break
            time.sleep(0.1)
        time.sleep(0.5)  # let a retry that started reach its read-back, which waits for the broker
    finally:
        signal_group(own_broker.pid, signal.SIGCONT)
    publisher.join(120)
    assert not publisher.is_alive(), "the publication did not finish within 120 s after the broker resumed"

    _, lost, duplicates = topic_counts(settings, topic, source)
    finished = "report" in outcome and read_status(settings, topic).state == "finished"
    survived = finished and not retry_while_paused and lost == duplicates == 0
    reliability_record(cases=1, failures_survived=2 if survived else 0, lost=lost, duplicates=duplicates)

    assert not retry_while_paused, (
        f"a retry was scheduled {retry_while_paused:.1f} s into the broker pause, while the failed "
        "attempt's messages were still in flight")
    assert "error" not in outcome, outcome.get("error")
    assert finished
    assert lost == duplicates == 0, (lost, duplicates)
    report = outcome["report"]
    assert report.total == len(source) and report.retried_tasks == 2
    assert report.already_published >= 2 * 300  # the dead attempts' messages, found by the retries


class _FakeJobs:
    """A SparkContext whose publishing job fails and whose cancelled tasks stop only after
    `stops_after` status polls (never when None)."""

    def __init__(self, stops_after: int | None):
        self.stops_after, self.polls, self.cancelled = stops_after, 0, []
        self.properties: dict = {}

    # SparkContext
    def getLocalProperty(self, key):
        return self.properties.get(key)

    def setLocalProperty(self, key, value):
        self.properties[key] = value

    def setJobGroup(self, group, description, interruptOnCancel=False):
        self.properties["spark.jobGroup.id"] = group

    def cancelJobGroup(self, group):
        self.cancelled.append(group)

    def statusTracker(self):
        return self

    # StatusTracker
    def getJobIdsForGroup(self, group):
        return [1]

    def getJobInfo(self, job_id):
        return types.SimpleNamespace(stageIds=[7])

    def getStageInfo(self, stage_id):
        self.polls += 1
        running = self.stops_after is None or self.polls <= self.stops_after
        return types.SimpleNamespace(numActiveTasks=1 if running else 0)


def _failing_job(sc):
    def collect():
        raise RuntimeError("Job aborted: injected failure in Spark partition 3")

    return types.SimpleNamespace(sparkSession=types.SimpleNamespace(sparkContext=sc), collect=collect)


def test_failed_job_returns_only_when_its_cancelled_tasks_are_gone(monkeypatch):
    from fink_pipeline.kafka import publish as publish_module

    monkeypatch.setattr(publish_module, "_CANCEL_TIMEOUT_S", 1.0, raising=False)
    # tasks that stop: the job's own error, once they are gone
    sc = _FakeJobs(stops_after=3)
    with pytest.raises(RuntimeError, match="injected failure"):
        publish_module._collect_in_job_group(_failing_job(sc), "ftransfer_ztf_x")
    assert sc.cancelled and sc.polls == 4
    # tasks that do not stop: an error that says so, not the job's error followed by a re-run
    sc = _FakeJobs(stops_after=None)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="cancelled tasks still run") as info:
        publish_module._collect_in_job_group(_failing_job(sc), "ftransfer_ztf_x")
    assert time.monotonic() - started < 10
    assert "may still write to ftransfer_ztf_x" in str(info.value) and "injected failure" in str(info.value)
