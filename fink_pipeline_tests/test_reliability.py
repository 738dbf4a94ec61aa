"""Faults and load around a transfer, with the table checked exactly afterwards.

* the broker killed (SIGKILL) and restarted while a consumer downloads a finished topic: the
  embedded broker keeps topics in memory, so the topic is gone; the consumer must stop with a
  clear error (not hang), the table must hold exactly what was committed, a new download must
  be refused clearly, and a re-publication (a new publication of the topic) must be refused
  in the old table and give the exact table in a new one;
* the broker paused (SIGSTOP, then SIGCONT) during a download: the consumer rides it out;
* the disk under the table full (a small tmpfs with a ballast file): a clear error, then a
  clean resume once the ballast is deleted (mounting needs root or CAP_SYS_ADMIN: skipped
  elsewhere, with the reason; CI sets FINK_PIPELINE_REQUIRE_DISK_FULL=1 so that there they run);
* a request over nights that do not exist: the run fails in its first step, and no topic, no
  table and no Spark session are created;
* two transfers at once into two tables, each exact.

Each case counts the lost and duplicated alerts of its table against the ids it published or
its request selects, and records them (reliability_plugin) before any assertion.

Topics for the consumer faults are published without Spark (`synthetic_topics`), in the exact
wire format, and are made larger than the consumer's prefetch buffer: otherwise the whole
topic is already in the consumer's memory when the fault comes and nothing is tested. The
consumer runs in a child process, paused by its sink after a few committed batches: the fault
is injected exactly mid-download, and a consumer that hangs can be killed.
"""

from __future__ import annotations

import datetime as dt
import math
import multiprocessing
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights, night_dir
from fink_pipeline.consumer.delta_sink import DeltaSink
from fink_pipeline.consumer.partitioning import Partitioning
from fink_pipeline.consumer.readers import delta_committed_offsets
from fink_pipeline.consumer.sinks import DiskFullError, PublicationMismatch
from fink_pipeline.kafka.broker import EmbeddedBroker
from fink_pipeline.kafka.settings import KafkaSettings
from fink_pipeline.surveys import get_survey
from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates, table_ids

pytestmark = pytest.mark.reliability

SURVEY = get_survey("ztf")
GROUP = "reliability-tests"
KAFKA_PARTITIONS = 10
# Full packets (~47 kB each with cutouts): few messages make a topic larger than the prefetch.
BASE_ALERTS = 300
BATCH_SIZE = 200  # messages per consumer batch (one Delta commit each)
GATE_AFTER_BATCHES = 2
CONSUMER_MAX_TIMEOUT_S = 5.0
# A consumer that has not stopped this long after the fault is considered hung and is killed.
HANG_DEADLINE_S = 15.0
PAUSE_S = 6.0
CANDID_STRIDE = 10**15  # spacing of the copies' candids: far above the spread of one night's ids


# --------------------------------------------------------------------------------------------
# helpers


class ConsumerHung(AssertionError):
    """The consumer neither finished nor failed within HANG_DEADLINE_S after the fault."""


class GatedSink:
    """A real sink that, after `gate_after` committed writes, signals `reached` and waits for
    `release`: the test injects its fault at that exact point of the download."""

    def __init__(self, inner, gate_after: int, reached, release) -> None:
        self.inner = inner
        self.gate_after = gate_after
        self.reached = reached
        self.release = release
        self.writes = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write(self, *args, **kwargs):
        self.inner.write(*args, **kwargs)
        self.writes += 1
        if self.writes == self.gate_after:
            self.reached.set()
            self.release.wait(300)


def consume_in_child(settings, topic: str, table_uri: str, gate_after: int, reached, release, results) -> None:
    """Child process: download `topic` into a Delta table, report how it ended on `results`."""
    from fink_pipeline.consumer.core import consume_topic

    sink = GatedSink(DeltaSink(table_uri, Partitioning("finkclass")),
                     gate_after, reached, release)
    try:
        report = consume_topic(settings, topic, sink, group_id=GROUP, batch_size=BATCH_SIZE,
                               max_timeout=CONSUMER_MAX_TIMEOUT_S)
        results.put({"outcome": "returned", "consumed": report.consumed, "complete": report.complete,
                     "state": report.state})
    except BaseException as exc:  # the test decides whether this error is the expected one
        results.put({"outcome": "raised", "error": type(exc).__name__, "message": str(exc)})


