"""The deployment's settings from the environment (`FINK_*`), read by `resources.py`.

`DeploymentSettings` names the deployment, Spark, the archive, the tables and the request
folders; `KafkaEnvSettings` (`FINK_KAFKA_*`) the Kafka connection and topic layout. In the local
deployment every variable is optional (the defaults live under the state directory); in
production the variables marked `required in production` are given to Dagster as `dg.EnvVar`:
the code location loads without them and a run that needs one fails naming it.
`PRODUCTION_ENV` lists every variable production reads, from the fields' descriptions.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from fink_pipeline.env import JsonObject
from fink_pipeline.kafka.settings import KafkaEnvSettings
from fink_pipeline.spark import LOCAL_MASTER
from fink_pipeline.storage import CREDENTIAL_ENV, StorageEnvSettings

DEPLOYMENTS: tuple[str, ...] = ("local", "production")
REQUIRED_IN_PRODUCTION = "required in production"


def _state_folder_or_required(what: str, folder: str) -> Any:
    """A location production must be given; the local deployment's default is `<state dir>/<folder>`."""
    return Field(default=None, description=f"{what} ({REQUIRED_IN_PRODUCTION}; local default <state dir>/{folder})")


class DeploymentSettings(StorageEnvSettings):
    """Where the pipeline runs and what it reads and writes, `FINK_<FIELD>` each (the storage
    options, `FINK_ARCHIVE_STORAGE_OPTIONS` and `FINK_TABLE_STORAGE_OPTIONS`, come from
    `StorageEnvSettings`, which fink_datatransfer reads too)."""

    model_config = SettingsConfigDict(env_prefix="FINK_")

    deployment: str = Field(default="local", description="local (the default) or production: which resources")
    spark_master: str | None = Field(
        default=None,
        description=f"Spark master URL, e.g. spark://spark-master:7077 ({REQUIRED_IN_PRODUCTION}; "
        f"local default {LOCAL_MASTER})",
    )
    spark_remote: str | None = Field(
        default=None,
        description="Spark Connect URL, e.g. sc://spark-connect:15002: runs attach to that long-lived server "
        "(warm JVM and Python workers) instead of starting Spark; FINK_SPARK_MASTER is then unused",
    )
    spark_conf: JsonObject = Field(
        default_factory=dict, description='extra Spark conf as a JSON object, e.g. {"spark.executor.memory": "4g"}'
    )
    archive_root: str | None = _state_folder_or_required("alert archive root: a path or an object-store URI", "archive")
    table_root: str | None = _state_folder_or_required("root of the transfer tables: a path or an object-store URI",
                                                       "tables")
    request_root: str | None = _state_folder_or_required("folder of submitted requests, shared by all services",
                                                         "requests")
    standing_root: str | None = _state_folder_or_required("folder of standing requests, shared by all services",
                                                          "standing")

    @field_validator("spark_conf", mode="before")
    @classmethod
    def _json(cls, value: Any, info) -> Any:
        return cls._json_object(value, info.field_name)

    @field_validator("spark_remote")
    @classmethod
    def _connect_url(cls, value: str | None) -> str | None:
        if value is not None and value.strip() == "":
            return None
        if value is not None and not (value.startswith("sc://") and len(value) > len("sc://")):
            raise ValueError(f"{cls.env_name('spark_remote')}={value!r}: expected a Spark Connect URL "
                             "sc://host:port (or leave it unset to start Spark from FINK_SPARK_MASTER)")
        return value

    def spark_session_args(self) -> dict[str, Any]:
        """The Spark session these settings describe, as `SparkResource` takes it: the master
        (default local), the Connect URL and the extra conf."""
        return {"master": self.spark_master or LOCAL_MASTER, "remote": self.spark_remote,
                "conf": dict(self.spark_conf)}

    @field_validator("deployment")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in DEPLOYMENTS:
            raise ValueError(f"{cls.env_name('deployment')}={value!r}: choose one of {', '.join(DEPLOYMENTS)}")
        return value


# What production reads: every variable of both classes but FINK_DEPLOYMENT itself and the
# short Kafka names, which only `KafkaSettings.from_env` and the CLIs read.
_NOT_IN_PRODUCTION = {"FINK_DEPLOYMENT", "FINK_KAFKA_SERVERS", "FINK_KAFKA_USERNAME", "FINK_KAFKA_PASSWORD",
                      "FINK_KAFKA_GROUP_ID", "FINK_KAFKA_OPT_<NAME>"}
PRODUCTION_ENV: dict[str, str] = {
    name: text
    for name, text in {**DeploymentSettings.env_doc(), **KafkaEnvSettings.env_doc()}.items()
    if name not in _NOT_IN_PRODUCTION
}
# Object-store credentials (not FINK_ variables: the names delta-rs, pyarrow and Spark's S3
# connector read), passed to the archive and table resources as `dg.EnvVar`s when set.
STORAGE_CREDENTIAL_ENV: dict[str, str] = {
    name: "object-store credential of the archive and the tables (secret: read from the environment, "
    "shown in the UI by name only); unset for local paths or instance credentials"
    for name in CREDENTIAL_ENV
}
PRODUCTION_ENV.update(STORAGE_CREDENTIAL_ENV)
REQUIRED_PRODUCTION_ENV: list[str] = [name for name, text in PRODUCTION_ENV.items() if REQUIRED_IN_PRODUCTION in text]
