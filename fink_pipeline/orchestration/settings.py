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

from fink_pipeline.env import EnvSettings, JsonObject
from fink_pipeline.kafka.settings import KafkaEnvSettings
from fink_pipeline.spark import LOCAL_MASTER

DEPLOYMENTS: tuple[str, ...] = ("local", "production")
REQUIRED_IN_PRODUCTION = "required in production"


def _state_folder_or_required(what: str, folder: str) -> Any:
    """A location production must be given; the local deployment's default is `<state dir>/<folder>`."""
    return Field(default=None, description=f"{what} ({REQUIRED_IN_PRODUCTION}; local default <state dir>/{folder})")


def _storage_options(of: str) -> Any:
    """The object-store options of a location (a JSON object)."""
    return Field(default_factory=dict, description=f"object-store options of {of} as a JSON object, no secrets")


class DeploymentSettings(EnvSettings):
    """Where the pipeline runs and what it reads and writes, `FINK_<FIELD>` each."""

    model_config = SettingsConfigDict(env_prefix="FINK_")

    deployment: str = Field(default="local", description="local (the default) or production: which resources")
    spark_master: str | None = Field(
        default=None,
        description=f"Spark master URL, e.g. spark://spark-master:7077 ({REQUIRED_IN_PRODUCTION}; "
        f"local default {LOCAL_MASTER})",
    )
    spark_conf: JsonObject = Field(
        default_factory=dict, description='extra Spark conf as a JSON object, e.g. {"spark.executor.memory": "4g"}'
    )
    archive_root: str | None = _state_folder_or_required("alert archive root: a path or an object-store URI", "archive")
    archive_storage_options: JsonObject = _storage_options("the archive")
    table_root: str | None = _state_folder_or_required("root of the transfer tables: a path or an object-store URI",
                                                       "tables")
    table_storage_options: JsonObject = _storage_options("the tables")
    request_root: str | None = _state_folder_or_required("folder of submitted requests, shared by all services",
                                                         "requests")
    standing_root: str | None = _state_folder_or_required("folder of standing requests, shared by all services",
                                                          "standing")

    @field_validator("spark_conf", "archive_storage_options", "table_storage_options", mode="before")
    @classmethod
    def _json(cls, value: Any, info) -> Any:
        return cls._json_object(value, info.field_name)

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
REQUIRED_PRODUCTION_ENV: list[str] = [name for name, text in PRODUCTION_ENV.items() if REQUIRED_IN_PRODUCTION in text]