class ChildConsumer:
    """A consumer process paused by its sink after `gate_after` batches."""

    def __init__(self, settings: KafkaSettings, topic: str, table_uri: str, gate_after: int = GATE_AFTER_BATCHES):
        context = multiprocessing.get_context("spawn")  # librdkafka threads do not survive fork
        self.reached, self.release, self.results = context.Event(), context.Event(), context.Queue()
        self.process = context.Process(
            target=consume_in_child,
            args=(settings, topic, table_uri, gate_after, self.reached, self.release, self.results),
            daemon=True,
        )
        self.process.start()

    def wait_until_paused(self, timeout_s: float = 180.0) -> None:
        if not self.reached.wait(timeout_s):
            outcome = self.outcome(0.1)
            self.kill()
            raise AssertionError(f"the consumer did not commit {GATE_AFTER_BATCHES} batches: {outcome}")

    def outcome(self, timeout_s: float) -> dict | None:
        """How the consumer ended, or None when it is still running after `timeout_s`."""
        try:
            return self.results.get(timeout=timeout_s)
        except Exception:  # queue.Empty
            return None

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(10)


def table_state(uri: str, topic: str) -> tuple[list[int], dict[int, int]]:
    """(candids in the table, next offset per Kafka partition committed with them)."""
    from deltalake import DeltaTable, QueryBuilder

    candids = QueryBuilder().register("t", DeltaTable(uri)).execute("SELECT candid FROM t").read_all()
    offsets = delta_committed_offsets(uri, range(KAFKA_PARTITIONS))
    return pa.table(candids)["candid"].to_pylist(), offsets


def raised(call, *args) -> Exception | None:
    """The exception `call(*args)` raised, or None: a scenario runs to its end and is counted
    before its steps are checked."""
    try:
        call(*args)
    except Exception as exc:
        return exc
    return None


def consume_all(settings: KafkaSettings, topic: str, uri: str):
    from fink_pipeline.consumer.core import consume_topic

    sink = DeltaSink(uri, Partitioning("finkclass"))
    return consume_topic(settings, topic, sink, group_id=GROUP, batch_size=BATCH_SIZE, max_timeout=CONSUMER_MAX_TIMEOUT_S)


def consumer_prefetch_bytes() -> int:
    """How much a consumer may hold in memory ahead of what it has written."""
    from fink_pipeline.consumer import core

    kbytes = getattr(core, "FETCH_CONFIG", {}).get("queued.max.messages.kbytes", 65536)  # librdkafka default
    return int(kbytes) * 1024


@pytest.fixture(scope="module")
def full_packets() -> pa.Table:
    """BASE_ALERTS full packets (cutouts included), as the transfer job projects them."""
    from fink_pipeline_tests.synthetic_topics import synthetic_alerts

    return pa.concat_tables(list(synthetic_alerts(SURVEY, BASE_ALERTS, "full", seed=11)))


def publish_larger_than_prefetch(settings: KafkaSettings, topic: str, base: pa.Table):
    """Publish copies of `base` (fresh candids) until the topic is 1.5x the consumer prefetch."""
    from fink_pipeline.avro import avro_schema_from_arrow, encode_batch
    from fink_pipeline_tests.synthetic_topics import TopicWriter

    base_bytes = encode_batch(base, avro_schema_from_arrow(base.schema)).nbytes
    copies = math.ceil((1.5 * consumer_prefetch_bytes() + 8 * 2**20) / base_bytes)
    writer = TopicWriter(settings, topic, base.schema, partitions=KAFKA_PARTITIONS).start()
    index = base.schema.get_field_index("candid")
    for k in range(copies):
        writer.write(base.set_column(index, "candid", pc.add(base["candid"], k * CANDID_STRIDE)))
    published = writer.end()
    assert len(set(published.ids)) == published.total == copies * base.num_rows
    return published


@pytest.fixture
def private_broker():
    """A broker of this test alone: the faults below would break other tests' topics."""
    brokers = [EmbeddedBroker()]
    brokers[0].start()
    yield brokers  # a test that restarts the broker appends the new one
    for broker in brokers:
        if broker.pid is not None:
            with_signal(broker.pid, signal.SIGCONT)  # a paused broker must be able to stop
        broker.stop()


