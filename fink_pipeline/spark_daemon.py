"""Spark's Python daemon for local sessions (`spark.python.daemon.module`): `pyspark.daemon`,
with the publishing modules imported before it forks the workers.

Every Python worker is forked from this daemon. With Spark's own daemon each worker then imported
pyarrow, numpy, confluent-kafka and the publishing code itself (~2.4 CPU-s for the 3 workers of a
1M-alert transfer); imported here once, the forked workers share them, pages included.

The workers run niced (`WORKER_NICENESS`): see there.

Spark puts its `pyspark.zip` first on the workers' path, and zipimport compiles every pyspark
module from source in every daemon (1.1 s against 0.3 s from compiled files, measured). When that
zip is the one inside the installed pyspark package (pip's SPARK_HOME), the installed package is
the same code with its compiled files: the daemon imports pyspark from there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Workers run at a lower priority than the command that started them: on a laptop the command's
# table consumer then keeps pace with the publication instead of trailing it (1M alerts: the
# table complete 1.7 s after the topic instead of 3.1 s, same CPU), and the user's other work
# comes first too.
WORKER_NICENESS = 5


def installed_pyspark_paths(path: list[str]) -> list[str]:
    """`path` without the entries of Spark's `pyspark.zip` that lie inside an installed pyspark
    package whose parent directory is on `path` too (the same sources, compiled); `path`
    unchanged otherwise (a separate Spark distribution keeps its zip)."""
    kept = []
    for entry in path:
        zip_path = Path(entry)
        if zip_path.name == "pyspark.zip" and len(zip_path.parents) > 3:
            package = zip_path.parents[2]  # <site-packages>/pyspark/python/lib/pyspark.zip
            if ((package / "__init__.py").is_file() and package.name == "pyspark"
                    and str(package.parent) in path):
                continue
        kept.append(entry)
    return kept


def main() -> None:
    """Preload, then run Spark's daemon loop (it forks a worker per connection)."""
    sys.path[:] = installed_pyspark_paths(sys.path)
    os.nice(WORKER_NICENESS)
    # what every publishing task imports (pyarrow, numpy, confluent-kafka, the Avro encoder, the
    # archive reader): imported before the fork, it is shared by every worker
    import fink_pipeline.kafka.publish_task  # noqa: F401
    import pyspark.sql.pandas.serializers  # noqa: F401  (mapInArrow's Arrow stream)
    from pyspark.daemon import manager

    manager()


if __name__ == "__main__":
    main()
