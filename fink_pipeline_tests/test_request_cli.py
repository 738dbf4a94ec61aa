"""`fink-pipeline request validate|estimate|submit` from the command line.

`validate` must exit non-zero with one line naming the field and the fix for every kind of bad
input, before any Spark session exists (checked in a subprocess over 40+ hostile conditions and
the other errors). `estimate` prints a table per night and class with totals and size, and the
same numbers as JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.stats import read_night_statistics, update_statistics
from fink_pipeline.cli.main import main
from fink_pipeline.surveys import get_survey
from fink_pipeline_tests.test_conditions import REJECTED

ZTF = get_survey("ztf")
START = dt.date(2024, 3, 1)
NIGHTS = [START, START + dt.timedelta(days=1)]
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    """2 nights x 1,000 ZTF alerts, with their nightly statistics."""
    root = str(tmp_path_factory.mktemp("cli_archive"))
    generate_archive(ZTF, root, START, nights=2, alerts_per_night=1_000, seed=13, with_cutouts=False)
    update_statistics(ZTF, root)
    return root


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def nights_args(archive: str) -> list[str]:
    return ["--archive", archive, "--start", NIGHTS[0].isoformat(), "--stop", NIGHTS[1].isoformat()]


# --------------------------------------------------------------------------------------------
# validate
# --------------------------------------------------------------------------------------------


def test_validate_accepts_a_fink_portal_export(capsys, archive, tmp_path) -> None:
    request_file = tmp_path / "request.yaml"
    request_file.write_text(textwrap.dedent("""\
        dates:
          startdate: '2024-03-01'
          stopdate: '2024-03-03'
        fclass: [Unknown, '(SIMBAD) RRLyr', SN candidate]
        filters: vra
        extra_cond: "candidate.magpsf > 19.5; candidate.drb > 0.5"
        content: [candid, candidate.magpsf, mangrove.HyperLEDA_name]
        """))
    rc, out, err = run_cli(capsys, "request", "validate", str(request_file), "--archive", archive)
    assert rc == 0, err
    assert out.splitlines()[0] == "valid: ztf 2024-03-01..2024-03-03, 2 nights present, 1 missing"
    assert "condition:  candidate.magpsf > 19.5" in out and "condition:  candidate.drb > 0.5" in out
    assert "filter:     vra (fink_filters.ztf.livestream.filter_vra.filter.vra)" in out
    assert "content:    ['candid', 'magpsf', 'HyperLEDA_name', 'jd'] (4 columns)" in out
    assert err == ""


def test_validate_warns_about_tns_classes_without_a_catalogue(capsys, archive) -> None:
    rc, out, err = run_cli(capsys, "request", "validate", *nights_args(archive), "--classes", "(TNS) SN Ia")
    assert rc == 0
    assert err.startswith("warning: classes: '(TNS) SN Ia' needs a TNS catalogue")


# (id, extra arguments, expected one-line message after "error: ")
ERRORS = [
    ("unknown-fink-class", ["--classes", "SN candidat"],
     "classes: unknown class 'SN candidat'; did you mean 'SN candidate'?"),
    ("wrong-case-class", ["--classes", "Unknown", "sn candidate"],
     "classes: unknown class 'sn candidate'; did you mean 'SN candidate'? (labels are case-sensitive)"),
    ("unknown-simbad-class", ["--classes", "(SIMBAD) RRlyr"],
     "classes: unknown class '(SIMBAD) RRlyr'; did you mean 'RRLyr'? (labels are case-sensitive)"),
    ("malformed-tns-class", ["--classes", "(TNS)"], "classes: '(TNS)' is not a TNS class; write it as '(TNS) <type>'"),
    ("unknown-content-field", ["--content", "candid,candidate.magpsff"],
     "content: unknown field 'candidate.magpsff' for survey ztf; did you mean 'candidate.magpsf'?"),
    ("packet-and-fields", ["--content", "light,candid"], "content ['light', 'candid']: a packet (light) cannot be combined"),
    ("bad-start-date", ["--start", "2024-02-30"], "start: '2024-02-30' is not a date; write it as YYYY-MM-DD"),
    ("bad-stop-date", ["--stop", "03/02/2024"], "stop: '03/02/2024' is not a date; write it as YYYY-MM-DD"),
    ("stop-before-start", ["--start", "2024-03-02", "--stop", "2024-03-01"],
     "stop (2024-03-01) is before start (2024-03-02); swap them"),
    ("unknown-filter", ["--filter", "sn_candidate"],
     "filters: unknown livestream filter 'sn_candidate': did you mean sn_candidates"),
    ("unsupported-filter", ["--filter", "early_kn_candidates"],
     "filters: Fink filter fink_filters.ztf.livestream.filter_early_kn_candidates.filter.early_kn_candidates cannot be replayed natively"),
    ("hostile-condition", ["--condition", "reflect('java.lang.Runtime', 'getRuntime') IS NULL"],
     "condition \"reflect('java.lang.Runtime', 'getRuntime') IS NULL\": function \"reflect\""),
    ("statement-condition", ["--condition", "candidate.magpsf > 19.5; DROP TABLE alerts"], 'condition "DROP TABLE alerts"'),
    ("no-data", ["--start", "2023-01-01", "--stop", "2023-01-05"], "No alert data found in between 2023-01-01 and 2023-01-05"),
    ("bad-limit", ["--limit", "0"], "limit: limit must be a positive number of alerts, got 0"),
    ("unknown-survey", ["--survey", "ztff"], "survey: survey 'ztff' is unknown"),
]


@pytest.mark.parametrize(("extra", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_validate_errors_are_one_line_naming_the_field(capsys, archive, extra, message) -> None:
    rc, out, err = run_cli(capsys, "request", "validate", *nights_args(archive), *extra)
    assert rc == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert err[len("error: "):].startswith(message), err


def test_validate_errors_from_the_request_file(capsys, archive, tmp_path) -> None:
    cases = {
        "dates:\n  startdate: '2024-03-01'\n  stopdate: '2024-03-02'\nclases: [Unknown]\n":
            "clases: is not a request key; did you mean 'classes'?",
        "dates:\n  startdate: '2024-03-01'\n  stopdate: '2024-03-02'\nfilters: [vra, NOT]\n":
            "filters: 'NOT' negates nothing; write 'NOT <name>'",
        "dates: '2024-03-01'\n": "dates: expected a mapping with startdate and stopdate",
        "start: 2024-03-01\n": "stop: is required",
        "start: 2024-03-01\nstop: 2024-02-01\n": "stop (2024-02-01) is before start (2024-03-01); swap them",
        "[unbalanced\n": "request file",
    }
    for i, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"r{i}.yaml"
        path.write_text(text)
        rc, out, err = run_cli(capsys, "request", "validate", str(path), "--archive", archive)
        assert rc == 2 and err.startswith(f"error: {message}"), (text, err)
    rc, _, err = run_cli(capsys, "request", "validate", str(tmp_path / "missing.yaml"), "--archive", archive)
    assert rc == 2 and "does not exist" in err


def test_invalid_requests_never_start_spark(archive, tmp_path) -> None:
    """40+ hostile or malformed conditions and every other error kind, validated in a fresh
    interpreter: all exit 2 with a message, and no JVM or SparkContext was ever created."""
    conditions = [c for c, _, _ in REJECTED if c.strip()]
    assert len(conditions) >= 40
    other = [extra for _, extra, _ in ERRORS]
    script = tmp_path / "validate_all.py"
    script.write_text(textwrap.dedent(f"""\
        import contextlib, io, json, sys
        from fink_pipeline.cli.main import main
        base = ["request", "validate", "--archive", {archive!r}, "--start", "2024-03-01", "--stop", "2024-03-02"]
        results = []
        for extra in {json.dumps(other)} + [["--condition=" + c] for c in json.loads(sys.argv[1])]:
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = main(base + extra)
            results.append([rc, err.getvalue()])
        from pyspark import SparkContext
        print(json.dumps({{"results": results, "gateway": SparkContext._gateway is not None,
                           "context": SparkContext._active_spark_context is not None}}))
        """))
    proc = subprocess.run([sys.executable, str(script), json.dumps(conditions)], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(report["results"]) == len(other) + len(conditions)
    for (rc, err), extra in zip(report["results"], other + [[c] for c in conditions]):
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, (extra, err)
    for (_, err), condition in zip(report["results"][len(other):], conditions):
        assert err.startswith("error: condition "), (condition, err)
    assert report["gateway"] is False and report["context"] is False


# --------------------------------------------------------------------------------------------
# estimate
# --------------------------------------------------------------------------------------------


def test_estimate_prints_nights_classes_totals_and_size(capsys, archive) -> None:
    rc, out, err = run_cli(capsys, "request", "estimate", *nights_args(archive),
                           "--classes", "Unknown", "(SIMBAD) RRLyr", "--content", "medium")
    assert rc == 0, err
    stats = [read_night_statistics(archive, "ztf", n) for n in NIGHTS]
    unknown = [s.per_label()["Unknown"] for s in stats]
    rrlyr = [s.per_label()["RRLyr"] for s in stats]
    lines = out.splitlines()
    for night, n_unknown, n_rrlyr in zip(NIGHTS, unknown, rrlyr):
        assert any(f"{night}" in line and "Unknown" in line and f"{n_unknown:,}" in line for line in lines)
        assert any(f"{night}" in line and "(SIMBAD) RRLyr" in line and f"{n_rrlyr:,}" in line for line in lines)
        assert any(f"{night}" in line and "night total" in line and f"{n_unknown + n_rrlyr:,}" in line for line in lines)
    assert f"total: {sum(unknown) + sum(rrlyr):,} alerts" in out
    assert "size: " in out and "of Avro payload" in out and "(medium)" in out
    assert "method: nightly statistics (exact)" in out

    rc, out, _ = run_cli(capsys, "request", "estimate", *nights_args(archive), "--classes", "Unknown", "(SIMBAD) RRLyr",
                         "--content", "medium", "--json")
    meta = json.loads(out)
    assert meta["estimated_alerts"] == sum(unknown) + sum(rrlyr) and meta["estimate_exact"] is True
    assert meta["estimated_bytes"] > 0


@pytest.mark.spark
def test_estimate_with_a_condition_shows_the_interval(capsys, spark, archive) -> None:
    rc, out, err = run_cli(capsys, "request", "estimate", *nights_args(archive), "--condition", "candidate.magpsf > 19",
                           "--sample-rows", "1000")
    assert rc == 0, err
    assert "95% interval" in out and "(estimate)" in out
    assert "sample evaluated by Spark" in out


def test_estimate_rejects_a_bad_request_like_validate(capsys, archive) -> None:
    rc, out, err = run_cli(capsys, "request", "estimate", *nights_args(archive), "--classes", "SN candidat")
    assert rc == 2 and err.startswith("error: classes: unknown class 'SN candidat'; did you mean 'SN candidate'?")
    rc, out, err = run_cli(capsys, "request", "estimate", *nights_args(archive), "--sample-rows", "0")
    assert rc == 2 and err.startswith("error: --sample-rows must be a positive number")


# --------------------------------------------------------------------------------------------
# submit still validates first
# --------------------------------------------------------------------------------------------


def test_submit_validates_before_looking_for_a_broker(capsys, archive, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path / "state"))
    rc, _, err = run_cli(capsys, "request", "submit", *nights_args(archive), "--filter", "nope")
    assert rc == 2 and err.startswith("error: filters: unknown livestream filter 'nope'")
    rc, _, err = run_cli(capsys, "request", "submit", *nights_args(archive))
    assert rc == 2 and err.startswith("error: no broker running")


def test_submit_wait_starts_spark_only_for_a_valid_request_before_reading_footers(capsys, archive, tmp_path,
                                                                                   monkeypatch) -> None:
    # `submit --wait` starts the JVM once the request's fields are valid, so that it starts
    # while the archive's footers are read; no invalid request of ERRORS starts it
    from fink_pipeline.archive import stats
    from fink_pipeline.cli import request as request_cli
    from fink_pipeline.kafka import broker

    events: list[str] = []
    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(broker, "status_managed", lambda state_dir: "127.0.0.1:1")  # a broker "runs"
    monkeypatch.setattr(request_cli, "_start_spark_ahead", lambda: events.append("spark"))
    monkeypatch.setattr("fink_pipeline.transfer.plan.night_footers",
                        lambda *a: (events.append("footers"), stats.night_footers(*a))[1])

    def stop_before_naming(*args, **kwargs):
        raise RuntimeError("stopped by the test after planning")

    monkeypatch.setattr("fink_pipeline.transfer.plan.pin_catalog", stop_before_naming)
    for name, extra, message in ERRORS:
        events.clear()
        rc, _, err = run_cli(capsys, "request", "submit", "--wait", *nights_args(archive), *extra)
        assert rc == 2 and err[len("error: "):].startswith(message), (name, err)
        assert "spark" not in events, name
    events.clear()
    with pytest.raises(RuntimeError, match="stopped by the test"):
        main(["request", "submit", "--wait", *nights_args(archive)])
    assert events[0] == "spark" and events.count("spark") == 1 and "footers" in events[1:]
