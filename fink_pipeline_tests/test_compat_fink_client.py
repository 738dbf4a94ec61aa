"""The real fink-client (12.3.0, `finkctl transfer`) downloads a topic this project published.

Opt-in (`pytest -m compat`, see docs/compatibility.md): fink-client pins its own dependencies, so
it runs from a separate virtualenv, `.venv-compat`, created here with `python -m venv` and
`pip install fink-client==12.3.0` when missing (network access to PyPI needed once).

The client is pointed at the embedded broker through the credentials file written by
`fink-pipeline register` (no password: the embedded broker has no authentication), exactly as a
user would after registering, and its downloaded Parquet files must hold every published alert
exactly once. A second run must find nothing left to download.

A second case downloads an `fxmatch_ztf_` topic (catalogue cross-match, issue 16: one row per
(alert, source) pair, content objectId, candid, jd and the catalogue's id column) submitted with
`fink-pipeline request submit --catalog ... --wait` on real ZTF samples: `finkctl transfer -topic
fxmatch_ztf_...` must get exactly the rows our `fink_datatransfer` gets.

One adaptation, for the embedded broker only: Tansu's group coordinator is slow to admit a
member (~23 s with the default 45 s session) and never admits a new one while earlier members
that left during their join are still registered. `finkctl transfer` subscribes two throw-away
consumers (to print its lag table) before the one that polls the schema, so on Tansu the schema
poll never returns. The launcher below therefore gives fink-client's consumers a short session
timeout and defers their group join to their first poll; fink-client's code (offsets, polling
loop, decoding, Parquet writing) runs unchanged. Apache Kafka needs none of this.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import list_nights
from fink_pipeline.kafka.publish import PublicationTarget, publish_dataframe
from fink_pipeline.kafka.settings import read_credentials_file
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.base import JD_UNIX_EPOCH
from fink_pipeline.transfer.plan import plan_transfer
from fink_pipeline.transfer.select import build_publication, build_transfer_dataframe
from fink_pipeline.transfer.request import TransferRequest

pytestmark = [pytest.mark.compat, pytest.mark.spark, pytest.mark.kafka]

REPO = Path(__file__).resolve().parents[1]
COMPAT_VENV = Path(os.environ.get("FINK_COMPAT_VENV", REPO / ".venv-compat"))
FINK_CLIENT = "fink-client==12.3.0"
START = dt.date(2024, 3, 1)
MAX_TIMEOUT_S = 10  # fink-client waits this long at the end of every partition

LAUNCHER = textwrap.dedent('''
    """Run `finkctl` with consumer group settings the embedded broker (Tansu) needs."""
    import sys

    import confluent_kafka

    GROUP_TIMING = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}


    class Consumer(confluent_kafka.Consumer):
        """fink-client's consumer, joining its group at its first poll instead of at subscribe()."""

        def __init__(self, config, *args, **kwargs):
            super().__init__({**GROUP_TIMING, **config}, *args, **kwargs)
            self._deferred = None

        def subscribe(self, topics, *args, **kwargs):
            self._deferred = (topics, args, kwargs)

        def _join(self):
            if self._deferred is not None:
                topics, args, kwargs = self._deferred
                self._deferred = None
                super().subscribe(topics, *args, **kwargs)

        def poll(self, *args, **kwargs):
            self._join()
            return super().poll(*args, **kwargs)

        def consume(self, *args, **kwargs):
            self._join()
            return super().consume(*args, **kwargs)


    confluent_kafka.Consumer = Consumer

    from fink_client.scripts.finkctl import cli

    sys.exit(cli())
