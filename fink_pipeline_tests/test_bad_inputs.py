"""Bad-input corpus at the request and CLI level: every malformed or hostile input is refused
early with the exact error class and one clear line, and nothing is executed or written.

* `bad_inputs/*.yaml`: request files, each declaring in its header what it must raise
  (`# expect: <error class>`, `# message: <fragment>`, `# why: ...`; while a product fix is
  pending, `# xfail: <reason>` for every check or `# xfail-cli: <reason>` for the CLI ones). Each file is checked three ways: the library
  (`load_request_file` + `plan_transfer`, exact class), `fink-pipeline request validate` and
  `request submit` in process (exit code 2, one `error:` line on stderr, no request stored, no
  broker started, no Spark), and a representative subset through a real `fink-pipeline`
  subprocess (with JAVA_HOME pointing nowhere, so a Spark start would fail loudly).
* invalid dates and ranges given as CLI flags (exact class through the CLI's own parser too);
  oversized requests built at run time (10,000 conditions, a 1 MB condition or textarea, 1 MB
  names, a 2 MB request file, huge class and content lists): refused by the request model
  before any condition is parsed, with the field and the limit; the hostile-condition path
  through Dagster (no topic, no table, no Spark); traversal in a stored topic name; fink-client
  credentials files (permissions, shape).

The per-condition allow-list is covered by test_conditions.py; this file checks the same
refusals reach the user through a request and the CLI.

Each refusal is recorded as `reliability_record(cases=0, failures_survived=k)`: nothing was
published, so no alert is at stake (a failure survived, not a case; see reliability_plugin).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.cli.main import main as fink_pipeline_main
from fink_pipeline.kafka.settings import CredentialsError, KafkaSettings
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.conditions import validator as conditions_validator
from fink_pipeline.transfer.conditions import MAX_CONDITION_LENGTH, ConditionError
from fink_pipeline.transfer.content import ContentError
from fink_pipeline.transfer.crossmatch.catalog import CatalogError
from fink_pipeline.transfer.plan import NoDataError, plan_transfer
from fink_pipeline.transfer.request import (
    MAX_CLASSES,
    MAX_CONDITIONS,
    MAX_CONDITIONS_LENGTH,
    MAX_CONTENT_FIELDS,
    MAX_NAME_LENGTH,
    MAX_NIGHTS,
    MAX_REQUEST_FILE_BYTES,
    RequestError,
    load_request_file,
    request_from_mapping,
)
from fink_pipeline.transfer.store import RequestStore

pytestmark = pytest.mark.reliability

CORPUS = Path(__file__).parent / "bad_inputs"
START = dt.date(2024, 3, 1)
ERROR_CLASSES = {cls.__name__: cls for cls in (RequestError, NoDataError, ConditionError, ContentError, CatalogError)}
# Cases also run through a real `fink-pipeline request validate` process (one per kind of input).
SUBPROCESS_CASES = (
    "syntax_unclosed_mapping", "python_object_tag", "unknown_key_typo", "portal_bad_startdate",
    "lsst_unknown_block", "portal_blocks", "too_many_nights", "unknown_content_field",
    "hostile_condition_reflect", "unknown_class_near_miss", "oversized_conditions_count",
    "catalog_dec_out_of_range", "catalog_duplicate_ids",
)  # fmt: skip


@dataclass(frozen=True)
class BadInput:
    """One corpus file and what it must raise."""

    path: Path
    error: type[Exception]
    message: str
    why: str
    xfail: str | None
    xfail_cli: str | None

    @property
    def name(self) -> str:
        return self.path.stem


def read_corpus() -> list[BadInput]:
    """Parse the `# key: value` header of every corpus file."""
    cases = []
    for path in sorted(CORPUS.glob("*.yaml")):
        header: dict[str, str] = {}
        for line in path.read_text().splitlines():
            match = re.match(r"^#\s*(expect|message|why|xfail|xfail-cli):\s*(.*)$", line)
            if not match:
                break
            header[match.group(1)] = match.group(2).strip()
        assert {"expect", "message", "why"} <= set(header), f"{path.name}: header needs expect, message and why"
        cases.append(BadInput(path, ERROR_CLASSES[header["expect"]], header["message"], header["why"],
                              header.get("xfail"), header.get("xfail-cli")))
    return cases


CASES = read_corpus()


def case_params(cases: list[BadInput], cli: bool = False):
    params = []
    for case in cases:
        reason = case.xfail or (case.xfail_cli if cli else None)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    """Two nights of 50 alerts (2024-03-01..02): requests on them are otherwise valid."""
    root = str(tmp_path_factory.mktemp("bad-inputs-archive"))
    generate_archive(get_survey("ztf"), root, START, nights=2, alerts_per_night=50, seed=3, with_cutouts=False)
    return root


@pytest.fixture(autouse=True)
def no_spark(monkeypatch):
    """Fails any attempt to build a SparkSession in this process, and checks none appeared."""
    import fink_pipeline.spark

    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr((args, kwargs)))
        raise RuntimeError("a SparkSession was requested while handling a bad input")

    monkeypatch.setattr(fink_pipeline.spark, "build_spark_session", refuse)
    before = _active_spark_context()
    yield attempts
    assert attempts == [], "Spark was asked for"
    assert _active_spark_context() is before, "a Spark context was created"


def _active_spark_context():
    pyspark = sys.modules.get("pyspark")
    return None if pyspark is None else pyspark.SparkContext._active_spark_context


@pytest.fixture
def state_dir(tmp_path, monkeypatch) -> Path:
    """An empty FINK_PIPELINE_HOME (requests, logs and broker state would land here)."""
    home = tmp_path / "state"
    monkeypatch.setenv("FINK_PIPELINE_HOME", str(home))
    monkeypatch.delenv("FINK_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.chdir(tmp_path)  # a hostile input writing relative files would write here
    return home


def assert_nothing_written(home: Path, cwd: Path) -> None:
    """No stored request, no launch log, no broker state, no table, no stray file in cwd."""
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []
    assert written == [], f"files written under the state dir: {written}"
    strays = sorted(p.name for p in cwd.iterdir() if p.name != home.name)
    assert strays == [], f"files written in the working directory: {strays}"


def validate_in_process(path: Path, archive: str):
    """What `request validate` does, as library calls: load, then plan against the archive."""
    request = load_request_file(path)
    return plan_transfer(request, archive, list_nights(archive, request.survey))


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# --------------------------------------------------------------------------------------------
# the YAML corpus


def test_corpus_covers_each_kind_of_bad_request():
    names = {c.name for c in CASES}
    kinds = {
        "syntax": "syntax_", "wrong types": "wrong_type_", "unknown keys": "unknown_key",
        "portal format": "portal_", "blocks on ztf": "portal_blocks", "negation of nothing": "negation_of_nothing",
        "unknown lsst block": "lsst_unknown_block", "unknown lsst filter": "lsst_unknown_filter",
        "ztf class on lsst": "lsst_ztf_class", "ztf field on lsst": "lsst_ztf_field_condition",
        "catalogue without radius": "portal_catalogue", "catalogue columns": "catalog_missing_column",
        "catalogue coordinates": "catalog_dec_out_of_range", "catalogue sexagesimal": "catalog_bad_sexagesimal",
        "catalogue ids": "catalog_duplicate_ids", "catalogue radii": "catalog_negative_radius",
        "catalogue files": "catalog_not_a_catalogue", "empty catalogue": "catalog_header_only", "hostile conditions": "hostile_condition_", "unknown classes": "unknown_class",
        "unknown fields": "unknown_content_field", "oversized range": "too_many_nights",
        "too many conditions": "oversized_conditions_count", "conditions too long": "oversized_conditions_total",
        "oversized textarea": "oversized_conditions_textarea", "oversized names": "oversized_class_name",
    }  # fmt: skip
    missing = [kind for kind, prefix in kinds.items() if not any(n.startswith(prefix) for n in names)]
    assert missing == []
    assert set(SUBPROCESS_CASES) <= names


@pytest.mark.parametrize("case", case_params(CASES))
def test_request_file_raises_exact_error(case: BadInput, archive, state_dir, reliability_record):
    with pytest.raises(Exception) as info:
        validate_in_process(case.path, archive)
    assert type(info.value) is case.error, f"{case.why}: got {type(info.value).__name__}: {info.value}"
    assert case.message in str(info.value)
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=1)


@pytest.mark.parametrize("case", case_params(CASES, cli=True))
def test_request_file_cli_validate_and_submit_refuse_it(case: BadInput, archive, state_dir, capsys, reliability_record):
    for action in ("validate", "submit"):
        code = fink_pipeline_main(["request", action, str(case.path), "--archive", archive])
        out, err = capsys.readouterr()
        assert code == 2, f"{action}: exit {code}\n{out}{err}"
        assert out == ""
        assert case.message in one_error_line(err)
    # submit stores the request only once it is valid, and needs a broker only after that
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=1)


@pytest.mark.parametrize("case", case_params([c for c in CASES if c.name in SUBPROCESS_CASES], cli=True))
def test_request_file_cli_subprocess_refuses_it(case: BadInput, archive, state_dir, reliability_record):
    env = {**os.environ, "FINK_PIPELINE_HOME": str(state_dir), "JAVA_HOME": str(state_dir.parent / "no-java")}
    completed = subprocess.run(
        [sys.executable, "-m", "fink_pipeline.cli.main", "request", "validate", str(case.path), "--archive", archive],
        capture_output=True, text=True, timeout=120, env=env, cwd=state_dir.parent,
    )
    assert completed.returncode == 2, completed.stdout + completed.stderr
    assert completed.stdout == ""
    assert case.message in one_error_line(completed.stderr)
    assert "Traceback" not in completed.stderr
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=1)


def test_unquoted_yaml_dates_are_accepted(tmp_path, archive):
    """Control: YAML reads an unquoted 2024-03-01 as a date; it is a valid night, not bad input."""
    path = tmp_path / "portal.yaml"
    path.write_text("dates:\n  startdate: 2024-03-01\n  stopdate: 2024-03-02\ncontent: [light]\n")
    request = load_request_file(path)
    assert (request.start, request.stop) == ("2024-03-01", "2024-03-02")


# --------------------------------------------------------------------------------------------
# invalid dates and ranges as flags


FLAG_CASES = [
    (["--start", "2024-03-01", "--stop", "2024-02-30"], RequestError, "stop: '2024-02-30' is not a date"),
    (["--start", "01/03/2024", "--stop", "2024-03-02"], RequestError,
     "start: '01/03/2024' is not a date; write it as YYYY-MM-DD"),
    (["--start", "2024-03-05", "--stop", "2024-03-01"], RequestError,
     "stop (2024-03-01) is before start (2024-03-05); swap them"),
    (["--start", "2024-03-01"], RequestError, "stop: is required"),
    (["--start", "1024-03-01", "--stop", "2024-03-02"], RequestError, f"more than {MAX_NIGHTS}; check the years"),
    (["--start", "2024-03-01", "--stop", "2024-03-02", "--limit", "0"], RequestError, "limit must be a positive number"),
    (["--start", "2024-03-01", "--stop", "2024-03-02", "--survey", "zft"], RequestError, "did you mean 'ztf'?"),
    (["--start", "2024-03-01", "--stop", "2024-03-02", "--content", "light,candid"], RequestError, "cannot be combined"),
    (["--start", "2024-03-01", "--stop", "2024-03-02", "--content", "candidate.nope"], ContentError,
     "unknown field 'candidate.nope'"),
    (["--start", "2024-03-01", "--stop", "2024-03-02", "--classes", "Early SN candidate"], RequestError,
     "is not a Fink class; did you mean 'Early SN Ia candidate'?"),
    (["--start", "2024-03-01", "--stop", "2024-03-02", "--filter", "kn"], RequestError, "unknown livestream filter 'kn'"),
    (["--start", "2024-03-01", "--stop", "2024-03-02", "--condition", "reflect('java.lang.System', 'exit', 0)"],
     ConditionError, 'function "reflect" is not allowed'),
    (["--start", "2025-01-01", "--stop", "2025-01-02"], NoDataError,
     "No alert data found in between 2025-01-01 and 2025-01-02"),
]  # fmt: skip


def plan_from_flags(action: str, flags: list[str], archive: str):
    """What `fink-pipeline request <action> <flags>` validates, through the CLI's own parser."""
    from fink_pipeline.cli.main import build_parser
    from fink_pipeline.cli.request import plan_request

    return plan_request(build_parser().parse_args(["request", action, *flags, "--archive", archive]))


