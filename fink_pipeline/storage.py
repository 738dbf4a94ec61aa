"""Object storage: which locations are object-store URIs, their storage options, and errors that
say what to fix.

Storage options are delta-rs's keys (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ALLOW_HTTP`, ...),
given as a JSON object per location (`FINK_TABLE_STORAGE_OPTIONS`, `FINK_ARCHIVE_STORAGE_OPTIONS`)
without secrets: credentials come from the environment (`AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), which delta-rs and pyarrow read themselves, or, in
the Dagster resources, from `dg.EnvVar`s of the same names. S3 commits need no locking setting:
delta-rs >= 0.23 commits with conditional puts (put-if-absent) on S3 and S3-compatible stores, so
`AWS_S3_ALLOW_UNSAFE_RENAME` must not be set (it disables that safety; refused here).

`arrow_filesystem` builds the pyarrow filesystem of the same options (the archive's Arrow
reader); `explain_storage_error` turns delta-rs's nested Rust errors into one line naming the
setting and the fix.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any, Mapping

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from fink_pipeline.env import EnvSettings, JsonObject

# URI schemes read through object-store clients (delta-rs, pyarrow), not the local filesystem
OBJECT_STORE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl")
S3_SCHEMES = ("s3", "s3a")
# credentials: read from the environment by delta-rs and pyarrow, never from the JSON options
CREDENTIAL_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "ACCESS_KEY", "ACCOUNT_KEY", "SAS_KEY", "SERVICE_ACCOUNT_KEY")
UNSAFE_OPTIONS = ("AWS_S3_ALLOW_UNSAFE_RENAME",)


class StorageError(RuntimeError):
    """An object store cannot be used as configured; the message names the setting and the fix."""


def scheme_of(uri: str) -> str:
    """The URI scheme of `uri`, lower case ('' for a local path)."""
    scheme = urllib.parse.urlparse(str(uri)).scheme.lower()
    return "" if len(scheme) == 1 else scheme  # a Windows drive letter is a path


def is_object_store(uri: str) -> bool:
    """Whether `uri` is an object-store URI (s3://, gs://, az://...) rather than a local path."""
    return scheme_of(uri) in OBJECT_STORE_SCHEMES


def check_storage_options(options: Mapping[str, str], setting: str) -> dict[str, str]:
    """`options` (delta-rs keys) when they hold no secret and no unsafe commit setting; else a
    ValueError naming `setting` (the variable or field they came from) and the fix."""
    for key in options:
        upper = key.upper()
        if any(word in upper for word in _SECRET_WORDS):
            raise ValueError(
                f"{setting} holds the secret {key}: remove it and set it in the environment instead "
                f"({', '.join(CREDENTIAL_ENV)}); the options are shown in the UI, secrets never are")
        if upper in UNSAFE_OPTIONS:
            raise ValueError(
                f"{setting} sets {key}: remove it. delta-rs commits to S3 with conditional puts "
                "(put-if-absent), which keeps concurrent commits exact; an unsafe rename could lose one")
    return dict(options)


def _options_field(of: str) -> Any:
    return Field(default_factory=dict, description=f"object-store options of {of} as a JSON object of delta-rs keys "
                 "(AWS_ENDPOINT_URL, AWS_REGION, AWS_ALLOW_HTTP), no secrets: credentials from AWS_ACCESS_KEY_ID "
                 "and AWS_SECRET_ACCESS_KEY")


class StorageEnvSettings(EnvSettings):
    """Object-store options of the archive and the tables (`FINK_<FIELD>`), read by the Dagster
    resources (through `DeploymentSettings`, which extends this class) and by fink_datatransfer."""

    model_config = SettingsConfigDict(env_prefix="FINK_")

    archive_storage_options: JsonObject = _options_field("the archive")
    table_storage_options: JsonObject = _options_field("the tables")

    @field_validator("archive_storage_options", "table_storage_options", mode="before")
    @classmethod
    def _json_options(cls, value: Any, info) -> Any:
        return cls._json_object(value, info.field_name)

    @field_validator("archive_storage_options", "table_storage_options")
    @classmethod
    def _no_secrets(cls, value: dict[str, str], info) -> dict[str, str]:
        return check_storage_options(value, cls.env_name(info.field_name))


def _flag(options: Mapping[str, str], key: str) -> bool:
    return str(options.get(key, options.get(key.lower(), ""))).strip().lower() in ("1", "true", "yes")


def _option(options: Mapping[str, str], key: str, env: Mapping[str, str]) -> str | None:
    """An option by its delta-rs key (either case), else the environment variable of that name."""
    return options.get(key) or options.get(key.lower()) or env.get(key) or None


def arrow_filesystem(uri: str, options: Mapping[str, str] | None = None,
                     env: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """(pyarrow filesystem, path inside it) for `uri` with delta-rs storage `options`: an
    `S3FileSystem` on the endpoint, region and credentials the options or the environment
    give (`AWS_ALLOW_HTTP` or an `http://` endpoint: plain HTTP); the local filesystem for
    a path; pyarrow's own resolution for other schemes."""
    import pyarrow.fs as pafs

    options, env = dict(options or {}), os.environ if env is None else env
    scheme = scheme_of(uri)
    if not scheme or scheme == "file":
        path = urllib.parse.unquote(urllib.parse.urlparse(uri).path) if scheme else str(uri)
        return pafs.LocalFileSystem(), path
    if scheme not in S3_SCHEMES:
        return pafs.FileSystem.from_uri(uri)
    parsed = urllib.parse.urlparse(uri)
    kwargs: dict[str, Any] = {}
    endpoint = _option(options, "AWS_ENDPOINT_URL", env)
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        kwargs["scheme"] = "http" if endpoint.startswith("http://") or _flag(options, "AWS_ALLOW_HTTP") else "https"
    if region := _option(options, "AWS_REGION", env) or _option(options, "AWS_DEFAULT_REGION", env):
        kwargs["region"] = region
    key, secret = _option(options, "AWS_ACCESS_KEY_ID", env), _option(options, "AWS_SECRET_ACCESS_KEY", env)
    if key and secret:
        kwargs.update(access_key=key, secret_key=secret, session_token=_option(options, "AWS_SESSION_TOKEN", env))
    return pafs.S3FileSystem(**kwargs), f"{parsed.netloc}{parsed.path}".rstrip("/")


def bucket_of(uri: str) -> str:
    """The bucket (or container) of an object-store URI."""
    return urllib.parse.urlparse(uri).netloc


# environment variables through which delta-rs and pyarrow find S3 credentials other than keys
_OTHER_CREDENTIAL_SOURCES = ("AWS_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                             "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")


def missing_credentials_error(uri: str, options: Mapping[str, str] | None, options_setting: str,
                              env: Mapping[str, str] | None = None) -> StorageError | None:
    """A StorageError when `uri` is on an S3-compatible endpoint of one's own (`AWS_ENDPOINT_URL`)
    and no credential is given anywhere: the client would otherwise ask the cloud's instance
    metadata service, which such a store never answers (a slow or cryptic failure)."""
    options, env = dict(options or {}), os.environ if env is None else env
    if scheme_of(uri) not in S3_SCHEMES or not _option(options, "AWS_ENDPOINT_URL", env):
        return None
    if _flag(options, "AWS_SKIP_SIGNATURE") or _option(options, "AWS_ACCESS_KEY_ID", env) \
            or any(env.get(name) for name in _OTHER_CREDENTIAL_SOURCES):
        return None
    return StorageError(
        f"{uri}: no credentials for the endpoint {_option(options, 'AWS_ENDPOINT_URL', env)}: set AWS_ACCESS_KEY_ID "
        "and AWS_SECRET_ACCESS_KEY in the environment of the process (the Dagster code server, or the shell of "
        f"fink_datatransfer); never in {options_setting}")


def explain_storage_error(exc: BaseException, uri: str, options: Mapping[str, str] | None,
                          root_setting: str, options_setting: str) -> StorageError | None:
    """A StorageError saying what to fix for a delta-rs or pyarrow error reaching `uri`, or None
    when the error is not about reaching the store. `root_setting` names where the URI was
    configured (`FINK_TABLE_ROOT`, `-outdir`), `options_setting` the options (`FINK_TABLE_STORAGE_OPTIONS`)."""
    if not is_object_store(uri):
        return None
    text = str(exc)
    options = dict(options or {})
    endpoint = _option(options, "AWS_ENDPOINT_URL", os.environ) or "the provider's default endpoint"
    where = f"{uri}: "
    if "169.254.169.254" in text or "api/token" in text or "NoCredentialProviders" in text \
            or "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text or "403 Forbidden" in text:
        return StorageError(
            where + f"no valid credentials for {endpoint}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "in the environment of the process (the Dagster code server, or the shell of fink_datatransfer); "
            f"never in {options_setting}")
    if "URL scheme is not allowed" in text:
        return StorageError(
            where + f"the endpoint {endpoint} is plain HTTP: add \"AWS_ALLOW_HTTP\": \"true\" to {options_setting} "
            "(or use an https:// endpoint)")
    if re.search(r"tcp connect error|error sending request|dns error|Connection refused|client error \(Connect\)",
                 text):
        return StorageError(
            where + f"cannot reach the object store at {endpoint}: check AWS_ENDPOINT_URL in {options_setting} "
            "(host, port, http/https) and that the store is running")
    if "NoSuchBucket" in text or ("404 Not Found" in text and "list" in text.lower()) or "bucket" in text.lower() \
            and "not found" in text.lower():
        return StorageError(
            where + f"the bucket {bucket_of(uri)!r} does not exist on {endpoint}: create it, or fix the bucket in "
            f"{root_setting}")
    return None


# Hadoop connectors Spark needs per scheme (none of them ships with PyPI's pyspark)
_HADOOP_CONNECTORS = {
    "s3": ("org.apache.hadoop:hadoop-aws", "hadoop-aws"),
    "s3a": ("org.apache.hadoop:hadoop-aws", "hadoop-aws"),
    "gs": ("com.google.cloud.bigdataoss:gcs-connector", "gcs-connector"),
    "abfs": ("org.apache.hadoop:hadoop-azure", "hadoop-azure"),
    "abfss": ("org.apache.hadoop:hadoop-azure", "hadoop-azure"),
}


def pyspark_hadoop_version() -> str | None:
    """The Hadoop version of the installed pyspark (from its hadoop-client-api jar), None if unknown."""
    import glob

    try:
        import pyspark
    except ImportError:
        return None
    jars = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "hadoop-client-api-*.jar"))
    match = re.search(r"hadoop-client-api-([\d.]+)\.jar$", jars[0]) if jars else None
    return match.group(1) if match else None


def spark_archive_access_error(uri: str, spark_conf: Mapping[str, str], conf_setting: str = "FINK_SPARK_CONF"
                               ) -> str | None:
    """Why Spark cannot read an archive at `uri` with `spark_conf`, or None when it can (a local
    path, or the scheme's Hadoop connector configured).

    PyPI's pyspark carries no object-store connector: reading s3:// or s3a:// needs the
    hadoop-aws jar of pyspark's own Hadoop version and the AWS SDK bundle it depends on, which
    `spark.jars.packages` fetches from a Maven repository (or `spark.jars` lists as local files).
    Without them Spark fails deep in a job (`No FileSystem for scheme "s3"`, or a
    ClassNotFoundException for S3AFileSystem); this says so before Spark starts.
    """
    scheme = scheme_of(uri)
    if scheme not in _HADOOP_CONNECTORS:
        return None
    coordinates, jar = _HADOOP_CONNECTORS[scheme]
    configured = " ".join(str(spark_conf.get(key, "")) for key in ("spark.jars.packages", "spark.jars"))
    if jar in configured:
        return None
    version = pyspark_hadoop_version() or "<pyspark's Hadoop version>"
    package = f"{coordinates}:{version}" if jar == "hadoop-aws" else coordinates + ":<version>"
    s3_impl = (', "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem" (s3:// read by S3A), '
               'and the endpoint and credentials as spark.hadoop.fs.s3a.endpoint / '
               'spark.hadoop.fs.s3a.path.style.access / the AWS_* environment of driver and executors'
               if scheme in S3_SCHEMES else "")
    return (f"the archive {uri} is on object storage ({scheme}://), which Spark reads only through Hadoop's "
            f"{jar} connector: pyspark from PyPI does not include it. Add to {conf_setting}: "
            f'"spark.jars.packages": "{package}" (the Hadoop version of this pyspark; it brings its AWS SDK '
            f"bundle and needs a Maven repository reachable from the driver, or list both jars in spark.jars)"
            f"{s3_impl}; or put the archive on a filesystem path shared by the driver and the executors")
