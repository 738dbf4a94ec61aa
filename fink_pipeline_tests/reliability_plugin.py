"""Pytest plugin of the reliability suite: tests report what they measured, the run sums it up.

A test marked `reliability` that moves alerts counts them against its ground truth (the ids it
published, or the ids its request selects) and calls the `reliability_record` fixture with what
it counted, before any assertion:

    def test_broker_paused(reliability_record, ...):
        ...
        lost, duplicates = count_lost_and_duplicates(table_ids, published.ids)
        reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)
        assert lost == duplicates == 0

and the run ends with one line (printed whenever a `reliability` test ran):

    reliability summary: cases N, failures survived M, lost L, duplicates D, unmeasured K

`cases` counts scenarios (a test may check several), `failures_survived` the injected faults
and refused bad inputs handled as specified, `lost` and `duplicates` the alerts missing from or
written more than once to a table or topic (an alert outside the ground truth counts as a
duplicate; `count_lost_and_duplicates(got, expected)` here counts both), summed over the cases
that counted them. `unmeasured` is how many of the N cases counted no
alert: `lost` and `duplicates` say nothing about them. Recording before asserting lets a
failing test still show its losses in the summary.

A bad input refused before anything runs puts no alert at stake: it is a failure survived, not
a case, `reliability_record(cases=0, failures_survived=1)`. A case that moves alerts but counts
none records without `lost` and `duplicates` (`reliability_record(cases=1, failures_survived=1)`)
and is counted as unmeasured. Giving one of `lost`/`duplicates` without the other is an error.

A fault test that does not call the fixture may declare its counts on the marker:

    @pytest.mark.reliability(failures_survived=1)        # or ="kills": a parameter's value
    def test_refused(...):

and is counted when it has run: one case (`cases=` to change it), unmeasured, and, if it
passed, its failures survived; a failed one counts as a case not survived (and fails the run).
A test that takes the fixture, fails and never called it counts as one unmeasured case, not
survived. A test marked `reliability` with neither counts nothing (a control).

`-m reliability` runs the CI sizes: a test marked both `reliability` and `slow` (a larger size
of a reliability case) is deselected unless the `-m` expression names `slow` too
(`-m "reliability and slow"` runs them).

Registered from `conftest.py` (`pytest_plugins`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

MARKER = "reliability"


@dataclass
class ReliabilityTotals:
    """Sums over the test run."""

    cases: int = 0
    failures_survived: int = 0
    lost: int = 0
    duplicates: int = 0
    unmeasured: int = 0  # cases (among `cases`) that counted no alert
    tests_run: int = 0

    def summary_line(self) -> str:
        return (
            f"reliability summary: cases {self.cases}, failures survived {self.failures_survived}, "
            f"lost {self.lost}, duplicates {self.duplicates}, unmeasured {self.unmeasured}"
        )


def count_lost_and_duplicates(got: Iterable[int], expected: Iterable[int]) -> tuple[int, int]:
    """(lost, duplicates) of the alert ids `got` (a table's) against the ground truth `expected`
    (the ids published or selected): lost = expected ids missing; duplicates = rows beyond the
    first of an id, plus ids that were never expected."""
    got = list(got)
    seen, truth = set(got), set(expected)
    return len(truth - seen), (len(got) - len(seen)) + len(seen - truth)


def table_ids(path: str | Path, fmt: str = "delta", column: str = "candid") -> list[int]:
    """The alert ids of a table a test wrote (Delta or Parquet); none when it was never
    created, so that every alert expected of it counts as lost."""
    from fink_pipeline.consumer.readers import read_delta_table, read_parquet_dataset

    if not Path(path).exists():
        return []
    table = read_delta_table(str(path)) if fmt == "delta" else read_parquet_dataset(str(path))
    return table[column].to_pylist()


def is_count(value) -> bool:
    """A non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


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

    Call it as `reliability_record(cases=1, failures_survived=k, lost=n, duplicates=m)` with
    `lost` and `duplicates` counted against the ground truth, or without both for cases that
    counted no alert (they add to `unmeasured`); every count must be a non-negative integer.
    """
    run_totals = totals(request.config)

    def record(*, cases: int = 1, failures_survived: int = 0, lost: int | None = None,
               duplicates: int | None = None) -> None:
        if (lost is None) != (duplicates is None):
            raise ValueError("reliability_record: give lost and duplicates both (counted) or neither (unmeasured)")
        counts = {"cases": cases, "failures_survived": failures_survived}
        if lost is not None:
            counts.update(lost=lost, duplicates=duplicates)
        for name, value in counts.items():
            if not is_count(value):
                raise ValueError(f"reliability_record: {name} must be a non-negative integer, got {value!r}")
        run_totals.cases += cases
        run_totals.failures_survived += failures_survived
        if lost is None:
            run_totals.unmeasured += cases
        else:
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
        if not is_count(value):
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
    run_totals = totals(item.config)
    if counts is None:
        if report.failed and item.get_closest_marker(MARKER) and "reliability_record" in getattr(item, "fixturenames", ()):
            run_totals.cases += 1  # failed before recording: a case not survived, nothing counted
            run_totals.unmeasured += 1
        return
    run_totals.cases += counts["cases"]
    run_totals.unmeasured += counts["cases"]  # a marker declares; it counts no alert
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
