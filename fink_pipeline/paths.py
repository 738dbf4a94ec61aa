"""Default locations of the pipeline's local state (broker state, archive, tables)."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "FINK_PIPELINE_HOME"


def state_dir() -> Path:
    """The local state folder: `$FINK_PIPELINE_HOME`, else `<cwd>/.fink_pipeline` (created)."""
    value = os.environ.get(HOME_ENV, "").strip()
    path = Path(value).expanduser() if value else Path.cwd() / ".fink_pipeline"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def default_archive_root() -> Path:
    """Default root of the alert archive: `state_dir()/archive` (not created here)."""
    return state_dir() / "archive"


def default_table_root() -> Path:
    """Default root of the output tables: `state_dir()/tables` (not created here)."""
    return state_dir() / "tables"
