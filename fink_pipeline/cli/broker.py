"""`fink-pipeline broker start|stop|status`: the local embedded Kafka broker (Tansu, memory)."""

from __future__ import annotations

import argparse
import sys

from fink_pipeline.cli.main import UserError


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

    if args.port is not None and not 0 < args.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {args.port}")
    if args.host in {"0.0.0.0", "::", ""}:
        # The host is also the advertised address: clients cannot connect to a wildcard.
        raise UserError("--host must be an address clients can reach, not a wildcard")
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

    if stop_managed(state_dir()):
        print("stopped")
    else:
        print("not running", file=sys.stderr)
    return 0


def _status(args: argparse.Namespace) -> int:
    from fink_pipeline.kafka.broker import status_managed
    from fink_pipeline.paths import state_dir

    address = status_managed(state_dir())
    if address is None:
        print("not running", file=sys.stderr)
        return 1
    print(address)
    return 0
