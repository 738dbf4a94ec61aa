"""`fink-pipeline broker start|stop|status`: the local embedded Kafka broker (Tansu, memory)."""

from __future__ import annotations

import argparse
import sys

from fink_pipeline.cli.main import UserError
from fink_pipeline.cli.services import check_listen_address, report_status, report_stop


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `broker` command and its `start`, `stop`, `status` sub-commands."""
    parser = subparsers.add_parser(
        "broker",
        help="start, stop or query the local embedded Kafka broker",
        description=(
            "A local Kafka-compatible broker (Tansu, in-memory: a restart loses every topic). "
            "Its state lives in $FINK_PIPELINE_HOME (default ./.fink_pipeline)."
        ),
    )
    actions = parser.add_subparsers(dest="broker_action", required=True, metavar="ACTION")

    start = actions.add_parser("start", help="start the broker in the background; print host:port")
    start.add_argument("--port", type=int, default=None, help="TCP port (default: a free one)")
    start.add_argument(
        "--host", default="127.0.0.1", help="address to listen on and advertise (default loopback)"
    )
    start.set_defaults(func=_start)

    stop = actions.add_parser("stop", help="stop the broker (its topics are lost)")
    stop.set_defaults(func=_stop)

    status = actions.add_parser(
        "status", help="print host:port and exit 0 when running; exit 1 otherwise"
    )
    status.set_defaults(func=_status)


def _start(args: argparse.Namespace) -> int:
    from fink_pipeline.kafka.broker import BrokerAlreadyRunning, BrokerError, start_managed
    from fink_pipeline.paths import state_dir

    check_listen_address(args.port, args.host)
    try:
        address = start_managed(state_dir(), port=args.port, host=args.host)
    except BrokerAlreadyRunning as exc:
        raise UserError(str(exc)) from None
    except BrokerError as exc:
        # Multi-line (it carries the broker's output): print as is, exit like a user error.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(address)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from fink_pipeline.kafka.broker import stop_managed
    from fink_pipeline.paths import state_dir

    return report_stop(stop_managed(state_dir()))


def _status(args: argparse.Namespace) -> int:
    from fink_pipeline.kafka.broker import status_managed
    from fink_pipeline.paths import state_dir

    return report_status(status_managed(state_dir()))
