"""Failures injected into publishing tasks by the reliability tests.

Production code never builds a `PublishFaults`: `publish_dataframe(..., faults=None)` is the
only path it takes, and a task without faults runs none of the code below. Tests pass one to
make attempts die at chosen points and check that the publication stays exact.
"""

from __future__ import annotations

import pathlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa


class InjectedFailure(RuntimeError):
    """A failure a test asked for."""


@dataclass(frozen=True)
class PublishFaults:
    """Where publishing attempts fail (test hooks)."""

    # The first attempt of each task fails after producing this many messages (delivered).
    fail_first_attempt_after: int | None = None
    # The first attempt of each task fails right after its progress record (the "commit" of
    # its Spark partition) is delivered.
    fail_first_attempt_after_commit: bool = False
    # Every attempt of these Spark partitions fails after producing
    # `fail_spark_partitions_after` messages, so the job itself fails (as if killed).
    fail_spark_partitions: tuple[int, ...] = ()
    fail_spark_partitions_after: int = 0
    # The first attempt of each task delivers this many messages, creates
    # `<test_gate_dir>/reached-<spark partition>`, waits for `<test_gate_dir>/go` (the test
    # pauses the broker meanwhile), hands the rest of its rows to its producer and fails without
    # flushing them: they are still in flight when the attempt dies.
    fail_first_attempt_in_flight_after: int | None = None
    test_gate_dir: str | None = None

    def produce_limit(self, spark_partition: int, attempt: int) -> int | None:
        """How many messages this attempt may produce before it fails (None: no limit)."""
        limit = None
        if attempt == 0 and self.fail_first_attempt_after is not None:
            limit = self.fail_first_attempt_after
        if spark_partition in self.fail_spark_partitions:
            limit = self.fail_spark_partitions_after
        return limit

    def check_limit(self, producer, spark_partition: int, attempt: int, produced: int, limit: int | None) -> None:
        """Fail the attempt that reached its produce limit, once its output reached the broker."""
        if limit is not None:
            producer.flush(30)  # make the partial output really reach the broker
            raise InjectedFailure(f"injected failure in Spark partition {spark_partition} "
                                  f"(attempt {attempt}) after {produced} messages")

    def check_after_commit(self, spark_partition: int, attempt: int) -> None:
        if attempt == 0 and self.fail_first_attempt_after_commit:
            raise InjectedFailure(f"injected failure in Spark partition {spark_partition} after its commit")

    def check_in_flight(self, publisher: Any, values: pa.LargeBinaryArray,
                        ids: np.ndarray, parts: np.ndarray) -> None:
        """Deliver the first rows, wait at the test's gate, send the others and die while they
        are in flight (first attempts only; `publisher`: the task's SparkPartitionPublisher)."""
        first = self.fail_first_attempt_in_flight_after
        if publisher.attempt != 0 or first is None:
            return
        publisher.produce(values.slice(0, first), ids[:first], parts[:first], None)
        publisher.producer.flush(30)
        gate = pathlib.Path(self.test_gate_dir or ".")
        (gate / f"reached-{publisher.spark_partition}").touch()
        deadline = time.monotonic() + 120
        while not (gate / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        publisher.produce(values.slice(first), ids[first:], parts[first:], None)
        publisher.producer.poll(0.2)  # past linger.ms: the messages leave in produce requests
        raise InjectedFailure(f"injected failure in Spark partition {publisher.spark_partition} with "
                              f"{len(publisher.producer)} messages in flight")
