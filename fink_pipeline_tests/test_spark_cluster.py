"""A whole transfer on a real Spark standalone cluster: a master and two workers (separate JVMs,
one core each, from pyspark's own distribution) on loopback.

The transfer runs as `request submit --wait` runs it (`run_transfer`, the Dagster run with the
deployment's SparkResource), in a fresh Python process whose only Spark setting is the
deployment's: FINK_SPARK_MASTER=spark://127.0.0.1:<port> (and FINK_SPARK_CONF). This test's own
process keeps its local session (a process holds one SparkContext). The executors are other
JVMs with their own Python workers, started in the workers' folders: whatever the tasks need
(Arrow content reader, cached producers, status records) must come with the task. Checked: the
topic and the Delta table hold exactly the selected alerts, and Spark's event log shows that
tasks ran on both workers' executors (the master's JSON API lists both workers and the app).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.consumer.readers import read_delta_table
from fink_pipeline.spark_services import master_state, start_master, start_worker, wait_for_workers
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.request import TransferRequest
from fink_pipeline.transfer.store import RequestStore
from fink_pipeline_tests.test_end_to_end import independent_selection
from fink_pipeline_tests.test_publish import candids, read_topic

pytestmark = [pytest.mark.kafka]

START = dt.date(2024, 3, 1)
CLASSES = ["SN candidate", "Early SN Ia candidate", "Unknown", "RRLyr", "Ambiguous"]
C1_ONLY = "-XX:-DontCompileHugeMethods -XX:TieredStopAtLevel=1"

# What the run's process executes: the CLI's `request run` path, on the given broker.
RUNNER = textwrap.dedent("""
    import sys
    from fink_pipeline.orchestration.launch import run_transfer
    from fink_pipeline.transfer.store import RequestStore
    topic, bootstrap, archive, tables, requests = sys.argv[1:6]
    result = run_transfer(RequestStore(requests).load(topic), bootstrap=bootstrap, archive_root=archive,
                          table_root=tables, request_root=requests)
    meta = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("transferred_alerts")}
    print("published", meta["alert_topic"]["alerts_published"].value if result.success else -1)
    sys.exit(0 if result.success else 1)
""")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(master URL, master web UI, archive) of a standalone master with two 1-core workers
    (stopped after), and an archive of 2 nights x 2,000 alerts generated while they start."""
    work, archive = tmp_path_factory.mktemp("spark-cluster"), str(tmp_path_factory.mktemp("archive"))
    processes = []
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("SPARK_DAEMON_JAVA_OPTS", "-XX:TieredStopAtLevel=1")  # the master and workers
    with ThreadPoolExecutor(1) as pool:
        generated = pool.submit(generate_archive, get_survey("ztf"), archive, START, nights=2,
                                alerts_per_night=2000, seed=11, with_cutouts=False)
        try:
            master, url, ui = start_master(work)
            processes.append(master)
            processes += [start_worker(url, work, f"worker-{i}", cores=1, memory="1g") for i in (1, 2)]
            wait_for_workers(ui, 2, processes)
            generated.result()
            yield url, ui, archive
        finally:
            for process in reversed(processes):
                process.stop()
            monkeypatch.undo()


def _task_executors(event_dir: Path) -> dict[str, dict]:
    """Per executor id: its host, its worker's log URL and how many tasks it finished, from
    the application's Spark event log."""
    executors: dict[str, dict] = {}
    (log,) = [p for p in event_dir.iterdir() if not p.name.endswith(".inprogress")]
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerExecutorAdded":
            info = event["Executor Info"]
            executors[event["Executor ID"]] = {"host": info["Host"], "log": info["Log Urls"]["stdout"], "tasks": 0}
        elif event["Event"] == "SparkListenerTaskEnd" and event["Task End Reason"]["Reason"] == "Success":
            executors[event["Task Info"]["Executor ID"]]["tasks"] += 1
    return executors


def assert_run_published_exactly(completed: subprocess.CompletedProcess, kafka_settings, topic: str, archive: str,
                                 classes: list[str], tables: Path, minimum: int) -> None:
    """The run (a RUNNER process) succeeded, and its topic and Delta table hold exactly the
    alerts of `classes` in the archive's 2 nights, selected independently with pyarrow."""
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]

    expected = independent_selection(archive, [START, START + dt.timedelta(days=1)], classes)
    expected_ids = sorted(expected["candid"].to_pylist())
    assert len(expected_ids) > minimum
    assert f"published {len(expected_ids)}" in completed.stdout
    assert sorted(candids(read_topic(kafka_settings, topic))) == expected_ids
    table = read_delta_table(str(tables / topic))
    assert sorted(table["candid"].to_pylist()) == expected_ids
    assert set(table["finkclass"].to_pylist()) <= set(classes)


