"""Sensor ticks: standing requests replayed once per night, launchpad submissions launched once,
tables caught up with their topics. Ticks are evaluated against a real test instance (and a
real embedded broker where a topic is involved), asserting run requests, partition keys and
cursors."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from fink_pipeline.definitions import defs
from fink_pipeline.orchestration import sensors
from fink_pipeline.orchestration.resources import (
    ArchiveResource,
    KafkaResource,
    RequestStoreResource,
    StandingRequestsResource,
)
from fink_pipeline.transfer.request import RequestError, TransferRequest
from fink_pipeline.transfer.standing import (
    StandingStore,
    due_nights,
    last_finished_night,
    standing_from_mapping,
)
from fink_pipeline.transfer.store import RequestStore

UTC = dt.timezone.utc


# -- pure logic -------------------------------------------------------------------------------

def test_last_finished_night_turns_at_the_replay_hour():
    assert last_finished_night(dt.datetime(2024, 3, 2, 8, 59, tzinfo=UTC), 9) == dt.date(2024, 2, 29)
    assert last_finished_night(dt.datetime(2024, 3, 2, 9, 0, tzinfo=UTC), 9) == dt.date(2024, 3, 1)
    with pytest.raises(ValueError, match="replay_hour_utc must be 0..23"):
        last_finished_night(dt.datetime(2024, 3, 2, tzinfo=UTC), 24)


def test_due_nights_catch_up_but_never_repeat():
    now = dt.datetime(2024, 3, 5, 10, tzinfo=UTC)
    assert due_nights(now, None) == [dt.date(2024, 3, 4)]
    assert due_nights(now, dt.date(2024, 3, 4)) == []
    assert due_nights(now, dt.date(2024, 3, 1)) == [dt.date(2024, 3, 2), dt.date(2024, 3, 3), dt.date(2024, 3, 4)]
    assert len(due_nights(now, dt.date(2023, 1, 1), max_catch_up=7)) == 7


def test_standing_request_identity_derives_from_name_and_night():
    standing = standing_from_mapping("sn-watch", {"classes": ["SN candidate"], "content": "light"})
    night = dt.date(2024, 3, 1)
    first, second = standing.for_night(night), standing.for_night(night)
    assert first == second
    assert (first.start, first.stop) == ("2024-03-01", "2024-03-01")
    assert first.topic == "ftransfer_ztf_2024-03-01_sn-watch" and first.request_id == "sn-watch:2024-03-01"
    assert standing.run_key(night) == "sn-watch:2024-03-01"


def test_standing_request_refuses_dates_and_bad_names(tmp_path):
    with pytest.raises(RequestError, match="a standing request has no dates"):
        standing_from_mapping("sn", {"start": "2024-03-01"})
    with pytest.raises(RequestError, match="standing request name 'SN watch' is invalid"):
        standing_from_mapping("SN watch", {})
    with pytest.raises(RequestError, match="survey 'ztff' is unknown"):
        standing_from_mapping("sn", {"survey": "ztff"})
    store = StandingStore(tmp_path)
    store.add(standing_from_mapping("sn", {}))
    with pytest.raises(RequestError, match="already exists"):
        store.add(standing_from_mapping("sn", {"classes": ["Unknown"]}))
    assert store.names() == ["sn"] and store.remove("sn") and not store.remove("sn")


def test_cli_standing_add_list_remove(tmp_path, capsys):
    from fink_pipeline.cli.main import main

    root = str(tmp_path / "standing")
    archive = ["--archive", str(tmp_path / "archive")]
    assert main(["request", "standing", "add", "sn-watch", "--classes", "SN candidate", "--root", root, *archive]) == 0
    assert main(["request", "standing", "add", "bad", "--condition", "candidate.magpsff > 1", "--root", root,
                 *archive]) == 2
    assert 'unknown field "candidate.magpsff"' in capsys.readouterr().err
    assert main(["request", "standing", "list", "--root", root]) == 0
    assert capsys.readouterr().out.startswith("sn-watch: survey=ztf classes=['SN candidate']")
    assert main(["request", "standing", "remove", "sn-watch", "--root", root]) == 0
    assert main(["request", "standing", "remove", "sn-watch", "--root", root]) == 2


# -- standing_request_sensor ----------------------------------------------------------------

@pytest.fixture
def standing_setup(tmp_path, monkeypatch):
    store = StandingStore(tmp_path / "standing")
    store.add(standing_from_mapping("sn-watch", {"classes": ["SN candidate"]}))
    store.add(standing_from_mapping("kn", {"classes": ["Kilonova candidate"], "content": "medium"}))
    resources = {
        "standing": StandingRequestsResource(root=str(tmp_path / "standing"), replay_hour_utc=9),
        "requests": RequestStoreResource(root=str(tmp_path / "requests")),
    }

    def at(when: dt.datetime) -> None:
        monkeypatch.setattr(sensors, "utc_now", lambda: when)

    return resources, at, RequestStore(tmp_path / "requests")


def test_standing_sensor_replays_yesterday_once_per_request(standing_setup):
    resources, at, request_store = standing_setup
    at(dt.datetime(2024, 3, 2, 9, 30, tzinfo=UTC))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources=resources)
        result = sensors.standing_request_sensor(context)
        assert isinstance(result, dg.SensorResult)
        assert sorted(r.run_key for r in result.run_requests) == ["kn:2024-03-01", "sn-watch:2024-03-01"]
        keys = sorted(r.partition_key for r in result.run_requests)
        assert keys == ["ftransfer_ztf_2024-03-01_kn", "ftransfer_ztf_2024-03-01_sn-watch"]
        assert sorted(result.dynamic_partitions_requests[0].partition_keys) == keys
        assert result.cursor == "2024-03-01"
        stored = request_store.load("ftransfer_ztf_2024-03-01_kn")
        assert (stored.start, stored.stop, stored.content) == ("2024-03-01", "2024-03-01", ["medium"])

        # the same morning again: nothing to do
        again = sensors.standing_request_sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                                                         cursor=result.cursor))
        assert isinstance(again, dg.SkipReason) and "2024-03-01 is already replayed" in again.skip_message

        # two mornings later (daemon down one day): both missed nights, oldest first
        at(dt.datetime(2024, 3, 4, 10, tzinfo=UTC))
        later = sensors.standing_request_sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                                                         cursor=result.cursor))
        assert [r.run_key for r in later.run_requests if r.run_key.startswith("sn-watch")] == [
            "sn-watch:2024-03-02", "sn-watch:2024-03-03"]
        assert later.cursor == "2024-03-03"


def test_standing_sensor_tick_resolves_partitioned_runs(standing_setup):
    """Full tick evaluation: the run requests resolve against the job and its dynamic partitions."""
    resources, at, _ = standing_setup
    at(dt.datetime(2024, 3, 2, 9, 30, tzinfo=UTC))
    with dg.instance_for_test() as instance:
        sensor = defs.resolve_sensor_def("standing_request_sensor")
        context = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs, resources=resources)
        data = sensor.evaluate_tick(context)
        assert {r.partition_key for r in data.run_requests} == {"ftransfer_ztf_2024-03-01_kn",
                                                               "ftransfer_ztf_2024-03-01_sn-watch"}
        assert sensor.job_name == "transfer_job"
        assert all(r.tags["dagster/partition"] == r.partition_key for r in data.run_requests)
        assert data.cursor == "2024-03-01"


def test_standing_sensor_without_requests_advances_its_cursor(tmp_path, monkeypatch):
    monkeypatch.setattr(sensors, "utc_now", lambda: dt.datetime(2024, 3, 2, 12, tzinfo=UTC))
    resources = {"standing": StandingRequestsResource(root=str(tmp_path / "none")),
                 "requests": RequestStoreResource(root=str(tmp_path / "requests"))}
    with dg.instance_for_test() as instance:
        result = sensors.standing_request_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert result.run_requests == [] and result.cursor == "2024-03-01"
    assert "no standing request to replay for 2024-03-01" in result.skip_reason.skip_message


# -- submitted_transfer_sensor ----------------------------------------------------------------

@pytest.mark.kafka
def test_launchpad_submission_launches_one_transfer(kafka_broker, tmp_path):
    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.surveys import get_survey

    archive = str(tmp_path / "archive")
    generate_archive(get_survey("ztf"), archive, dt.date(2024, 3, 1), nights=1, alerts_per_night=50, seed=3,
                     with_cutouts=False)
    resources = {"archive": ArchiveResource(root=archive), "kafka": KafkaResource(bootstrap_servers=kafka_broker),
                 "requests": RequestStoreResource(root=str(tmp_path / "requests"))}
    with dg.instance_for_test() as instance:
        job = defs.resolve_job_def("submit_transfer_job")
        result = job.execute_in_process(
            run_config={"ops": {"submit_transfer": {"config": {"start": "2024-03-01", "stop": "2024-03-01",
                                                                "classes": ["SN candidate"]}}}},
            resources=resources, instance=instance,
        )
        assert result.success
        topic = result.output_for_node("submit_transfer")
        assert topic.startswith("ftransfer_ztf_")
        assert instance.has_dynamic_partition("transfer_requests", topic)
        assert RequestStore(tmp_path / "requests").load(topic).classes == ["SN candidate"]
        run = instance.get_run_by_id(result.run_id)
        assert run.tags["fink/topic"] == topic

        success = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS).records[0]
        context = dg.build_run_status_sensor_context(
            sensor_name="submitted_transfer_sensor", dagster_instance=instance, dagster_run=run,
            dagster_event=success.event_log_entry.dagster_event,
        )
        request = sensors.submitted_transfer_sensor(context)
        assert isinstance(request, dg.RunRequest)
        assert request.run_key == topic and request.partition_key == topic


# -- transfer_topic_sensor --------------------------------------------------------------------

def _publish_status(settings, topic: str, total: int, finished: bool) -> None:
    """Status records as the publisher writes them (a finished publication of `total` alerts)."""
    from fink_pipeline.kafka.status import StatusWriter

    with StatusWriter(settings, topic) as writer:
        writer.start(request_id=topic, partitions=1, schema_fingerprint="f")
        if finished:
            writer.end(request_id=topic, total=total, partitions={0: (total, total - 1)}, schema_fingerprint="f")


@pytest.mark.kafka
def test_topic_sensor_catches_tables_up_once_per_publication(kafka_settings, tmp_path):
    store = RequestStore(tmp_path / "requests")
    suffix = dt.datetime.now().strftime("%H%M%S%f")
    topics = {name: f"ftransfer_ztf_2024-03-01_{name}{suffix}" for name in ("behind", "uptodate", "running")}
    for topic in topics.values():
        store.save(TransferRequest(start="2024-03-01", stop="2024-03-01", topic=topic, request_id=topic))
    _publish_status(kafka_settings, topics["behind"], 120, finished=True)
    _publish_status(kafka_settings, topics["uptodate"], 80, finished=True)
    _publish_status(kafka_settings, topics["running"], 0, finished=False)
    resources = {"kafka": KafkaResource(bootstrap_servers=kafka_settings.bootstrap_servers),
                 "requests": RequestStoreResource(root=str(tmp_path / "requests"))}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("transfer_requests", [topics["uptodate"]])
        instance.report_runless_asset_event(
            dg.AssetMaterialization("alert_table", partition=topics["uptodate"], metadata={"rows": 80}))
        result = sensors.transfer_topic_sensor(dg.build_sensor_context(instance=instance, resources=resources))
        assert [r.partition_key for r in result.run_requests] == [topics["behind"]]
        run_key = result.run_requests[0].run_key
        assert run_key.startswith(f"{topics['behind']}:120@")
        assert result.dynamic_partitions_requests[0].partition_keys == [topics["behind"]]
        import json

        cursor = json.loads(result.cursor)
        assert set(cursor) == {topics["behind"], topics["uptodate"]}  # running ones are looked at again

        # next tick: nothing new was published
        again = sensors.transfer_topic_sensor(dg.build_sensor_context(instance=instance, resources=resources,
                                                                       cursor=result.cursor))
        assert again.run_requests == [] and "up to date" in again.skip_reason.skip_message

        # full evaluation resolves the request against alert_table_job
        data = defs.resolve_sensor_def("transfer_topic_sensor").evaluate_tick(
            dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs, resources=resources))
        assert defs.resolve_sensor_def("transfer_topic_sensor").job_name == "alert_table_job"
        assert [r.tags["dagster/partition"] for r in data.run_requests] == [topics["behind"]]


def test_topic_sensor_skips_without_a_broker(tmp_path, monkeypatch):
    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path))  # no managed broker recorded there
    resources = {"kafka": KafkaResource(), "requests": RequestStoreResource(root=str(tmp_path / "requests"))}
    with dg.instance_for_test() as instance:
        result = sensors.transfer_topic_sensor(dg.build_sensor_context(instance=instance, resources=resources))
    assert isinstance(result, dg.SkipReason) and "no Kafka broker" in result.skip_message


# -- schedules --------------------------------------------------------------------------------

def test_night_statistics_schedule_counts_the_night_that_just_ended():
    schedule = defs.resolve_schedule_def("night_statistics_schedule")
    assert schedule.cron_schedule == "0 9 * * *"
    assert schedule.job_name == "night_statistics_job"
    assert defs.resolve_job_def("night_statistics_job").asset_layer.executable_asset_keys == {
        dg.AssetKey("night_statistics")
    }
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=dt.datetime(2024, 3, 2, 9, 0, tzinfo=UTC)
        )
        result = schedule.evaluate_tick(context)
    assert [request.partition_key for request in result.run_requests] == ["2024-03-01"]
