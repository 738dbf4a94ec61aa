"""`fink-pipeline spark connect start|stop|status`: a managed local Spark Connect server.

A long-lived Spark that runs attach to (`FINK_SPARK_REMOTE=sc://host:port`): its JVM and
Python workers stay warm between runs, so a run's first publication does not pay a cold JVM.
Its state (pid, URL, log) lives in $FINK_PIPELINE_HOME (default ./.fink_pipeline).
"""

from __future__ import annotations

import argparse
import json
import sys

from fink_pipeline.cli.main import UserError
from fink_pipeline.cli.services import check_listen_address, report_status, report_stop


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `spark connect start|stop|status` command."""
    parser = subparsers.add_parser("spark", help="a managed local Spark Connect server (warm Spark for every run)")
    groups = parser.add_subparsers(dest="spark_group", required=True, metavar="GROUP")
    connect = groups.add_parser(
        "connect", help="start, stop or query the Spark Connect server",
        description="A Spark Connect server from pyspark's distribution, in the background. Point runs "
        "at it with FINK_SPARK_REMOTE=<the printed sc:// URL>.",
    )
    actions = connect.add_subparsers(dest="connect_action", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start the server in the background; print its sc:// URL")
    start.add_argument("--port", type=int, default=None, help="gRPC port (default: a free one)")
    start.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    start.add_argument("--master", default="local[*]", help="the server's Spark master (default local[*])")
    start.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                       help="Spark conf of the server (repeatable), over the pipeline's defaults")
    start.set_defaults(func=_start)
    stop = actions.add_parser("stop", help="stop the server")
    stop.set_defaults(func=_stop)
    status = actions.add_parser("status", help="print the URL and exit 0 when running; exit 1 otherwise")
    status.set_defaults(func=_status)


def _start(args: argparse.Namespace) -> int:
    from fink_pipeline.paths import state_dir
    from fink_pipeline.spark_services import SparkServiceError, start_managed_connect

    check_listen_address(args.port, args.host)
    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--conf {item!r}: expected KEY=VALUE, e.g. --conf spark.driver.memory=4g")
        conf[key.strip()] = value
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        url = start_managed_connect(directory, port=args.port, host=args.host, master=args.master, conf=conf)
    except SparkServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(url)
    return 0


def _stop(args: argparse.Namespace) -> int:
    from fink_pipeline.paths import state_dir
    from fink_pipeline.spark_services import stop_managed_connect

    return report_stop(stop_managed_connect(state_dir()))


def _status(args: argparse.Namespace) -> int:
    from fink_pipeline.paths import state_dir
    from fink_pipeline.spark_services import CONNECT_STATE_FILE, status_managed_connect

    url = status_managed_connect(state_dir())
    if url is not None:
        log = json.loads((state_dir() / CONNECT_STATE_FILE).read_text()).get("log")
        print(f"log: {log}", file=sys.stderr)
    return report_status(url)