@pytest.mark.parametrize(("flags", "error", "message"), FLAG_CASES, ids=[m[:40] for _, _, m in FLAG_CASES])
def test_invalid_flags_refused_before_anything_runs(flags, error, message, archive, state_dir, capsys,
                                                    reliability_record):
    for action in ("validate", "submit"):
        with pytest.raises(Exception) as info:
            plan_from_flags(action, flags, archive)
        assert type(info.value) is error, f"{action}: got {type(info.value).__name__}: {info.value}"
        assert message in str(info.value)
        code = fink_pipeline_main(["request", action, *flags, "--archive", archive])
        out, err = capsys.readouterr()
        assert code == 2 and out == "", f"{action}: exit {code}\n{out}{err}"
        assert message in one_error_line(err)
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=1)


# --------------------------------------------------------------------------------------------
# oversized requests


@pytest.fixture
def conditions_parsed(monkeypatch) -> list[str]:
    """Every condition the allow-list parses (an oversized request must be refused before any)."""
    parsed: list[str] = []
    original = conditions_validator.validate_condition

    def counting(condition, *args, **kwargs):
        parsed.append(condition[:40])
        return original(condition, *args, **kwargs)

    monkeypatch.setattr(conditions_validator, "validate_condition", counting)  # where validate_conditions calls it
    return parsed


