"""`fink_datatransfer`: download a transfer topic into a Delta table or Parquet dataset.

Flags are those of Fink's manual (`-topic`, `-outdir`, `-partitionby`, `-nconsumers`,
`-batchsize`, `-limit`, `-maxtimeout`, `--restart_from_beginning`, `--dump_schema`,
`--verbose`), plus `-format` and `-survey`. Connection settings come from fink-client's
credentials file (`~/.finkclient/<survey>_credentials.yml`, folder overridden by
$FINK_CLIENT_HOME; see `fink-pipeline register`).

Parallel consumers each own a subset of the topic's partitions, so no two of them ever read
the same message: the command itself is one of them (in a thread: it has imported and
connected everything already), the others are processes. Every batch is committed with its Kafka offsets in the
table itself: the command can be killed at any moment and run again to resume exactly, with
any group id (the progress belongs to the output folder). An output folder holds one
publication of one topic: another topic, or the topic published again, is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

from fink_pipeline.consumer.delta_sink import DeltaSink
from fink_pipeline.consumer.parquet_sink import ParquetSink
from fink_pipeline.consumer.partitioning import Partitioning, default_partitioning
from fink_pipeline.kafka.settings import KafkaEnvSettings, KafkaSettings
from fink_pipeline.storage import StorageEnvSettings, arrow_filesystem, is_object_store

LOGGER = logging.getLogger("fink_datatransfer")
WORKER_ALLOCATOR_ENV = {
    "MALLOC_ARENA_MAX": "2",  # glibc: delta-rs and Arrow threads would each grow an arena
    "MALLOC_TRIM_THRESHOLD_": str(1 << 20),
    "_RJEM_MALLOC_CONF": "background_thread:true,dirty_decay_ms:500,muzzy_decay_ms:500",  # polars' jemalloc
}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3
TOPIC_PREFIXES = ("ftransfer_", "fxmatch_", "fink_ai_")


def build_parser() -> argparse.ArgumentParser:
    """The `fink_datatransfer` argument parser (single-dash long flags, as in fink-client)."""
    parser = argparse.ArgumentParser(
        prog="fink_datatransfer",
        description="Download a Fink Data Transfer topic into a Delta table or a Parquet dataset, "
        "exactly once and resumable (kill it at any time, run it again to resume).",
    )
    parser.add_argument("-topic", required=True, help="topic name, e.g. ftransfer_ztf_2024-03-01_123456")
    parser.add_argument("-outdir", required=True, help="output table folder, or an object-store URI for Delta "
                        "(s3://bucket/path; options in FINK_TABLE_STORAGE_OPTIONS, keys in AWS_ACCESS_KEY_ID/"
                        "AWS_SECRET_ACCESS_KEY)")
    parser.add_argument("-partitionby", default=None,
                        help="time (year=/month=/day=), none, or a scalar field of the topic: finkclass, "
                        "tnsclass, classId, tns_type_recomputed, a nested one such as pred.main_label_classifier "
                        "(written as column pred_main_label_classifier); nulls go to __HIVE_DEFAULT_PARTITION__ "
                        "(default: the survey's: finkclass for ztf, time otherwise; none when absent)")
    parser.add_argument("-nconsumers", type=int, default=os.cpu_count() or 1,
                        help="parallel consumer processes (default: number of cores)")
    parser.add_argument("-batchsize", type=int, default=50_000,
                        help="messages decoded and committed per batch (fewer when they exceed 32 MB)")
    parser.add_argument("-limit", type=int, default=None, help="stop after about this many alerts in total")
    parser.add_argument("-maxtimeout", type=float, default=None,
                        help="seconds without messages before stopping, only for topics without a "
                        "status topic (default: the credentials file's maxtimeout, else 10)")
    parser.add_argument("-format", default="delta", choices=("delta", "parquet"),
                        help="output format (default: delta)")
    parser.add_argument("-survey", default=None, help="ztf, lsst or elasticc (default: from the topic name)")
    parser.add_argument("-credentials", default=None,
                        help="credentials file (default: $FINK_CLIENT_HOME or ~/.finkclient, <survey>_credentials.yml)")
    parser.add_argument("-servers", default=None, help="bootstrap servers, overriding the credentials file")
    parser.add_argument("-groupid", default=None, help="consumer group id, overriding the credentials file")
    parser.add_argument("--restart_from_beginning", action="store_true",
                        help="delete the output folder and download the topic again")
    parser.add_argument("--dump_schema", action="store_true",
                        help="write the topic's Avro schema to schema_<topic>.json in the current folder")
    parser.add_argument("--verbose", action="store_true", help="log what each consumer does")
    return parser


def survey_of_topic(topic: str) -> str:
    """`ftransfer_ztf_...` -> ztf; fink-client only accepts these prefixes."""
    for prefix in TOPIC_PREFIXES:
        if topic.startswith(prefix):
            return topic[len(prefix):].split("_", 1)[0]
    raise ValueError(f"-topic {topic!r}: transfer topics start with ftransfer_, fxmatch_ or fink_ai_ "
                     "(see the tab `Get your data` of the portal)")


def resolve_settings(args: argparse.Namespace, survey: str) -> tuple[KafkaSettings, str, float]:
    """Connection settings, group id and max time-out from flags, environment or the credentials file."""
    from fink_pipeline.kafka.settings import credentials_path, read_credentials_file

    servers = args.servers or KafkaEnvSettings.load().bootstrap_servers
    path = Path(args.credentials) if args.credentials else credentials_path(survey)
    maxtimeout = 10.0
    if servers:
        settings = KafkaSettings(bootstrap_servers=servers)
    elif path.exists():
        settings = KafkaSettings.from_credentials_file(path)
        maxtimeout = float(read_credentials_file(path).get("maxtimeout") or maxtimeout)
    else:
        raise ValueError(
            f"no Kafka connection: {path} does not exist; run `fink-pipeline register --survey {survey} "
            "--servers HOST:PORT` (or pass -servers)"
        )
    group = args.groupid or settings.group_id or f"fink_datatransfer_{survey}"
    if args.maxtimeout is not None:
        maxtimeout = args.maxtimeout
    return settings, group, maxtimeout


def choose_partitioning(requested: str | None, survey, arrow_schema) -> tuple[Partitioning, str | None]:
    """The partitioning to use and, when the default had to be changed, why."""
    if requested is not None:
        partitioning = Partitioning(requested, survey.time_column, survey.time_scale)
        partitioning.check(arrow_schema)
        return partitioning, None
    return default_partitioning(survey.default_partitionby, survey.time_column, survey.time_scale, arrow_schema)


def make_sink(options: dict):
    """The sink chosen by -format, with the partitioning of -partitionby."""
    partitioning = Partitioning(options["partitionby"], options["time_column"], options["time_scale"])
    if options["format"] == "parquet":
        return ParquetSink(options["outdir"], partitioning)
    return DeltaSink(options["outdir"], partitioning, storage_options=options.get("storage_options"),
                     settings=("-outdir", StorageEnvSettings.env_name("table_storage_options")))


def output_location(args: argparse.Namespace) -> tuple[str, str, dict[str, str] | None]:
    """(output, quarantine folder, storage options): a local -outdir resolved, its quarantine
    beside it; an object-store URI (s3://bucket/path, Delta only) as given, with the options of
    FINK_TABLE_STORAGE_OPTIONS (credentials from the environment) and a local quarantine."""
    if not is_object_store(args.outdir):
        outdir = str(Path(args.outdir).expanduser().resolve())
        return outdir, f"{outdir}_quarantine", None
    if args.format != "delta":
        raise ValueError(f"-outdir {args.outdir}: object storage takes -format delta only (the Parquet layout "
                         "commits with local file locks and renames); write Parquet to a local folder")
    options = StorageEnvSettings.load().table_storage_options
    return args.outdir.rstrip("/"), str(Path.cwd() / f"{args.topic}_quarantine"), dict(options) or None


def remove_output(location: str, storage_options: dict[str, str] | None) -> bool:
    """Delete an output folder or object-store prefix; False when there was none."""
    import pyarrow.fs as pafs

    filesystem, path = arrow_filesystem(location, storage_options)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return False
    filesystem.delete_dir(path)
    return True


def split_partitions(partitions: list[int], n: int) -> list[list[int]]:
    """Round-robin partitions over at most `n` consumers (no empty consumer)."""
    n = max(1, min(n, len(partitions)))
    return [partitions[i::n] for i in range(n)]


def split_limit(limit: int | None, n: int) -> list[int | None]:
    """A total -limit shared between `n` consumers."""
    if limit is None:
        return [None] * n
    return [limit // n + (1 if i < limit % n else 0) for i in range(n)]


def _die_with_parent(parent_pid: int) -> None:
    """Consumers must not outlive the command (a killed command would leave writers behind)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's liveness is also checked after every batch
    if os.getppid() != parent_pid:
        os._exit(EXIT_FAILED)


def _worker(parent_pid: int, inbox, events) -> None:
    """One consumer process: its partitions into the shared table, progress on `events`.

    Started before the parent has read the schema and the status, so that its imports overlap
    with that work; its assignment (options, partitions, limit) then arrives on `inbox`
    (None: nothing to do).
    """
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the parent
    assignment = inbox.get()
    if assignment is None:
        return
    options, partitions, limit = assignment
    _configure_logging(options["verbose"])

    def check_parent() -> None:
        if os.getppid() != parent_pid:
            os._exit(EXIT_FAILED)

    consume_assignment(options, partitions, limit, events, check_parent)


def consume_assignment(options: dict, partitions: list[int], limit: int | None, events, check_parent=None) -> None:
    """One consumer's partitions into the shared table; progress, then its outcome, on `events`."""
    from fink_pipeline.consumer.core import consume_topic

    def progress(n, status):
        if check_parent is not None:
            check_parent()
        events.put(("progress", n, status.state, status.total))

    try:
        report = consume_topic(
            options["settings"], options["topic"], make_sink(options),
            group_id=options["group"], partitions=partitions, batch_size=options["batchsize"],
            max_timeout=options["maxtimeout"], limit=limit, quarantine_dir=options["quarantine"],
            avro_schema=options["schema"], progress=progress,
        )
        events.put(("done", {"consumed": report.consumed, "quarantined": report.quarantined,
                             "state": report.state, "complete": report.complete,
                             "expected": report.expected_total}, None, None))
    except Exception as exc:  # reported to the parent, which prints it and sets the exit code
        if options["verbose"]:
            LOGGER.exception("consumer failed")
        events.put(("error", f"{type(exc).__name__}: {exc}", None, None))


class _Workers:
    """Consumer processes started early and told their partitions later."""

    def __init__(self, n: int) -> None:
        # Allocators that hand freed batches back instead of caching them per thread, so that a
        # consumer's memory stays that of one batch however long the topic (read by the C
        # libraries at process start: set for the children, which inherit the environment).
        for name, value in WORKER_ALLOCATOR_ENV.items():
            os.environ.setdefault(name, value)
        context = mp.get_context("spawn")  # librdkafka threads do not survive fork
        self.events = context.Queue()
        self.inboxes = [context.Queue() for _ in range(n)]
        self.processes = [context.Process(target=_worker, args=(os.getpid(), inbox, self.events), daemon=True)
                          for inbox in self.inboxes]
        for process in self.processes:
            process.start()
        self.active: list = []

    def assign(self, assignments: list[tuple]) -> None:
        """Send each assignment to one process; the others exit."""
        for i, inbox in enumerate(self.inboxes):
            inbox.put(assignments[i] if i < len(assignments) else None)
        self.active = self.processes[:len(assignments)]

    def stop(self) -> None:
        """Release processes that got no assignment yet (early errors) and reap them all."""
        if not self.active:
            for inbox in self.inboxes:
                inbox.put(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


def run(args: argparse.Namespace) -> int:
    """Download the topic; returns the process exit code."""
    from rich.console import Console

    from fink_pipeline.surveys import get_survey

    console = Console(stderr=True, soft_wrap=True)  # long paths stay greppable in logs
    if args.batchsize <= 0 or args.nconsumers <= 0:
        raise ValueError("-batchsize and -nconsumers must be positive integers")
    if args.limit is not None and args.limit <= 0:
        raise ValueError("-limit must be a positive number of alerts")
    from fink_pipeline.avro import arrow_schema_for_avro
    from fink_pipeline.consumer.core import fetch_schema

    survey = get_survey(args.survey or survey_of_topic(args.topic))
    settings, group, maxtimeout = resolve_settings(args, survey.name)
    # started with the transfer job, before it created the topic: wait up to -maxtimeout for it
    schema = fetch_schema(settings, args.topic, timeout_s=max(maxtimeout, 5.0), on_wait=console.print)
    partitioning, note = choose_partitioning(args.partitionby, survey, arrow_schema_for_avro(schema))
    # Input checked: start the consumer processes now, their imports overlap with the rest (the
    # command itself is the first consumer).
    workers = _Workers(args.nconsumers - 1)
    try:
        return _run(args, console, survey, settings, group, maxtimeout, schema, partitioning, note, workers)
    finally:
        workers.stop()


def _run(args, console, survey, settings, group, maxtimeout, schema, partitioning, note, workers: _Workers) -> int:
    """Everything after the consumer processes are started: prepare, assign, follow, sum up."""
    from tqdm import tqdm

    from fink_pipeline.avro import arrow_schema_for_avro
    from fink_pipeline.consumer.core import publication_of, read_publication_status, topic_partitions
    from fink_pipeline.consumer.readers import rows_per_partition_value

    outdir, quarantine, storage_options = output_location(args)
    if args.restart_from_beginning:
        if is_object_store(outdir) and remove_output(outdir, storage_options):
            console.print(f"--restart_from_beginning: removed {outdir}")
        for folder in (outdir, quarantine):
            if not is_object_store(folder) and Path(folder).exists():
                console.print(f"--restart_from_beginning: removing {folder}")
                shutil.rmtree(folder)
    if args.dump_schema:
        dump = Path.cwd() / f"schema_{args.topic}.json"
        dump.write_text(json.dumps(schema, indent=2))
        console.print(f"schema written to {dump}")
    if note:
        console.print(f"[yellow]{note}[/yellow]")
    partitions = topic_partitions(settings, args.topic, wait_s=max(maxtimeout, 5.0))
    status = read_publication_status(settings, args.topic, wait_s=maxtimeout)
    options = {
        "settings": settings, "topic": args.topic, "group": group,
        "outdir": outdir, "format": args.format, "partitionby": partitioning.mode,
        "time_column": survey.time_column, "time_scale": survey.time_scale,
        "batchsize": args.batchsize, "maxtimeout": maxtimeout,
        "quarantine": quarantine, "schema": schema, "verbose": args.verbose, "storage_options": storage_options,
    }
    # Created and claimed once here: parallel consumers would otherwise race to create the
    # table, and a folder holding another publication is refused before any consumer starts.
    sink = make_sink(options)
    sink.prepare(arrow_schema_for_avro(schema))
    sink.claim(publication_of(status))
    console.print(f"{args.topic}: job {status.state}"
                  + (f", {status.total:,} alerts published" if status.total is not None else "")
                  + f"; {len(partitions)} partitions -> {outdir} ({args.format}, by {partitioning.mode})")
    already = sum(rows_per_partition_value(outdir, args.format, [], storage_options).values())
    groups = split_partitions(partitions, args.nconsumers)
    limits = split_limit(args.limit, len(groups))
    started = time.monotonic()
    events = workers.events
    workers.assign([(options, g, lim) for g, lim in zip(groups[1:], limits[1:])])
    here = threading.Thread(target=consume_assignment, args=(options, groups[0], limits[0], events),
                            name="consumer", daemon=True)
    here.start()
    done: list[dict] = []
    errors: list[str] = []
    consumed = 0
    # alerts/s and, once the total is known from the status topic, the ETA
    bar = tqdm(total=status.total, initial=already, unit=" alerts", unit_scale=True,
               desc="Downloading", file=sys.stderr, mininterval=0.5, dynamic_ncols=True)
    try:
        while len(done) + len(errors) < len(workers.active) + 1:
            try:
                kind, payload, state, total = events.get(timeout=0.5)
            except queue.Empty:
                dead = [w for w in workers.active if w.exitcode not in (None, 0)]
                if len(dead) > len(errors) and events.empty():
                    errors.extend(f"consumer process {w.pid} died with exit code {w.exitcode}"
                                  for w in dead[len(errors):])
                if not here.is_alive() and not any(w.is_alive() for w in workers.active) and events.empty():
                    break
                continue
            if kind == "progress":
                consumed += payload
                if total is not None and bar.total != total:
                    bar.total = total  # the end record arrived: ETA from here on
                bar.set_postfix_str(f"job {state}", refresh=False)
                bar.update(payload)
            elif kind == "done":
                done.append(payload)
            else:
                errors.append(payload)
    except KeyboardInterrupt:
        for w in workers.processes:
            w.terminate()
        raise
    finally:
        bar.close()
    seconds = time.monotonic() - started
    quarantined = sum(d["quarantined"] for d in done)
    # the job may have been running at the start: the consumers read its end record since
    published = status.total if status.total is not None else max(
        (d["expected"] for d in done if d["expected"] is not None), default=None)
    print_summary(console, options, partitioning, consumed, seconds, quarantined, published)
    for error in dict.fromkeys(errors):  # consumers failing alike (a full disk) say it once
        console.print(f"[red]consumer failed[/red]: {error}")
    if errors:
        return EXIT_FAILED
    if any(d["state"] == "failed" for d in done):
        console.print("[red]the publishing job failed[/red]: the table holds what was published before")
        return EXIT_FAILED
    if args.limit is None and any(d["state"] != "unknown" and not d["complete"] for d in done):
        console.print("[yellow]incomplete[/yellow]: run the same command again to resume")
        return EXIT_INCOMPLETE
    return EXIT_OK


def print_summary(console, options: dict, partitioning: Partitioning, consumed: int, seconds: float,
                  quarantined: int, published: int | None) -> None:
    """Rows per partition value of the output table (from metadata only), and the run's rate."""
    from rich.table import Table

    from fink_pipeline.consumer.readers import rows_per_partition_value

    columns = partitioning.columns
    counts = rows_per_partition_value(options["outdir"], options["format"], columns, options.get("storage_options"))
    summary = Table(title=f"{options['outdir']} ({options['format']})")
    summary.add_column("/".join(columns) if columns else "table")
    summary.add_column("alerts", justify="right")
    for value, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        summary.add_row(value, f"{n:,}")
    total = sum(counts.values())
    summary.add_row("[bold]total[/bold]", f"[bold]{total:,}[/bold]"
                    + (f" of {published:,} published" if published is not None else ""))
    console.print(summary)
    rate = consumed / seconds if seconds > 0 else 0.0
    console.print(f"{consumed:,} alerts downloaded in {seconds:.1f} s ({rate:,.0f} alerts/s); "
                  f"{quarantined} undecodable messages quarantined"
                  + (f" in {options['quarantine']}" if quarantined else ""))


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    # librdkafka logs every connection retry as an error: only shown with --verbose
    logging.getLogger("fink_pipeline.librdkafka").setLevel(logging.INFO if verbose else logging.CRITICAL)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `fink_datatransfer`."""
    from confluent_kafka import KafkaException

    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return run(args)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KafkaException as exc:
        print(f"error: Kafka: {exc.args[0].str() if exc.args else exc}; check -servers or the "
              "`servers` entry of the credentials file", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


def entry_point() -> None:
    """The `fink_datatransfer` console command: `main()`, then a quick exit (`process_exit.finish`)."""
    from fink_pipeline.cli.process_exit import finish

    finish(main())


if __name__ == "__main__":
    entry_point()
