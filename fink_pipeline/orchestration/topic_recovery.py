"""Checks that make a retried publication safe after the broker lost its state (no Dagster import).

A broker that restarts without its data (the embedded memory broker; a cluster restored from
nothing) can leave a transfer's topics in a state no status record describes: topics
re-created by producers with the broker's default partition count, or data without a `start`
record. Data nobody accounted for would reach the table as duplicates, so before each attempt
`reset_orphaned_topics` deletes such leftovers (the publisher then re-creates the topics and
republishes everything, the status being gone too), and after it `publication_problems` checks
that the status topic accounts for every Spark partition of this attempt.
"""

from __future__ import annotations

import logging

from fink_pipeline.kafka.publish import PublishReport
from fink_pipeline.kafka.wire import schema_topic, status_topic
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import StartRecord, read_records, read_status
from fink_pipeline.kafka.topics import delete_topic, partition_count

LOGGER = logging.getLogger("fink_pipeline.recovery")


def reset_orphaned_topics(settings: KafkaSettings, topic: str, log: logging.Logger | None = None) -> list[str]:
    """Delete `topic` and its companions when they exist without a `start` status record.

    Returns the deleted topic names (empty when the topics are absent or consistent). A status
    topic holding a start record means a publication is under way or done: it resumes from
    that record and nothing is deleted.
    """
    log = log or LOGGER
    names = [topic, schema_topic(topic), status_topic(topic)]
    counts = {name: partition_count(settings, name) for name in names}
    present = [name for name, count in counts.items() if count is not None]
    if not present:
        return []
    if counts[status_topic(topic)] == 1:
        records = read_records(settings, topic) or []
        if any(isinstance(record, StartRecord) for record in records):
            return []
    log.warning(
        f"{', '.join(present)} exist without a start status record (the broker lost its state during "
        "an earlier attempt?): deleting them so the publication starts over cleanly"
    )
    return [name for name in present if delete_topic(settings, name)]


def publication_problems(settings: KafkaSettings, topic: str, report: PublishReport, request_id: str) -> list[str]:
    """Why the status topic does not account for `report` (empty list: the publication is whole)."""
    status = read_status(settings, topic)
    problems = []
    if status.state != "finished":
        problems.append(f"status is {status.state!r}, not 'finished'")
    if status.request_id not in (None, request_id):
        problems.append(f"status belongs to request {status.request_id}, not {request_id}")
    if status.total != report.total:
        problems.append(f"status total {status.total} differs from the {report.total} alerts reported")
    if report.spark_partitions and len(status.completed_spark_partitions) < report.spark_partitions:
        problems.append(
            f"only {len(status.completed_spark_partitions)} of {report.spark_partitions} Spark partitions "
            "have a progress record"
        )
    return problems
