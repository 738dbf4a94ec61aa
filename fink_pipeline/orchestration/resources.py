"""Configurable resources: Spark, Kafka, archive, tables, submitted and standing requests.

Two deployments, chosen by `$FINK_DEPLOYMENT`:

* `local` (default): local Spark, the managed embedded broker (`fink-pipeline broker start`),
  folders under the state directory (`$FINK_PIPELINE_HOME`, else `./.fink_pipeline`);
* `production`: everything from the environment variables listed in `PRODUCTION_ENV`
  (docker/compose.yaml sets them). Secrets are passed as `dg.EnvVar`, which Dagster resolves
  at run time and shows in the UI by name only, never by value.
"""

from __future__ import annotations

import json
import os
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr, ValidationError

from fink_pipeline import paths
from fink_pipeline.kafka.publish import PublishOptions
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.transfer.standing import StandingStore
from fink_pipeline.transfer.store import RequestStore

DEPLOYMENT_ENV = "FINK_DEPLOYMENT"

# Every variable the production deployment reads, and whether it must be set.
PRODUCTION_ENV: dict[str, str] = {
    "FINK_SPARK_MASTER": "Spark master URL, e.g. spark://spark-master:7077 (required)",
    "FINK_SPARK_CONF": "extra Spark conf as a JSON object (optional)",
    "FINK_KAFKA_BOOTSTRAP_SERVERS": "host:port[,host:port] of the Kafka cluster (required)",
    "FINK_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT, SASL_PLAINTEXT or SASL_SSL (optional)",
    "FINK_KAFKA_SASL_MECHANISM": "PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (optional)",
    "FINK_KAFKA_SASL_USERNAME": "SASL user (optional)",
    "FINK_KAFKA_SASL_PASSWORD": "SASL password, read at run time only (optional)",
    "FINK_KAFKA_PARTITIONS": "partitions of a transfer topic (optional, default 10)",
    "FINK_KAFKA_RETENTION_MS": "retention of transfer topics (optional, default 7 days)",
    "FINK_ARCHIVE_ROOT": "alert archive root: a path or an object-store URI (required)",
    "FINK_ARCHIVE_STORAGE_OPTIONS": "object-store options as a JSON object, no secrets (optional)",
    "FINK_TABLE_ROOT": "root of the transfer tables: a path or an object-store URI (required)",
    "FINK_TABLE_STORAGE_OPTIONS": "object-store options as a JSON object, no secrets (optional)",
    "FINK_REQUEST_ROOT": "folder of submitted requests, shared by all services (required)",
    "FINK_STANDING_ROOT": "folder of standing requests, shared by all services (required)",
}
REQUIRED_PRODUCTION_ENV = [name for name, text in PRODUCTION_ENV.items() if text.endswith("(required)")]


class SparkResource(dg.ConfigurableResource):
    """A SparkSession created on first use and stopped when the run's steps are done."""

    master: str = Field(default="local[*]", description="Spark master URL (local[*], spark://host:7077, ...)")
    app_name: str = Field(default="fink-pipeline", description="Application name shown by Spark")
    conf: dict[str, str] = Field(default={}, description="Extra Spark configuration (overrides the defaults)")

    _session: Any = PrivateAttr(default=None)
    _owned: bool = PrivateAttr(default=False)

    def get_session(self):
        """The session (created lazily: steps that do not need Spark do not pay for a JVM)."""
        if self._session is None:
            from pyspark import SparkContext

            from fink_pipeline.spark import build_spark_session

            # A session already running in this process (tests, notebooks) is borrowed, not owned.
            self._owned = SparkContext._active_spark_context is None
            self._session = build_spark_session(self.master, self.app_name, self.conf)
        return self._session

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._session is not None and self._owned:
            self._session.stop()
        self._session = None


class KafkaResource(dg.ConfigurableResource):
    """Kafka connection and topic defaults. Without bootstrap servers: the managed embedded broker."""

    bootstrap_servers: str | None = Field(
        default=None, description="host:port[,...]; empty = the managed embedded broker of the state dir"
    )
    security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str = Field(default="PLAIN", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    sasl_username: str | None = None
    sasl_password: str | None = Field(default=None, description="Give it as an EnvVar, never as a value")
    partitions: int = Field(default=10, description="Partitions of a transfer topic (fink-client assumes 10)")
    retention_ms: int = Field(default=7 * 24 * 3600 * 1000, description="Retention of transfer topics")
    compression: str = Field(default="lz4", description="Producer and topic compression")

    def bootstrap(self) -> str | None:
        """The configured servers, else the managed embedded broker's address, else None."""
        if self.bootstrap_servers:
            return self.bootstrap_servers
        from fink_pipeline.kafka.broker import status_managed

        return status_managed(paths.state_dir())

    def settings(self) -> KafkaSettings:
        """Connection settings; a clear, non-retried failure when none is configured or valid."""
        servers = self.bootstrap()
        if not servers:
            raise dg.Failure(
                description="no Kafka configured: start the embedded broker with `fink-pipeline broker start` "
                "or set bootstrap_servers (FINK_KAFKA_BOOTSTRAP_SERVERS in production)",
                allow_retries=False,
            )
        try:
            return KafkaSettings(
                bootstrap_servers=servers,
                security_protocol=self.security_protocol,
                sasl_mechanism=self.sasl_mechanism,
                sasl_username=self.sasl_username,
                sasl_password=self.sasl_password,
            )
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'kafka'}: {e['msg']}" for e in exc.errors())
            raise dg.Failure(description=f"invalid Kafka resource configuration: {problems}",
                             allow_retries=False) from None

    def publish_options(self) -> PublishOptions:
        """Topic and producer settings of a publication."""
        return PublishOptions(partitions=self.partitions, retention_ms=self.retention_ms,
                              compression=self.compression)


