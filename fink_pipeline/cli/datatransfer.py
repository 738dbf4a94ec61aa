"""`fink_datatransfer`: download a transfer topic into a Delta table or Parquet dataset.

Flags are those of Fink's manual (`-topic`, `-outdir`, `-partitionby`, `-nconsumers`,
`-batchsize`, `-limit`, `-maxtimeout`, `--restart_from_beginning`, `--dump_schema`,
`--verbose`), plus `-format` and `-survey`. Connection settings come from fink-client's
credentials file (`~/.finkclient/<survey>_credentials.yml`, see `fink-pipeline register`).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import queue
import shutil
import sys
import time
from pathlib import Path

from fink_pipeline.consumer.sinks import PARTITION_CHOICES, DeltaSink, ParquetSink, Partitioning
from fink_pipeline.kafka.settings import KafkaSettings

LOGGER = logging.getLogger("fink_datatransfer")
EXIT_OK, EXIT_FAILED_JOB, EXIT_INCOMPLETE, EXIT_USAGE = 0, 1, 3, 2


def build_parser() -> argparse.ArgumentParser:
    """The `fink_datatransfer` argument parser (single-dash long flags, as in fink-client)."""
    parser = argparse.ArgumentParser(
        prog="fink_datatransfer",
        description="Download a Fink Data Transfer topic into a Delta table or a Parquet dataset, "
        "exactly once and resumable.",
    )
    parser.add_argument("-topic", required=True, help="topic name, e.g. ftransfer_ztf_2024-03-01_123456")
    parser.add_argument("-outdir", required=True, help="output table folder (or object-store URI for delta)")
    parser.add_argument("-partitionby", default=None, choices=PARTITION_CHOICES,
                        help="finkclass, time (year/month/day), tnsclass, classId or none "
                        "(default: the survey's: finkclass for ztf, time for lsst, classId for elasticc)")
    parser.add_argument("-nconsumers", type=int, default=os.cpu_count() or 1,
                        help="parallel consumer processes (default: number of cores)")
    parser.add_argument("-batchsize", type=int, default=5000, help="messages decoded and written per batch")
    parser.add_argument("-limit", type=int, default=None, help="stop after this many alerts (per consumer)")
    parser.add_argument("-maxtimeout", type=float, default=10.0,
                        help="seconds without messages before giving up (only for topics without status)")
    parser.add_argument("-format", default="delta", choices=("delta", "parquet"))
    parser.add_argument("-survey", default=None, help="ztf, lsst or elasticc (default: from the topic name)")
    parser.add_argument("-credentials", default=None, help="credentials file (default: ~/.finkclient/<survey>_credentials.yml)")
    parser.add_argument("-servers", default=None, help="bootstrap servers, overriding the credentials file")
    parser.add_argument("-groupid", default=None, help="consumer group id, overriding the credentials file")
    parser.add_argument("--restart_from_beginning", action="store_true",
                        help="delete the output folder and download the topic again")
    parser.add_argument("--dump_schema", action="store_true", help="write schema_<topic>.json next to the output")
    parser.add_argument("--verbose", action="store_true")
    return parser


def survey_of_topic(topic: str) -> str:
    """`ftransfer_ztf_...` -> ztf; fink-client only accepts these prefixes."""
    for prefix in ("ftransfer_", "fxmatch_", "fink_ai_"):
        if topic.startswith(prefix):
            return topic[len(prefix):].split("_", 1)[0]
    raise ValueError(f"-topic {topic!r}: transfer topics start with ftransfer_, fxmatch_ or fink_ai_")


def resolve_settings(args: argparse.Namespace, survey: str) -> tuple[KafkaSettings, str]:
    """Connection settings and group id from flags, environment or the credentials file."""
    from fink_pipeline.kafka.settings import credentials_path

    servers = args.servers or os.environ.get("FINK_KAFKA_BOOTSTRAP_SERVERS")
    path = Path(args.credentials) if args.credentials else credentials_path(survey)
    if servers:
        settings = KafkaSettings(bootstrap_servers=servers)
    elif path.exists():
        settings = KafkaSettings.from_credentials_file(path)
    else:
        raise ValueError(
            f"no Kafka connection: {path} does not exist; run `fink-pipeline register --survey {survey} "
            "--servers HOST:PORT` (or pass -servers)"
        )
    group = args.groupid or settings.group_id or f"fink_datatransfer_{survey}"
    return settings, group


def _worker(options: dict, partitions: list[int], events) -> None:
    """One consumer process: its partitions into the shared table, progress on `events`."""
    from fink_pipeline.consumer.core import consume_topic

    logging.basicConfig(level=logging.INFO if options["verbose"] else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    settings = options["settings"]  # pickled as is: a JSON dump would mask the password
    sink = make_sink(options)
    try:
        report = consume_topic(
            settings, options["topic"], sink,
            group_id=options["group"], partitions=partitions, batch_size=options["batchsize"],
            max_timeout=options["maxtimeout"], limit=options["limit"],
            quarantine_dir=options["quarantine"], avro_schema=options["schema"],
            progress=lambda n, status: events.put(("progress", n, status.state, status.total)),
        )
        events.put(("done", {"consumed": report.consumed, "quarantined": report.quarantined,
                             "state": report.state, "complete": report.complete,
                             "expected": report.expected_total}, None, None))
    except BaseException as exc:  # reported to the parent, which decides the exit code
        events.put(("error", f"{type(exc).__name__}: {exc}", None, None))
        raise


def make_sink(options: dict):
    """The sink chosen by -format, with the partitioning of -partitionby."""
    partitioning = Partitioning(options["partitionby"], options["time_column"], options["time_scale"])
    if options["format"] == "parquet":
        return ParquetSink(options["outdir"], partitioning)
    return DeltaSink(options["outdir"], partitioning, app_prefix=f"{options['topic']}:{options['group']}")


def split_partitions(partitions: list[int], n: int) -> list[list[int]]:
    """Round-robin partitions over at most `n` consumers (no empty consumer)."""
    n = max(1, min(n, len(partitions)))
    return [partitions[i::n] for i in range(n)]


def run(args: argparse.Namespace) -> int:
    """Download the topic; returns the process exit code."""
    from rich.console import Console
    from tqdm import tqdm

    from fink_pipeline.consumer.core import fetch_schema, topic_partitions
    from fink_pipeline.kafka.status import read_status
    from fink_pipeline.surveys import get_survey

    console = Console(stderr=True)
    survey = get_survey(args.survey or survey_of_topic(args.topic))
    settings, group = resolve_settings(args, survey.name)
    partitionby = args.partitionby or survey.default_partitionby
    if args.batchsize <= 0 or args.nconsumers <= 0:
        raise ValueError("-batchsize and -nconsumers must be positive")
    outdir = args.outdir
    if args.restart_from_beginning and Path(outdir).exists():
        console.print(f"--restart_from_beginning: removing {outdir}")
        shutil.rmtree(outdir)
    schema = fetch_schema(settings, args.topic, timeout_s=max(args.maxtimeout, 5.0))
    if args.dump_schema:
        dump = Path(outdir).parent / f"schema_{args.topic}.json"
        dump.parent.mkdir(parents=True, exist_ok=True)
        dump.write_text(json.dumps(schema, indent=2))
        console.print(f"schema written to {dump}")
    partitions = topic_partitions(settings, args.topic)
    status = read_status(settings, args.topic)
    console.print(f"{args.topic}: job {status.state}"
                  + (f", {status.total:,} alerts published" if status.total is not None else ""))
    options = {
        "settings": settings, "topic": args.topic, "group": group,
        "outdir": outdir, "format": args.format, "partitionby": partitionby,
        "time_column": survey.time_column, "time_scale": survey.time_scale,
        "batchsize": args.batchsize, "maxtimeout": args.maxtimeout, "limit": args.limit,
        "quarantine": str(Path(outdir).parent / f"{Path(outdir).name}_quarantine"),
        "schema": schema, "verbose": args.verbose,
    }
    groups = split_partitions(partitions, args.nconsumers)
    context = mp.get_context("spawn")  # librdkafka threads do not survive fork
    events = context.Queue()
    workers = [context.Process(target=_worker, args=(options, g, events), daemon=True) for g in groups]
    started = time.monotonic()
    for w in workers:
        w.start()
    done, errors, consumed = [], [], 0
    bar = tqdm(total=status.total, unit="alert", unit_scale=True, desc=args.topic[-24:], file=sys.stderr,
               disable=None)
    try:
        while len(done) + len(errors) < len(workers):
            try:
                kind, payload, state, total = events.get(timeout=1.0)
            except queue.Empty:
                if not any(w.is_alive() for w in workers) and events.empty():
                    break
                continue
            if kind == "progress":
                consumed += payload
                if total is not None and bar.total != total:
                    bar.total = total
                bar.set_postfix_str(f"job {state}", refresh=False)
                bar.update(payload)
            elif kind == "done":
                done.append(payload)
            else:
                errors.append(payload)
    finally:
        bar.close()
        for w in workers:
            w.join(timeout=30)
    seconds = time.monotonic() - started
    quarantined = sum(d["quarantined"] for d in done)
    print_summary(console, options, consumed, seconds, quarantined)
    for error in errors:
        console.print(f"[red]consumer failed[/red]: {error}")
    if errors:
        return EXIT_FAILED_JOB
    if any(d["state"] == "failed" for d in done):
        console.print("[red]the publishing job failed[/red]: the table holds what was published before")
        return EXIT_FAILED_JOB
    if not all(d["complete"] for d in done) and args.limit is None and status.state != "unknown":
        console.print("[yellow]incomplete[/yellow]: run the same command again to resume")
        return EXIT_INCOMPLETE
    return EXIT_OK


def print_summary(console, options: dict, consumed: int, seconds: float, quarantined: int) -> None:
    """Rows per partition value of the output table, and the run's rate."""
    import pyarrow as pa
    from rich.table import Table

    from fink_pipeline.consumer.sinks import read_parquet_dataset

    column = {"time": "year", "none": None}.get(options["partitionby"], options["partitionby"])
    counts: dict[str, int] = {}
    if Path(options["outdir"]).exists():
        if options["format"] == "delta":
            from deltalake import DeltaTable, QueryBuilder

            group = f'"{column}"' if column else "'all'"
            sql = f"SELECT CAST({group} AS VARCHAR) AS v, count(*) AS n FROM t GROUP BY 1 ORDER BY 2 DESC"
            result = pa.table(QueryBuilder().register("t", DeltaTable(options["outdir"])).execute(sql).read_all())
        else:
            table = read_parquet_dataset(options["outdir"])
            values = table[column].cast(pa.string()) if column else pa.array(["all"] * table.num_rows)
            result = pa.table({"v": values}).group_by("v").aggregate([([], "count_all")]).rename_columns(["v", "n"])
        counts = dict(zip(result["v"].to_pylist(), result["n"].to_pylist()))
    summary = Table(title=f"{options['outdir']} ({options['format']})")
    summary.add_column(column or "table")
    summary.add_column("alerts", justify="right")
    for value, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        summary.add_row(str(value), f"{n:,}")
    summary.add_row("[bold]total[/bold]", f"[bold]{sum(counts.values()):,}[/bold]")
    console.print(summary)
    rate = consumed / seconds if seconds > 0 else 0.0
    console.print(f"{consumed:,} alerts downloaded in {seconds:.1f} s ({rate:,.0f} alerts/s)"
                  + (f"; {quarantined} undecodable messages quarantined" if quarantined else ""))


def main(argv: list[str] | None = None) -> int:
    """Entry point of `fink_datatransfer`."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    try:
        return run(args)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
