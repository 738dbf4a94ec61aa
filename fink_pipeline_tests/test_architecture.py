"""The package's layering, as import-linter contracts (pyproject.toml, [tool.importlinter]):
surveys -> archive -> transfer -> kafka -> consumer -> orchestration -> entry points, each layer
importing only the layers under it, no import cycle between sibling modules at any depth
(function-local imports included), and no Dagster import outside the orchestration wiring."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--no-cache", "--config", str(REPO_ROOT / "pyproject.toml")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout
