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

A fault test of another suite that does not call the fixture declares its counts on the marker:

    @pytest.mark.reliability(failures_survived=1)        # or ="kills": a parameter's value
    def test_broker_restart_mid_publish(...):

and is counted when it has run: one case (`cases=` to change it) and, if it passed, its
failures survived. It asserts every alert exactly once itself, so lost and duplicates stay 0;
a failed one counts as a case not survived (and fails the run).

`-m reliability` runs the CI sizes: a test marked both `reliability` and `slow` (a larger size
of a reliability case) is deselected unless the `-m` expression names `slow` too
(`-m "reliability and slow"` runs them).

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
RECORDED_KEY = pytest.StashKey[bool]()  # set on a test item that called reliability_record


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
        request.node.stash[RECORDED_KEY] = True

    return record


def declared_counts(item: pytest.Item) -> dict[str, int] | None:
    """The counts a test declares on its `reliability` marker, or None when it declares none."""
    marker = next((m for m in item.iter_markers(MARKER) if m.kwargs), None)
    if marker is None:
        return None
    unknown = set(marker.kwargs) - {"cases", "failures_survived"}
    if unknown or marker.args:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.reliability takes cases= and failures_survived= "
                                f"only, got {sorted(unknown) or list(marker.args)}")
    params = getattr(getattr(item, "callspec", None), "params", {})
    counts = {}
    for name in ("cases", "failures_survived"):
        value = marker.kwargs.get(name, 1 if name == "cases" else 0)
        if isinstance(value, str):  # the name of a parameter of the test
            if value not in params:
                raise pytest.UsageError(f"{item.nodeid}: reliability {name}={value!r} is not a parameter of the test")
            value = params[value]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise pytest.UsageError(f"{item.nodeid}: reliability {name} must be a non-negative integer, got {value!r}")
        counts[name] = value
    return counts


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        declared_counts(item)  # a misspelt marker fails the collection, not the run's summary
    markexpr = config.getoption("markexpr", "") or ""
    if MARKER not in markexpr or "slow" in markexpr:
        return
    larger = {id(i) for i in items if i.get_closest_marker(MARKER) and i.get_closest_marker("slow")}
    if larger:
        config.hook.pytest_deselected(items=[i for i in items if id(i) in larger])
        items[:] = [i for i in items if id(i) not in larger]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or item.stash.get(RECORDED_KEY, False):
        return
    counts = declared_counts(item)
    if counts is None:
        return
    run_totals = totals(item.config)
    run_totals.cases += counts["cases"]
    if report.passed:
        run_totals.failures_survived += counts["failures_survived"]


def pytest_runtest_call(item: pytest.Item) -> None:
    # Called only for tests that were not skipped at setup: "a reliability test ran".
    if item.get_closest_marker(MARKER) is not None:
        totals(item.config).tests_run += 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run_totals = totals(config)
    if run_totals.tests_run:
        terminalreporter.write_line(run_totals.summary_line())
