"""`fink-pipeline archive generate|import|nights`: build, import and inspect the alert archive."""

from __future__ import annotations

import argparse

from fink_pipeline import paths


def register(subparsers) -> None:
    parser = subparsers.add_parser("archive", help="generate or inspect the night-partitioned alert archive")
    commands = parser.add_subparsers(dest="archive_command", required=True, metavar="ACTION")

    generate = commands.add_parser(
        "generate", help="write realistic synthetic alerts, one Parquet folder per night",
    )
    generate.add_argument("--survey", default="ztf", help="ztf, lsst or elasticc")
    generate.add_argument("--start", required=True, help="first night, YYYY-MM-DD")
    generate.add_argument("--nights", type=int, default=1)
    generate.add_argument("--alerts-per-night", type=int, default=10_000)
    generate.add_argument("--root", default=None, help="archive root (default: state dir / archive)")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--no-cutouts", action="store_true",
                          help="leave cutout stamps empty (much faster; light transfers never read them)")
    generate.set_defaults(func=run_generate)

    importer = commands.add_parser(
        "import", help="import real alerts (Avro, .avro.gz, Parquet; files or folders) into the archive",
    )
    importer.add_argument("paths", nargs="+", metavar="PATH", help="alert files or folders (walked recursively)")
    importer.add_argument("--survey", required=True, help="ztf, lsst or elasticc")
    importer.add_argument("--root", default=None, help="archive root (default: state dir / archive)")
    importer.add_argument("--schemas", default=None, metavar="DIR",
                          help="folder of the survey's Avro schemas (vM_m/*.alert.avsc), needed only for "
                               "Confluent-framed Kafka messages")
    importer.add_argument("--json", action="store_true", help="print the full report as JSON")
    importer.set_defaults(func=run_import)

    nights = commands.add_parser("nights", help="list the nights present in the archive")
    nights.add_argument("--survey", default="ztf")
    nights.add_argument("--root", default=None)
    nights.set_defaults(func=run_nights)


def run_generate(args: argparse.Namespace) -> int:
    """Generate the archive with a progress bar and print what was written."""
    from tqdm import tqdm

    from fink_pipeline.archive.generate import generate_archive
    from fink_pipeline.surveys import get_survey
    from fink_pipeline.archive.layout import parse_night

    if args.nights <= 0 or args.alerts_per_night <= 0:
        raise ValueError("--nights and --alerts-per-night must be positive")
    survey = get_survey(args.survey)
    root = args.root or str(paths.default_archive_root())
    start = parse_night(args.start)
    with tqdm(total=args.nights * args.alerts_per_night, unit="alert", unit_scale=True,
              desc=f"{survey.name} archive") as bar:
        report = generate_archive(survey, root, start, args.nights, args.alerts_per_night, seed=args.seed,
                                  with_cutouts=not args.no_cutouts, progress=bar.update)
    print(f"{report.total_alerts:,} alerts in {args.nights} nights written under {root}")
    write_statistics(survey, root, [night.night for night in report.nights if night.alerts])
    return 0


def write_statistics(survey, root: str, nights) -> None:
    """Store the nightly statistics (alerts per class) of the nights just written: estimates
    then read them instead of the archive (seconds per million alerts)."""
    from fink_pipeline.archive.stats import update_statistics

    if nights:
        update_statistics(survey, root, sorted(set(nights)))
        print(f"nightly statistics written for {len(set(nights))} nights")


def run_nights(args: argparse.Namespace) -> int:
    """Print one night per line."""
    from fink_pipeline.archive.layout import list_nights
    from fink_pipeline.surveys import get_survey

    survey = get_survey(args.survey)
    for night in list_nights(args.root or str(paths.default_archive_root()), survey.name):
        print(night.isoformat())
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Import alert files with a progress bar; print per-night counts and skipped files.

    Exit code 0 when every file was read, 1 when some file was skipped or failed.
    """
    import json

    from tqdm import tqdm

    from fink_pipeline.archive.importer import import_alerts
    from fink_pipeline.surveys import get_survey

    survey = get_survey(args.survey)
    root = args.root or str(paths.default_archive_root())
    with tqdm(unit="alert", unit_scale=True, desc=f"{survey.name} import") as bar:
        report = import_alerts(args.paths, survey, root, progress=bar.update, schemas_dir=args.schemas)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    for night in report.nights:
        print(f"{night.night.isoformat()}  {night.alerts:>9,} new alerts  {night.path}")
    for entry in report.failed_files:
        print(f"skipped {entry.path}: {entry.error}" if entry.skipped else f"partly read {entry.path}: {entry.error}")
    for entry in report.files:
        if entry.incompatible_fields:
            print(f"note {entry.path}: {'; '.join(entry.incompatible_fields)}")
    print(f"{report.total_imported:,} alerts imported into {len(report.nights)} nights under {root} "
          f"({report.total_read:,} read, {report.total_duplicates:,} already archived, "
          f"{report.total_invalid:,} invalid, {len(report.failed_files)} files with errors)")  # fmt: skip
    write_statistics(survey, root, [night.night for night in report.nights])
    return 1 if report.failed_files else 0
