"""docker/compose.yaml cannot run here (no Docker engine): check that it agrees with the Python
configuration instead: images, ports, environment variables, the code location and storage."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml

from fink_pipeline.orchestration.resources import PRODUCTION_ENV, REQUIRED_PRODUCTION_ENV, STORAGE_CREDENTIAL_ENV

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
PROJECT_SERVICES = ("spark-master", "spark-worker", "fink-code-server", "dagster-webserver", "dagster-daemon")
DAGSTER_SERVICES = ("fink-code-server", "dagster-webserver", "dagster-daemon")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _port_after(command: list[str], flag: str) -> int:
    return int(command[command.index(flag) + 1])


def _default(value: str) -> str:
    """The value compose would use when the variable is unset: `${X:-default}` -> default."""
    match = re.fullmatch(r"\$\{(\w+):-([^}]*)\}", str(value))
    return match.group(2) if match else str(value)


def test_services_and_images(services):
    assert set(services) == {"postgres", "kafka", *PROJECT_SERVICES}
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["postgres"]["image"].startswith("postgres:")
    for name in PROJECT_SERVICES:
        assert services[name]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}, name
        assert services[name]["image"] == "fink-pipeline:latest"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    # the image installs the versions the suite passed with (constraints.txt), and Java for Spark
    assert 'pip install -c constraints.txt ".[production]"' in dockerfile and "openjdk-17" in dockerfile
    assert "COPY pyproject.toml README.md constraints.txt" in dockerfile
    assert "COPY docker/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in dockerfile
    # the production extra brings the dagster-postgres paired with the pinned dagster
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dagster_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("dagster=="))
    postgres_pin = next(d for d in pyproject["project"]["optional-dependencies"]["production"]
                        if d.startswith("dagster-postgres=="))
    minor, patch = dagster_pin.split("==")[1].split(".")[1:]
    assert postgres_pin == f"dagster-postgres==0.{int(minor) + 16}.{patch}"


def test_kafka_runs_kraft_without_auto_created_topics(services):
    env = services["kafka"]["environment"]
    assert "controller" in env["KAFKA_PROCESS_ROLES"] and "zookeeper" not in str(services).lower()
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == 1  # transactions on one broker
    code_env = services["fink-code-server"]["environment"]
    host, port = code_env["FINK_KAFKA_BOOTSTRAP_SERVERS"].split(":")
    assert f"PLAINTEXT://{host}:{port}" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert services["kafka"]["hostname"] == host


def test_spark_master_url_matches_the_master_service(services):
    master = services["fink-code-server"]["environment"]["FINK_SPARK_MASTER"]
    host, port = re.fullmatch(r"spark://([\w-]+):(\d+)", master).groups()
    assert host in services and _port_after(services[host]["command"], "--port") == int(port)
    assert master in services["spark-worker"]["command"]


def test_code_server_environment_matches_production_resources(services):
    env = services["fink-code-server"]["environment"]
    assert env["FINK_DEPLOYMENT"] == "production"
    missing = [name for name in REQUIRED_PRODUCTION_ENV if not _default(env.get(name, ""))]
    assert missing == []
    unknown = [name for name in env if name.startswith("FINK_") and name not in PRODUCTION_ENV
               and name not in ("FINK_DEPLOYMENT", "FINK_PIPELINE_HOME")]
    assert unknown == []  # a typo here would silently fall back to a default
    # the secret is never written in the file: it comes from the caller's environment
    assert env["FINK_KAFKA_SASL_PASSWORD"] == "${FINK_KAFKA_SASL_PASSWORD:-}"
    # executors (spark-worker) see the archive and tables at the same paths as the driver
    mounts = {m.split(":")[0]: m.split(":")[1] for m in services["fink-code-server"]["volumes"]}
    worker_mounts = {m.split(":")[0]: m.split(":")[1] for m in services["spark-worker"]["volumes"]}
    data = mounts["fink-data"]
    assert worker_mounts["fink-data"] == data
    for name in ("FINK_ARCHIVE_ROOT", "FINK_TABLE_ROOT", "FINK_REQUEST_ROOT", "FINK_STANDING_ROOT"):
        assert _default(env[name]).startswith(data + "/"), name
    import json

    conf = json.loads(env["FINK_SPARK_CONF"])
    assert conf["spark.driver.host"] == services["fink-code-server"]["hostname"]


def test_code_location_is_the_same_everywhere(services):
    grpc = yaml.safe_load((DOCKER / "workspace.yaml").read_text())["load_from"][0]["grpc_server"]
    local = yaml.safe_load((ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert grpc["location_name"] == local["location_name"] == pyproject["tool"]["dagster"]["code_location_name"]
    command = services["fink-code-server"]["command"]
    assert grpc["host"] == services["fink-code-server"]["hostname"]
    assert _port_after(command, "-p") == grpc["port"]
    assert command[command.index("-m") + 1] == local["module_name"] == "fink_pipeline.definitions"
    assert command[command.index("--location-name") + 1] == grpc["location_name"]
    for name in ("dagster-webserver", "dagster-daemon"):
        assert _port_after(services["dagster-webserver"]["command"], "-p") == 3000
        assert services[name]["command"][-1] == "/opt/dagster/app/workspace.yaml"
    assert "3000:3000" in services["dagster-webserver"]["ports"]


def test_instance_storage_is_the_compose_postgres(services, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config

    instance = yaml.safe_load((DOCKER / "dagster.yaml").read_text())
    db = instance["storage"]["postgres"]["postgres_db"]
    names = {key: db[key]["env"] for key in ("hostname", "username", "password", "db_name")}
    postgres_env = services["postgres"]["environment"]
    for service in DAGSTER_SERVICES:
        env = services[service]["environment"]
        assert set(names.values()) <= set(env), service
        assert env[names["hostname"]] == "postgres"
        assert env[names["username"]] == postgres_env["POSTGRES_USER"]
        assert env[names["db_name"]] == postgres_env["POSTGRES_DB"]
        assert env[names["password"]] == postgres_env["POSTGRES_PASSWORD"]
        assert "dagster-storage:/opt/dagster/storage" in services[service]["volumes"]
    assert db["port"] == 5432
    # the file is a valid Dagster instance configuration
    for name in names.values():
        monkeypatch.setenv(name, "x")
    config, _ = dagster_instance_config(str(DOCKER), "dagster.yaml")
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "run_queue" not in config  # incompatible with concurrency.runs (dagster notes, gotcha 1)


# services whose processes read the pipeline's settings (the webserver and daemon only talk to
# the code server) and, for the executors, the object-store credentials
CODE_SERVICES = ("fink-code-server",)


def test_compose_sets_every_variable_production_reads_and_nothing_else(services):
    """One to one: each variable of PRODUCTION_ENV (settings fields and object-store
    credentials) is set for the code server; every FINK_ variable of any service is one the
    settings know; secrets are only references to the caller's environment."""
    for service in CODE_SERVICES:
        env = services[service]["environment"]
        assert sorted(set(PRODUCTION_ENV) - set(env)) == [], service
    for name, service in services.items():
        env = service.get("environment") or {}
        unknown = [v for v in env if v.startswith("FINK_") and v not in PRODUCTION_ENV
                   and v not in ("FINK_DEPLOYMENT", "FINK_PIPELINE_HOME")]
        assert unknown == [], name
    for name in STORAGE_CREDENTIAL_ENV:  # the executors (S3A, Arrow tasks) need them too
        for service in (*CODE_SERVICES, "spark-worker"):
            assert services[service]["environment"][name] == f"${{{name}:-}}", (service, name)
    code = services["fink-code-server"]["environment"]
    for name in ("FINK_ARCHIVE_ROOT", "FINK_TABLE_ROOT", "FINK_ARCHIVE_STORAGE_OPTIONS", "FINK_TABLE_STORAGE_OPTIONS",
                 "FINK_SPARK_REMOTE"):
        assert code[name].startswith(f"${{{name}:-"), name  # the caller's environment chooses