def with_signal(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------------------------
# broker faults while consuming


@pytest.mark.kafka
def test_broker_killed_and_restarted_while_consuming(private_broker, full_packets, tmp_path, reliability_record):
    broker = private_broker[0]
    address = broker.address
    port = int(address.rsplit(":", 1)[1])
    settings = KafkaSettings(bootstrap_servers=address)
    topic = "ftransfer_ztf_2024-03-01_900001"
    published = publish_larger_than_prefetch(settings, topic, full_packets)
    uri = str(tmp_path / "table")

    consumer = ChildConsumer(settings, topic, uri)
    consumer.wait_until_paused()
    with_signal(broker.pid, signal.SIGKILL)
    broker.stop()
    restarted = EmbeddedBroker()
    private_broker.append(restarted)
    restarted.start(port=port)  # same address: the consumer reconnects to an empty broker
    consumer.release.set()
    outcome = consumer.outcome(HANG_DEADLINE_S)
    consumer.kill()

    # The whole scenario runs first and the final table is counted and recorded; the checks of
    # each step follow, in order.
    # Whatever the consumer did, the table must hold exactly the batches it committed.
    candids, offsets = table_state(uri, topic)
    # A new download before the topic is published again must be refused clearly and write nothing.
    from fink_pipeline.consumer.core import SchemaNotFound

    refusal = raised(consume_all, settings, topic, uri)
    after_refusal = table_state(uri, topic)[0]
    # Publishing the alerts again makes a new publication of the topic: resuming into the table
    # must be refused (its offsets are the earlier publication's), and the fix it names, a new
    # output folder, must get every alert exactly once.
    republished = publish_larger_than_prefetch(settings, topic, full_packets)
    resume_refusal = raised(consume_all, settings, topic, uri)
    after_resume_refusal = table_state(uri, topic)[0]
    report = consume_all(settings, topic, str(tmp_path / "table_again"))
    final, _ = table_state(str(tmp_path / "table_again"), topic)
    lost, duplicates = count_lost_and_duplicates(final, published.ids)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

    assert 0 < len(candids) < published.total
    assert len(candids) == sum(offsets.values()), "rows differ from the offsets committed with them"
    assert count_lost_and_duplicates(candids, published.ids)[1] == 0  # none duplicated or foreign
    assert isinstance(refusal, SchemaNotFound) and re.search(f"{topic}_schema", str(refusal)), repr(refusal)
    assert after_refusal == candids
    assert republished.ids == published.ids
    assert isinstance(resume_refusal, PublicationMismatch) and "new output folder" in str(resume_refusal), \
        repr(resume_refusal)
    assert after_resume_refusal == candids
    assert report.complete and report.consumed == published.total
    assert lost == duplicates == 0

    # Last, the consumer that saw the broker die: it must have stopped with a clear error.
    if outcome is None:
        raise ConsumerHung(f"the consumer was still running {HANG_DEADLINE_S:.0f} s after the topic disappeared")
    assert outcome["outcome"] == "raised", f"the consumer ended as if nothing happened: {outcome}"
    assert topic in outcome["message"], f"the error does not name the topic: {outcome}"


@pytest.mark.kafka
def test_broker_paused_while_consuming(private_broker, full_packets, tmp_path, reliability_record):
    broker = private_broker[0]
    settings = KafkaSettings(bootstrap_servers=broker.address)
    topic = "ftransfer_ztf_2024-03-01_900002"
    published = publish_larger_than_prefetch(settings, topic, full_packets)
    uri = str(tmp_path / "table")

    consumer = ChildConsumer(settings, topic, uri)
    consumer.wait_until_paused()
    with_signal(broker.pid, signal.SIGSTOP)
    try:
        consumer.release.set()
        paused_at = time.monotonic()
        # the consumer drains its prefetch, then waits on the frozen broker
        while_paused = consumer.outcome(PAUSE_S)
    finally:
        with_signal(broker.pid, signal.SIGCONT)
    outcome = while_paused if while_paused is not None else consumer.outcome(180)
    waited = time.monotonic() - paused_at
    consumer.kill()
    candids, offsets = table_state(uri, topic)
    lost, duplicates = count_lost_and_duplicates(candids, published.ids)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

    assert while_paused is None, f"the consumer finished while the broker was paused: {while_paused}"
    assert outcome is not None, "the consumer did not finish after the broker resumed"
    assert outcome == {"outcome": "returned", "consumed": published.total, "complete": True, "state": "finished"}
    assert waited >= PAUSE_S
    assert lost == duplicates == 0
    assert sum(offsets.values()) == published.total


# --------------------------------------------------------------------------------------------
# disk full under the table writer


def disk_usage(path: Path) -> int:
    """Bytes of storage the files under `path` occupy (allocated blocks, as tmpfs counts them)."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


# Set by `scripts/run test` under CI=true (.ci/run, root on its own machine): a full disk that
# cannot be simulated there is a failure, not a skip.
REQUIRE_DISK_FULL = "FINK_PIPELINE_REQUIRE_DISK_FULL"
MNT_DETACH = 2  # umount2(2) flag


def mount_tmpfs(target: Path, size_kib: int) -> str | None:
    """Mount a tmpfs of `size_kib` KiB on `target`: None once mounted, else why it could not be.
    Calls mount(2) itself, so a minimal image without util-linux runs the tests too."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", os.fsencode(target), b"tmpfs", 0, f"size={size_kib}k".encode()) == 0:
        return None
    return f"mount(2): {os.strerror(ctypes.get_errno())}"


