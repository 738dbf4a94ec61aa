"""`fink-pipeline request validate|estimate|submit [FILE] [flags]`: check, size and launch transfers."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from fink_pipeline import paths


def _add_request_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", default=None,
                        help="request YAML (Fink portal export or flat keys); flags override it")
    parser.add_argument("--survey", default=None)
    parser.add_argument("--start", default=None, help="first night, YYYY-MM-DD")
    parser.add_argument("--stop", default=None, help="last night (inclusive), YYYY-MM-DD")
    parser.add_argument("--classes", nargs="+", default=None, metavar="CLASS")
    add_selection_flags(parser)
    parser.add_argument("--condition", dest="conditions", action="append", default=None, metavar="SQL",
                        help="extra condition (repeatable; ';' separates several)")
    parser.add_argument("--content", default=None, help="light, medium, full or comma-separated fields")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--archive", default=None, help="archive root (default: state dir / archive)")
    add_catalog_flags(parser)


def add_catalog_flags(parser: argparse.ArgumentParser) -> None:
    """The catalogue cross-match (Fink's Xmatch: -catalog_filename -ra_col -dec_col -id_col -radius_arcsec)."""
    group = parser.add_argument_group("catalogue cross-match", "keep only alerts within a radius of a "
                                      "catalogue source, one row per (alert, source), with the source's id")
    group.add_argument("--catalog", dest="catalog_filename", default=None, metavar="FILE",
                       help="CSV or Parquet catalogue of sources (at most 10,000,000 rows)")
    group.add_argument("--ra-col", dest="ra_col", default=None, metavar="C",
                       help="right ascension column: degrees or hh:mm:ss (default: ra)")
    group.add_argument("--dec-col", dest="dec_col", default=None, metavar="C",
                       help="declination column: degrees or +dd:mm:ss (default: dec)")
    group.add_argument("--id-col", dest="id_col", default=None, metavar="C",
                       help="source id column, added to each matched alert (default: id)")
    radius = group.add_mutually_exclusive_group()
    radius.add_argument("--radius-arcsec", dest="radius_arcsec", type=float, default=None, metavar="R",
                        help="match radius in arcsec, the same for every source")
    radius.add_argument("--radius-col", dest="radius_col", default=None, metavar="C",
                        help="catalogue column of per-source radii in arcsec")


def add_selection_flags(parser: argparse.ArgumentParser) -> None:
    """--filter and --block, repeatable, each ANDed; 'NOT name' negates one (as Fink's form)."""
    parser.add_argument("--filter", dest="filters", action="append", default=None, metavar="NAME",
                        help="Fink live-stream filter to replay (repeatable, ANDed; 'NOT name' negates; "
                        "list them with `request filters --survey S`)")
    parser.add_argument("--block", dest="blocks", action="append", default=None, metavar="NAME",
                        help="Rubin block (repeatable, ANDed after the filters; 'NOT name' negates)")


def register(subparsers) -> None:
    parser = subparsers.add_parser("request", help="validate, estimate or submit a transfer request")
    commands = parser.add_subparsers(dest="request_command", required=True, metavar="ACTION")
    validate = commands.add_parser("validate", help="check a request; exit non-zero on any error")
    _add_request_flags(validate)
    validate.set_defaults(func=run_validate)
    estimate = commands.add_parser(
        "estimate",
        help="alerts and bytes a request would publish, per night and class",
        description="Counts come from the nightly statistics (exact for nights and classes); extra "
        "conditions and a live-stream filter are evaluated by Spark on a random sample of alerts "
        "(estimate with a confidence interval). Size: Avro payload bytes per alert of the chosen "
        "content, measured by encoding a sample.",
    )
    _add_request_flags(estimate)
    estimate.add_argument("--sample-rows", type=int, default=None,
                          help="alerts evaluated for conditions/filters over the whole request")
    estimate.add_argument("--seed", type=int, default=0, help="seed of the random sample")
    estimate.add_argument("--save-statistics", action="store_true",
                          help="store the nightly statistics computed on the way")
    estimate.add_argument("--json", action="store_true", help="print the estimate as JSON")
    estimate.set_defaults(func=run_estimate)
    submit = commands.add_parser("submit", help="submit a request and run its transfer")
    _add_request_flags(submit)
    submit.add_argument("--tables", default=None, help="table root (default: state dir / tables)")
    submit.add_argument("--wait", action="store_true",
                        help="run in the foreground and print the number of alerts published")
    submit.set_defaults(func=run_submit)
    listing = commands.add_parser("filters", help="list a survey's live-stream filters and blocks")
    listing.add_argument("--survey", default="ztf")
    listing.set_defaults(func=run_list_selections)
    rerun = commands.add_parser("run", help="run (or resume) the transfer of an already submitted topic")
    rerun.add_argument("topic")
    rerun.add_argument("--archive", default=None)
    rerun.add_argument("--tables", default=None)
    rerun.set_defaults(func=run_stored)


CATALOG_KEYS = ("catalog_filename", "ra_col", "dec_col", "id_col", "radius_arcsec", "radius_col")


def load_request(args: argparse.Namespace):
    """The request from FILE and flags (flags win)."""
    from fink_pipeline.transfer.request import load_request_file, request_from_mapping

    overrides = {
        "survey": args.survey, "start": args.start, "stop": args.stop, "classes": args.classes,
        "filters": args.filters, "blocks": args.blocks, "conditions": args.conditions,
        "content": args.content, "limit": args.limit,
        **{key: getattr(args, key) for key in CATALOG_KEYS},
    }
    if args.file:
        return load_request_file(args.file, overrides)
    return request_from_mapping({}, overrides)


def plan_request(args: argparse.Namespace, on_request_valid: Callable[[], None] | None = None):
    """Validate the request against the survey and the archive (no Spark; `on_request_valid`
    as `plan_transfer` calls it)."""
    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.transfer.plan import plan_transfer

    request = load_request(args)
    archive = args.archive or str(paths.default_archive_root())
    plan = plan_transfer(request, archive, list_nights(archive, request.survey), on_request_valid=on_request_valid)
    return request, plan, archive


def run_validate(args: argparse.Namespace) -> int:
    """Print the resolved request, or the first error (exit 2)."""
    request, plan, _ = plan_request(args)
    for note in plan.notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"valid: {request.survey} {request.start}..{request.stop}, {len(plan.night_paths)} nights present"
          + (f", {len(plan.missing_nights)} missing" if plan.missing_nights else ""))
    print(f"  classes:    {request.classes or 'all'}")
    for condition in plan.conditions:
        print(f"  condition:  {condition.spark_sql}")
    for selection in plan.selections:
        print(f"  {selection.kind + ':':<11} {selection.label} ({selection.function.fink_module})")
    if plan.crossmatch is not None:
        print(f"  catalogue:  {plan.crossmatch.description}, ids in column {plan.crossmatch.id_col} "
              f"(sha256 {plan.crossmatch.sha256[:12]}…)")
    print(f"  content:    {plan.content.packet or plan.content.output_names} ({len(plan.content.columns)} columns)")
    return 0