def test_compose_defaults_build_the_production_resources(services, monkeypatch):
    """The code server's environment, as compose resolves it with nothing set by the caller, is
    accepted by the settings classes and gives the production resources the compose values."""
    import dagster as dg

    from fink_pipeline.orchestration.resources import production_resources

    env = {name: _default(value) for name, value in services["fink-code-server"]["environment"].items()}
    for name in (*PRODUCTION_ENV, "FINK_DEPLOYMENT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if value:
            monkeypatch.setenv(name, str(value))
    resources = production_resources()
    assert resources["tables"].root == dg.EnvVar("FINK_TABLE_ROOT")
    assert resources["tables"].storage_options == {} and resources["tables"].secret_access_key is None
    assert resources["kafka"].retention_ms == int(env["FINK_KAFKA_RETENTION_MS"])
    assert resources["kafka"].partitions == int(env["FINK_KAFKA_PARTITIONS"])
    assert resources["spark"].conf["spark.driver.host"] == "fink-code-server"
    # object storage chosen by the caller: options from the JSON variable, keys as EnvVars
    monkeypatch.setenv("FINK_TABLE_STORAGE_OPTIONS", '{"AWS_ENDPOINT_URL": "https://s3.example.org"}')
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    tables = production_resources()["tables"]
    assert tables.storage_options == {"AWS_ENDPOINT_URL": "https://s3.example.org"}
    assert tables.secret_access_key == dg.EnvVar("AWS_SECRET_ACCESS_KEY")
