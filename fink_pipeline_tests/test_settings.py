"""Settings from the environment (pydantic-settings): every variable is one documented field
with one default; bad values and missing required ones are reported by variable name; secrets
never show in a repr or an error."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from fink_pipeline.env import EnvSettingsError
from fink_pipeline.kafka.defaults import DEFAULT_COMPRESSION, DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS
from fink_pipeline.kafka.options import PublishOptions
from fink_pipeline.kafka.settings import KafkaEnvSettings, KafkaSettings
from fink_pipeline.orchestration.resources import (
    KafkaResource,
    local_resources,
    production_resources,
    resources_for,
)
from fink_pipeline.orchestration.settings import PRODUCTION_ENV, REQUIRED_PRODUCTION_ENV, DeploymentSettings

SECRET = "pw-never-shown-4711"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("FINK_") and name != "FINK_PIPELINE_HOME":
            monkeypatch.delenv(name)


def test_defaults_are_written_once():
    env = KafkaEnvSettings.load()
    assert (env.partitions, env.retention_ms) == (DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS) == (10, 7 * 24 * 3600 * 1000)
    options, resource = PublishOptions(), KafkaResource()
    assert (options.partitions, options.retention_ms, options.compression) == (
        DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS, DEFAULT_COMPRESSION)
    assert resource.publish_options() == options
    deployment = DeploymentSettings.load()
    assert deployment.deployment == "local" and deployment.spark_master is None and deployment.spark_conf == {}


def test_kafka_variables(monkeypatch):
    monkeypatch.setenv("FINK_KAFKA_BOOTSTRAP_SERVERS", " a:1, b:2 ")
    monkeypatch.setenv("FINK_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("FINK_KAFKA_SASL_MECHANISM", "scram_sha_256")
    monkeypatch.setenv("FINK_KAFKA_SASL_USERNAME", "alice")
    monkeypatch.setenv("FINK_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("FINK_KAFKA_GROUP_ID", "g1")
    monkeypatch.setenv("FINK_KAFKA_PARTITIONS", "4")
    monkeypatch.setenv("FINK_KAFKA_RETENTION_MS", "3600000")
    monkeypatch.setenv("FINK_KAFKA_OPT_SOCKET_TIMEOUT_MS", "5000")
    env = KafkaEnvSettings.load()
    assert (env.partitions, env.retention_ms) == (4, 3600000)
    config = env.connection().consumer_config()
    assert config["bootstrap.servers"] == "a:1,b:2" and config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-256" and config["sasl.username"] == "alice"
    assert config["sasl.password"] == SECRET and config["group.id"] == "g1"
    assert config["socket.timeout.ms"] == "5000"
    # production reads the same variables; the password only as an EnvVar
    kafka = production_resources()["kafka"]
    assert (kafka.partitions, kafka.retention_ms, kafka.security_protocol, kafka.sasl_username) == (
        4, 3600000, "sasl_ssl", "alice")
    assert isinstance(kafka.sasl_password, dg.EnvVar)


def test_short_names_empty_values_and_defaults_given_in_code(monkeypatch):
    monkeypatch.setenv("FINK_KAFKA_SERVERS", "h:9092")
    monkeypatch.setenv("FINK_KAFKA_USERNAME", "bob")
    monkeypatch.setenv("FINK_KAFKA_PASSWORD", SECRET)
    monkeypatch.setenv("FINK_KAFKA_SASL_MECHANISM", "")  # as compose writes ${X:-}: unset
    settings = KafkaSettings.from_env(group_id="from-code")
    assert settings.security_protocol == "SASL_PLAINTEXT"  # a password alone implies SASL
    assert (settings.sasl_mechanism, settings.sasl_username, settings.group_id) == ("PLAIN", "bob", "from-code")
    monkeypatch.setenv("FINK_KAFKA_GROUP_ID", "from-env")
    assert KafkaSettings.from_env(group_id="from-code").group_id == "from-env"  # the environment wins
    # another prefix, same fields
    monkeypatch.setenv("OTHER_BOOTSTRAP_SERVERS", "o:1")
    monkeypatch.setenv("OTHER_OPT_CLIENT_ID", "me")
    assert KafkaSettings.from_env("OTHER_").librdkafka_config() == {
        "bootstrap.servers": "o:1", "security.protocol": "PLAINTEXT", "client.id": "me"}


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("FINK_KAFKA_PARTITIONS", "ten", "FINK_KAFKA_PARTITIONS: Input should be a valid integer"),
        ("FINK_KAFKA_PARTITIONS", "0", "FINK_KAFKA_PARTITIONS: Input should be greater than 0"),
        ("FINK_KAFKA_RETENTION_MS", "7d", "FINK_KAFKA_RETENTION_MS: Input should be a valid integer"),
        ("FINK_SPARK_CONF", "{spark.executor.memory: 4g}", "FINK_SPARK_CONF is not valid JSON"),
        ("FINK_ARCHIVE_STORAGE_OPTIONS", '["endpoint"]', "FINK_ARCHIVE_STORAGE_OPTIONS must be a JSON object, got list"),
        ("FINK_TABLE_STORAGE_OPTIONS", "{endpoint: x", "FINK_TABLE_STORAGE_OPTIONS is not valid JSON"),
        ("FINK_DEPLOYMENT", "staging", "FINK_DEPLOYMENT='staging': choose one of local, production"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(EnvSettingsError, match=message):
        production_resources()
    with pytest.raises(ValueError, match=message):
        resources_for()


def test_kafka_connection_errors_name_the_variable(monkeypatch):
    with pytest.raises(EnvSettingsError, match="set FINK_KAFKA_BOOTSTRAP_SERVERS to the Kafka host:port list"):
        KafkaSettings.from_env()
    monkeypatch.setenv("FINK_KAFKA_BOOTSTRAP_SERVERS", "localhost")
    with pytest.raises(EnvSettingsError, match="FINK_KAFKA_BOOTSTRAP_SERVERS: .*not host:port"):
        KafkaSettings.from_env()
    monkeypatch.setenv("FINK_KAFKA_BOOTSTRAP_SERVERS", "h:1")
    monkeypatch.setenv("FINK_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FINK_KAFKA_SASL_PASSWORD", SECRET)
    with pytest.raises(EnvSettingsError, match="needs sasl_username and sasl_password") as info:
        KafkaSettings.from_env()
    assert SECRET not in str(info.value)


def test_secrets_never_in_repr_or_errors(monkeypatch):
    monkeypatch.setenv("FINK_KAFKA_BOOTSTRAP_SERVERS", "h:1")
    monkeypatch.setenv("FINK_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("FINK_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("FINK_KAFKA_PASSWORD", SECRET)
    env = KafkaEnvSettings.load()
    for text in (repr(env), str(env), env.model_dump_json(), repr(env.connection()), repr(production_resources())):
        assert SECRET not in text
    monkeypatch.setenv("FINK_KAFKA_PARTITIONS", "x")  # an error lists no value at all
    with pytest.raises(EnvSettingsError) as info:
        KafkaEnvSettings.load()
    assert SECRET not in str(info.value)


def test_a_missing_required_production_variable_fails_naming_it(monkeypatch):
    """Required variables are Dagster EnvVars: the code location loads without them, and the run
    that needs one fails naming it."""
    resources = production_resources()
    for key in ("archive", "tables", "requests", "standing", "spark", "kafka"):
        with pytest.raises(Exception, match=r'environment variable "FINK_\w+" which is not set'):
            with dg.build_resources({key: resources[key]}):
                pass
    monkeypatch.setenv("FINK_ARCHIVE_ROOT", "/data/archive")
    with dg.build_resources({"archive": production_resources()["archive"]}) as built:
        assert built.archive.uri == "/data/archive"


def test_local_resources_read_the_same_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("FINK_SPARK_MASTER", "local[2]")
    monkeypatch.setenv("FINK_KAFKA_BOOTSTRAP_SERVERS", "k:9092")
    monkeypatch.setenv("FINK_TABLE_ROOT", str(tmp_path / "t"))
    resources = local_resources()
    assert resources["spark"].master == "local[2]" and resources["kafka"].bootstrap_servers == "k:9092"
    assert resources["tables"].uri == str(tmp_path / "t") and resources["archive"].root is None
    monkeypatch.delenv("FINK_SPARK_MASTER")
    assert local_resources()["spark"].master == "local[*]"


def test_every_production_variable_is_documented():
    assert REQUIRED_PRODUCTION_ENV == [
        "FINK_SPARK_MASTER", "FINK_ARCHIVE_ROOT", "FINK_TABLE_ROOT", "FINK_REQUEST_ROOT", "FINK_STANDING_ROOT",
        "FINK_KAFKA_BOOTSTRAP_SERVERS",
    ]
    assert {"FINK_SPARK_CONF", "FINK_ARCHIVE_STORAGE_OPTIONS", "FINK_TABLE_STORAGE_OPTIONS",
            "FINK_KAFKA_SECURITY_PROTOCOL", "FINK_KAFKA_SASL_MECHANISM", "FINK_KAFKA_SASL_USERNAME",
            "FINK_KAFKA_SASL_PASSWORD", "FINK_KAFKA_PARTITIONS", "FINK_KAFKA_RETENTION_MS"} <= set(PRODUCTION_ENV)
    assert all(len(text) > 8 for text in PRODUCTION_ENV.values())
    for cls in (DeploymentSettings, KafkaEnvSettings):
        assert all(info.description for info in cls.model_fields.values()), cls
    assert "FINK_KAFKA_OPT_<NAME>" in KafkaEnvSettings.env_doc()


@pytest.mark.spark
def test_a_running_session_is_borrowed_not_owned(spark):
    from fink_pipeline.spark import open_spark_session

    session, owned = open_spark_session("local[2]", "borrower")
    assert session.sparkContext is spark.sparkContext and owned is False


def test_state_and_client_homes(monkeypatch, tmp_path):
    from pathlib import Path

    from fink_pipeline import paths
    from fink_pipeline.kafka.settings import credentials_path

    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path / "state"))
    assert paths.state_dir() == (tmp_path / "state").resolve() and (tmp_path / "state").is_dir()
    monkeypatch.setenv("FINK_CLIENT_HOME", "   ")  # blank: unset
    assert credentials_path("ztf") == Path.home() / ".finkclient" / "ztf_credentials.yml"
    monkeypatch.setenv("FINK_CLIENT_HOME", str(tmp_path / "client"))
    assert credentials_path("lsst") == tmp_path / "client" / "lsst_credentials.yml"
