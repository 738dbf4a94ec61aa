"""Configurable resources: Spark, Kafka, archive, tables, submitted and standing requests.

Two deployments, chosen by `$FINK_DEPLOYMENT`:

* `local` (default): local Spark, the managed embedded broker (`fink-pipeline broker start`),
  folders under the state directory (`$FINK_PIPELINE_HOME`, else `./.fink_pipeline`);
* `production`: everything from the environment variables listed in `PRODUCTION_ENV`
  (docker/compose.yaml sets them), read by the settings classes of `orchestration/settings.py`
  and `kafka/settings.py`. Secrets are passed as `dg.EnvVar`, which Dagster resolves at run
  time and shows in the UI by name only, never by value.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import dagster as dg
from pydantic import Field, PrivateAttr, ValidationError

from fink_pipeline import paths
from fink_pipeline.env import EnvSettings
from fink_pipeline.kafka.defaults import DEFAULT_COMPRESSION, DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS
from fink_pipeline.kafka.options import PublishOptions
from fink_pipeline.kafka.settings import KafkaEnvSettings, KafkaSettings
from fink_pipeline.orchestration.settings import (  # noqa: F401 (PRODUCTION_ENV: documented here)
    PRODUCTION_ENV,
    REQUIRED_PRODUCTION_ENV,
    STORAGE_CREDENTIAL_ENV,
    DeploymentSettings,
)
from fink_pipeline.spark import LOCAL_MASTER
from fink_pipeline.transfer.standing import StandingStore
from fink_pipeline.transfer.store import RequestStore

DEPLOYMENT_ENV = DeploymentSettings.env_name("deployment")


class SparkResource(dg.ConfigurableResource):
    """A SparkSession created on first use and stopped when the run's steps are done.

    `master` starts the run's own Spark application (local, or a cluster's master URL);
    `remote` instead attaches the run to a long-lived Spark Connect server (`sc://host:port`,
    `fink-pipeline spark connect start`): its JVM and Python workers are already warm, and the
    run never stops it."""

    master: str = Field(default=LOCAL_MASTER, description="Spark master URL (local[*], spark://host:7077, ...)")
    remote: str | None = Field(
        default=None, description="Spark Connect URL (sc://host:15002): attach to that server instead of "
        "starting Spark; master is then the server's")
    app_name: str = Field(default="fink-pipeline", description="Application name shown by Spark")
    conf: dict[str, str] = Field(default={}, description="Extra Spark configuration (overrides the defaults)")

    _session: Any = PrivateAttr(default=None)
    _owned: bool = PrivateAttr(default=False)
    _starting: Any = PrivateAttr(default=None)  # a Future of (session, owned) while warm_up runs
    _stopping: Any = PrivateAttr(default=None)  # the thread stopping a released session

    @classmethod
    def from_env(cls) -> "SparkResource":
        """The deployment's Spark: FINK_SPARK_REMOTE, else FINK_SPARK_MASTER (default local),
        with FINK_SPARK_CONF."""
        return cls(**DeploymentSettings.load().spark_session_args())

    def warm_up(self) -> None:
        """Start the session in a background thread and return at once: the JVM starts, then
        its Python workers with the publishing modules imported (seconds each), while the run
        validates and estimates the request. A start the command made ahead of the run
        (`spark_ahead.start_session_ahead`, same settings) is taken over instead."""
        from fink_pipeline.orchestration.spark_ahead import start_session_ahead

        if self._session is None and self._starting is None:
            start_session_ahead(self.master, self.app_name, self.conf, self.remote)
            self._starting = self._claim_start_ahead()

    def _claim_start_ahead(self):
        from fink_pipeline.orchestration.spark_ahead import claim_session_started_ahead

        return claim_session_started_ahead(self.master, self.app_name, self.conf, self.remote)

    def get_session(self):
        """The session (created lazily: steps that do not need Spark do not pay for a JVM)."""
        if self._session is None:
            if self._starting is None:
                self._starting = self._claim_start_ahead()
            if self._starting is not None:  # warm_up started it: wait for it (its error, if any)
                starting, self._starting = self._starting, None
                self._session, self._owned = starting.result()
            else:
                from fink_pipeline.spark import open_spark_session

                self._session, self._owned = open_spark_session(self.master, self.app_name, self.conf,
                                                                remote=self.remote)
        return self._session

    def release(self) -> None:
        """The run needs Spark no more: stop a session it owns now, in a background thread (the
        JVM's shutdown then overlaps the table's last batches instead of following them; the
        run's teardown waits for it). A later `get_session` starts a new one."""
        import threading

        if self._session is not None and self._owned and not self.remote:
            session, self._session = self._session, None
            self._stopping = threading.Thread(target=session.stop, name="spark-stop")
            self._stopping.start()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._stopping is not None:
            self._stopping.join()
            self._stopping = None
        if self._starting is not None:  # warmed up but never used: stop what it started
            try:
                self.get_session()
            except Exception:  # it failed to start: nothing to stop
                pass
        from fink_pipeline.spark import shares_connect_session

        if self._session is not None and (self._owned or (self.remote and not shares_connect_session(self.remote))):
            # a Spark Connect client releases its own server-side session (and that session's
            # Python workers), not one that runs share (session_id in the URL); the server runs on
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
    partitions: int = Field(default=DEFAULT_PARTITIONS, description="Partitions of a transfer topic (fink-client assumes 10)")
    retention_ms: int = Field(default=DEFAULT_RETENTION_MS, description="Retention of transfer topics (7 days)")
    compression: str = Field(default=DEFAULT_COMPRESSION, description="Producer and topic compression")

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


class _ObjectStoreLocation(dg.ConfigurableResource):
    """A location that may be an object-store URI: its non-secret options, and its credentials
    given as `dg.EnvVar`s (`AWS_ACCESS_KEY_ID`...: resolved at run time, shown by name only)."""

    storage_options: dict[str, str] = Field(
        default={}, description="Object-store options, delta-rs keys (AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP); "
        "no secrets")
    access_key_id: str | None = Field(default=None, description="Give it as EnvVar('AWS_ACCESS_KEY_ID'), never as a "
                                      "value; unset: the process environment's, or the instance's credentials")
    secret_access_key: str | None = Field(default=None, description="Give it as EnvVar('AWS_SECRET_ACCESS_KEY')")
    session_token: str | None = Field(default=None, description="Give it as EnvVar('AWS_SESSION_TOKEN')")

    def options(self) -> dict[str, str] | None:
        """Storage options for deltalake and pyarrow, credentials included (None when empty:
        local paths need none). Secrets in `storage_options` are refused, naming the field."""
        from fink_pipeline.storage import check_storage_options

        options = check_storage_options(self.storage_options, f"{type(self).__name__}.storage_options")
        for key, value in (("AWS_ACCESS_KEY_ID", self.access_key_id), ("AWS_SECRET_ACCESS_KEY", self.secret_access_key),
                           ("AWS_SESSION_TOKEN", self.session_token)):
            if value:
                options[key] = value
        return options or None


class ArchiveResource(_ObjectStoreLocation):
    """Where the alert archive lives (local path or object-store URI)."""

    root: str | None = Field(default=None, description="Archive root; empty = <state dir>/archive")

    @property
    def uri(self) -> str:
        return self.root or str(paths.default_archive_root())


class TableResource(_ObjectStoreLocation):
    """Where transfer tables are materialized (Delta, one table per transfer topic)."""

    root: str | None = Field(default=None, description="Table root; empty = <state dir>/tables")

    @property
    def uri(self) -> str:
        return self.root or str(paths.default_table_root())

    def table_uri(self, topic: str) -> str:
        return f"{self.uri.rstrip('/')}/{topic}"

    def quarantine_dir(self) -> str:
        """Where undecodable messages are kept: `<root>/_quarantine` for a local root; on
        object storage, the local `<state dir>/quarantine` (a few rare files, never a table)."""
        from fink_pipeline.storage import is_object_store

        if is_object_store(self.uri):
            return str(paths.state_dir() / "quarantine")
        return f"{self.uri.rstrip('/')}/_quarantine"


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


def local_resources() -> dict[str, Any]:
    """Embedded defaults: everything on this machine (a variable may still point elsewhere)."""
    env = DeploymentSettings.load()
    return {
        "spark": SparkResource.from_env(),
        "kafka": KafkaResource(bootstrap_servers=KafkaEnvSettings.load().bootstrap_servers),
        "archive": ArchiveResource(root=env.archive_root, storage_options=dict(env.archive_storage_options)),
        "tables": TableResource(root=env.table_root, storage_options=dict(env.table_storage_options)),
        "requests": RequestStoreResource(root=env.request_root),
        "standing": StandingRequestsResource(root=env.standing_root),
    }


def production_resources() -> dict[str, Any]:
    """Real services, configured from the environment (see PRODUCTION_ENV and docker/compose.yaml).

    The variables `required in production` (REQUIRED_PRODUCTION_ENV) are passed as `dg.EnvVar`
    (resolved when a run starts: a missing one fails the run naming it); the SASL password is
    only ever an `EnvVar`. The others are read and checked here (`DeploymentSettings`,
    `KafkaEnvSettings`): a bad value stops the code location loading, naming its variable.
    """
    env, kafka = DeploymentSettings.load(), KafkaEnvSettings.load()

    def required(settings: type[EnvSettings], field: str) -> dg.EnvVar:
        return dg.EnvVar(settings.env_name(field))

    password = required(KafkaEnvSettings, "sasl_password") if kafka.sasl_password is not None else None
    credentials = object_store_credentials()
    return {
        "spark": SparkResource(remote=env.spark_remote, conf=dict(env.spark_conf)) if env.spark_remote
        else SparkResource(master=required(DeploymentSettings, "spark_master"), conf=dict(env.spark_conf)),
        "kafka": KafkaResource(
            bootstrap_servers=required(KafkaEnvSettings, "bootstrap_servers"),
            security_protocol=kafka.security_protocol or "PLAINTEXT",
            sasl_mechanism=kafka.sasl_mechanism or "PLAIN",
            sasl_username=kafka.sasl_username,
            sasl_password=password,
            partitions=kafka.partitions,
            retention_ms=kafka.retention_ms,
        ),
        "archive": ArchiveResource(root=required(DeploymentSettings, "archive_root"),
                                   storage_options=dict(env.archive_storage_options), **credentials),
        "tables": TableResource(root=required(DeploymentSettings, "table_root"),
                                storage_options=dict(env.table_storage_options), **credentials),
        "requests": RequestStoreResource(root=required(DeploymentSettings, "request_root")),
        "standing": StandingRequestsResource(root=required(DeploymentSettings, "standing_root")),
    }


def object_store_credentials(environ: Mapping[str, str] | None = None) -> dict[str, dg.EnvVar]:
    """The archive's and tables' credential fields as `dg.EnvVar`s, for the variables of
    STORAGE_CREDENTIAL_ENV set now (unset ones are left to the store's other credential sources)."""
    environ = os.environ if environ is None else environ
    fields = {"AWS_ACCESS_KEY_ID": "access_key_id", "AWS_SECRET_ACCESS_KEY": "secret_access_key",
              "AWS_SESSION_TOKEN": "session_token"}
    return {fields[name]: dg.EnvVar(name) for name in STORAGE_CREDENTIAL_ENV if environ.get(name, "").strip()}


RESOURCES_BY_DEPLOYMENT = {"local": local_resources, "production": production_resources}


def resources_for(deployment: str | None = None) -> dict[str, Any]:
    """Resources of `deployment` (default: $FINK_DEPLOYMENT, else local)."""
    name = deployment or DeploymentSettings.load().deployment
    if name not in RESOURCES_BY_DEPLOYMENT:
        raise ValueError(f"{DEPLOYMENT_ENV}={name!r}: choose one of {', '.join(RESOURCES_BY_DEPLOYMENT)}")
    return RESOURCES_BY_DEPLOYMENT[name]()
