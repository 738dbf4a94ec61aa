"""Building the SparkSession: local by default, any master and conf by configuration."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Mapping

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
    # `build_spark_session` adds the class-data-sharing archive (fink_pipeline.jvm_class_cache).
    "spark.sql.codegen.maxFields": "1000",
    "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethods -XX:TieredStopAtLevel=1",
    # Int.MaxValue turns off the byte limit of the Arrow batches sent to Python workers,
    # which Spark otherwise checks by sizing every vector after every row (~20 % of the
    # JVM's time on a light packet); maxRecordsPerBatch still bounds them.
    "spark.sql.execution.arrow.maxBytesPerBatch": "2147483647",
    # Files are split by their whole size, cutouts included, although a transfer reads a few
    # small columns: 1.5 GB files with cutouts made ~400 splits for 1M alerts, each reading its
    # file's large footer again (listing the 1M selected rows: 20.2 JVM CPU-s, 8.7 with 2g
    # splits). Spark still splits a small archive into one piece per core.
    "spark.sql.files.maxPartitionBytes": "2g",
}


def open_spark_session(
    master: str = LOCAL_MASTER,
    app_name: str = "fink-pipeline",
    conf: Mapping[str, str] | None = None,
) -> tuple["SparkSession", bool]:
    """(session, owned): `build_spark_session`'s session, and whether this call started it.

    A session already running in this process (tests, notebooks, benchmarks) is borrowed:
    `owned` is False and the caller must not stop it; otherwise the caller owns the new
    session and stops it when done. The one place that decides who stops a session.
    """
    from pyspark import SparkContext

    owned = SparkContext._active_spark_context is None
    return build_spark_session(master, app_name, conf), owned


def build_spark_session(
    master: str = LOCAL_MASTER,
    app_name: str = "fink-pipeline",
    conf: Mapping[str, str] | None = None,
) -> "SparkSession":
    """Create (or reuse) a SparkSession.

    Python workers must run the interpreter that has pyarrow and this package, so
    PYSPARK_PYTHON defaults to the running one. `conf` overrides the local defaults;
    on a cluster pass its master URL and whatever conf it needs (s3a credentials, ...).
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.master(master).appName(app_name)
    settings = dict(LOCAL_DEFAULT_CONF) if master.startswith("local") else {}
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
