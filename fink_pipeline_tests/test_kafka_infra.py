"""Kafka infrastructure: embedded broker, CLI, topics, credentials/settings, status topic."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import time
import sys
import uuid
from pathlib import Path

import psutil
import pytest
import yaml

from fink_pipeline.kafka.broker import (
    BrokerAlreadyRunning,
    BrokerError,
    EmbeddedBroker,
    broker_binary,
    start_managed,
    status_managed,
    stop_managed,
)
from fink_pipeline.kafka.settings import (
    CredentialsError,
    KafkaSettings,
    credentials_path,
    write_credentials_file,
)
from fink_pipeline.kafka.status import (
    EndRecord,
    FailedRecord,
    ProgressRecord,
    StartRecord,
    StatusWriter,
    TransferStatus,
    read_status,
)
from fink_pipeline.kafka.topics import (
    TopicMismatch,
    delete_topic,
    ensure_topic,
    list_topics,
    topic_config,
    topic_exists,
    partition_count,
)
from fink_pipeline.kafka.wire import status_topic

CLI = Path(sys.executable).with_name("fink-pipeline")
SECRET = "s3cr3t-Pa55"


def _unique(prefix: str = "ftransfer_test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _gone(pid: int) -> bool:
    """True when `pid` no longer runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _tansu_pids_for(address: str) -> list[int]:
    """Live tansu processes listening (per their command line) on `address`."""
    pids = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "tansu" in cmd and address in cmd and not _gone(proc.pid):
            pids.append(proc.pid)
    return pids


def _cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------------------------
# embedded broker


def test_broker_binary_is_executable():
    path = broker_binary()
    assert os.path.isfile(path) and os.access(path, os.X_OK)


@pytest.mark.kafka
def test_embedded_broker_start_stop_leaves_no_process():
    broker = EmbeddedBroker()
    address = broker.start()
    pid = broker.pid
    try:
        assert address.startswith("127.0.0.1:")
        assert broker.is_running() and not _gone(pid)
        assert "tansu" in " ".join(psutil.Process(pid).cmdline())
        assert broker.startup_seconds is not None and broker.startup_seconds < 10
        # A real Kafka request works against it.
        assert topic_exists(KafkaSettings(bootstrap_servers=address), "nothing_here") is False
    finally:
        broker.stop()
    assert _gone(pid)
    assert not _tansu_pids_for(address)
    broker.stop()  # idempotent


@pytest.mark.kafka
def test_embedded_broker_context_manager_and_busy_port():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port}"):
            EmbeddedBroker().start(port=port)
    with EmbeddedBroker() as broker:
        pid = broker.pid
        assert broker.is_running()
    assert _gone(pid)


@pytest.mark.kafka
def test_managed_broker_refuses_to_start_twice(tmp_path):
    address = start_managed(tmp_path)
    try:
        state = json.loads((tmp_path / "broker.json").read_text())
        assert state["address"] == address
        assert Path(state["log"]).exists()
        assert status_managed(tmp_path) == address
        with pytest.raises(BrokerAlreadyRunning, match=address) as info:
            start_managed(tmp_path)
        assert info.value.address == address
    finally:
        assert stop_managed(tmp_path) is True
    assert _gone(state["pid"])
    assert status_managed(tmp_path) is None
    assert not (tmp_path / "broker.json").exists()
    assert stop_managed(tmp_path) is False


@pytest.mark.kafka
def test_managed_broker_cleans_stale_state(tmp_path):
    # A recorded pid that is alive but not a tansu process (this test process): stale.
    (tmp_path / "broker.json").write_text(
        json.dumps({"pid": os.getpid(), "address": "127.0.0.1:1", "log": "x"})
    )
    assert status_managed(tmp_path) is None
    address = start_managed(tmp_path)
    try:
        assert address != "127.0.0.1:1"
        assert status_managed(tmp_path) == address
    finally:
        stop_managed(tmp_path)
    # Unreadable state is treated as absent.
    (tmp_path / "broker.json").write_text("{not json")
    assert status_managed(tmp_path) is None
    assert stop_managed(tmp_path) is False


