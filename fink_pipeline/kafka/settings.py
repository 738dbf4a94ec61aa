"""Kafka connection settings, from code, the environment or a fink-client credentials file.

The credentials file is the one fink-client reads (`~/.finkclient/<survey>_credentials.yml`,
written by `fink_client_register` / `finkctl auth register`): a YAML mapping with
`username`, `password`, `group_id` (newer clients write `groupid`), `mytopics`, `servers`,
`maxtimeout` and, for `finkctl`, `survey`. fink-client turns a username + password into
`security.protocol=sasl_plaintext`, `sasl.mechanism=SCRAM-SHA-512`; `from_credentials_file`
does the same unless told otherwise.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from fink_pipeline.env import EnvSettings, EnvSettingsError
from fink_pipeline.kafka.defaults import DEFAULT_PARTITIONS, DEFAULT_RETENTION_MS

SecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]

# Mechanism fink-client uses whenever a password is registered.
FINK_CLIENT_SASL_MECHANISM: SaslMechanism = "SCRAM-SHA-512"

# librdkafka options that must not go through `extra`: they are fields of their own, and a
# secret in `extra` would be printed by repr().
_RESERVED_OPTIONS = {
    "bootstrap.servers",
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
}
_SECRET_HINTS = ("password", "secret", "token", "private.key", "key.pem")
_SERVER_RE = re.compile(r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


class CredentialsError(ValueError):
    """A credentials file is missing, malformed or too widely readable."""


class KafkaSettings(BaseModel):
    """How to reach a Kafka cluster. `sasl_password` is a SecretStr: never shown by repr/str."""

    # hide_input_in_errors: a validation error must not echo the password it was given.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    bootstrap_servers: str = Field(description="comma-separated host:port list")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism = "PLAIN"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    group_id: str | None = Field(default=None, description="consumer group (credentials files)")
    extra: dict[str, str] = Field(
        default_factory=dict, description="further librdkafka options, e.g. socket.timeout.ms"
    )

    @field_validator("bootstrap_servers", mode="before")
    @classmethod
    def _normalise_servers(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if not isinstance(value, str):
            return value
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers:
            raise ValueError("bootstrap_servers is empty: give host:port[,host:port...]")
        for server in servers:
            if not _SERVER_RE.match(server) or not 0 < int(server.rsplit(":", 1)[1]) < 65536:
                raise ValueError(f"bootstrap server {server!r} is not host:port")
        return ",".join(servers)

    @field_validator("security_protocol", mode="before")
    @classmethod
    def _normalise_protocol(cls, value: Any) -> Any:
        # librdkafka and fink-client accept lower case (fink-client writes "sasl_plaintext").
        return value.strip().upper().replace("-", "_") if isinstance(value, str) else value

    @field_validator("sasl_mechanism", mode="before")
    @classmethod
    def _normalise_mechanism(cls, value: Any) -> Any:
        return value.strip().upper().replace("_", "-") if isinstance(value, str) else value

    @field_validator("extra", mode="before")
    @classmethod
    def _check_extra(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, str] = {}
        for key, item in value.items():
            name = str(key).strip()
            if name in _RESERVED_OPTIONS:
                raise ValueError(
                    f"librdkafka option {name!r} has its own field: use "
                    f"{name.replace('.', '_').replace('sasl_mechanisms', 'sasl_mechanism')}"
                )
            if any(hint in name.lower() for hint in _SECRET_HINTS):
                raise ValueError(
                    f"librdkafka option {name!r} looks secret and would be printed with the "
                    "settings; secret options other than sasl_password are not supported"
                )
            out[name] = str(item).lower() if isinstance(item, bool) else str(item)
        return out

    @model_validator(mode="after")
    def _sasl_complete(self) -> "KafkaSettings":
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_username and self.sasl_password and self.sasl_password.get_secret_value()
        ):
            raise ValueError(
                f"security_protocol={self.security_protocol} needs sasl_username and sasl_password"
            )
        return self

    # ----------------------------------------------------------------------------------------

    def librdkafka_config(self) -> dict[str, str]:
        """The connection part of a confluent-kafka configuration (producer, consumer, admin)."""
        config: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.security_protocol.startswith("SASL"):
            assert self.sasl_password is not None  # checked by the validator
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.username"] = str(self.sasl_username)
            config["sasl.password"] = self.sasl_password.get_secret_value()
        config.update(self.extra)
        return config

    def consumer_config(self, group_id: str | None = None, **overrides: Any) -> dict[str, Any]:
        """A consumer configuration: connection + `group.id` (argument, else `self.group_id`)
        + `auto.offset.reset=earliest` like fink-client; `overrides` use librdkafka names with
        dots written as underscores (`enable_auto_commit=False`)."""
        config: dict[str, Any] = dict(self.librdkafka_config())
        group = group_id or self.group_id
        if group:
            config["group.id"] = group
        config["auto.offset.reset"] = "earliest"
        config.update({k.replace("_", "."): v for k, v in overrides.items()})
        return config

    # ----------------------------------------------------------------------------------------

    @classmethod
    def from_env(cls, prefix: str = "FINK_KAFKA_", **defaults: Any) -> "KafkaSettings":
        """Settings from the environment variables of `KafkaEnvSettings` (`<prefix>BOOTSTRAP_SERVERS`
        or `<prefix>SERVERS`, `<prefix>SECURITY_PROTOCOL`, `<prefix>SASL_MECHANISM`,
        `<prefix>SASL_USERNAME` or `<prefix>USERNAME`, `<prefix>SASL_PASSWORD` or `<prefix>PASSWORD`,
        `<prefix>GROUP_ID`, `<prefix>OPT_<NAME>`); `defaults` fill what the environment does not set.
        """
        return KafkaEnvSettings.for_prefix(prefix).load().connection(**defaults)

    @classmethod
    def from_credentials_file(
        cls, path: str | os.PathLike[str] | None = None, *, survey: str = "ztf", **overrides: Any
    ) -> "KafkaSettings":
        """Settings from a fink-client credentials YAML (default `credentials_path(survey)`).

        A registered password selects SASL_PLAINTEXT with SCRAM-SHA-512, as fink-client does;
        an optional `extra:` mapping gives further librdkafka options (they win over the
        consumer's fetch defaults); `overrides` (e.g. `security_protocol="SASL_SSL"`) win over
        the file. A file holding a password must not be readable by group or others (mode
        0600), or CredentialsError.
        """
        path = path if path is not None else credentials_path(survey)
        creds = read_credentials_file(path)
        values: dict[str, Any] = {"bootstrap_servers": creds.get("servers")}
        group = creds.get("group_id") or creds.get("groupid")
        if group:
            values["group_id"] = str(group)
        password = creds.get("password")
        username = creds.get("username")
        if password not in (None, "", "None"):
            values.update(
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism=FINK_CLIENT_SASL_MECHANISM,
                sasl_username=str(username or ""),
                sasl_password=str(password),
            )
        options = creds.get("extra")  # optional librdkafka options (not a fink-client key)
        if options is not None:
            if not isinstance(options, dict):
                raise CredentialsError(f"credentials file {path}: `extra` must map librdkafka option names to values")
            values["extra"] = options
        values.update(overrides)
        try:
            return cls(**values)
        except ValidationError as exc:  # e.g. `servers: localhost` without a port
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
            raise CredentialsError(f"credentials file {path}: {problems}") from None


# --------------------------------------------------------------------------------------------
# the environment


class _LibrdkafkaOptionsSource(PydanticBaseSettingsSource):
    """`<prefix>OPT_<NAME>=value` variables as the `extra` librdkafka option `<name>`."""

    def __init__(self, settings_cls: type[BaseSettings], prefix: str) -> None:
        super().__init__(settings_cls)
        self.prefix = f"{prefix}OPT_".upper()

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # not used: __call__ reads the variables itself

    def __call__(self) -> dict[str, Any]:
        options = {
            name[len(self.prefix):].lower().replace("_", "."): value
            for name, value in os.environ.items()
            if name.upper().startswith(self.prefix) and len(name) > len(self.prefix)
        }
        return {"extra": options} if options else {}


class KafkaEnvSettings(EnvSettings):
    """The Kafka settings of the environment, `FINK_KAFKA_<FIELD>` each.

    `connection()` gives the `KafkaSettings` (`KafkaSettings.from_env()`); the production
    resources read the same variables (the password only as a Dagster `EnvVar`).
    """

    model_config = SettingsConfigDict(env_prefix="FINK_KAFKA_")

    bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port] of the Kafka cluster (required in production)"
    )
    servers: str | None = Field(default=None, description="FINK_KAFKA_BOOTSTRAP_SERVERS under its short name")
    security_protocol: str | None = Field(
        default=None,
        description="PLAINTEXT, SASL_PLAINTEXT or SASL_SSL (default PLAINTEXT; SASL_PLAINTEXT when "
        "only a password is given, outside production)",
    )
    sasl_mechanism: str | None = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (default PLAIN)"
    )
    sasl_username: str | None = Field(default=None, description="SASL user")
    username: str | None = Field(default=None, description="FINK_KAFKA_SASL_USERNAME under its short name")
    sasl_password: SecretStr | None = Field(
        default=None, description="SASL password (production: read at run time only, by Dagster)"
    )
    password: SecretStr | None = Field(
        default=None,
        description="FINK_KAFKA_SASL_PASSWORD under its short name (also read by `fink-pipeline register`)",
    )
    group_id: str | None = Field(default=None, description="consumer group id")
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka options, one FINK_KAFKA_OPT_<NAME> variable each: "
        "FINK_KAFKA_OPT_SOCKET_TIMEOUT_MS=5000 -> socket.timeout.ms=5000",
    )
    partitions: int = Field(
        default=DEFAULT_PARTITIONS, gt=0,
        description=f"partitions of a transfer topic (default {DEFAULT_PARTITIONS}, as fink-client assumes)",
    )
    retention_ms: int = Field(
        default=DEFAULT_RETENTION_MS, gt=0,
        description=f"retention of transfer topics in ms (default {DEFAULT_RETENTION_MS}: 7 days)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        prefix = env_settings.env_prefix if isinstance(env_settings, EnvSettingsSource) else "FINK_KAFKA_"
        return (init_settings, env_settings, _LibrdkafkaOptionsSource(settings_cls, prefix))

    @classmethod
    def env_doc(cls) -> dict[str, str]:
        doc = super().env_doc()
        doc.pop(cls.env_name("extra"))
        doc[cls.env_name("opt_<name>")] = cls.model_fields["extra"].description or ""
        return doc

    @classmethod
    def for_prefix(cls, prefix: str) -> "type[KafkaEnvSettings]":
        """This class reading `<prefix><FIELD>` instead of `FINK_KAFKA_<FIELD>`."""
        if prefix == cls.model_config.get("env_prefix"):
            return cls
        return type(cls.__name__, (cls,), {"model_config": SettingsConfigDict(env_prefix=prefix)})

    def bootstrap(self) -> str | None:
        """The bootstrap servers, under either name."""
        return self.bootstrap_servers or self.servers

    def connection(self, **defaults: Any) -> KafkaSettings:
        """The connection settings; `defaults` fill what the environment does not set. A
        password alone implies SASL_PLAINTEXT, as in fink-client."""
        values: dict[str, Any] = dict(defaults)
        given = {
            "bootstrap_servers": self.bootstrap(),
            "security_protocol": self.security_protocol,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_username": self.sasl_username or self.username,
            "sasl_password": self.sasl_password or self.password,
            "group_id": self.group_id,
        }
        values.update({name: value for name, value in given.items() if value is not None})
        if self.extra:
            values["extra"] = {**(values.get("extra") or {}), **self.extra}
        if not values.get("bootstrap_servers"):
            raise EnvSettingsError(f"set {self.env_name('bootstrap_servers')} to the Kafka host:port list")
        if values.get("sasl_password") and "security_protocol" not in values:
            values["security_protocol"] = "SASL_PLAINTEXT"
        try:
            return KafkaSettings(**values)
        except ValidationError as exc:
            problems = []
            for error in exc.errors(include_input=False):
                field = str(error["loc"][0]) if error["loc"] else ""
                name = self.env_name("opt_*" if field == "extra" else field) if field else "Kafka settings"
                problems.append(f"{name}: {error['msg'].removeprefix('Value error, ')}")
            raise EnvSettingsError("; ".join(problems)) from None


# --------------------------------------------------------------------------------------------
# the fink-client credentials file


class ClientEnvSettings(EnvSettings):
    """Where fink-client credentials files live, `FINK_CLIENT_<FIELD>` (as fink-client reads it)."""

    model_config = SettingsConfigDict(env_prefix="FINK_CLIENT_")

    home: Path | None = Field(
        default=None, description="folder of the <survey>_credentials.yml files; default ~/.finkclient"
    )


def credentials_path(survey: str = "ztf") -> Path:
    """`$FINK_CLIENT_HOME/<survey>_credentials.yml`, default home `~/.finkclient`."""
    if not re.fullmatch(r"[a-z0-9_]+", survey):
        raise ValueError(f"survey name {survey!r} must be lower-case letters, digits or _")
    home = ClientEnvSettings.load().home
    root = home.expanduser() if home else Path.home() / ".finkclient"
    return root / f"{survey}_credentials.yml"


def _fix_hint(path: Path) -> str:
    return f"run `chmod 600 {path}`"


def read_credentials_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw mapping of a fink-client credentials file, after the permission check."""
    path = Path(path).expanduser()
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode  # same inode as what we read: no race
            text = handle.read().decode("utf-8")
    except FileNotFoundError:
        raise CredentialsError(
            f"no credentials file at {path}: run `fink-pipeline register --survey ... "
            "--servers HOST:PORT` first"
        ) from None
    except OSError as exc:
        raise CredentialsError(f"cannot read credentials file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CredentialsError(f"credentials file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CredentialsError(f"credentials file {path} must hold a YAML mapping")
    if data.get("password") not in (None, "", "None") and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"credentials file {path} holds a password but has mode {stat.S_IMODE(mode):04o} "
            f"(readable by other users); {_fix_hint(path)}"
        )
    if not data.get("servers"):
        raise CredentialsError(f"credentials file {path} has no `servers` entry")
    return data


def write_credentials_file(
    path: str | os.PathLike[str] | None = None,
    *,
    servers: str,
    username: str = "",
    password: str | SecretStr | None = None,
    group_id: str = "",
    survey: str = "ztf",
    mytopics: list[str] | None = None,
    maxtimeout: float = 10,
) -> Path:
    """Write a fink-client credentials file with mode 0600, atomically; return its path.

    The temporary file is created with mode 0600 (never readable by others, even briefly) in
    the target folder, then renamed over the target. Both `group_id` (fink-client transfer)
    and `groupid` (finkctl) are written so every fink-client command finds it.
    """
    target = Path(path).expanduser() if path is not None else credentials_path(survey)
    if isinstance(password, SecretStr):
        password = password.get_secret_value()
    # Validate what we write exactly as we will read it back.
    KafkaSettings(bootstrap_servers=servers)
    data = {
        "survey": survey,
        "username": username,
        "password": password if password else None,
        "group_id": group_id,
        "groupid": group_id,
        "mytopics": list(mytopics or []),
        "servers": servers,
        "maxtimeout": maxtimeout,
    }
    text = yaml.safe_dump(data, default_flow_style=False, sort_keys=True)
    parent = target.parent
    if not parent.exists():
        parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    tmp = parent / f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    # O_EXCL: never follow or reuse an existing file; 0o600 at creation (umask only removes bits).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # also drops bits a default ACL may have added
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target