def run_list_selections(args: argparse.Namespace) -> int:
    """Print the survey's filters and blocks, one line each with its description."""
    from fink_pipeline.surveys import UnknownSurveyError, get_survey
    from fink_pipeline.transfer.request import RequestError

    try:
        survey = get_survey(args.survey)
    except UnknownSurveyError as exc:
        raise RequestError(f"survey: {exc}") from None
    for title, functions in (("filters", survey.livestream_filters), ("blocks", survey.blocks)):
        print(f"{survey.name} {title} ({len(functions)}){':' if functions else ''}")
        width = max((len(name) for name in functions), default=0)
        for name, function in sorted(functions.items()):
            print(f"  {name:<{width}}  {function.description}")
    print("Use --filter NAME / --block NAME (repeatable, ANDed); 'NOT NAME' negates one.")
    return 0


def run_estimate(args: argparse.Namespace) -> int:
    """Print the estimate as a table per night and class, totals and size (or JSON)."""
    import json

    from fink_pipeline.transfer.estimate import DEFAULT_SAMPLE_ROWS, estimate_request

    if args.sample_rows is not None and args.sample_rows <= 0:
        raise ValueError(f"--sample-rows must be a positive number of alerts, got {args.sample_rows}")
    request, plan, archive = plan_request(args)
    estimate = estimate_request(request, archive, plan=plan, seed=args.seed,
                                sample_rows=args.sample_rows or DEFAULT_SAMPLE_ROWS,
                                save_statistics=args.save_statistics)
    if args.json:
        print(json.dumps(estimate.as_metadata(), indent=2))
        return 0
    print_estimate(estimate)
    return 0


