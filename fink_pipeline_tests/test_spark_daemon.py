"""Local sessions fork their Python workers from `fink_pipeline.spark_daemon`: the publishing
modules imported once, pyspark from the installed package rather than Spark's zip, at a lower
priority than the driver."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from fink_pipeline.spark_daemon import WORKER_NICENESS, installed_pyspark_paths


def test_workers_fork_with_the_publishing_modules_and_compiled_pyspark(spark):
    def report(batches):
        import os
        import sys

        preloaded = "fink_pipeline.kafka.publish_task" in sys.modules  # before this task imports anything
        import pyspark

        rows = sum(batch.num_rows for batch in batches)
        yield pa.RecordBatch.from_pydict({"preloaded": [preloaded], "pyspark": [pyspark.__file__],
                                          "nice": [os.nice(0)], "rows": [rows]})

    got = spark.range(0, 10, 1, 2).mapInArrow(report, "preloaded boolean, pyspark string, nice long, rows long").collect()
    assert sum(r.rows for r in got) == 10
    # below the driver's priority (the JVM runs at this process's niceness)
    assert {r.nice for r in got} == {min(19, os.nice(0) + WORKER_NICENESS)}
    assert all(r.preloaded for r in got), got
    assert all(".zip" not in r.pyspark and r.pyspark.endswith("__init__.py") for r in got), got


@pytest.mark.parametrize(("path", "kept"), [
    # pip's pyspark: SPARK_HOME is the installed package, its zip holds the same sources
    (["/x/pyspark/python/lib/pyspark.zip", "/x/pyspark/python/lib/py4j-src.zip", "/x"],
     ["/x/pyspark/python/lib/py4j-src.zip", "/x"]),
    # a separate Spark distribution keeps its zip
    (["/opt/spark/python/lib/pyspark.zip", "/x"], ["/opt/spark/python/lib/pyspark.zip", "/x"]),
    # the installed package's folder is not on the path: the zip is all there is
    (["/x/pyspark/python/lib/pyspark.zip"], ["/x/pyspark/python/lib/pyspark.zip"]),
])
def test_installed_pyspark_replaces_only_its_own_zip(tmp_path, path, kept):
    (tmp_path / "x" / "pyspark").mkdir(parents=True)
    (tmp_path / "x" / "pyspark" / "__init__.py").write_text("")
    (tmp_path / "opt" / "spark" / "python" / "lib").mkdir(parents=True)
    rooted = [str(tmp_path) + p for p in path]
    assert installed_pyspark_paths(rooted) == [str(tmp_path) + p for p in kept]