def test_condition_over_its_own_limit_is_refused_without_echoing_it(archive, state_dir, capsys, reliability_record):
    """Under the request's total but over the per-condition limit: the allow-list refuses it."""
    condition = "candidate.magpsf > 19 AND " * 400 + "candidate.drb > 0.5"  # ~10 kB, 5 times the limit
    assert MAX_CONDITION_LENGTH < len(condition) <= MAX_CONDITIONS_LENGTH
    path = state_dir.parent / "long_condition.yaml"
    path.write_text(yaml.safe_dump({"start": "2024-03-01", "stop": "2024-03-02", "conditions": [condition]}))
    with pytest.raises(Exception) as info:
        validate_in_process(path, archive)
    assert type(info.value) is ConditionError
    assert f"keep each condition under {MAX_CONDITION_LENGTH} characters" in str(info.value)
    code = fink_pipeline_main(["request", "validate", str(path), "--archive", archive])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert f"condition too long ({len(condition)} characters)" in line
    assert len(line) < 1000  # the condition is shown truncated, not echoed whole
    path.unlink()
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=1)


ONE_MB = 1_000_000
CONDITION = "candidate.magpsf > 19"
# (request keys, message): hostile sizes refused by the request model, naming the field and the limit
OVERSIZED = {
    "10k-conditions": ({"conditions": [CONDITION] * 10_000},
                       f"conditions: 10000 extra conditions, at most {MAX_CONDITIONS}; keep the ones you need"),
    "1MB-condition": ({"conditions": ["candidate.magpsf > 19 AND " * (ONE_MB // 26) + CONDITION]},
                      f"characters of extra conditions, at most {MAX_CONDITIONS_LENGTH} in all"),
    "1MB-textarea": ({"extra_cond": "rb > 0;" * (ONE_MB // 7)},  # 142,857 tiny conditions in one text
                     f"conditions: 999999 characters of extra conditions, at most {MAX_CONDITIONS_LENGTH} in all"),
    "1MB-class-name": ({"classes": ["SN candidate", "x" * ONE_MB]},
                       f"classes: item 1 is {ONE_MB} characters long, at most {MAX_NAME_LENGTH} for a class name"),
    "10k-classes": ({"classes": [f"Made-up class {i}" for i in range(10_000)]},
                    f"classes: 10000 classes requested, at most {MAX_CLASSES}"),
    "1MB-content-field": ({"content": ["candidate." + "m" * ONE_MB]},
                          f"content: item 0 is {ONE_MB + 10} characters long, at most {MAX_NAME_LENGTH}"),
    "5k-content-fields": ({"content": [f"candidate.magpsf{i}" for i in range(5000)]},
                          f"content: 5000 content fields, at most {MAX_CONTENT_FIELDS}; use the full packet"),
    "1MB-survey": ({"survey": "z" * ONE_MB}, f"survey: {ONE_MB} characters long, at most {MAX_NAME_LENGTH} for a name"),
    "1MB-date": ({"start": "2" * ONE_MB}, f"start: {ONE_MB} characters long, at most {MAX_NAME_LENGTH} for a date"),
    "1MB-filter": ({"filters": ["k" * ONE_MB]},
                   f"filters: item 0 is {ONE_MB} characters long, at most {MAX_NAME_LENGTH} for a filter or block name"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(OVERSIZED))
def test_oversized_request_is_refused_before_anything_is_parsed(name, archive, state_dir, conditions_parsed, capsys,
                                                                reliability_record):
    keys, message = OVERSIZED[name]
    path = state_dir.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"start": "2024-03-01", "stop": "2024-03-02", **keys}, width=2**31))
    assert path.stat().st_size <= MAX_REQUEST_FILE_BYTES  # refused for its content, not its size
    for attempt in (lambda: request_from_mapping({"start": "2024-03-01", "stop": "2024-03-02", **keys}),
                    lambda: validate_in_process(path, archive)):
        with pytest.raises(Exception) as info:
            attempt()
        assert type(info.value) is RequestError, f"got {type(info.value).__name__}: {str(info.value)[:300]}"
        assert message in str(info.value)
        assert len(str(info.value)) < 300, "the oversized value was echoed"
    code = fink_pipeline_main(["request", "submit", str(path), "--archive", archive])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(one_error_line(err)) < 400
    assert conditions_parsed == [], "conditions were parsed before the request's size was checked"
    path.unlink()
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=1)


def test_oversized_condition_flags_are_refused_before_any_is_parsed(archive, state_dir, conditions_parsed, capsys,
                                                                    reliability_record):
    flags = ["--start", "2024-03-01", "--stop", "2024-03-02"]
    cases = [
        # 1,000 flags (argparse is slow on 10,000: the 10,000 case goes through a file and the launchpad)
        ([arg for _ in range(1_000) for arg in ("--condition", CONDITION)], "1000 extra conditions"),
        (["--condition", "candidate.magpsf > 19 AND " * (ONE_MB // 26) + CONDITION],
         f"characters of extra conditions, at most {MAX_CONDITIONS_LENGTH} in all"),
        (["--condition", ";".join([CONDITION] * (MAX_CONDITIONS + 1))], f"{MAX_CONDITIONS + 1} extra conditions"),
    ]
    for extra, message in cases:
        for action in ("validate", "submit"):
            with pytest.raises(Exception) as info:
                plan_from_flags(action, flags + extra, archive)
            assert type(info.value) is RequestError and message in str(info.value)
            code = fink_pipeline_main(["request", action, *flags, *extra, "--archive", archive])
            out, err = capsys.readouterr()
            assert code == 2 and out == ""
            line = one_error_line(err)
            assert line.startswith("error: conditions: ") and message in line and len(line) < 300
    assert conditions_parsed == []
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=len(cases))


def test_oversized_request_file_is_not_parsed(archive, state_dir, capsys, reliability_record, monkeypatch):
    path = state_dir.parent / "big.yaml"
    path.write_text("start: '2024-03-01'\nstop: '2024-03-02'\n" + "# padding\n" * (2 * ONE_MB // 10))
    parsed: list[int] = []
    monkeypatch.setattr(yaml, "safe_load", lambda *a, **k: parsed.append(1) or pytest.fail("YAML was parsed"))
    with pytest.raises(Exception) as info:
        load_request_file(path)
    assert type(info.value) is RequestError
    assert f"request file {path} is larger than {MAX_REQUEST_FILE_BYTES} bytes" in str(info.value)
    code = fink_pipeline_main(["request", "validate", str(path), "--archive", archive])
    _, err = capsys.readouterr()
    assert code == 2 and "is larger than" in one_error_line(err)
    assert parsed == []
    path.unlink()
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=1)


def test_request_path_that_never_ends_is_read_only_up_to_the_limit(state_dir, reliability_record):
    with pytest.raises(Exception) as info:
        load_request_file("/dev/zero")  # a naive read would never return
    assert type(info.value) is RequestError and "is larger than" in str(info.value)
    with pytest.raises(Exception) as info:
        load_request_file(state_dir.parent)
    assert type(info.value) is RequestError and "is a directory" in str(info.value)
    assert_nothing_written(state_dir, state_dir.parent)
    reliability_record(cases=0, failures_survived=2)


def test_requests_at_the_limits_are_accepted(archive):
    """Controls: the size limits are inclusive and do not refuse real requests."""
    request = request_from_mapping({"start": "2024-03-01", "stop": "2024-03-02",
                                    "conditions": [CONDITION] * MAX_CONDITIONS,
                                    "classes": ["SN candidate", "x" * MAX_NAME_LENGTH]})
    assert len(request.conditions) == MAX_CONDITIONS
    plan = plan_transfer(request.model_copy(update={"classes": ["SN candidate"]}), archive,
                         list_nights(archive, "ztf"))
    assert len(plan.conditions) == MAX_CONDITIONS
    longest = "candidate.magpsf > 19" + " " * (MAX_CONDITION_LENGTH - 21)
    full = request_from_mapping({"start": "2024-03-01", "stop": "2024-03-02",
                                 "conditions": [longest] * (MAX_CONDITIONS_LENGTH // MAX_CONDITION_LENGTH)})
    assert len(full.conditions) == MAX_CONDITIONS_LENGTH // MAX_CONDITION_LENGTH


# --------------------------------------------------------------------------------------------
# hostile input through the Dagster launch path


@pytest.mark.kafka
def test_hostile_condition_submitted_to_dagster_fails_first_step(archive, kafka_broker, tmp_path, reliability_record):
    """A request stored by the launchpad or a sensor is validated again by the first asset:
    the run fails there (not retried) and neither Spark, Kafka nor the table is touched."""
    import dagster as dg

    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.kafka.topics import topic_exists
    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.transfer.request import TransferRequest

    request = TransferRequest(
        start="2024-03-01", stop="2024-03-02", conditions=["reflect('java.lang.System', 'exit', 0) IS NULL"]
    ).with_identity()
    tables = tmp_path / "tables"
    with dg.instance_for_test() as instance:
        result = run_transfer(request, bootstrap=kafka_broker, archive_root=archive, table_root=str(tables),
                              request_root=str(tmp_path / "requests"), instance=instance)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["transfer_request"]
    message = failures[0].event_specific_data.user_failure_data.description
    assert 'function "reflect" is not allowed (reflective call into the JVM)' in message
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    settings = KafkaSettings(bootstrap_servers=kafka_broker)
    for topic in (request.topic, f"{request.topic}_schema", f"{request.topic}_status"):
        assert not topic_exists(settings, topic)
    assert not (tables / request.topic).exists()
    reliability_record(cases=0, failures_survived=1)


def test_oversized_launchpad_form_fails_its_submit_run_before_parsing(archive, tmp_path, conditions_parsed,
                                                                      reliability_record):
    """The launchpad form goes through the same request model: one clear, non-retried failure."""
    import dagster as dg

    from fink_pipeline.orchestration.partitions import transfer_partitions
    from fink_pipeline.orchestration.resources import ArchiveResource, KafkaResource, RequestStoreResource
    from fink_pipeline.orchestration.submit import submit_transfer_job

    form = {"start": "2024-03-01", "stop": "2024-03-02", "conditions": [CONDITION] * 10_000}
    with dg.instance_for_test() as instance:
        result = submit_transfer_job.execute_in_process(
            run_config={"ops": {"submit_transfer": {"config": form}}},
            resources={"archive": ArchiveResource(root=archive), "kafka": KafkaResource(),
                       "requests": RequestStoreResource(root=str(tmp_path / "requests"))},
            instance=instance, raise_on_error=False,
        )
        assert instance.get_dynamic_partitions(transfer_partitions.name) == []
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.event_specific_data.user_failure_data.description == (
        f"conditions: 10000 extra conditions, at most {MAX_CONDITIONS}; "
        "keep the ones you need (they are ANDed: merge those on one field)"
    )
    assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert not (tmp_path / "requests").exists() and conditions_parsed == []
    reliability_record(cases=0, failures_survived=1)


# --------------------------------------------------------------------------------------------
# stored requests


def test_stored_request_topic_cannot_escape_the_store(tmp_path, reliability_record):
    outside = tmp_path / "outside.json"
    request = request_from_mapping({"start": "2024-03-01", "stop": "2024-03-02"}).with_identity()
    outside.write_text(request.model_dump_json())
    store = RequestStore(tmp_path / "requests")
    store.root.mkdir()
    with pytest.raises(Exception) as info:
        store.load("../outside")
    assert type(info.value) is RequestError, f"got {type(info.value).__name__}: {info.value}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside.json", "requests"]
    assert list(store.root.iterdir()) == []
    reliability_record(cases=0, failures_survived=1)


# --------------------------------------------------------------------------------------------
# fink-client credentials files

PASSWORD = "s3cr3t-Pa55word"


def write_credentials(path: Path, mode: int, **values) -> Path:
    data = {"username": "alice", "password": PASSWORD, "group_id": "alice_ztf", "servers": "127.0.0.1:9092",
            "mytopics": [], "maxtimeout": 10, **values}
    path.write_text(yaml.safe_dump(data))
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_credentials_with_password_readable_by_others_are_refused(tmp_path, mode, capsys, reliability_record):
    path = write_credentials(tmp_path / "ztf_credentials.yml", mode)
    with pytest.raises(CredentialsError) as info:
        KafkaSettings.from_credentials_file(path)
    assert type(info.value) is CredentialsError
    assert f"has mode {mode:04o}" in str(info.value)
    assert f"run `chmod 600 {path}`" in str(info.value)
    assert PASSWORD not in str(info.value)

    # the consumer CLI refuses it before connecting or creating its output folder
    from fink_pipeline.cli.datatransfer import main as datatransfer_main

    outdir = tmp_path / "out"
    code = datatransfer_main(["-topic", "ftransfer_ztf_2024-03-01_1", "-outdir", str(outdir), "-credentials", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    line = one_error_line(err)
    assert "chmod 600" in line and PASSWORD not in out + err
    assert not outdir.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["ztf_credentials.yml"]
    reliability_record(cases=0, failures_survived=1)


def test_credentials_cli_subprocess_refuses_world_readable_password(tmp_path, reliability_record):
    path = write_credentials(tmp_path / "ztf_credentials.yml", 0o644)
    completed = subprocess.run(
        [sys.executable, "-m", "fink_pipeline.cli.datatransfer", "-topic", "ftransfer_ztf_2024-03-01_1",
         "-outdir", str(tmp_path / "out"), "-credentials", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert f"run `chmod 600 {path}`" in one_error_line(completed.stderr)
    assert PASSWORD not in completed.stdout + completed.stderr
    assert not (tmp_path / "out").exists()
    reliability_record(cases=0, failures_survived=1)


def test_credentials_that_are_safe_are_accepted(tmp_path):
    """Controls: the permission check is not over-broad."""
    private = KafkaSettings.from_credentials_file(write_credentials(tmp_path / "a.yml", 0o600))
    assert private.security_protocol == "SASL_PLAINTEXT" and private.sasl_mechanism == "SCRAM-SHA-512"
    assert private.sasl_password.get_secret_value() == PASSWORD
    public = KafkaSettings.from_credentials_file(write_credentials(tmp_path / "b.yml", 0o644, password=None))
    assert public.security_protocol == "PLAINTEXT" and public.group_id == "alice_ztf"


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("servers: [unclosed", CredentialsError, "is not valid YAML"),
        ("- 127.0.0.1:9092\n", CredentialsError, "must hold a YAML mapping"),
        ("username: alice\ngroup_id: g\n", CredentialsError, "has no `servers` entry"),
    ],
    ids=["not-yaml", "not-a-mapping", "no-servers"],
)
def test_malformed_credentials_files_are_refused(tmp_path, content, error, message, reliability_record):
    path = tmp_path / "ztf_credentials.yml"
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(Exception) as info:
        KafkaSettings.from_credentials_file(path)
    assert type(info.value) is error and message in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ztf_credentials.yml"]
    reliability_record(cases=0, failures_survived=1)


def test_credentials_with_bad_server_name_do_not_echo_the_password(tmp_path, reliability_record):
    path = write_credentials(tmp_path / "ztf_credentials.yml", 0o600, servers="localhost")
    with pytest.raises(Exception) as info:
        KafkaSettings.from_credentials_file(path)
    # the file's own error class and path, one line, not pydantic's multi-line report
    assert type(info.value) is CredentialsError
    assert str(path) in str(info.value) and "bootstrap server 'localhost' is not host:port" in str(info.value)
    assert PASSWORD not in str(info.value) and "\n" not in str(info.value)
    reliability_record(cases=0, failures_survived=1)