def unmount(target: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.umount2(os.fsencode(target), 0) != 0:
        libc.umount2(os.fsencode(target), MNT_DETACH)  # busy: detached now, freed when its files close


@pytest.fixture
def small_tmpfs(tmp_path):
    """A factory mounting a tmpfs of a given size under tmp_path, unmounted at teardown.

    Needs root or CAP_SYS_ADMIN (CI runs as root). Elsewhere the test is skipped with the reason,
    unless FINK_PIPELINE_REQUIRE_DISK_FULL=1 (set by `scripts/run test` under CI=true), which makes it fail instead."""
    mounted: list[Path] = []

    def mount(size_bytes: int) -> Path:
        target = tmp_path / f"tmpfs{len(mounted)}"
        target.mkdir()
        reason = mount_tmpfs(target, math.ceil(size_bytes / 1024))
        if reason is not None:
            message = (f"cannot mount a tmpfs to simulate a full disk ({reason}): run the suite as root or with "
                       "CAP_SYS_ADMIN")
            if os.environ.get(REQUIRE_DISK_FULL) == "1":
                pytest.fail(f"{message}; {REQUIRE_DISK_FULL}=1 requires the disk-full tests to run")
            pytest.skip(message)
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        unmount(target)


def test_small_tmpfs_fills_up_with_enospc(small_tmpfs):
    """The fixture the disk-full tests rely on: a write past its size fails with ENOSPC."""
    import errno

    disk = small_tmpfs(256 * 1024)
    with pytest.raises(OSError) as info:
        (disk / "ballast").write_bytes(b"\0" * (1024 * 1024))
    assert info.value.errno == errno.ENOSPC


@pytest.mark.kafka
def test_disk_full_under_table_then_resume_after_space_is_freed(kafka_settings, small_tmpfs, tmp_path,
                                                                reliability_record):
    from fink_pipeline_tests.synthetic_topics import publish_synthetic_topic

    topic = "ftransfer_ztf_2024-03-01_900003"
    published = publish_synthetic_topic(kafka_settings, topic, SURVEY, 3000, packet="light", seed=12,
                                        partitions=KAFKA_PARTITIONS)
    # The same download on a roomy disk tells how much space the table needs.
    consume_all(kafka_settings, topic, str(tmp_path / "measure"))
    needed = disk_usage(tmp_path / "measure")
    # Room for the whole table and the leftovers of a failed batch, once the ballast is gone;
    # with the ballast, about half of the table fits.
    disk = small_tmpfs(2 * needed + 2 * 2**20)
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * (2 * needed + 2 * 2**20 - needed // 2))
    uri = str(disk / "table")

    # the download, the resume and the count first; the checks of each step after the record
    error = raised(consume_all, kafka_settings, topic, uri)  # checked below: DiskFullError
    candids, partial_offsets = table_state(uri, topic)
    ballast.unlink()
    report = consume_all(kafka_settings, topic, uri)
    final, offsets = table_state(uri, topic)
    lost, duplicates = count_lost_and_duplicates(final, published.ids)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

    assert isinstance(error, DiskFullError), repr(error)
    # one line naming the cause and the table, not deltalake's "Failed to parse parquet"
    message = str(error)
    assert message.startswith(f"no space left on device writing {uri}: free space and rerun"), message
    assert "\n" not in message and "parquet" not in message.lower(), message
    assert error.__cause__ is None and error.__suppress_context__
    assert 0 < len(candids) < published.total, "the disk should fill up mid-download"
    assert len(candids) == sum(partial_offsets.values()), "rows differ from the offsets committed with them"
    assert count_lost_and_duplicates(candids, published.ids)[1] == 0  # none duplicated or foreign
    assert report.complete and report.consumed == published.total - len(candids)
    assert lost == duplicates == 0
    assert sum(offsets.values()) == published.total


@pytest.mark.kafka
@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_disk_full_under_the_command_says_it_in_one_line_then_resumes(kafka_settings, small_tmpfs, tmp_path,
                                                                      reliability_record, fmt):
    """`fink_datatransfer` with 2 consumers on a disk that fills up: one line saying so (not one
    per consumer, not deltalake's parquet error), exit 1, then an exact resume."""
    from fink_pipeline_tests.synthetic_topics import publish_synthetic_topic

    topic = f"ftransfer_ztf_2024-03-01_90001{'01' if fmt == 'delta' else '02'}"
    published = publish_synthetic_topic(kafka_settings, topic, SURVEY, 3000, packet="light", seed=14,
                                        partitions=KAFKA_PARTITIONS)
    command = [str(Path(sys.executable).parent / "fink_datatransfer"), "-topic", topic, "-servers",
               kafka_settings.bootstrap_servers, "-nconsumers", "2", "-batchsize", str(BATCH_SIZE), "-format", fmt]

    def download(outdir: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*command, "-outdir", str(outdir)], capture_output=True, text=True, timeout=300)

    measured = download(tmp_path / "measure")
    needed = disk_usage(tmp_path / "measure")
    disk = small_tmpfs(2 * needed + 2 * 2**20)
    ballast = disk / "ballast"
    ballast.write_bytes(b"\0" * (2 * needed + 2 * 2**20 - needed // 2))
    outdir = disk / "table"
    # both downloads and the count first; the checks of each after the record
    full = download(outdir)
    ballast.unlink()
    resumed = download(outdir)
    lost, duplicates = count_lost_and_duplicates(table_ids(outdir, fmt), published.ids)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

    assert measured.returncode == 0, measured.stderr[-2000:]
    assert full.returncode == 1, full.stderr[-2000:]
    lines = [line for line in full.stderr.splitlines() if "no space left on device" in line.lower()]
    assert lines == [f"consumer failed: DiskFullError: no space left on device writing {outdir}: free space and "
                     "rerun; the table keeps every batch committed before and the transfer resumes where it "
                     "stopped"], full.stderr[-3000:]
    assert "Failed to parse parquet" not in full.stderr and "Traceback" not in full.stderr
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert lost == duplicates == 0


# --------------------------------------------------------------------------------------------
# whole transfers


START = dt.date(2024, 3, 1)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    """2 nights x 400 ZTF alerts, without cutouts (the light packet never reads them)."""
    root = str(tmp_path_factory.mktemp("reliability-archive"))
    generate_archive(SURVEY, root, START, nights=2, alerts_per_night=400, seed=13, with_cutouts=False)
    return root


@pytest.mark.kafka
def test_request_over_missing_nights_creates_nothing(archive, kafka_broker, tmp_path, monkeypatch, reliability_record):
    import dagster as dg

    import fink_pipeline.spark
    from fink_pipeline.kafka.topics import topic_exists
    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.transfer.request import TransferRequest

    spark_requests: list[object] = []
    monkeypatch.setattr(fink_pipeline.spark, "build_spark_session",
                        lambda *a, **k: spark_requests.append(a) or pytest.fail("Spark was started"))
    request = TransferRequest(start="2023-06-01", stop="2023-06-03", classes=["SN candidate"]).with_identity()
    tables = tmp_path / "tables"
    with dg.instance_for_test() as instance:
        result = run_transfer(request, bootstrap=kafka_broker, archive_root=archive, table_root=str(tables),
                              request_root=str(tmp_path / "requests"), instance=instance)
    # the ground truth: the archive has none of the requested nights, so the request selects no alert;
    # every alert found in a table under the table root is one too many
    selected = [n for n in list_nights(archive, "ztf") if request.start <= n.isoformat() <= request.stop]
    expected = expected_candids(archive, selected, request.classes) if selected else []
    written = [c for table in (sorted(tables.iterdir()) if tables.exists() else []) for c in table_ids(table)]
    lost, duplicates = count_lost_and_duplicates(written, expected)
    reliability_record(cases=1, failures_survived=1, lost=lost, duplicates=duplicates)

    assert selected == []
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert [e.step_key for e in failures] == ["transfer_request"]
    assert failures[0].event_specific_data.user_failure_data.description.startswith(
        "No alert data found in between 2023-06-01 and 2023-06-03"
    )
    assert spark_requests == []
    settings = KafkaSettings(bootstrap_servers=kafka_broker)
    assert [t for t in (request.topic, f"{request.topic}_schema", f"{request.topic}_status")
            if topic_exists(settings, t)] == []
    assert not tables.exists() or not any(tables.iterdir())
    assert lost == duplicates == 0


def expected_candids(root: str, nights: list[dt.date], classes: list[str]) -> list[int]:
    """The alerts a request selects, computed from the archive files without Spark."""
    from fink_pipeline.surveys.ztf.classification import finkclass_arrow

    archive = pa.concat_tables([ds.dataset(night_dir(root, "ztf", n), format="parquet").to_table() for n in nights])
    if classes:
        archive = archive.filter(pc.is_in(finkclass_arrow(archive), value_set=pa.array(classes)))
    return archive["candid"].to_pylist()


@pytest.mark.spark
@pytest.mark.kafka
def test_two_transfers_at_once_write_two_exact_tables(spark, kafka_broker, archive, tmp_path, reliability_record):
    import dagster as dg

    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.transfer.request import TransferRequest

    second = (START + dt.timedelta(days=1)).isoformat()
    requests = [
        TransferRequest(start=START.isoformat(), stop=second, classes=["SN candidate", "Unknown", "RRLyr"]),
        TransferRequest(start=second, stop=second, content="light"),
    ]
    requests = [r.with_identity() for r in requests]
    assert requests[0].topic != requests[1].topic
    results: dict[int, object] = {}
    spans: dict[int, tuple[float, float]] = {}

    def transfer(i: int) -> None:
        began = time.monotonic()
        # one in-memory instance per run, as two separate launches would have
        with dg.DagsterInstance.ephemeral() as instance:  # disposed in the thread that made it
            results[i] = run_transfer(requests[i], bootstrap=kafka_broker, archive_root=archive,
                                      table_root=str(tmp_path / "tables"), request_root=str(tmp_path / "requests"),
                                      instance=instance)
        spans[i] = (began, time.monotonic())

    threads = [threading.Thread(target=transfer, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)

    expected = [
        expected_candids(archive, [START, START + dt.timedelta(days=1)], requests[0].classes),
        expected_candids(archive, [START + dt.timedelta(days=1)], []),
    ]
    lost_total = duplicates_total = 0
    for i, request in enumerate(requests):
        lost, duplicates = count_lost_and_duplicates(table_ids(tmp_path / "tables" / request.topic), expected[i])
        lost_total += lost
        duplicates_total += duplicates
    reliability_record(cases=2, failures_survived=0, lost=lost_total, duplicates=duplicates_total)

    assert sorted(spans) == [0, 1], f"a transfer did not return: {sorted(spans)}"
    assert max(s for s, _ in spans.values()) < min(e for _, e in spans.values()), "the runs did not overlap"
    for i in range(2):
        assert results[i].success
        checks = {c.check_name: c.passed for c in results[i].get_asset_check_evaluations()}
        assert checks == {"row_count_matches_published": True, "candid_unique": True}
    assert lost_total == duplicates_total == 0
    assert len(expected[0]) > 50 and len(expected[1]) == 400


# --------------------------------------------------------------------------------------------
# the summary line itself


def test_summary_line_sums_what_tests_record(tmp_path):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n"
        "pytestmark = pytest.mark.reliability\n"
        "def test_a(reliability_record):\n"
        "    reliability_record(cases=2, failures_survived=1)\n"
        "def test_b(reliability_record):\n"
        "    reliability_record(cases=1, failures_survived=3, lost=0, duplicates=0)\n"
        "def test_c(reliability_record):\n"
        "    with pytest.raises(ValueError):\n"
        "        reliability_record(lost=-1)\n"
    )
    (tmp_path / "test_other.py").write_text("def test_plain():\n    pass\n")
    command = [sys.executable, "-m", "pytest", "-p", "fink_pipeline_tests.reliability_plugin", "-p", "no:cacheprovider",
               "-o", "markers=reliability", "-q"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ran = subprocess.run([*command, str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines().count(
        "reliability summary: cases 3, failures survived 4, lost 0, duplicates 0, unmeasured 2") == 1
    plain = subprocess.run([*command, str(tmp_path / "test_other.py")], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=120)
    assert plain.returncode == 0 and "reliability summary" not in plain.stdout