@pytest.mark.kafka
def test_cli_broker_start_status_stop_and_register(tmp_path):
    env = dict(os.environ)
    env["FINK_PIPELINE_HOME"] = str(tmp_path / "home")
    env["FINK_CLIENT_HOME"] = str(tmp_path / "finkclient")
    env.pop("FINK_KAFKA_PASSWORD", None)

    status = _cli("broker", "status", env=env)
    assert status.returncode == 1
    assert status.stdout == "" and status.stderr.strip() == "not running"

    start = _cli("broker", "start", env=env)
    assert start.returncode == 0, start.stderr
    address = start.stdout.strip()
    host, port = address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    try:
        # The broker outlived the CLI process that started it.
        pid = json.loads((tmp_path / "home" / "broker.json").read_text())["pid"]
        assert not _gone(pid)

        again = _cli("broker", "start", env=env)
        assert again.returncode != 0
        assert "already running" in again.stderr and address in again.stderr

        status = _cli("broker", "status", env=env)
        assert status.returncode == 0
        assert status.stdout == f"{address}\n"

        # register without --servers picks the running broker.
        reg = _cli("register", "--survey", "ztf", "--username", "alice", env=env)
        assert reg.returncode == 0, reg.stderr
        creds = tmp_path / "finkclient" / "ztf_credentials.yml"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        data = yaml.safe_load(creds.read_text())
        assert data["servers"] == address
        assert data["username"] == "alice" and data["password"] is None
        assert data["group_id"] == "alice_ztf"
    finally:
        stop = _cli("broker", "stop", env=env)
    assert stop.returncode == 0, stop.stderr
    assert _gone(pid)
    assert not _tansu_pids_for(address)
    status = _cli("broker", "status", env=env)
    assert status.returncode == 1 and status.stderr.strip() == "not running"

    # No broker, no --servers: one clear line, exit 2.
    reg = _cli("register", "--survey", "ztf", env=env)
    assert reg.returncode == 2
    assert reg.stderr.startswith("error: no --servers given")


def test_cli_register_password_from_env(tmp_path):
    env = dict(os.environ)
    env["FINK_CLIENT_HOME"] = str(tmp_path)
    env["FINK_PIPELINE_HOME"] = str(tmp_path / "home")
    env["FINK_KAFKA_PASSWORD"] = SECRET
    target = tmp_path / "custom" / "creds.yml"
    reg = _cli(
        "register", "--survey", "lsst", "--servers", "kafka.example.org:24499",
        "--username", "bob", "--group-id", "bob_group", "--maxtimeout", "30",
        "--path", str(target), env=env,
    )
    assert reg.returncode == 0, reg.stderr
    assert SECRET not in reg.stdout + reg.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    settings = KafkaSettings.from_credentials_file(target)
    assert settings.bootstrap_servers == "kafka.example.org:24499"
    assert settings.sasl_password.get_secret_value() == SECRET
    assert settings.group_id == "bob_group"
    assert yaml.safe_load(target.read_text())["maxtimeout"] == 30


# --------------------------------------------------------------------------------------------
# topics


@pytest.mark.kafka
def test_ensure_topic_creates_with_partitions_and_retention(kafka_settings):
    name = _unique()
    assert ensure_topic(kafka_settings, name, partitions=10, retention_ms=3_600_000) is True
    assert ensure_topic(kafka_settings, name, partitions=10) is False  # verified, not recreated
    assert partition_count(kafka_settings, name) == 10
    config = topic_config(kafka_settings, name)
    assert config["retention.ms"] == "3600000"
    assert config["compression.type"] == "lz4"
    with pytest.raises(TopicMismatch, match="10 partitions"):
        ensure_topic(kafka_settings, name, partitions=3)
    assert name in list_topics(kafka_settings, prefix="ftransfer_test_")
    listed = list_topics(kafka_settings, "ftransfer_test_")
    assert all(t.startswith("ftransfer_test_") for t in listed)
    assert topic_exists(kafka_settings, name)
    assert delete_topic(kafka_settings, name) is True
    assert not topic_exists(kafka_settings, name)
    assert delete_topic(kafka_settings, name) is False


