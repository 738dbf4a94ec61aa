"""Reading settings from the environment: the base of every settings class.

A settings class (`pydantic_settings.BaseSettings`) names each variable once, as a field: the
variable is `<env_prefix><FIELD NAME>`, its default is the field's default and its meaning the
field's description. The classes:

* `fink_pipeline.kafka.settings.KafkaEnvSettings` (`FINK_KAFKA_*`): the Kafka connection and the
  layout of transfer topics;
* `fink_pipeline.kafka.settings.ClientEnvSettings` (`FINK_CLIENT_HOME`): the folder of the
  fink-client credentials files;
* `fink_pipeline.paths.StateSettings` (`FINK_PIPELINE_HOME`): the local state folder;
* `fink_pipeline.orchestration.settings.DeploymentSettings` (`FINK_*`): the deployment, Spark, the
  archive, the tables and the request folders of the Dagster resources.

`EnvSettings.load()` turns a validation error into one `EnvSettingsError` line per variable,
named as in the environment (`FINK_SPARK_CONF is not valid JSON ...`), never echoing a value.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Self

from pydantic import ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["EnvSettings", "EnvSettingsError", "JsonObject", "parse_json_object"]


class EnvSettingsError(ValueError):
    """An environment variable is missing or holds a value its settings class refuses."""


def parse_json_object(text: Any, name: str) -> Any:
    """The JSON object of variable `name` as a str -> str mapping (empty text: {})."""
    if not isinstance(text, (str, bytes)):
        return text  # given in code: validated as a mapping by the field type
    text = text.strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{name} is not valid JSON ({exc}); give an object like {{\"key\": \"value\"}}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


# A JSON object given as one variable: parsed by the class (`JsonObject` fields call
# `parse_json_object` in a validator), so that an error names the variable.
JsonObject = Annotated[dict[str, str], NoDecode]


class EnvSettings(BaseSettings):
    """Base of the settings classes: empty or blank variables count as unset, unknown ones are ignored,
    values are frozen and never echoed by validation errors."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True, extra="ignore", frozen=True, hide_input_in_errors=True
    )
    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        # env_ignore_empty drops "", this drops "  " too (a variable set to blanks is unset)
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
        return data

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of `field`."""
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    @classmethod
    def env_doc(cls) -> dict[str, str]:
        """Every variable of the class and its description."""
        return {cls.env_name(name): info.description or "" for name, info in cls.model_fields.items()}

    @classmethod
    def load(cls, **values: Any) -> Self:
        """The settings from the environment (`values` win); `EnvSettingsError` naming each
        variable that is missing or refused."""
        try:
            return cls(**values)
        except ValidationError as exc:
            raise EnvSettingsError(_describe(cls, exc)) from None

    @classmethod
    def _json_object(cls, value: Any, field: str) -> Any:
        return parse_json_object(value, cls.env_name(field))


def _describe(cls: type[EnvSettings], exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        name = cls.env_name(field) if field in cls.model_fields else field or cls.__name__
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            description = cls.model_fields[field].description if field in cls.model_fields else None
            lines.append(f"{name} is not set" + (f" ({description})" if description else ""))
        elif message.startswith(name):
            lines.append(message)
        else:
            lines.append(f"{name}: {message}")
    return "; ".join(lines)
