"""Configurable resources: Spark, Kafka, archive, tables and request store.

`local` uses the embedded defaults (local Spark, the managed embedded broker, folders under
the state directory); `production` takes everything from environment variables.
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from fink_pipeline import paths
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.transfer.store import RequestStore


class SparkResource(dg.ConfigurableResource):
    """A SparkSession created on first use and stopped when the step ends."""

    master: str = "local[*]"
    app_name: str = "fink-pipeline"
    conf: dict[str, str] = {}

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

    bootstrap_servers: str | None = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "PLAIN"
    sasl_username: str | None = None
    sasl_password: str | None = None
    partitions: int = 10
    retention_ms: int = 7 * 24 * 3600 * 1000
    compression: str = "lz4"

    def settings(self) -> KafkaSettings:
        """Connection settings; a clear error when no broker is configured or running."""
        servers = self.bootstrap_servers
        if not servers:
            from fink_pipeline.kafka.broker import status_managed

            servers = status_managed(paths.state_dir())
            if not servers:
                raise dg.Failure(
                    "no Kafka configured: start the embedded broker with `fink-pipeline broker start` "
                    "or set bootstrap_servers (FINK_KAFKA_BOOTSTRAP_SERVERS in production)"
                )
        return KafkaSettings(
            bootstrap_servers=servers,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
        )


class ArchiveResource(dg.ConfigurableResource):
    """Where the alert archive lives (local path or object-store URI)."""

    root: str | None = None
    storage_options: dict[str, str] = {}

    @property
    def uri(self) -> str:
        return self.root or str(paths.default_archive_root())


class TableResource(dg.ConfigurableResource):
    """Where transfer tables are materialized, and in which format."""

    root: str | None = None
    format: str = "delta"
    storage_options: dict[str, str] = {}

    @property
    def uri(self) -> str:
        return self.root or str(paths.default_table_root())

    def table_uri(self, topic: str) -> str:
        return f"{self.uri.rstrip('/')}/{topic}"


class RequestStoreResource(dg.ConfigurableResource):
    """The folder of submitted requests (one JSON per topic)."""

    root: str | None = None

    def store(self) -> RequestStore:
        return RequestStore(self.root or paths.state_dir() / "requests")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def local_resources() -> dict[str, Any]:
    """Embedded defaults: everything on this machine."""
    return {
        "spark": SparkResource(),
        "kafka": KafkaResource(bootstrap_servers=_env("FINK_KAFKA_BOOTSTRAP_SERVERS")),
        "archive": ArchiveResource(root=_env("FINK_ARCHIVE_ROOT")),
        "tables": TableResource(root=_env("FINK_TABLE_ROOT")),
        "requests": RequestStoreResource(root=_env("FINK_REQUEST_ROOT")),
    }


def production_resources() -> dict[str, Any]:
    """Real services, configured from the environment (see docker/compose.yaml)."""
    return {
        "spark": SparkResource(
            master=dg.EnvVar("FINK_SPARK_MASTER").get_value("spark://spark-master:7077"),
        ),
        "kafka": KafkaResource(
            bootstrap_servers=dg.EnvVar("FINK_KAFKA_BOOTSTRAP_SERVERS"),
            security_protocol=dg.EnvVar("FINK_KAFKA_SECURITY_PROTOCOL").get_value("PLAINTEXT"),
            sasl_mechanism=dg.EnvVar("FINK_KAFKA_SASL_MECHANISM").get_value("PLAIN"),
            sasl_username=dg.EnvVar("FINK_KAFKA_SASL_USERNAME").get_value(None),
            sasl_password=dg.EnvVar("FINK_KAFKA_SASL_PASSWORD").get_value(None),
        ),
        "archive": ArchiveResource(root=dg.EnvVar("FINK_ARCHIVE_ROOT")),
        "tables": TableResource(root=dg.EnvVar("FINK_TABLE_ROOT")),
        "requests": RequestStoreResource(root=dg.EnvVar("FINK_REQUEST_ROOT")),
    }


RESOURCES_BY_DEPLOYMENT = {"local": local_resources, "production": production_resources}


def resources_for(deployment: str | None = None) -> dict[str, Any]:
    """Resources of `deployment` (default: $FINK_DEPLOYMENT, else local)."""
    name = deployment or os.environ.get("FINK_DEPLOYMENT", "local")
    if name not in RESOURCES_BY_DEPLOYMENT:
        raise ValueError(f"FINK_DEPLOYMENT={name!r}: choose one of {', '.join(RESOURCES_BY_DEPLOYMENT)}")
    return RESOURCES_BY_DEPLOYMENT[name]()
