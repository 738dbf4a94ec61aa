"""The reliability summary counts fault tests of other suites from their marker, once each, sums
lost and duplicates only over the cases that counted them (the others show as unmeasured), and
`-m reliability` leaves out the larger (slow) sizes. Runs pytest in a subprocess on sample files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.reliability

SAMPLE = '''
import pytest

pytestmark = pytest.mark.kafka

@pytest.mark.reliability(failures_survived=2)
def test_declared():
    pass

@pytest.mark.reliability(failures_survived="kills")
@pytest.mark.parametrize("kills", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_from_parameter(kills):
    pass

@pytest.mark.reliability(cases=2, failures_survived=5)
def test_declared_but_failing():
    assert False, "lost an alert"

@pytest.mark.reliability(failures_survived=9)
def test_declared_and_recorded(reliability_record):
    reliability_record(cases=1, failures_survived=1, lost=0, duplicates=0)

@pytest.mark.reliability
def test_control_declares_nothing():
    pass

def test_not_reliability():
    pass
'''


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pytest", "-p", "fink_pipeline_tests.reliability_plugin", "-p", "no:cacheprovider",
               "-o", "markers=reliability\nslow\nkafka", "-q", "-rN", *args, str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)


def summary(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("reliability summary:")]
    assert len(lines) == 1, stdout
    return lines[0]


def test_marker_counts_feed_the_summary_and_slow_sizes_need_slow(tmp_path):
    (tmp_path / "test_sample.py").write_text(SAMPLE)

    ran = run_pytest(tmp_path, "-m", "reliability")
    assert ran.returncode == 1, ran.stdout + ran.stderr  # the failing sample
    # declared 1+2 cases / 2 survived, kills=3: 1 / 3, failing: 2 / 0, recorded: 1 / 1, control: 0;
    # a marker counts no alert: its cases are unmeasured (1 + 1 + 2)
    assert summary(ran.stdout) == ("reliability summary: cases 5, failures survived 6, lost 0, duplicates 0, "
                                   "unmeasured 4")
    assert re.search(r"1 failed, 4 passed, 2 deselected", ran.stdout), ran.stdout  # kills=20 and the plain test

    larger = run_pytest(tmp_path, "-m", "reliability and slow")
    assert larger.returncode == 0, larger.stdout + larger.stderr
    assert summary(larger.stdout) == ("reliability summary: cases 1, failures survived 20, lost 0, duplicates 0, "
                                      "unmeasured 1")

    everything = run_pytest(tmp_path)  # no -m: nothing deselected
    assert summary(everything.stdout) == ("reliability summary: cases 6, failures survived 26, lost 0, duplicates 0, "
                                          "unmeasured 5")
    assert "1 failed, 6 passed" in everything.stdout


def test_a_misspelt_marker_count_fails_the_collection(tmp_path):
    (tmp_path / "test_bad.py").write_text(
        "import pytest\n"
        "@pytest.mark.reliability(failure_survived=1)\n"
        "def test_typo():\n    pass\n"
        "@pytest.mark.reliability(failures_survived='nope')\n"
        "@pytest.mark.parametrize('kills', [1])\n"
        "def test_no_such_parameter(kills):\n    pass\n"
    )
    ran = run_pytest(tmp_path, "-k", "typo")
    assert ran.returncode == 4, ran.stdout + ran.stderr  # usage error
    assert "takes cases= and failures_survived= only, got ['failure_survived']" in ran.stdout + ran.stderr
    ran = run_pytest(tmp_path, "-k", "no_such_parameter")
    assert "failures_survived='nope' is not a parameter of the test" in ran.stdout + ran.stderr


UNMEASURED_SAMPLE = '''
import pytest

pytestmark = pytest.mark.reliability

def test_counted(reliability_record):
    reliability_record(cases=1, failures_survived=1, lost=0, duplicates=0)

def test_counted_with_losses(reliability_record):
    lost, duplicates = 2, 2
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
    assert lost == duplicates == 0

def test_refusals_count_no_alert(reliability_record):
    reliability_record(cases=2, failures_survived=2)

@pytest.mark.reliability(failures_survived=1)
def test_declared_on_the_marker():
    pass

def test_fails_before_recording(reliability_record):
    assert False, "failed before counting"

def test_half_a_count_is_refused(reliability_record):
    with pytest.raises(ValueError, match="lost and duplicates both"):
        reliability_record(lost=0)
    with pytest.raises(ValueError, match="lost and duplicates both"):
        reliability_record(duplicates=0)

def test_control_counts_nothing():
    pass
'''


def test_summary_counts_unmeasured_cases_apart(tmp_path):
    """Hole 8 of issue 13: lost and duplicates are summed over the cases that counted them against
    a ground truth; a case that counted nothing (a marker, a record without lost/duplicates, a
    test that failed before recording) is shown as unmeasured, not as a zero."""
    (tmp_path / "test_sample.py").write_text(UNMEASURED_SAMPLE)
    ran = run_pytest(tmp_path, "-m", "reliability")
    assert re.search(r"2 failed, 5 passed", ran.stdout), ran.stdout + ran.stderr
    # cases 1 + 1 + 2 + 1 + 1; survived 1 + 1 + 2 + 1 + 0; unmeasured: refusals 2, marker 1, failed 1
    assert summary(ran.stdout) == ("reliability summary: cases 6, failures survived 5, lost 2, duplicates 2, "
                                   "unmeasured 4")


def test_lost_and_duplicates_are_counted_against_the_ground_truth():
    from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates

    assert count_lost_and_duplicates([1, 2, 3], [3, 2, 1]) == (0, 0)
    # 3 and 4 lost; 2 written twice and 9 never published: 2 duplicates
    assert count_lost_and_duplicates([1, 2, 2, 9], [1, 2, 3, 4]) == (2, 2)
    assert count_lost_and_duplicates([], []) == (0, 0)