def test_transfer_on_a_standalone_cluster_uses_both_workers(cluster, kafka_broker, kafka_settings, tmp_path):
    url, ui, archive = cluster
    request = TransferRequest(survey="ztf", start=START.isoformat(), stop=(START + dt.timedelta(days=1)).isoformat(),
                              classes=CLASSES, content="light").with_identity()
    requests, tables, events = tmp_path / "requests", tmp_path / "tables", tmp_path / "events"
    events.mkdir()
    RequestStore(requests).save(request)
    conf = {
        "spark.executor.memory": "768m", "spark.executor.cores": "1", "spark.cores.max": "2",
        "spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1", "spark.ui.enabled": "false",
        # two Spark partitions whatever the split size: one task per worker
        "spark.sql.files.maxPartitionBytes": "256k",
        "spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri(),
        "spark.eventLog.rolling.enabled": "false", "spark.eventLog.compress": "false",
        # short-lived JVMs on 2 shared cores: C1 only (C2's compiles would not pay back)
        "spark.driver.extraJavaOptions": C1_ONLY, "spark.executor.extraJavaOptions": C1_ONLY,
    }
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FINK_", "PYSPARK_", "SPARK_"))}
    env.update(FINK_SPARK_MASTER=url, FINK_SPARK_CONF=json.dumps(conf), SPARK_LOCAL_IP="127.0.0.1",
               FINK_PIPELINE_HOME=str(tmp_path / "state"))
    # another folder as working directory: nothing may depend on the driver's
    completed = subprocess.run(
        [sys.executable, "-c", RUNNER, request.topic, kafka_broker, archive, str(tables), str(requests)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
    )
    assert_run_published_exactly(completed, kafka_settings, request.topic, archive, CLASSES, tables, minimum=500)

    # both workers' executors ran tasks of this application
    executors = _task_executors(events)
    working = {e["log"].split("/logPage")[0] for e in executors.values() if e["tasks"] > 0}
    assert len(working) == 2, executors
    state = master_state(ui)
    worker_uis = {w["webuiaddress"] for w in state["workers"]}
    assert working == worker_uis, (working, worker_uis)
    assert [app["name"] for app in state["completedapps"]] == ["fink-pipeline"]


def test_cluster_masters_get_the_defaults_that_change_results_not_the_machine_ones():
    from fink_pipeline.spark import LOCAL_DEFAULT_CONF, default_conf

    cluster = default_conf("spark://10.0.0.1:7077")
    assert cluster["spark.sql.session.timeZone"] == "UTC"
    assert cluster["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert cluster["spark.sql.codegen.maxFields"] == LOCAL_DEFAULT_CONF["spark.sql.codegen.maxFields"]
    assert "-XX:-DontCompileHugeMethods" in cluster["spark.executor.extraJavaOptions"]
    # about this machine only: a cluster's driver binds where its executors reach it
    assert not {"spark.driver.bindAddress", "spark.driver.host", "spark.ui.enabled", "spark.driver.memory",
                "spark.driver.extraJavaOptions"} & set(cluster)
    assert default_conf("local[2]") == LOCAL_DEFAULT_CONF


def test_spark_resource_from_the_deployment_environment(monkeypatch):
    from fink_pipeline.orchestration.resources import SparkResource, local_resources

    monkeypatch.setenv("FINK_SPARK_MASTER", "spark://10.0.0.1:7077")
    monkeypatch.setenv("FINK_SPARK_CONF", '{"spark.executor.memory": "4g"}')
    monkeypatch.delenv("FINK_SPARK_REMOTE", raising=False)
    resource = SparkResource.from_env()
    assert (resource.master, resource.remote, resource.conf) == ("spark://10.0.0.1:7077", None,
                                                                 {"spark.executor.memory": "4g"})
    monkeypatch.setenv("FINK_SPARK_REMOTE", "sc://connect:15002")
    assert local_resources()["spark"].remote == "sc://connect:15002"
