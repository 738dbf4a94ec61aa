"""Pytest plugin of the reliability suite: tests report what they measured, the run sums it up.

A test marked `reliability` calls the `reliability_record` fixture with what it measured:

    def test_broker_paused(reliability_record, ...):
        ...
        reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
        assert lost == duplicates == 0

and the run ends with one line (printed whenever a `reliability` test ran):

    reliability summary: cases N, failures survived M, lost L, duplicates D

`cases` counts scenarios (a test may check several), `failures_survived` the injected faults
and refused bad inputs handled as specified, `lost` and `duplicates` the alerts missing from or
written twice to a table, summed over the run. Record before asserting, so that a failing
test still shows its losses in the summary.

Registered from `conftest.py` (`pytest_plugins`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

MARKER = "reliability"


@dataclass
class ReliabilityTotals:
    """Sums over the test run."""

    cases: int = 0
    failures_survived: int = 0
    lost: int = 0
    duplicates: int = 0
    tests_run: int = 0

    def summary_line(self) -> str:
        return (
            f"reliability summary: cases {self.cases}, failures survived {self.failures_survived}, "
            f"lost {self.lost}, duplicates {self.duplicates}"
        )


TOTALS_KEY = pytest.StashKey[ReliabilityTotals]()


def totals(config: pytest.Config) -> ReliabilityTotals:
    """The run's totals (created on first use)."""
    if TOTALS_KEY not in config.stash:
        config.stash[TOTALS_KEY] = ReliabilityTotals()
    return config.stash[TOTALS_KEY]


@pytest.fixture
def reliability_record(request: pytest.FixtureRequest):
    """Add one test's measured counts to the run's reliability summary.

    Call it as `reliability_record(cases=1, failures_survived=k, lost=n, duplicates=m)`; every
    count must be a non-negative integer.
    """
    run_totals = totals(request.config)

    def record(*, cases: int = 1, failures_survived: int = 0, lost: int = 0, duplicates: int = 0) -> None:
        counts = {"cases": cases, "failures_survived": failures_survived, "lost": lost, "duplicates": duplicates}
        for name, value in counts.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"reliability_record: {name} must be a non-negative integer, got {value!r}")
        run_totals.cases += cases
        run_totals.failures_survived += failures_survived
        run_totals.lost += lost
        run_totals.duplicates += duplicates

    return record


def pytest_runtest_call(item: pytest.Item) -> None:
    # Called only for tests that were not skipped at setup: "a reliability test ran".
    if item.get_closest_marker(MARKER) is not None:
        totals(item.config).tests_run += 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run_totals = totals(config)
    if run_totals.tests_run:
        terminalreporter.write_line(run_totals.summary_line())
