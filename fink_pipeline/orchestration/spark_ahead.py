"""Spark sessions started ahead of the Dagster run that uses them (no Dagster import here).

A command that has validated its request (`request submit --wait`, `request run`) starts the JVM,
then the Python workers' warm-up, while it sets the run up: Dagster's imports and instance take
seconds. Dagster builds the run's `SparkResource` anew from its config, so the resource claims
the start by that config (`claim_session_started_ahead`).
"""

from __future__ import annotations

import atexit
import threading
from concurrent.futures import Future
from typing import TYPE_CHECKING, Mapping

from fink_pipeline.spark import LOCAL_MASTER, open_spark_session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_AHEAD: dict[tuple, Future] = {}
_AHEAD_LOCK = threading.Lock()
_AHEAD_EXIT_HOOK: list[bool] = []


def _ahead_key(master: str, app_name: str, conf: Mapping[str, str] | None, remote: str | None) -> tuple:
    return master, app_name, tuple(sorted((conf or {}).items())), remote


def start_session_ahead(master: str = LOCAL_MASTER, app_name: str = "fink-pipeline",
                        conf: Mapping[str, str] | None = None, remote: str | None = None) -> None:
    """Start `open_spark_session(...)` and the publishing workers' warm-up in a background thread,
    for the first `claim_session_started_ahead` with the same arguments (once per arguments)."""
    key = _ahead_key(master, app_name, conf, remote)
    with _AHEAD_LOCK:
        if key in _AHEAD:
            return
        if not _AHEAD_EXIT_HOOK:  # a command failing before its run still stops what it started
            atexit.register(_stop_started_sessions_at_exit)
            _AHEAD_EXIT_HOOK.append(True)
        future: Future = Future()
        _AHEAD[key] = future

        def start() -> None:
            try:
                future.set_result(start_session_and_workers(master, app_name, dict(conf or {}), remote))
            except BaseException as exc:  # the claimer sees it
                future.set_exception(exc)

        # a daemon thread: a command that fails meanwhile exits at once (the JVM exits with it:
        # it watches its parent's pipe), where a pool's thread would hold the exit until started
        threading.Thread(target=start, name="spark-ahead", daemon=True).start()


def claim_session_started_ahead(master: str = LOCAL_MASTER, app_name: str = "fink-pipeline",
                                conf: Mapping[str, str] | None = None,
                                remote: str | None = None) -> "Future[tuple[SparkSession, bool]] | None":
    """The start of `start_session_ahead` with these arguments, now the caller's (who stops the
    session if it is `owned`); None when there is none."""
    with _AHEAD_LOCK:
        return _AHEAD.pop(_ahead_key(master, app_name, conf, remote), None)


def stop_unclaimed_sessions(wait: bool = True) -> None:
    """Stop the sessions started ahead that no run claimed (a command that failed before its
    run), once they have started; without `wait`, only those already started."""
    with _AHEAD_LOCK:
        pending = [f for f in _AHEAD.values() if wait or f.done()]
        _AHEAD.clear()
    for future in pending:
        try:
            session, owned = future.result()
        except Exception:  # it failed to start: nothing to stop
            continue
        if owned:
            session.stop()


def _stop_started_sessions_at_exit() -> None:
    stop_unclaimed_sessions(wait=False)


def start_session_and_workers(master: str, app_name: str, conf: Mapping[str, str],
                              remote: str | None = None) -> tuple["SparkSession", bool]:
    """`open_spark_session`, then the Python workers' warm-up started (not awaited)."""
    from fink_pipeline.kafka.publish import start_worker_warm_up

    session, owned = open_spark_session(master, app_name, conf, remote=remote)
    start_worker_warm_up(session, "fink-warm-up")
    return session, owned
