"""`fink-pipeline demo`: the whole transfer on the embedded defaults, as one Dagster run."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt

from fink_pipeline import paths

DEMO_START = dt.date(2024, 3, 1)
DEMO_CLASSES = ["SN candidate", "Early SN Ia candidate", "Kilonova candidate", "Microlensing candidate", "Unknown"]


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="generate a small ZTF archive, run a transfer end to end, print where the table is",
        description="Generate 2 nights of ZTF-like alerts (if absent), submit a transfer with a class "
        "filter, run it as a Dagster run (Spark -> Kafka -> Delta) and print the result.",
    )
    parser.add_argument("--alerts-per-night", type=int, default=3000)
    parser.add_argument("--nights", type=int, default=2)
    parser.add_argument("--classes", nargs="+", default=DEMO_CLASSES, metavar="CLASS")
    parser.add_argument("--content", default="light", help="light, medium, full or comma-separated fields")
    parser.add_argument("--archive", default=None, help="archive root (default: state dir / archive)")
    parser.add_argument("--tables", default=None, help="table root (default: state dir / tables)")
    parser.set_defaults(func=run_demo)


@contextlib.contextmanager
def kafka_bootstrap():
    """The managed embedded broker if one runs, else a private one for the demo's duration."""
    from fink_pipeline.kafka.broker import EmbeddedBroker, status_managed
    from fink_pipeline.kafka.settings import KafkaEnvSettings

    address = KafkaEnvSettings.load().bootstrap_servers or status_managed(paths.state_dir())
    if address:
        yield address
        return
    broker = EmbeddedBroker()
    address = broker.start()
    try:
        yield address
    finally:
        broker.stop()


def ensure_demo_archive(root: str, nights: int, alerts_per_night: int, console) -> None:
    """Generate the demo nights that are not in the archive yet (generation is deterministic)."""
    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.archive.stats import update_statistics
    from fink_pipeline.surveys import get_survey

    survey = get_survey("ztf")
    wanted = [DEMO_START + dt.timedelta(days=i) for i in range(nights)]
    present = set(list_nights(root, "ztf"))
    if all(n in present for n in wanted):
        console.print(f"archive: {nights} nights already in {root}")
        return
    console.print(f"archive: generating {nights} nights x {alerts_per_night:,} ZTF alerts in {root} ...")
    report = generate_archive(survey, root, DEMO_START, nights, alerts_per_night, seed=42)
    update_statistics(survey, root, wanted)  # the estimate reads them instead of the archive
    console.print(f"archive: {report.total_alerts:,} alerts written, with their nightly statistics")


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo and print topic, counts, table path and how to read it."""
    from rich.console import Console

    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline.kafka.topics import list_topics
    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.transfer.request import TransferRequest

    console = Console(soft_wrap=True)  # keep the pandas snippet copy-pasteable
    archive_root = args.archive or str(paths.default_archive_root())
    table_root = args.tables or str(paths.default_table_root())
    request_root = str(paths.state_dir() / "requests")
    ensure_demo_archive(archive_root, args.nights, args.alerts_per_night, console)
    stop = DEMO_START + dt.timedelta(days=args.nights - 1)
    with kafka_bootstrap() as bootstrap:
        existing = list_topics(KafkaSettings(bootstrap_servers=bootstrap))
        request = TransferRequest(
            survey="ztf", start=DEMO_START.isoformat(), stop=stop.isoformat(),
            classes=args.classes, content=args.content,
        ).with_identity(existing)
        console.print(f"request: nights {request.start}..{request.stop}, classes {request.classes}, "
                      f"content {request.content} -> topic [bold]{request.topic}[/bold]")
        result = run_transfer(request, bootstrap=bootstrap, archive_root=archive_root,
                              table_root=table_root, request_root=request_root)
    if not result.success:
        failure = next((e for e in result.all_events if e.is_failure), None)
        console.print(f"[red]transfer failed[/red]: {failure.message if failure else 'see the run log'}")
        return 1
    topic_meta = result.asset_materializations_for_node("transferred_alerts")
    published = next(m.metadata["alerts_published"].value for m in topic_meta if m.asset_key.path == ["alert_topic"])
    table_meta = next(m.metadata for m in result.asset_materializations_for_node("transferred_alerts") if m.asset_key.path == ["alert_table"])
    table_uri = table_meta["path"].value
    rows = table_meta["rows"].value
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    console.print()
    console.print(f"topic:            {request.topic}")
    console.print(f"alerts published: {published:,}")
    console.print(f"alerts consumed:  {rows:,}  (checks: {', '.join(f'{k}={v}' for k, v in checks.items())})")
    console.print(f"delta table:      {table_uri}")
    console.print("\nread it with pandas (integer ids stay integers, even with nulls):")
    console.print("    from fink_pipeline.consumer.readers import read_pandas", highlight=False)
    console.print(f"    df = read_pandas(\"{table_uri}\")", highlight=False)
    console.print("    print(df.groupby('finkclass').size())", highlight=False)
    return 0 if rows == published and all(checks.values()) else 1

