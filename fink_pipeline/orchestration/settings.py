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
    archive_root: str | None = Field(
        default=None,
        description=f"alert archive root: a path or an object-store URI ({REQUIRED_IN_PRODUCTION}; "
        "local default <state dir>/archive)",
    )
    archive_storage_options: JsonObject = Field(
        default_factory=dict, description="object-store options of the archive as a JSON object, no secrets"
    )
    table_root: str | None = Field(
        default=None,
        description=f"root of the transfer tables: a path or an object-store URI ({REQUIRED_IN_PRODUCTION}; "
        "local default <state dir>/tables)",
    )
    table_storage_options: JsonObject = Field(
        default_factory=dict, description="object-store options of the tables as a JSON object, no secrets"
    )
    request_root: str | None = Field(
        default=None,
        description=f"folder of submitted requests, shared by all services ({REQUIRED_IN_PRODUCTION}; "
        "local default <state dir>/requests)",
    )
    standing_root: str | None = Field(
        default=None,
        description=f"folder of standing requests, shared by all services ({REQUIRED_IN_PRODUCTION}; "
        "local default <state dir>/standing)",
    )

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
