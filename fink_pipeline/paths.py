"""Default locations of the pipeline's local state (broker state, archive, tables)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from fink_pipeline.env import EnvSettings


class StateSettings(EnvSettings):
    """Where the local state lives, `FINK_PIPELINE_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="FINK_PIPELINE_")

    home: Path | None = Field(
        default=None, description="the local state folder (broker, archive, tables, requests); default <cwd>/.fink_pipeline"
    )
    cache: Path | None = Field(
        default=None, description="files rebuilt when missing (the JVM's class archive, archive footer summaries); default "
        "$XDG_CACHE_HOME/fink-pipeline, else ~/.cache/fink-pipeline"
    )
    class_cache: bool = Field(
        default=True, description="map Spark's classes from a class-data-sharing archive in the cache folder, "
        "recorded by the first local JVM (off: every local JVM loads them from the jars)"
    )


def state_dir() -> Path:
    """The local state folder: `$FINK_PIPELINE_HOME`, else `<cwd>/.fink_pipeline` (created)."""
    home = StateSettings.load().home
    path = home.expanduser() if home else Path.cwd() / ".fink_pipeline"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def cache_dir() -> Path:
    """The cache folder: `$FINK_PIPELINE_CACHE`, else `$XDG_CACHE_HOME/fink-pipeline`, else
    `~/.cache/fink-pipeline` (not created here). What it holds is rebuilt when missing."""
    cache = StateSettings.load().cache
    if cache:
        return cache.expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fink-pipeline"


def default_archive_root() -> Path:
    """Default root of the alert archive: `state_dir()/archive` (not created here)."""
    return state_dir() / "archive"


def default_table_root() -> Path:
    """Default root of the output tables: `state_dir()/tables` (not created here)."""
    return state_dir() / "tables"