def print_estimate(estimate) -> None:
    """Rich tables: per night and class, per class over all nights, then totals and size."""
    from rich.console import Console
    from rich.table import Table

    from fink_pipeline.transfer.estimate import format_count, human_bytes

    console = Console(width=None if sys.stdout.isatty() else 160)
    sampled = estimate.sampled
    table = Table(title=f"{estimate.survey} {estimate.start} .. {estimate.stop}: estimated alerts per night and class")
    table.add_column("night")
    table.add_column("class")
    table.add_column("in class", justify="right")
    interval = f" ({estimate.confidence:.0%} interval)" if sampled else ""
    table.add_column(f"estimated alerts{interval}", justify="right")
    if sampled:
        table.add_column("sample passed", justify="right")
    for night_row in estimate.night_rows:
        for row in (r for r in estimate.rows if r.night == night_row.night):
            cells = [str(row.night), row.label, f"{row.in_class:,}", format_count(row)]
            table.add_row(*cells, *([f"{row.passed:,}/{row.sampled:,}"] if sampled else []))
        cells = [str(night_row.night), "[b]night total[/b]", f"{night_row.in_class:,}",
                 f"[b]{format_count(night_row)}[/b]"]
        table.add_row(*cells, *([f"{night_row.passed:,}/{night_row.sampled:,}"] if sampled else []), end_section=True)
    console.print(table)
    if len(estimate.nights) > 1:
        per_class = Table(title="per class, all nights")
        per_class.add_column("class")
        per_class.add_column("in class", justify="right")
        per_class.add_column("estimated alerts", justify="right")
        for row in estimate.per_class():
            per_class.add_row(row.label, f"{row.in_class:,}", format_count(row))
        console.print(per_class)
    total = estimate.total
    low, high = estimate.size_range
    console.print(f"nights: {len(estimate.nights)} with data"
                  + (f", {len(estimate.missing_nights)} without" if estimate.missing_nights else "")
                  + f"; alerts in these nights: {estimate.alerts_in_nights:,}")
    console.print(f"[b]total: {format_count(total)} alerts[/b]" + ("" if estimate.exact else " (estimate)"))
    size = human_bytes(estimate.size_bytes)
    if not estimate.exact:
        size += f" ({human_bytes(low)} .. {human_bytes(high)})"
    console.print(f"[b]size: {size}[/b] of Avro payload, {estimate.bytes_per_alert:,.0f} B per alert "
                  f"({estimate.content}); the job reads {estimate.archive_bytes_per_alert:,.0f} B per alert "
                  "from the archive")
    console.print(f"method: {estimate.method}")
    for note in estimate.notes:
        console.print(f"note: {note}")


def run_submit(args: argparse.Namespace) -> int:
    """Name the topic, print it, then run the transfer (foreground with --wait)."""
    import subprocess
    import sys

    from fink_pipeline.kafka.broker import status_managed
    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.kafka.topics import list_topics
    from fink_pipeline.transfer.plan import pin_catalog
    from fink_pipeline.transfer.store import RequestStore

    def start_spark_ahead() -> None:
        # the request's fields are valid: the JVM starts while the archive's files are checked,
        # the topic named and the run set up (a failing check exits at once, and the JVM with it)
        if status_managed(paths.state_dir()):
            _start_spark_ahead()

    request, plan, archive = plan_request(args, on_request_valid=start_spark_ahead if args.wait else None)
    bootstrap = status_managed(paths.state_dir())
    if not bootstrap:
        raise ValueError("no broker running: start one with `fink-pipeline broker start`")
    request = pin_catalog(request, plan).with_identity(list_topics(KafkaSettings(bootstrap_servers=bootstrap)))
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
    _start_spark_ahead()
    return _run_stored(args.topic, bootstrap, args.archive or str(paths.default_archive_root()),
                       args.tables or str(paths.default_table_root()), str(paths.state_dir() / "requests"))


def _start_spark_ahead() -> None:
    """Start the deployment's Spark (JVM, then the Python workers' warm-up) while the run is set
    up: the run's Spark resource, of the same settings, takes it over (`orchestration.spark_ahead`);
    `_run_stored` stops it if the run never does, and a command failing before its run exits at
    once (the JVM exits with it)."""
    from fink_pipeline.orchestration.settings import DeploymentSettings
    from fink_pipeline.orchestration.spark_ahead import start_session_ahead

    start_session_ahead(**DeploymentSettings.load().spark_session_args())


def _run_stored(topic: str, bootstrap: str, archive: str, tables: str, request_root: str) -> int:
    from fink_pipeline.orchestration.spark_ahead import stop_unclaimed_sessions
    from fink_pipeline.transfer.store import RequestStore

    try:
        from fink_pipeline.orchestration.launch import run_transfer

        request = RequestStore(request_root).load(topic)
        result = run_transfer(request, bootstrap=bootstrap, archive_root=archive, table_root=tables,
                              request_root=request_root)
    finally:
        stop_unclaimed_sessions()
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure), None)
        print(f"transfer failed: {failure_text(failure) if failure else 'see the run log'}")
        return 1
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("transferred_alerts")}
    print(f"{meta['alert_topic']['alerts_published'].value} alerts published to {topic}")
    return 0


def failure_text(event) -> str:
    """What failed, for people: the step's own one-line description (a bad request, a catalogue
    changed since submission, ...), else its error, else Dagster's 'Execution of step ... failed'."""
    data = getattr(event, "event_specific_data", None)
    user = getattr(data, "user_failure_data", None)
    if user is not None and user.description:
        return f"{event.step_key}: {user.description}" if event.step_key else user.description
    error = getattr(data, "error", None)
    if error is not None and error.message:
        return f"{event.step_key}: {error.message.strip()}" if event.step_key else error.message.strip()
    return event.message
