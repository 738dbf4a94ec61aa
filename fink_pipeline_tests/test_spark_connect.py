"""A whole transfer through a Spark Connect server (warm Spark that runs attach to).

The server (`spark_services.start_connect_server`, what `fink-pipeline spark connect start`
runs) is its own JVM with its own Python workers; the run is a fresh Python process whose only
Spark setting is the deployment's FINK_SPARK_REMOTE=sc://127.0.0.1:<port> (a client: no JVM in
it). Checked: the topic and the Delta table hold exactly the selected alerts, the run's
SparkResource attached to the server instead of starting Spark; a second run (opt-in) attaches to
the same server-side session after the first process ended (the run did not release it).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.spark_services import shared_session_url, start_connect_server
from fink_pipeline.surveys import get_survey
from fink_pipeline.transfer.request import TransferRequest
from fink_pipeline.transfer.store import RequestStore
from fink_pipeline_tests.test_spark_cluster import C1_ONLY, RUNNER, assert_run_published_exactly

pytestmark = [pytest.mark.kafka]

START = dt.date(2024, 3, 1)
CLASSES = ["SN candidate", "Early SN Ia candidate", "Unknown", "RRLyr", "Ambiguous"]


@pytest.fixture(scope="module")
def connect_server(tmp_path_factory):
    """(sc:// URL naming a shared session, as `spark connect start` prints it; archive): a Spark
    Connect server on local[2] (stopped after), and an archive of 2 nights x 1,500 alerts
    generated while it starts."""
    work, archive = tmp_path_factory.mktemp("spark-connect"), str(tmp_path_factory.mktemp("archive"))
    with ThreadPoolExecutor(1) as pool:
        generated = pool.submit(generate_archive, get_survey("ztf"), archive, START, nights=2,
                                alerts_per_night=1500, seed=5, with_cutouts=False)
        process, url = start_connect_server(work, master="local[2]", conf={"spark.driver.memory": "1g",
                                                                           "spark.driver.extraJavaOptions": C1_ONLY})
        try:
            generated.result()
            yield shared_session_url(url), archive
        finally:
            process.stop()


def run_through_server(url: str, broker: str, archive: str, tmp_path, request: TransferRequest):
    """`run_transfer` of `request` in a fresh process whose deployment names only the server."""
    requests, tables = tmp_path / "requests", tmp_path / "tables"
    RequestStore(requests).save(request)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FINK_", "PYSPARK_", "SPARK_"))}
    # a master that cannot work: the run must not start Spark, only attach to the server
    env.update(FINK_SPARK_REMOTE=url, FINK_SPARK_MASTER="spark://127.0.0.1:9",
               FINK_PIPELINE_HOME=str(tmp_path / "state"))
    return subprocess.run([sys.executable, "-c", RUNNER, request.topic, broker, archive, str(tables),
                           str(requests)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("classes", [
    CLASSES,
    # a second run of another process on the same server session (opt-in: -m slow; ~15 s)
    pytest.param(["SN candidate", "Unknown"], marks=pytest.mark.slow),
], ids=["first-run", "second-run"])
def test_transfer_through_a_spark_connect_server(connect_server, kafka_broker, kafka_settings, tmp_path, classes):
    url, archive = connect_server
    request = TransferRequest(survey="ztf", start=START.isoformat(), stop=(START + dt.timedelta(days=1)).isoformat(),
                              classes=classes, content="light").with_identity()
    completed = run_through_server(url, kafka_broker, archive, tmp_path, request)
    assert_run_published_exactly(completed, kafka_settings, request.topic, archive, classes, tmp_path / "tables",
                                 minimum=300)
    # the run attached to the server: no JVM of its own (its Spark master would have failed)
    assert "spark://127.0.0.1:9" not in completed.stderr
    # the server-side session remembers that its Python workers are warm: later processes
    # attached to it publish without a warm-up job first
    probe = ("import sys\nfrom pyspark.sql import SparkSession\n"
             "session = SparkSession.builder.remote(sys.argv[1]).getOrCreate()\n"
             "print(session.conf.get('spark.fink.pythonWorkersWarm', 'no'))")
    warm = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, timeout=60)
    assert warm.stdout.strip().splitlines()[-1:] == ["true"], warm.stderr[-2000:]


def test_bad_remote_url_names_the_variable(monkeypatch):
    from fink_pipeline.env import EnvSettingsError
    from fink_pipeline.orchestration.settings import DeploymentSettings

    monkeypatch.setenv("FINK_SPARK_REMOTE", "127.0.0.1:15002")
    with pytest.raises((EnvSettingsError, ValueError), match="FINK_SPARK_REMOTE=.*sc://host:port"):
        DeploymentSettings.load()
    monkeypatch.setenv("FINK_SPARK_REMOTE", "sc://127.0.0.1:15002")
    assert DeploymentSettings.load().spark_remote == "sc://127.0.0.1:15002"


def test_no_server_at_the_url_fails_at_once_naming_the_fix():
    from fink_pipeline.spark import connect_session
    from fink_pipeline.spark_services import free_port

    url = f"sc://127.0.0.1:{free_port()}"  # nothing listens there: the client would retry for minutes
    with pytest.raises(ConnectionError, match=f"no Spark Connect server answers at {url}.*spark connect start"):
        connect_session(url)
    with pytest.raises(ValueError, match="expected sc://host:port"):
        connect_session("http://127.0.0.1:15002")


def test_connect_cli_without_a_server_and_with_bad_flags(monkeypatch, tmp_path, capsys):
    from fink_pipeline.cli.main import main

    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path))
    assert main(["spark", "connect", "status"]) == 1
    assert "not running" in capsys.readouterr().err
    assert main(["spark", "connect", "stop"]) == 0
    assert "not running" in capsys.readouterr().err
    # refused before any JVM starts, naming the flag and its form
    assert main(["spark", "connect", "start", "--conf", "spark.driver.memory"]) == 2
    assert "--conf 'spark.driver.memory': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["spark", "connect", "start", "--host", "0.0.0.0"]) == 2
    assert "not a wildcard" in capsys.readouterr().err
    assert not (tmp_path / "spark-connect").exists()


@pytest.mark.slow
def test_connect_cli_start_status_stop(monkeypatch, tmp_path, capsys):
    """The managed server's life (opt-in: -m slow, ~20 s): start prints the shared-session URL
    that status prints, a second start is refused naming it, stop ends the server."""
    from fink_pipeline.cli.main import main
    from fink_pipeline.spark import connect_session

    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path))
    try:
        assert main(["spark", "connect", "start", "--conf", "spark.driver.memory=1g"]) == 0
        url = capsys.readouterr().out.strip()
        assert url.startswith("sc://127.0.0.1:") and "/;session_id=" in url
        assert main(["spark", "connect", "status"]) == 0 and capsys.readouterr().out.strip() == url
        assert main(["spark", "connect", "start"]) == 2
        assert f"already runs at {url}" in capsys.readouterr().err
    finally:
        assert main(["spark", "connect", "stop"]) == 0
    assert capsys.readouterr().out.strip() == "stopped"
    assert main(["spark", "connect", "status"]) == 1
    with pytest.raises(ConnectionError, match="no Spark Connect server answers"):
        connect_session(url)
