"""`fink-pipeline request validate|submit [FILE] [flags]`: check and launch transfers."""

from __future__ import annotations

import argparse

from fink_pipeline import paths


def _add_request_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default=None,
                        help="request YAML (Fink portal export or flat keys); flags override it")
    parser.add_argument("--survey", default=None)
    parser.add_argument("--start", default=None, help="first night, YYYY-MM-DD")
    parser.add_argument("--stop", default=None, help="last night (inclusive), YYYY-MM-DD")
    parser.add_argument("--classes", nargs="+", default=None, metavar="CLASS")
    parser.add_argument("--filter", dest="livestream_filter", default=None, help="live-stream filter to replay")
    parser.add_argument("--condition", dest="conditions", action="append", default=None, metavar="SQL",
                        help="extra condition (repeatable; ';' separates several)")
    parser.add_argument("--content", default=None, help="light, medium, full or comma-separated fields")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--archive", default=None, help="archive root (default: state dir / archive)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("request", help="validate or submit a transfer request")
    commands = parser.add_subparsers(dest="request_command", required=True, metavar="ACTION")
    validate = commands.add_parser("validate", help="check a request; exit non-zero on any error")
    _add_request_flags(validate)
    validate.set_defaults(func=run_validate)
    submit = commands.add_parser("submit", help="submit a request and run its transfer")
    _add_request_flags(submit)
    submit.add_argument("--tables", default=None, help="table root (default: state dir / tables)")
    submit.add_argument("--wait", action="store_true",
                        help="run in the foreground and print the number of alerts published")
    submit.set_defaults(func=run_submit)
    rerun = commands.add_parser("run", help="run (or resume) the transfer of an already submitted topic")
    rerun.add_argument("topic")
    rerun.add_argument("--archive", default=None)
    rerun.add_argument("--tables", default=None)
    rerun.set_defaults(func=run_stored)


def load_request(args: argparse.Namespace):
    """The request from FILE and flags (flags win)."""
    from fink_pipeline.transfer.request import load_request_file, request_from_mapping

    overrides = {
        "survey": args.survey, "start": args.start, "stop": args.stop, "classes": args.classes,
        "livestream_filter": args.livestream_filter, "conditions": args.conditions,
        "content": args.content, "limit": args.limit,
    }
    if args.file:
        return load_request_file(args.file, overrides)
    return request_from_mapping({}, overrides)


def plan_request(args: argparse.Namespace):
    """Validate the request against the survey and the archive (no Spark)."""
    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.transfer.job import plan_transfer

    request = load_request(args)
    archive = args.archive or str(paths.default_archive_root())
    return request, plan_transfer(request, archive, list_nights(archive, request.survey)), archive


def run_validate(args: argparse.Namespace) -> int:
    """Print the resolved request, or the first error (exit 2)."""
    request, plan, _ = plan_request(args)
    print(f"valid: {request.survey} {request.start}..{request.stop}, {len(plan.night_paths)} nights present"
          + (f", {len(plan.missing_nights)} missing" if plan.missing_nights else ""))
    print(f"  classes:    {request.classes or 'all'}")
    for condition in plan.conditions:
        print(f"  condition:  {condition.spark_sql}")
    if request.livestream_filter:
        print(f"  filter:     {plan.livestream_filter.fink_module}")
    print(f"  content:    {plan.content.packet or plan.content.output_names} ({len(plan.content.columns)} columns)")
    return 0


def run_submit(args: argparse.Namespace) -> int:
    """Name the topic, print it, then run the transfer (foreground with --wait)."""
    import subprocess
    import sys

    from fink_pipeline.kafka.broker import status_managed
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.kafka.topics import list_topics
    from fink_pipeline.transfer.store import RequestStore

    request, _, archive = plan_request(args)
    bootstrap = status_managed(paths.state_dir())
    if not bootstrap:
        raise ValueError("no broker running: start one with `fink-pipeline broker start`")
    request = request.with_identity(list_topics(KafkaSettings(bootstrap_servers=bootstrap)))
    request_root = paths.state_dir() / "requests"
    RequestStore(request_root).save(request)
    print(request.topic, flush=True)
    tables = args.tables or str(paths.default_table_root())
    if not args.wait:
        log = paths.state_dir() / "logs" / f"{request.topic}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            subprocess.Popen(
                [sys.executable, "-m", "fink_pipeline.cli.main", "request", "run", request.topic,
                 "--archive", archive, "--tables", tables],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        print(f"running in the background; log: {log}", file=sys.stderr)
        return 0
    return _run_stored(request.topic, bootstrap, archive, tables, str(request_root))


def run_stored(args: argparse.Namespace) -> int:
    """Run the stored request of `args.topic` on the managed broker (resumes exactly)."""
    from fink_pipeline.kafka.broker import status_managed

    bootstrap = status_managed(paths.state_dir())
    if not bootstrap:
        raise ValueError("no broker running: start one with `fink-pipeline broker start`")
    return _run_stored(args.topic, bootstrap, args.archive or str(paths.default_archive_root()),
                       args.tables or str(paths.default_table_root()), str(paths.state_dir() / "requests"))


def _run_stored(topic: str, bootstrap: str, archive: str, tables: str, request_root: str) -> int:
    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.transfer.store import RequestStore

    request = RequestStore(request_root).load(topic)
    result = run_transfer(request, bootstrap=bootstrap, archive_root=archive, table_root=tables,
                          request_root=request_root)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure), None)
        print(f"transfer failed: {failure.message if failure else 'see the run log'}")
        return 1
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("published_alerts")}
    print(f"{meta['alert_topic']['alerts_published'].value} alerts published to {topic}")
    return 0
