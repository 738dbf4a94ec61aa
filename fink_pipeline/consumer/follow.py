"""Filling a table while its topic is being published: a consumer that follows the publisher.

The publisher and the consumer of a transfer used to run one after the other, so a user waited
for the sum of both. `TopicFollower` runs `consume_topic` in a thread of the publishing process
while the topic is written: it waits for this publication's start record in `<topic>_status`,
then consumes as messages arrive and knows it is done from the end record, as any consumer
does. Nothing changes for exactness: the table commits rows with their offsets, so a follower
stopped anywhere resumes exactly, and when it ends without the whole publication (it started
on a stale record of a failed attempt, the broker was away, it failed), `finish` consumes
again, from the table's offsets, once the publication is complete.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from fink_pipeline.consumer.core import ConsumeReport, consume_topic
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.kafka.status import read_status

# How often the follower looks for the publication's start record before it exists.
START_POLL_SECONDS = 0.5
# How long `abort` waits for the consumer thread to notice the stop and close its table.
ABORT_JOIN_SECONDS = 60.0


class TopicFollower:
    """Consume `topic` into a sink in a background thread while it is being published.

    `make_sink` returns (sink, options for `consume_topic`) once the publication has started
    (its schema exists then: e.g. the sink's partitioning depends on it); `consume_options` go
    to `consume_topic` too. Call `start()` before publishing, then `finish()`
    after the publisher returned (the complete report), or `abort()` when it failed.
    """

    def __init__(self, settings: KafkaSettings, topic: str, make_sink: Callable, *, group_id: str,
                 log: logging.Logger | None = None, **consume_options) -> None:
        self.settings, self.topic, self.make_sink, self.group_id = settings, topic, make_sink, group_id
        self.log = log or logging.getLogger("fink_pipeline.consumer")
        self.consume_options = consume_options
        self.stop_event = threading.Event()
        self.report: ConsumeReport | None = None
        self.error: BaseException | None = None
        self.started_at: float | None = None  # monotonic: the publication's start record seen
        self.finished_at: float | None = None  # monotonic: the following consumer returned
        self._thread: threading.Thread | None = None

    def start(self) -> "TopicFollower":
        """Start following (returns at once)."""
        self._thread = threading.Thread(target=self._follow, name=f"follow-{self.topic}", daemon=True)
        self._thread.start()
        return self

    def _follow(self) -> None:
        try:
            if not self._wait_for_start():
                return
            self.started_at = time.monotonic()
            sink, options = self.make_sink()
            self.report = consume_topic(self.settings, self.topic, sink, group_id=self.group_id, log=self.log,
                                        stop=self.stop_event, **options, **self.consume_options)
        except BaseException as exc:  # reported by finish(): the consumer runs again there
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def _wait_for_start(self) -> bool:
        """Wait for a start (or end) record: a status left "failed" by an earlier attempt, or no
        status yet, is not this publication. False when stopped first."""
        while not self.stop_event.is_set():
            try:
                if read_status(self.settings, self.topic).state in ("running", "finished"):
                    return True
            except Exception as exc:  # the broker away for a moment: keep waiting, finish() decides
                self.log.debug(f"status of {self.topic} not readable yet: {exc}")
            self.stop_event.wait(START_POLL_SECONDS)
        return False

    def finish(self) -> ConsumeReport:
        """After a successful publication: wait for the follower; if it did not read the whole
        publication, consume the rest now (exactly: from the table's offsets). Returns the
        report of the whole table fill (counts added over both runs)."""
        assert self._thread is not None, "start() first"
        self._thread.join()
        report = self.report
        if report is not None and report.complete and self.error is None:
            return report
        why = f"it failed ({type(self.error).__name__}: {self.error})" if self.error is not None \
            else f"it stopped with the publication {report.state if report else 'not started'}"
        self.log.warning(f"the consumer following {self.topic} did not read the whole publication ({why}): "
                         "reading the rest now")
        sink, options = self.make_sink()
        rest = consume_topic(self.settings, self.topic, sink, group_id=self.group_id, log=self.log,
                             **options, **self.consume_options)
        if report is not None:
            rest.consumed += report.consumed
            rest.written += report.written
            rest.quarantined += report.quarantined
            rest.batches += report.batches
            rest.quarantine_files = report.quarantine_files + rest.quarantine_files
        self.finished_at = time.monotonic()
        return rest

    def abort(self) -> None:
        """After a failed publication: stop following (what the table committed stays; the
        step's retry resumes from it)."""
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(ABORT_JOIN_SECONDS)
            if self._thread.is_alive():
                self.log.warning(f"the consumer following {self.topic} did not stop within "
                                 f"{ABORT_JOIN_SECONDS:.0f} s (left as a daemon thread)")
