"""The code location: it loads, names what the issue names, documents every asset, and keeps
production secrets out of the configuration Dagster displays."""

from __future__ import annotations

import contextlib
import io
import threading
import time

import dagster as dg
import pytest

from fink_pipeline.definitions import defs
from fink_pipeline.orchestration.resources import (
    PRODUCTION_ENV,
    REQUIRED_PRODUCTION_ENV,
    production_resources,
    resources_for,
)
from fink_pipeline.orchestration.submit import TransferRequestConfig, submit_transfer_job
from fink_pipeline.transfer.request import TransferRequestFields


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert {"transfer_request", "selected_alerts", "alert_topic", "alert_table"} <= keys
    for job in ("transfer_job", "alert_table_job", "submit_transfer_job"):
        defs.resolve_job_def(job)
    for sensor in ("submitted_transfer_sensor", "standing_request_sensor", "transfer_topic_sensor"):
        assert defs.resolve_sensor_def(sensor).default_status == dg.DefaultSensorStatus.RUNNING


def test_every_asset_is_described_owned_and_typed():
    graph = defs.resolve_asset_graph()
    expected_kinds = {"selected_alerts": "spark", "alert_topic": "kafka", "alert_table": "delta"}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        assert node.description and len(node.description) > 20, key
        assert node.owners, key
        name = key.to_user_string()
        if name in expected_kinds:
            assert expected_kinds[name] in node.kinds, (name, node.kinds)


def test_kafka_and_spark_steps_retry_with_backoff():
    from fink_pipeline.orchestration.assets import transfer

    policy = transfer.transferred_alerts.op.retry_policy  # selection, topic and table: one step
    assert policy is not None and policy.max_retries >= 2 and policy.backoff == dg.Backoff.EXPONENTIAL
    checks = {c.name for c in defs.resolve_asset_graph().asset_check_keys if c.asset_key.path == ["alert_table"]}
    assert checks == {"row_count_matches_published", "candid_unique"}


def test_deployments_provide_the_same_resources(monkeypatch):
    for name in REQUIRED_PRODUCTION_ENV:
        monkeypatch.setenv(name, "spark://m:7077" if "SPARK" in name else "x:9092" if "KAFKA" in name else "/data")
    assert set(resources_for("local")) == set(resources_for("production"))
    with pytest.raises(ValueError, match="FINK_DEPLOYMENT='staging': choose one of local, production"):
        resources_for("staging")


def test_production_secret_is_an_env_var_never_a_value(monkeypatch):
    monkeypatch.setenv("FINK_KAFKA_SASL_PASSWORD", "s3cret-value")
    monkeypatch.setenv("FINK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FINK_SPARK_CONF", '{"spark.executor.memory": "4g"}')
    resources = production_resources()
    kafka = resources["kafka"]
    assert isinstance(kafka.sasl_password, dg.EnvVar)
    assert kafka.sasl_password.env_var_name == "FINK_KAFKA_SASL_PASSWORD"
    assert isinstance(kafka.bootstrap_servers, dg.EnvVar)
    assert resources["spark"].conf == {"spark.executor.memory": "4g"}
    # nothing the UI could render holds the value
    assert "s3cret-value" not in repr(resources)
    monkeypatch.delenv("FINK_KAFKA_SASL_PASSWORD")
    assert production_resources()["kafka"].sasl_password is None
    assert set(PRODUCTION_ENV) >= {"FINK_KAFKA_BOOTSTRAP_SERVERS", "FINK_KAFKA_SASL_PASSWORD", "FINK_ARCHIVE_ROOT"}


def test_bad_json_env_names_the_variable(monkeypatch):
    monkeypatch.setenv("FINK_TABLE_STORAGE_OPTIONS", "{endpoint: x")
    with pytest.raises(ValueError, match="FINK_TABLE_STORAGE_OPTIONS is not valid JSON"):
        production_resources()


