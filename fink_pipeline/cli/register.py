"""`fink-pipeline register`: write a fink-client credentials file (mode 0600)."""

from __future__ import annotations

import argparse
import getpass
import sys

from fink_pipeline.cli.main import UserError

PASSWORD_ENV = "FINK_KAFKA_PASSWORD"  # KafkaEnvSettings.password


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `register` command."""
    parser = subparsers.add_parser(
        "register",
        help="write ~/.finkclient/<survey>_credentials.yml for fink-client and our consumer",
        description=(
            "Write the fink-client credentials file (mode 0600). The folder is "
            "$FINK_CLIENT_HOME or ~/.finkclient; --path overrides the whole path. Without "
            "--servers, the address of the running local broker (`fink-pipeline broker start`) "
            "is used."
        ),
    )
    parser.add_argument("--survey", default="ztf", help="survey name (default: ztf)")
    parser.add_argument("--servers", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT]")
    parser.add_argument("--username", default=None, help="SASL user name (default: login name)")
    parser.add_argument(
        "--password",
        default=None,
        help=f"SASL password; prefer the {PASSWORD_ENV} environment variable (not shown by ps)",
    )
    parser.add_argument(
        "--group-id", default=None, help="consumer group id (default: <username>_<survey>)"
    )
    parser.add_argument(
        "--maxtimeout", type=float, default=10, help="poll timeout in seconds (default: 10)"
    )
    parser.add_argument("--mytopics", nargs="*", default=[], help="livestream topics (optional)")
    parser.add_argument("--path", default=None, help="credentials file to write")
    parser.set_defaults(func=_register)


def _register(args: argparse.Namespace) -> int:
    from fink_pipeline.kafka.settings import KafkaEnvSettings, credentials_path, write_credentials_file

    survey = args.survey.strip().lower()
    servers = args.servers
    if not servers:
        from fink_pipeline.kafka.broker import status_managed
        from fink_pipeline.paths import state_dir

        servers = status_managed(state_dir())
        if servers is None:
            raise UserError(
                "no --servers given and no local broker running: pass --servers HOST:PORT "
                "or run `fink-pipeline broker start` first"
            )
    if args.maxtimeout <= 0:
        raise UserError(f"--maxtimeout must be positive, got {args.maxtimeout}")
    password = args.password if args.password is not None else KafkaEnvSettings.load().password
    if args.password is not None:
        print(
            f"warning: a password on the command line is visible to other users; "
            f"prefer {PASSWORD_ENV}",
            file=sys.stderr,
        )
    username = args.username if args.username is not None else getpass.getuser()
    group_id = args.group_id or f"{username}_{survey}"
    maxtimeout = int(args.maxtimeout) if float(args.maxtimeout).is_integer() else args.maxtimeout
    path = args.path if args.path else credentials_path(survey)
    written = write_credentials_file(
        path,
        servers=servers,
        username=username,
        password=password or None,
        group_id=group_id,
        survey=survey,
        mytopics=args.mytopics,
        maxtimeout=maxtimeout,
    )
    print(f"credentials for {survey} written to {written} (servers {servers}, group {group_id})")
    return 0
