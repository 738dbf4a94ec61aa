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


PACKAGE = REPO_ROOT / "fink_pipeline"
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120


def test_modules_and_functions_stay_small() -> None:
    """Each concept in a module a reader can hold in mind: no module over 600 lines, no
    function over 120 (data tables would be the exception; there is none today)."""
    import ast

    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = str(path.relative_to(REPO_ROOT))
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def test_survey_specific_branches_live_in_the_surveys() -> None:
    """Survey behaviour is a method of the survey, not a `survey.name == ...` branch elsewhere."""
    import re

    branch = re.compile(r"""\bname\s*[!=]=\s*["'](ztf|lsst|elasticc)["']""")
    found = [f"{path.relative_to(REPO_ROOT)}:{i}" for path in sorted(PACKAGE.rglob("*.py"))
             if PACKAGE / "surveys" not in path.parents
             for i, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert found == []


def test_publishing_workers_import_neither_polars_nor_pandas():
    """What a publishing task unpickles and runs (the task, the Arrow content reader, a survey's
    Arrow classifier) imports no polars or pandas: each Python worker would carry ~30 MiB more
    for the decoder it never uses (and there are 2-4 workers beside the JVM)."""
    code = ("import sys, fink_pipeline.kafka.publish_task, fink_pipeline.transfer.arrow_content\n"
            "from fink_pipeline.surveys import get_survey\n"
            "[get_survey(name).classify_arrow for name in ('ztf', 'lsst', 'elasticc')]\n"
            "print(sorted(m for m in ('polars', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_consumers_and_the_command_load_polars_only_when_a_batch_needs_it():
    """The table consumer decodes with numpy; polars (~30 MiB per process) is the decoder's
    fallback and a catalogue reader's tool: neither the command, the Dagster definitions nor a
    consumer that decodes a light batch imports it."""
    code = ("import sys, fink_pipeline.cli.main, fink_pipeline.definitions, fink_pipeline.consumer.core\n"
            "from fink_pipeline.avro import avro_schema_from_arrow, decode_batch_safe, encode_batch\n"
            "from fink_pipeline_tests.synthetic_topics import synthetic_alerts\n"
            "from fink_pipeline.surveys import get_survey\n"
            "table = next(iter(synthetic_alerts(get_survey('ztf'), 500, 'light', seed=3, batch_size=500)))\n"
            "schema = avro_schema_from_arrow(table.schema)\n"
            "decoded, bad, _ = decode_batch_safe(encode_batch(table, schema).to_pylist(), schema)\n"
            "assert decoded.num_rows == 500 and not bad\n"
            "print('polars' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