''')


def compat_python() -> Path:
    """The interpreter of `.venv-compat`, with fink-client 12.3.0 installed (created if missing)."""
    python = COMPAT_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('fink-client'))"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == FINK_CLIENT.split("==")[1]:
            return python
    if not python.exists():
        venv.create(COMPAT_VENV, with_pip=True)
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", FINK_CLIENT],
                               capture_output=True, text=True, timeout=900)
    if installed.returncode != 0:
        pytest.fail(f"could not install {FINK_CLIENT} into {COMPAT_VENV}: {installed.stderr[-2000:]}")
    return python


def run_finkctl(command: list[str], env: dict[str, str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """Run finkctl in its own process group: on a time-out its consumer processes die with it."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=cwd, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(f"finkctl transfer did not finish within {timeout_s:.0f} s: {err[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def finkctl_transfer_command(python: Path, broker: str, tmp_path: Path, topic: str, partitionby: str | None,
                             nconsumers: int) -> tuple[dict[str, str], list[str], Path]:
    """(env, command, outdir) of `finkctl transfer` for `topic`, after `fink-pipeline register`
    (no password) wrote the user's credentials file under a fresh HOME."""
    home = tmp_path / "home"
    credentials = home / ".finkclient" / "ztf_credentials.yml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK", "VIRTUAL_ENV"))}
    env["HOME"] = str(home)
    registered = subprocess.run(
        [sys.executable, "-m", "fink_pipeline.cli.main", "register", "--survey", "ztf", "--servers", broker,
         "--username", "compat", "--group-id", f"compat_{topic}", "--maxtimeout", str(MAX_TIMEOUT_S),
         "--path", str(credentials)],
        capture_output=True, text=True, env={**env, "FINK_KAFKA_PASSWORD": ""}, timeout=120,
    )
    assert registered.returncode == 0, registered.stderr
    assert read_credentials_file(credentials)["servers"] == broker
    launcher = tmp_path / "finkctl_on_tansu.py"
    launcher.write_text(LAUNCHER)
    outdir = tmp_path / "download"
    command = [str(python), str(launcher), "transfer", "-survey", "ztf", "-topic", topic, "-outdir", str(outdir),
               *(["-partitionby", partitionby] if partitionby else []), "-batchsize", "1000",
               "-nconsumers", str(nconsumers)]
    return env, command, outdir


def test_finkctl_transfer_downloads_every_published_alert(spark, kafka_broker, kafka_settings, tmp_path):
    python = compat_python()
    root = str(tmp_path / "archive")
    generate_archive(get_survey("ztf"), root, START, nights=2, alerts_per_night=2000, seed=31, with_cutouts=False)
    request = TransferRequest(survey="ztf", start=START.isoformat(),
                              stop=(START + dt.timedelta(days=1)).isoformat(), content="light").with_identity()
    plan = plan_transfer(request, root, list_nights(root, "ztf"))
    df = build_transfer_dataframe(spark, plan)
    publication = build_publication(spark, plan)  # as the transfer asset publishes: content read with Arrow
    assert publication.arrow_content is not None
    target = PublicationTarget(topic=request.topic, request_id=request.request_id, time_column="candidate.jd",
                               time_epoch=JD_UNIX_EPOCH)
    report = publish_dataframe(publication.rows, target, kafka_settings, arrow_content=publication.arrow_content)
    source = sorted(df.select("candid").toArrow()["candid"].to_pylist())
    assert report.total == len(source) == 4000

    # the user's side: register (no password), then `finkctl transfer`
    env, command, outdir = finkctl_transfer_command(python, kafka_broker, tmp_path, request.topic, "finkclass",
                                                    nconsumers=10)
    first = run_finkctl(command, env, tmp_path, timeout_s=600)
    assert first.returncode == 0, first.stderr[-3000:]

    table = ds.dataset(outdir, format="parquet", partitioning="hive").to_table()
    downloaded = sorted(table["candid"].to_pylist())
    assert len(downloaded) == report.total  # exactly as many rows as published
    assert downloaded == source  # each alert once
    assert set(table["finkclass"].to_pylist()) == set(df.select("finkclass").toArrow()["finkclass"].to_pylist())

    # fink-client's own bookkeeping agrees: nothing is left to download
    second = run_finkctl(command, env, tmp_path, timeout_s=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert len(ds.dataset(outdir, format="parquet", partitioning="hive").to_table(columns=["candid"])) == len(source)
    print(f"\nfinkctl transfer wrote {len(downloaded):,} rows for {report.total:,} published alerts")


def test_finkctl_transfer_downloads_an_fxmatch_topic_as_our_consumer_does(spark, shared_data, kafka_broker,
                                                                          tmp_path, monkeypatch):
    """Real ZTF samples cross-matched with a catalogue of their positions (two sources around one
    alert): fink-client's `finkctl transfer -topic fxmatch_ztf_...` and our `fink_datatransfer`
    download the same rows, the brute-force (candid, id) pairs."""
    import contextlib
    import io

    import fink_pipeline.kafka.broker as broker
    from fink_pipeline.archive.importer import import_alerts
    from fink_pipeline.cli.datatransfer import main as datatransfer_main
    from fink_pipeline.cli.main import main
    from fink_pipeline.consumer.readers import read_delta_table
    from fink_pipeline_tests.test_crossmatch_transfers import (
        ZTF_START, ZTF_STOP, brute_force_pairs, read_catalog_text, write_catalog, ztf_catalog_rows,
    )

    python = compat_python()
    root = str(tmp_path / "archive")
    fink = shared_data / "ztf" / "fink"
    import_alerts([fink / "science_avro_snappy", fink / "science_parquet" / "fink-science_datatest",
                   fink / "science_parquet" / "fink-broker_tracklet", fink / "ftransfer_avro" / "part-3-305711.avro"],
                  get_survey("ztf"), root)
    rows, info = ztf_catalog_rows(root)
    catalog = tmp_path / "sources.csv"
    write_catalog(catalog, rows)
    alerts = info["alerts"]
    expected = brute_force_pairs(alerts["candid"].to_pylist(), alerts["ra"].to_numpy(), alerts["dec"].to_numpy(),
                                 *read_catalog_text(catalog))
    assert len(expected) >= 14

    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(broker, "status_managed", lambda state_dir: kafka_broker)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["request", "submit", "--survey", "ztf", "--start", ZTF_START, "--stop", ZTF_STOP, "--archive", root,
                   "--tables", str(tmp_path / "tables"), "--catalog", str(catalog), "--ra-col", "RAJ2000",
                   "--dec-col", "DEJ2000", "--id-col", "name", "--radius-arcsec", "1.5", "--wait"])
    assert rc == 0, out.getvalue()
    topic = out.getvalue().splitlines()[0]
    assert topic.startswith("fxmatch_ztf_")

    # ours
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert datatransfer_main(["-topic", topic, "-outdir", str(tmp_path / "ours"), "-servers", kafka_broker]) == 0
    ours = read_delta_table(str(tmp_path / "ours"))
    ours_pairs = sorted(zip(ours["candid"].to_pylist(), ours["name"].to_pylist()))
    assert len(ours_pairs) == len(expected) and set(ours_pairs) == expected

    # fink-client's, as a user runs it
    env, command, outdir = finkctl_transfer_command(python, kafka_broker, tmp_path, topic, "time", nconsumers=2)
    result = run_finkctl(command, env, tmp_path, timeout_s=600)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = ds.dataset(outdir, format="parquet", partitioning="hive").to_table()
    assert [c for c in theirs.column_names if c not in ("year", "month", "day")] == ["objectId", "candid", "jd", "name"]
    theirs_pairs = sorted(zip(theirs["candid"].to_pylist(), theirs["name"].to_pylist()))
    assert len(theirs_pairs) == len(ours_pairs)
    assert theirs_pairs == ours_pairs
    # the same rows, column by column
    key = ["candid", "name"]
    assert (theirs.select(["objectId", "candid", "jd", "name"]).sort_by([(k, "ascending") for k in key]).to_pylist()
            == ours.select(["objectId", "candid", "jd", "name"]).sort_by([(k, "ascending") for k in key]).to_pylist())
    print(f"\nfinkctl transfer wrote {len(theirs_pairs)} (alert, source) rows of {topic}, as our consumer did")