class ArchiveResource(dg.ConfigurableResource):
    """Where the alert archive lives (local path or object-store URI)."""

    root: str | None = Field(default=None, description="Archive root; empty = <state dir>/archive")
    storage_options: dict[str, str] = Field(
        default={}, description="Object-store options (endpoint, region); credentials come from the environment"
    )

    @property
    def uri(self) -> str:
        return self.root or str(paths.default_archive_root())


class TableResource(dg.ConfigurableResource):
    """Where transfer tables are materialized (Delta, one table per transfer topic)."""

    root: str | None = Field(default=None, description="Table root; empty = <state dir>/tables")
    storage_options: dict[str, str] = Field(
        default={}, description="Object-store options (endpoint, region); credentials come from the environment"
    )

    @property
    def uri(self) -> str:
        return self.root or str(paths.default_table_root())

    def table_uri(self, topic: str) -> str:
        return f"{self.uri.rstrip('/')}/{topic}"

    def options(self) -> dict[str, str] | None:
        """Storage options for deltalake (None when empty: local paths need none)."""
        return dict(self.storage_options) or None


class RequestStoreResource(dg.ConfigurableResource):
    """The folder of submitted requests (one JSON per topic)."""

    root: str | None = Field(default=None, description="Folder; empty = <state dir>/requests")

    def store(self) -> RequestStore:
        return RequestStore(self.root or paths.state_dir() / "requests")


class StandingRequestsResource(dg.ConfigurableResource):
    """The folder of standing requests (one YAML per name), replayed each morning."""

    root: str | None = Field(default=None, description="Folder; empty = <state dir>/standing")
    replay_hour_utc: int = Field(
        default=9, description="Hour (UTC) after which the night just finished is replayed"
    )

    def store(self) -> StandingStore:
        return StandingStore(self.root or paths.state_dir() / "standing")


def _json_env(name: str) -> dict[str, str]:
    """A JSON object from environment variable `name` (empty when unset); clear error otherwise."""
    text = os.environ.get(name, "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid JSON ({exc}); give an object like {{\"key\": \"value\"}}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def _int_env(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r} is not an integer") from None


def _optional_env(name: str) -> str | None:
    return os.environ.get(name) or None


def local_resources() -> dict[str, Any]:
    """Embedded defaults: everything on this machine (a variable may still point elsewhere)."""
    return {
        "spark": SparkResource(master=os.environ.get("FINK_SPARK_MASTER", "local[*]")),
        "kafka": KafkaResource(bootstrap_servers=_optional_env("FINK_KAFKA_BOOTSTRAP_SERVERS")),
        "archive": ArchiveResource(root=_optional_env("FINK_ARCHIVE_ROOT")),
        "tables": TableResource(root=_optional_env("FINK_TABLE_ROOT")),
        "requests": RequestStoreResource(root=_optional_env("FINK_REQUEST_ROOT")),
        "standing": StandingRequestsResource(root=_optional_env("FINK_STANDING_ROOT")),
    }


def production_resources() -> dict[str, Any]:
    """Real services, configured from the environment (see PRODUCTION_ENV and docker/compose.yaml).

    Required variables are passed as `dg.EnvVar` (resolved when a run starts: a missing one
    fails the run naming it); the SASL password is only ever an `EnvVar`.
    """
    password = dg.EnvVar("FINK_KAFKA_SASL_PASSWORD") if os.environ.get("FINK_KAFKA_SASL_PASSWORD") else None
    return {
        "spark": SparkResource(master=dg.EnvVar("FINK_SPARK_MASTER"), conf=_json_env("FINK_SPARK_CONF")),
        "kafka": KafkaResource(
            bootstrap_servers=dg.EnvVar("FINK_KAFKA_BOOTSTRAP_SERVERS"),
            security_protocol=os.environ.get("FINK_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            sasl_mechanism=os.environ.get("FINK_KAFKA_SASL_MECHANISM", "PLAIN"),
            sasl_username=_optional_env("FINK_KAFKA_SASL_USERNAME"),
            sasl_password=password,
            partitions=_int_env("FINK_KAFKA_PARTITIONS", 10),
            retention_ms=_int_env("FINK_KAFKA_RETENTION_MS", 7 * 24 * 3600 * 1000),
        ),
        "archive": ArchiveResource(root=dg.EnvVar("FINK_ARCHIVE_ROOT"),
                                   storage_options=_json_env("FINK_ARCHIVE_STORAGE_OPTIONS")),
        "tables": TableResource(root=dg.EnvVar("FINK_TABLE_ROOT"),
                                storage_options=_json_env("FINK_TABLE_STORAGE_OPTIONS")),
        "requests": RequestStoreResource(root=dg.EnvVar("FINK_REQUEST_ROOT")),
        "standing": StandingRequestsResource(root=dg.EnvVar("FINK_STANDING_ROOT")),
    }


RESOURCES_BY_DEPLOYMENT = {"local": local_resources, "production": production_resources}


def resources_for(deployment: str | None = None) -> dict[str, Any]:
    """Resources of `deployment` (default: $FINK_DEPLOYMENT, else local)."""
    name = deployment or os.environ.get(DEPLOYMENT_ENV, "local")
    if name not in RESOURCES_BY_DEPLOYMENT:
        raise ValueError(f"{DEPLOYMENT_ENV}={name!r}: choose one of {', '.join(RESOURCES_BY_DEPLOYMENT)}")
    return RESOURCES_BY_DEPLOYMENT[name]()