@pytest.mark.kafka
def test_topic_checks_do_not_auto_create(kafka_settings):
    name = _unique("missing")
    assert topic_exists(kafka_settings, name) is False
    assert partition_count(kafka_settings, name) is None
    assert name not in list_topics(kafka_settings)
    with pytest.raises(ValueError, match="invalid Kafka topic name"):
        ensure_topic(kafka_settings, "bad name/with spaces")


# --------------------------------------------------------------------------------------------
# settings and credentials


def test_credentials_round_trip_mode_0600(tmp_path, monkeypatch):
    monkeypatch.setenv("FINK_CLIENT_HOME", str(tmp_path / "fc"))
    path = credentials_path("ztf")
    assert path == tmp_path / "fc" / "ztf_credentials.yml"
    old_umask = os.umask(0)  # the most permissive umask must not matter
    try:
        written = write_credentials_file(
            servers="127.0.0.1:9092,127.0.0.1:9093", username="alice", password=SECRET,
            group_id="alice_ztf", survey="ztf", mytopics=["a"], maxtimeout=5,
        )
    finally:
        os.umask(old_umask)
    assert written == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    data = yaml.safe_load(path.read_text())
    for key in ("username", "password", "group_id", "mytopics", "servers", "maxtimeout"):
        assert key in data
    settings = KafkaSettings.from_credentials_file(survey="ztf")
    assert settings.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9093"
    assert settings.security_protocol == "SASL_PLAINTEXT"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"  # what fink-client uses
    assert settings.sasl_username == "alice"
    assert settings.sasl_password.get_secret_value() == SECRET
    assert settings.group_id == "alice_ztf"
    config = settings.librdkafka_config()
    assert config["sasl.password"] == SECRET and config["sasl.username"] == "alice"
    assert settings.consumer_config()["group.id"] == "alice_ztf"
    # Overwriting an existing, too-open file leaves a 0600 file.
    path.chmod(0o644)
    write_credentials_file(path, servers="h:1", username="u", password=SECRET)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_credentials_file_created_0600_from_the_start(tmp_path, monkeypatch):
    calls = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        calls.append((str(path), flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    target = tmp_path / "c.yml"
    write_credentials_file(target, servers="h:1", password=SECRET)
    monkeypatch.undo()
    created = [c for c in calls if c[1] & os.O_CREAT]
    assert created, "the file must be created through os.open with an explicit mode"
    assert all(mode == 0o600 and flags & os.O_EXCL for _, flags, mode in created)


def test_credentials_refused_when_group_or_world_readable(tmp_path):
    path = tmp_path / "ztf_credentials.yml"
    write_credentials_file(path, servers="h:1", username="u", password=SECRET)
    path.chmod(0o644)
    with pytest.raises(CredentialsError) as info:
        KafkaSettings.from_credentials_file(path)
    message = str(info.value)
    assert str(path) in message and f"chmod 600 {path}" in message and "0644" in message
    assert SECRET not in message
    # Without a password the mode does not matter (nothing secret in the file).
    write_credentials_file(path, servers="h:1", username="u", password=None)
    path.chmod(0o644)
    settings = KafkaSettings.from_credentials_file(path)
    assert settings.security_protocol == "PLAINTEXT" and settings.sasl_password is None
    with pytest.raises(CredentialsError, match="no credentials file"):
        KafkaSettings.from_credentials_file(tmp_path / "absent.yml")


def test_reads_fink_client_written_file(tmp_path):
    # As fink-client's fink_client_register writes it (yaml.dump of its dict, `groupid` variant).
    path = tmp_path / "ztf_credentials.yml"
    path.write_text(
        "groupid: carol_g\nmaxtimeout: 10\nmytopics: []\npassword: null\n"
        "servers: kafka-ztf.fink-broker.org:24499\nsurvey: ztf\nusername: carol\n"
    )
    settings = KafkaSettings.from_credentials_file(path)
    assert settings.group_id == "carol_g"
    assert settings.bootstrap_servers == "kafka-ztf.fink-broker.org:24499"


def test_secret_never_shown():
    settings = KafkaSettings(
        bootstrap_servers="h:1", security_protocol="sasl_ssl", sasl_mechanism="scram-sha-256",
        sasl_username="u", sasl_password=SECRET,
    )
    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-256"
    for text in (repr(settings), str(settings), settings.model_dump_json(), f"{settings}"):
        assert SECRET not in text
    assert SECRET not in str(settings.model_dump())
    assert settings.librdkafka_config()["sasl.password"] == SECRET
    # A validation error does not echo the password either.
    with pytest.raises(ValueError) as info:
        KafkaSettings(bootstrap_servers="h:1", security_protocol="SASL_SSL", sasl_password=SECRET)
    assert SECRET not in str(info.value)
    with pytest.raises(ValueError, match="looks secret"):
        KafkaSettings(bootstrap_servers="h:1", extra={"ssl.key.password": SECRET})
    with pytest.raises(ValueError, match="not host:port"):
        KafkaSettings(bootstrap_servers="localhost")


def test_settings_from_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("FINK_KAFKA_"):
            monkeypatch.delenv(name)
    with pytest.raises(ValueError, match="FINK_KAFKA_BOOTSTRAP_SERVERS"):
        KafkaSettings.from_env()
    monkeypatch.setenv("FINK_KAFKA_BOOTSTRAP_SERVERS", "a:1,b:2")
    assert KafkaSettings.from_env().librdkafka_config() == {
        "bootstrap.servers": "a:1,b:2", "security.protocol": "PLAINTEXT",
    }
    monkeypatch.setenv("FINK_KAFKA_USERNAME", "u")
    monkeypatch.setenv("FINK_KAFKA_PASSWORD", SECRET)
    monkeypatch.setenv("FINK_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("FINK_KAFKA_OPT_SOCKET_TIMEOUT_MS", "5000")
    settings = KafkaSettings.from_env()
    config = settings.librdkafka_config()
    assert config["security.protocol"] == "SASL_PLAINTEXT"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.password"] == SECRET
    assert config["socket.timeout.ms"] == "5000"
    assert SECRET not in repr(settings)


# --------------------------------------------------------------------------------------------
# status topic


@pytest.mark.kafka
def test_status_round_trip_finished(kafka_settings):
    topic = _unique()
    assert read_status(kafka_settings, topic).state == "unknown"  # no status topic at all
    with StatusWriter(kafka_settings, topic) as writer:
        assert partition_count(kafka_settings, status_topic(topic)) == 1
        assert read_status(kafka_settings, topic).state == "unknown"  # topic, no record
        first = writer.start("req-1", partitions=10, schema_fingerprint="fp1", expected_total=60)
        assert first == 0
        offsets = {0: (12, 11), 1: {"count": 8, "last_offset": 7}}  # both accepted forms
        writer.append(ProgressRecord(spark_partition=0, produced=20, partitions=offsets, request_id="req-1"))
        writer.append(ProgressRecord(spark_partition=1, produced=20, partitions={0: (10, 21), 1: (10, 17)},
                                     request_id="req-1"))
        writer.append(ProgressRecord(spark_partition=2, produced=19, partitions={0: (19, 40)}, attempt=0,
                                     request_id="req-1"))
        writer.append(ProgressRecord(spark_partition=2, produced=20, partitions={0: (20, 41)}, attempt=1,
                                     request_id="req-1"))  # task retry
        writer.append(ProgressRecord(spark_partition=5, produced=99, partitions={0: (99, 99)},
                                     request_id="an-old-request"))  # ignored

        running = read_status(kafka_settings, topic, timeout_s=5)
        assert running.state == "running"
        assert running.request_id == "req-1" and running.schema_fingerprint == "fp1"
        assert running.partitions == 10 and running.expected_total == 60
        assert running.completed_spark_partitions == {0, 1, 2}
        assert running.produced == 60  # the retry's count replaces the first attempt's
        assert running.ignored_records == 1 and running.records == 6
        assert running.final_offsets == {} and running.total is None

        writer.end(
            "req-1", total=60, partitions={0: (42, 41), 1: (18, 17)}, schema_fingerprint="fp1"
        )
    status = read_status(kafka_settings, topic)
    assert status.state == "finished"
    assert status.total == 60
    assert {p: (o.count, o.last_offset) for p, o in status.final_offsets.items()} == {
        0: (42, 41), 1: (18, 17),
    }
    assert status.finished_at is not None and status.started_at <= status.finished_at
    assert status.completed_spark_partitions == {0, 1, 2}


@pytest.mark.kafka
def test_status_failed_and_restart(kafka_settings):
    topic = _unique()
    with StatusWriter(kafka_settings, topic) as writer:
        writer.start("req-A", partitions=10, schema_fingerprint="fp")
        writer.append(ProgressRecord(spark_partition=0, produced=5, partitions={3: (5, 4)}, request_id="req-A"))
        writer.failed(RuntimeError("executor lost"), request_id="req-A")
        failed = read_status(kafka_settings, topic)
        assert failed.state == "failed"
        assert failed.error == "RuntimeError: executor lost"
        assert failed.completed_spark_partitions == {0}

        # Same request resumed: completed Spark partitions are kept (they can be skipped).
        writer.start("req-A", partitions=10, schema_fingerprint="fp")
        resumed = read_status(kafka_settings, topic)
        assert resumed.state == "running" and resumed.error is None
        assert resumed.completed_spark_partitions == {0}

        # Another request on the same topic starts from scratch.
        writer.start("req-B", partitions=10, schema_fingerprint="fp2")
        other = read_status(kafka_settings, topic)
        assert other.request_id == "req-B" and other.completed_spark_partitions == set()


def test_status_records_json_and_summary_rules():
    record = ProgressRecord(
        spark_partition=3, produced=7, partitions={"1": {"count": 7, "last_offset": 6}}
    )
    assert record.partitions[1].last_offset == 6
    decoded = ProgressRecord.model_validate_json(record.model_dump_json())
    assert decoded == record
    long_error = FailedRecord(error="x" * 50_000)
    assert len(long_error.error) <= 20_000
    summary = TransferStatus(topic="t")
    # Progress without a start record (the start was lost): still "running".
    summary.apply(ProgressRecord(spark_partition=0, produced=1))
    assert summary.state == "running"
    summary.apply(StartRecord(request_id="r", topic="t", partitions=1, schema_fingerprint="f"))
    assert summary.completed_spark_partitions == set()  # a new request resets
    summary.apply(EndRecord(request_id="r", total=0, schema_fingerprint="f"))
    assert summary.state == "finished" and summary.total == 0


def test_private_broker_dies_with_its_parent():
    """A test run killed by a time-out must not leave its broker running."""
    import subprocess
    import sys

    code = (
        "from fink_pipeline.kafka.broker import EmbeddedBroker; import time; "
        "b = EmbeddedBroker(); b.start(); print(b.pid, flush=True); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    broker_pid = int(parent.stdout.readline())
    assert psutil.pid_exists(broker_pid)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and psutil.pid_exists(broker_pid):
        if psutil.Process(broker_pid).status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.1)
    assert not psutil.pid_exists(broker_pid) or psutil.Process(broker_pid).status() == psutil.STATUS_ZOMBIE
