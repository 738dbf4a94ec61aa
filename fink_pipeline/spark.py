"""Building the SparkSession: local by default, any master and conf by configuration."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Mapping

from fink_pipeline.jvm_class_cache import JVM_WARNINGS_TO_STDERR

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

LOCAL_MASTER = "local[*]"  # the embedded stack's master: every core of this machine

# Defaults for the embedded (single machine) stack: small shuffles, no UI port to collide on,
# loopback only, Arrow for Python workers.
LOCAL_DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.enableNestedColumnVectorizedReader": "true",
    "spark.driver.memory": "2g",
    # A failed task is retried (exactly-once publishing relies on it, see kafka.publish)
    "spark.task.maxFailures": "4",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "true",
    "spark.log.level": "WARN",
    # alert schemas have hundreds of fields: keep plan strings whole instead of warning
    "spark.sql.debug.maxToStringFields": "2000",
    # Whole-stage codegen for the ~110 fields of a light packet (default limit 100): the scan
    # then hands column batches straight to the generated projection. Its loop exceeds
    # HotSpot's 8 kB limit for JIT compilation, so huge methods must be compiled, or it runs
    # interpreted (measured, 100k light alerts: 1.7 task CPU-s with both, 2.8 with neither,
    # 5.3 with codegen alone). On a cluster the flag goes to spark.executor.extraJavaOptions.
    # A local JVM lives for one transfer: the C1 compiler alone (TieredStopAtLevel=1) costs
    # far less CPU than C2's optimising compiles that its short life rarely pays back
    # (measured, a cold listing of 1M alerts: 22.6 JVM CPU-s instead of 36.7). A long-lived
    # local JVM (a notebook, the test session) is better off with C2: set the option without it.
    # The serial collector with a 48 MiB young generation: the JVM of a transfer that reads with
    # Arrow holds little, and G1 (or a young generation sized for the 2g heap) kept ~130 MiB more
    # resident for nothing (1M alerts, measured: 475 -> 428 -> 349 MiB, same CPU).
    # `build_spark_session` adds the class-data-sharing archive (fink_pipeline.jvm_class_cache).
    # The JVM's warnings go to stderr, not to the command's output (JVM_WARNINGS_TO_STDERR).
    "spark.sql.codegen.maxFields": "1000",
    "spark.driver.extraJavaOptions": (f"{JVM_WARNINGS_TO_STDERR} -XX:-DontCompileHugeMethods "
                                      "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xmn48m"),
    # Int.MaxValue turns off the byte limit of the Arrow batches sent to Python workers,
    # which Spark otherwise checks by sizing every vector after every row (~20 % of the
    # JVM's time on a light packet); maxRecordsPerBatch still bounds them.
    "spark.sql.execution.arrow.maxBytesPerBatch": "2147483647",
    # Files are split by their whole size, cutouts included, although a transfer reads a few
    # small columns: 1.5 GB files with cutouts made ~400 splits for 1M alerts, each reading its
    # file's large footer again (listing the 1M selected rows: 20.2 JVM CPU-s, 8.7 with 2g
    # splits). Spark still splits a small archive into one piece per core.
    "spark.sql.files.maxPartitionBytes": "2g",
    # Python workers fork from a daemon that has the publishing modules imported already
    # (fink_pipeline.spark_daemon: ~2.4 CPU-s less at 1M alerts, pages shared)
    "spark.python.daemon.module": "fink_pipeline.spark_daemon",
}


# Defaults for a cluster master (spark://, yarn, k8s://): the local entries that change what a
# task computes or how fast it runs, not those about this machine (bind address, driver memory,
# UI, log level, shuffle partitions sized for a laptop). Arrow and the session time zone make the
# published bytes the same as on the local stack (timestamps are rendered in the session's
# zone); the codegen, Arrow batch and file split entries are the measured speed-ups of
# LOCAL_DEFAULT_CONF, and the JIT flag goes to the executors, where the generated code runs.
CLUSTER_DEFAULT_KEYS: tuple[str, ...] = (
    "spark.sql.session.timeZone",
    "spark.sql.execution.arrow.pyspark.enabled",
    "spark.sql.parquet.enableNestedColumnVectorizedReader",
    "spark.task.maxFailures",
    "spark.sql.sources.partitionColumnTypeInference.enabled",
    "spark.sql.debug.maxToStringFields",
    "spark.sql.codegen.maxFields",
    "spark.sql.execution.arrow.maxBytesPerBatch",
    "spark.sql.files.maxPartitionBytes",
)
_HUGE_METHODS_FLAG = "-XX:-DontCompileHugeMethods"


def cluster_default_conf() -> dict[str, str]:
    """The defaults a non-local master gets (`CLUSTER_DEFAULT_KEYS` of the local ones, and the
    JIT flag for the executors' JVMs); the deployment's `conf` overrides any of them."""
    conf = {key: LOCAL_DEFAULT_CONF[key] for key in CLUSTER_DEFAULT_KEYS if key in LOCAL_DEFAULT_CONF}
    conf["spark.executor.extraJavaOptions"] = _HUGE_METHODS_FLAG
    return conf


def default_conf(master: str) -> dict[str, str]:
    """The defaults `build_spark_session` applies for `master` (before the caller's conf)."""
    return dict(LOCAL_DEFAULT_CONF) if master.startswith("local") else cluster_default_conf()


def open_spark_session(
    master: str = LOCAL_MASTER,
    app_name: str = "fink-pipeline",
    conf: Mapping[str, str] | None = None,
    remote: str | None = None,
) -> tuple["SparkSession", bool]:
    """(session, owned): `build_spark_session`'s session, and whether this call started it.

    A session already running in this process (tests, notebooks, benchmarks) is borrowed:
    `owned` is False and the caller must not stop it; otherwise the caller owns the new
    session and stops it when done. The one place that decides who stops a session.
    With `remote` (a Spark Connect URL, `sc://host:port`) the session is a client of that
    long-lived server: not owned (stopping it releases only this client's server-side session,
    which `SparkResource` does at the end of a run), `master` is the server's business.
    """
    if remote:
        return connect_session(remote, conf), False
    from pyspark import SparkContext

    owned = SparkContext._active_spark_context is None
    return build_spark_session(master, app_name, conf), owned


def is_connect_session(session) -> bool:
    """Whether `session` is a Spark Connect client (no SparkContext, no JVM in this process)."""
    return type(session).__module__.startswith("pyspark.sql.connect")


def shares_connect_session(remote: str | None) -> bool:
    """Whether the Connect URL names a server-side session (`sc://host:port/;session_id=<uuid>`):
    runs then attach to that one session, whose Python workers (and their Kafka producers) stay
    warm from run to run, so a run must not release it. Without one, each client gets a new
    session, and the server starts new Python workers for it (seconds per run)."""
    return bool(remote) and "session_id=" in remote


def connect_session(remote: str, conf: Mapping[str, str] | None = None) -> "SparkSession":
    """A Spark Connect client session on `remote` (`sc://host:port`), with `conf` set on it.

    The server (`fink-pipeline spark connect start`, or any Spark Connect server) owns the JVM,
    its master and its static conf; a session can only set runtime SQL conf, so `conf` entries
    the server refuses are reported with the fix (set them on the server)."""
    if not remote.startswith("sc://"):
        raise ValueError(f"Spark Connect URL {remote!r}: expected sc://host:port (FINK_SPARK_REMOTE)")
    try:
        from pyspark.sql.connect.utils import check_dependencies

        check_dependencies()
    except ImportError as exc:
        raise ImportError(f"Spark Connect needs pyspark's Connect client packages ({exc}): "
                          "pip install 'pyspark[connect]' (scripts/run setup installs them)") from None
    _check_connect_server(remote)
    from pyspark.sql import SparkSession

    session = SparkSession.builder.remote(remote).getOrCreate()
    for key, value in (conf or {}).items():
        try:
            session.conf.set(key, value)
        except Exception as exc:
            raise ValueError(f"the Spark Connect server at {remote} refused {key}={value} ({type(exc).__name__}): "
                             "set static conf on the server (`fink-pipeline spark connect start --conf`)") from None
    return session


def _check_connect_server(remote: str, timeout_s: float = 5.0) -> None:
    """Fail at once, naming the fix, when nothing listens at `remote` (the Connect client would
    retry for minutes before saying so)."""
    import socket
    import urllib.parse

    parsed = urllib.parse.urlparse("http://" + remote[len("sc://"):].split("/", 1)[0])
    host, port = parsed.hostname or "localhost", parsed.port or 15002
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        raise ConnectionError(f"no Spark Connect server answers at {remote} ({exc.strerror or exc}): start one "
                              "(`fink-pipeline spark connect start` prints its URL) or fix FINK_SPARK_REMOTE") from None


def build_spark_session(
    master: str = LOCAL_MASTER,
    app_name: str = "fink-pipeline",
    conf: Mapping[str, str] | None = None,
) -> "SparkSession":
    """Create (or reuse) a SparkSession.

    Python workers must run the interpreter that has pyarrow and this package, so
    PYSPARK_PYTHON defaults to the running one (on a cluster, that path must exist on every
    worker: install the same environment there, or set PYSPARK_PYTHON / spark.pyspark.python).
    `conf` overrides the defaults (`default_conf`: the local ones, or `cluster_default_conf` for
    a cluster master); on a cluster pass its master URL and whatever conf it needs.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    settings = default_conf(master)
    settings.update(conf or {})
    if master.startswith("local"):
        from fink_pipeline.jvm_class_cache import driver_java_options

        settings["spark.driver.extraJavaOptions"] = driver_java_options(
            settings.get("spark.driver.extraJavaOptions", ""))
    if master.startswith("local") and "spark.task.maxFailures" in settings:
        # local[N] never retries a task unless the master says so: local[N,maxFailures]
        if "," not in master and master.startswith("local["):
            master = f"{master[:-1]},{settings['spark.task.maxFailures']}]"
            builder = builder.master(master)
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel(settings.get("spark.log.level", "WARN"))
    return session


def spark_to_arrow_schema(df) -> "pa.Schema":
    """The Arrow schema of the batches `mapInArrow` hands to Python tasks for `df`."""
    from pyspark.sql.pandas.types import to_arrow_schema

    # nested timestamps (Rubin's diaSource.time_processed) stay timestamps, in the session's zone
    return to_arrow_schema(df.schema, timezone=df.sparkSession.conf.get("spark.sql.session.timeZone"))