def test_launchpad_form_has_the_request_fields_and_defaults():
    assert set(TransferRequestConfig.model_fields) == set(TransferRequestFields.model_fields)
    form = TransferRequestConfig(start="2024-03-01", stop="2024-03-02")
    # an empty content is the survey's default: light, or objectId, candid for a ZTF cross-match
    assert form.content == [] and form.survey == "ztf" and form.classes == []
    fields = TransferRequestConfig.to_fields_dict()
    assert fields["start"].is_required and not fields["content"].is_required
    assert fields["content"].default_value == []
    assert not fields["catalog_filename"].is_required and fields["id_col"].default_value == "id"


@pytest.mark.parametrize(
    "form, cli",
    [
        ({"start": "2024-03-05", "stop": "2024-03-02"}, ["--start", "2024-03-05", "--stop", "2024-03-02"]),
        ({"start": "2024-03-0x", "stop": "2024-03-02", "survey": "ztff"},
         ["--start", "2024-03-0x", "--stop", "2024-03-02", "--survey", "ztff"]),
        ({"start": "2024-03-01", "stop": "2024-03-01", "conditions": ["candidate.magpsff > 19"]},
         ["--start", "2024-03-01", "--stop", "2024-03-01", "--condition", "candidate.magpsff > 19"]),
    ],
)
def test_launchpad_validation_fails_with_the_cli_message(form, cli, tmp_path):
    from fink_pipeline.cli.main import main
    from fink_pipeline.orchestration.resources import ArchiveResource, KafkaResource, RequestStoreResource

    archive = str(tmp_path / "archive")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(["request", "validate", *cli, "--archive", archive]) == 2
    cli_message = stderr.getvalue().strip().removeprefix("error: ")

    with dg.instance_for_test() as instance:
        result = submit_transfer_job.execute_in_process(
            run_config={"ops": {"submit_transfer": {"config": form}}},
            resources={"archive": ArchiveResource(root=archive), "kafka": KafkaResource(),
                       "requests": RequestStoreResource(root=str(tmp_path / "requests"))},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.event_specific_data.user_failure_data.description == cli_message
    assert not (tmp_path / "requests").exists()  # nothing stored for a bad request


def test_a_spark_session_started_ahead_is_taken_over_by_the_runs_resource(spark):
    """`request submit --wait` starts Spark before Dagster is even imported; Dagster then builds
    the run's SparkResource anew from its config, which must find that start (not open a second
    session, not leave it to nobody): same settings claim it once, other settings do not."""
    from fink_pipeline.orchestration import spark_ahead
    from fink_pipeline.orchestration.resources import SparkResource

    settings = {"master": "local[2]", "conf": {"spark.sql.shuffle.partitions": "2"}, "remote": None}
    spark_ahead.start_session_ahead(**settings)
    other = SparkResource(master="local[2]", conf={"spark.sql.shuffle.partitions": "3"})
    assert other._claim_start_ahead() is None
    resource = SparkResource(**settings)
    assert resource.get_session() is spark  # this process's running session, borrowed: not stopped
    assert spark_ahead.claim_session_started_ahead(**settings) is None
    spark_ahead.start_session_ahead(**settings)
    spark_ahead.stop_unclaimed_sessions()  # not owned: the running session stays usable
    assert spark_ahead.claim_session_started_ahead(**settings) is None
    assert spark.range(3).count() == 3


def test_a_released_session_stops_in_the_background_and_teardown_waits_for_it():
    """Once the topic is published, the run releases Spark: a session the run owns stops in a
    background thread (overlapping the table's last batches) and the teardown waits for it; a
    borrowed session (the test session, a notebook's) is never stopped."""
    from fink_pipeline.orchestration.resources import SparkResource

    class Session:
        def __init__(self):
            self.stopping, self.stopped = threading.Event(), threading.Event()

        def stop(self):
            self.stopping.set()
            time.sleep(0.3)
            self.stopped.set()

    resource, owned = SparkResource(), Session()
    resource._session, resource._owned = owned, True
    resource.release()
    assert owned.stopping.wait(5) and resource._session is None
    resource.teardown_after_execution(None)
    assert owned.stopped.is_set()
    borrowed = Session()
    resource._session, resource._owned = borrowed, False
    resource.release()
    resource.teardown_after_execution(None)
    assert not borrowed.stopping.is_set()
