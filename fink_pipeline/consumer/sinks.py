"""Table writers that commit Kafka progress atomically with the data.

What an output folder holds and how it refuses another publication, the errors sinks raise, and
the `Sink` protocol. The sinks: `consumer.delta_sink` (Delta) and `consumer.parquet_sink`
(fink-client's Parquet layout); readers of what they wrote: `consumer.readers`.
"""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from typing import Protocol, Sequence

import pyarrow as pa

# Publication id of a topic published without a status topic (or by an older publisher): such
# a topic is identified by its name only (a re-creation of it cannot be told apart).
NO_PUBLICATION_ID = "-"


@dataclass(frozen=True)
class Publication:
    """What an output folder holds: the alerts of one publication of one topic.

    `publication_id` comes from the start record of `<topic>_status` (None when the topic has
    none: it is then identified by its name).
    """

    topic: str
    publication_id: str | None = None

    @property
    def key(self) -> str:
        """Prefix of the Delta transaction ids of this publication's offsets."""
        return f"{self.topic}:{self.publication_id or NO_PUBLICATION_ID}"

    def to_json(self) -> str:
        return json.dumps({"topic": self.topic, "publication_id": self.publication_id})

    @classmethod
    def from_json(cls, text: str | None) -> "Publication | None":
        """The recorded publication, None when `text` is not one."""
        try:
            data = json.loads(text or "")
            return cls(str(data["topic"]), data.get("publication_id"))
        except (ValueError, KeyError, TypeError):
            return None


class PublicationMismatch(RuntimeError):
    """The output folder holds another publication: another topic, or the same topic published
    again (its offsets then mean other alerts)."""


NEW_FOLDER_FIX = "fink_datatransfer: another -outdir, or --restart_from_beginning to replace this one"


def publication_mismatch(location: str, held: Publication | None, offered: Publication) -> PublicationMismatch:
    """The error for a folder holding `held` (None: alerts of an unrecorded publication) that
    was offered `offered`; the message names the folder, both publications and the fix."""
    if held is None:
        return PublicationMismatch(
            f"{location} holds alerts without a record of their topic (written by an earlier version): "
            f"download {offered.topic} into a new output folder ({NEW_FOLDER_FIX})")
    if held.topic != offered.topic:
        return PublicationMismatch(
            f"{location} holds topic {held.topic}, not {offered.topic}: download {offered.topic} into a new "
            "output folder (fink_datatransfer: another -outdir)")
    return PublicationMismatch(
        f"{location} holds an earlier publication of {held.topic} (id {held.publication_id or 'none'}); the topic "
        f"was published again since (id {offered.publication_id or 'none'}, re-created under the same name, e.g. "
        f"by a broker that lost its data), so its offsets mean other alerts: download it into a new output folder "
        f"({NEW_FOLDER_FIX})")


class ConcurrentConsumerError(RuntimeError):
    """Another consumer is writing the same Kafka partitions into the same table."""


class DiskFullError(RuntimeError):
    """The disk under the table is full; the batch was not committed."""

    def __init__(self, location: str) -> None:
        super().__init__(
            f"no space left on device writing {location}: free space and rerun; the table keeps every "
            "batch committed before and the transfer resumes where it stopped")


def is_disk_full(exc: BaseException) -> bool:
    """ENOSPC, as an OSError or inside a deltalake error message ("... (os error 28)")."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "os error 28)" in text


class Sink(Protocol):
    """Where decoded alerts go; `resume_offsets` and `write` must be exact across crashes."""

    location: str  # the table's folder or URI, for messages

    def prepare(self, schema: pa.Schema) -> None:
        """Create the table for rows of `schema` (before partitioning) if it does not exist."""

    def held_publication(self) -> Publication | None:
        """The publication recorded in the output (None when none is)."""

    def claim(self, publication: Publication, replace_other: bool = False) -> None:
        """Bind the sink to `publication`: record it in an output that holds nothing yet,
        raise PublicationMismatch when the output holds another one (or, with
        `replace_other`, where supported, empty the output first)."""

    def resume_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        """Next offset to read per Kafka partition, as committed in the table."""

    def write(self, table: pa.Table, next_offsets: dict[int, int], start_offsets: dict[int, int]) -> None:
        """Append `table` and commit, atomically with it, `next_offsets` for the batch's
        partitions; `start_offsets` are the offsets the batch started reading from."""

    def close(self) -> None:
        """Release what the sink holds (locks)."""
