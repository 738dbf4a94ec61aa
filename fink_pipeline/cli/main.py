"""`fink-pipeline`: every sub-command registers itself from its own module."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines `register(subparsers)`, adding its parser(s) with `set_defaults(func=...)`.
COMMAND_MODULES = (
    "fink_pipeline.cli.demo",
    "fink_pipeline.cli.broker",
    "fink_pipeline.cli.spark",
    "fink_pipeline.cli.archive",
    "fink_pipeline.cli.request",
    "fink_pipeline.cli.standing",
    "fink_pipeline.cli.register",
)


class UserError(Exception):
    """An error caused by input: printed as one clear line, no traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    """The full `fink-pipeline` parser."""
    parser = argparse.ArgumentParser(
        prog="fink-pipeline",
        description="Fink Data Transfer, orchestrated: archive, request, Spark job, Kafka, tables.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real import error inside the module
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `fink-pipeline` with `argv` (default: sys.argv)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (UserError, ValueError) as exc:
        # ValueError covers pydantic validation and our own input errors: they carry the field
        # name and the fix, so a traceback would only hide the message.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


def entry_point() -> None:
    """The `fink-pipeline` console command: `main()`, then a quick exit (`process_exit.finish`)."""
    from fink_pipeline.cli.process_exit import finish

    finish(main())


if __name__ == "__main__":
    entry_point()
