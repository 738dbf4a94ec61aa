"""`fink_datatransfer` as users run it: flags, credentials file, progress and summary, layouts,
and the tables read back by pandas, polars, DuckDB and Spark."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from fink_pipeline.cli import datatransfer
from fink_pipeline.consumer.readers import delta_data_files, read_delta_table, read_parquet_dataset
from fink_pipeline_tests.synthetic_topics import publish_tables, synthetic_alerts
from fink_pipeline.surveys import get_survey

ZTF = get_survey("ztf")
BIN = Path(sys.executable).parent
N_ALERTS = 4000


def run_cli(args: list[str], env: dict, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fink_datatransfer"), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def client_home(tmp_path_factory, kafka_broker):
    """A fink-client credentials folder written by `fink-pipeline register` (FINK_CLIENT_HOME)."""
    home = tmp_path_factory.mktemp("finkclient")
    env = {**os.environ, "FINK_CLIENT_HOME": str(home)}
    env.pop("FINK_KAFKA_BOOTSTRAP_SERVERS", None)
    done = subprocess.run([str(BIN / "fink-pipeline"), "register", "--survey", "ztf", "--servers", kafka_broker,
                           "--username", "tester", "--group-id", "tester_ztf"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return home, env


@pytest.fixture(scope="module")
def published_topic(kafka_broker):
    from fink_pipeline.kafka.settings import KafkaSettings

    topic = f"ftransfer_ztf_2024-03-01_{uuid.uuid4().hex[:8]}"
    published = publish_tables(KafkaSettings(bootstrap_servers=kafka_broker), topic,
                               synthetic_alerts(ZTF, N_ALERTS, "light", seed=21, batch_size=1000))
    return topic, published


@pytest.fixture(scope="module")
def cli_tables(tmp_path_factory, client_home, published_topic):
    """The topic downloaded once as Delta (by finkclass, 3 consumers, schema dumped) and once as
    Parquet (by time, 2 consumers), with the connection from the credentials file."""
    home, env = client_home
    topic, published = published_topic
    work = tmp_path_factory.mktemp("cli")
    delta = run_cli(["-topic", topic, "-outdir", str(work / "delta"), "-nconsumers", "3", "-batchsize", "700",
                     "--dump_schema"], env, cwd=work)
    parquet = run_cli(["-topic", topic, "-outdir", str(work / "parquet"), "-format", "parquet",
                       "-partitionby", "time", "-nconsumers", "2"], env, cwd=work)
    return {"work": work, "topic": topic, "published": published, "env": env, "delta": delta, "parquet": parquet}


# ------------------------------------------------------------------------------------------
# flags


def test_parser_has_fink_client_flags_and_defaults():
    args = datatransfer.build_parser().parse_args(["-topic", "ftransfer_ztf_x", "-outdir", "out"])
    assert args.format == "delta" and args.nconsumers == (os.cpu_count() or 1) and args.partitionby is None
    args = datatransfer.build_parser().parse_args([
        "-topic", "t", "-outdir", "o", "-partitionby", "tnsclass", "-nconsumers", "4", "-batchsize", "10",
        "-limit", "5", "-maxtimeout", "3", "--restart_from_beginning", "--dump_schema", "--verbose",
        "-format", "parquet", "-survey", "ztf"])
    assert (args.partitionby, args.nconsumers, args.batchsize, args.limit, args.maxtimeout) == ("tnsclass", 4, 10, 5, 3.0)
    assert args.restart_from_beginning and args.dump_schema and args.verbose and args.format == "parquet"
    for mode in ("finkclass", "time", "classId", "none"):
        assert datatransfer.build_parser().parse_args(["-topic", "t", "-outdir", "o", "-partitionby", mode]).partitionby == mode


def test_parallel_consumers_split_partitions_without_overlap():
    for n in (1, 2, 3, 7, 10, 16):
        groups = datatransfer.split_partitions(list(range(10)), n)
        flat = [p for g in groups for p in g]
        assert sorted(flat) == list(range(10)) and len(flat) == len(set(flat)) and len(groups) == min(n, 10)
    assert sum(datatransfer.split_limit(101, 3)) == 101


@pytest.mark.parametrize("argv, message", [
    (["-topic", "mytopic", "-outdir", "o", "-servers", "127.0.0.1:1"], "transfer topics start with ftransfer_"),
    (["-topic", "ftransfer_ztf_x", "-outdir", "o", "-servers", "127.0.0.1:1", "-nconsumers", "0"],
     "-batchsize and -nconsumers must be positive"),
    (["-topic", "ftransfer_pluto_x", "-outdir", "o"], "unknown survey 'pluto'"),
])
def test_bad_input_gets_a_clear_error(argv, message, capsys):
    assert datatransfer.main(argv) == datatransfer.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_missing_credentials_say_how_to_register(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FINK_CLIENT_HOME", str(tmp_path))
    monkeypatch.delenv("FINK_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    assert datatransfer.main(["-topic", "ftransfer_ztf_x", "-outdir", str(tmp_path / "o")]) == datatransfer.EXIT_USAGE
    err = capsys.readouterr().err
    assert "ztf_credentials.yml does not exist" in err and "fink-pipeline register --survey ztf" in err


@pytest.mark.kafka
def test_partitioning_absent_from_the_content_is_refused_early(kafka_settings, tmp_path, capsys):
    topic = f"ftransfer_ztf_2024-03-01_{uuid.uuid4().hex[:8]}"
    table = next(synthetic_alerts(ZTF, 50, "light")).select(["candid", "objectId", "magpsf"])
    publish_tables(kafka_settings, topic, [table])
    argv = ["-topic", topic, "-outdir", str(tmp_path / "o"), "-servers", kafka_settings.bootstrap_servers]
    assert datatransfer.main([*argv, "-partitionby", "finkclass"]) == datatransfer.EXIT_USAGE
    assert "the topic has no 'finkclass' field; choose time, none" in capsys.readouterr().err
    assert datatransfer.main([*argv, "-partitionby", "time"]) == datatransfer.EXIT_USAGE
    assert "-partitionby time needs the time column 'candidate.jd'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def lsst_topic(kafka_broker):
    """600 LSST light-packet alerts (diaSource fields flattened, pred and xm records kept)."""
    import datetime as dt

    from fink_pipeline.kafka.settings import KafkaSettings

    topic = f"ftransfer_lsst_2026-06-01_{uuid.uuid4().hex[:8]}"
    tables = synthetic_alerts(get_survey("lsst"), 600, "light", seed=5, night=dt.date(2026, 6, 1), batch_size=300)
    return topic, publish_tables(KafkaSettings(bootstrap_servers=kafka_broker), topic, tables, key_column="diaSourceId")


def test_partitionby_accepts_any_field_name():
    for mode in ("pred.main_label_classifier", "tns_type_recomputed", "xm.tns_type"):
        assert datatransfer.build_parser().parse_args(["-topic", "t", "-outdir", "o", "-partitionby", mode]).partitionby == mode


@pytest.mark.kafka
@pytest.mark.parametrize(("mode", "message"), [
    ("pred.main_label_clasifier", "error: -partitionby pred.main_label_clasifier: the topic has no "
                                  "'pred.main_label_clasifier' field; did you mean 'pred.main_label_classifier'?"),
    ("pred", "error: -partitionby pred: 'pred' is a struct<"),
    ("diaSource.band", "it has 'band' (flattened by the packet): -partitionby band"),
    ("finkclass", "error: -partitionby finkclass: the topic has no 'finkclass' field"),
    ("x;y", "error: -partitionby 'x;y' is not a field name"),
])
def test_lsst_partitioning_by_an_unknown_or_non_scalar_field_fails_before_consuming(lsst_topic, kafka_settings,
                                                                                   tmp_path, capsys, mode, message):
    topic, _ = lsst_topic
    argv = ["-topic", topic, "-outdir", str(tmp_path / "o"), "-servers", kafka_settings.bootstrap_servers]
    assert datatransfer.main([*argv, "-partitionby", mode]) == datatransfer.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


@pytest.mark.kafka
def test_lsst_downloads_by_time_by_default_and_by_a_nested_class_field(lsst_topic, kafka_settings, tmp_path):
    topic, published = lsst_topic
    env = {**os.environ}
    env.pop("FINK_KAFKA_BOOTSTRAP_SERVERS", None)
    common = ["-topic", topic, "-servers", kafka_settings.bootstrap_servers, "-nconsumers", "2"]
    by_time = run_cli([*common, "-outdir", str(tmp_path / "time")], env, cwd=tmp_path)
    assert by_time.returncode == 0, by_time.stderr
    assert "(delta, by time)" in by_time.stderr
    assert {p.name for p in (tmp_path / "time" / "year=2026" / "month=06").iterdir()} == {"day=01"}
    assert read_delta_table(str(tmp_path / "time")).num_rows == published.total
    by_label = run_cli([*common, "-outdir", str(tmp_path / "label"), "-format", "parquet",
                        "-partitionby", "pred.main_label_classifier"], env, cwd=tmp_path)
    assert by_label.returncode == 0, by_label.stderr
    assert "(parquet, by pred.main_label_classifier)" in by_label.stderr
    table = read_parquet_dataset(str(tmp_path / "label"))
    assert table.num_rows == published.total
    import pyarrow.compute as pc

    assert table["pred_main_label_classifier"].to_pylist() == pc.struct_field(table["pred"], "main_label_classifier").to_pylist()
    assert all(p.name.startswith("pred_main_label_classifier=") for p in (tmp_path / "label").iterdir()
               if not p.name.startswith("_"))


# ------------------------------------------------------------------------------------------
# runs


@pytest.mark.kafka
def test_credentials_file_is_private_and_used(client_home):
    home, _ = client_home
    path = home / "ztf_credentials.yml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.kafka
def test_delta_run_summary_progress_and_schema_dump(cli_tables):
    done, published = cli_tables["delta"], cli_tables["published"]
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    assert "job finished, 4,000 alerts published" in err
    assert "Downloading" in err and "alerts/s" in err  # tqdm bar: rate (and ETA while running)
    assert "total" in err and "4,000 of 4,000 published" in err
    assert "0 undecodable messages quarantined" in err
    assert "4,000 alerts downloaded" in err  # counted from the consumers' progress events
    table = read_delta_table(str(cli_tables["work"] / "delta"))
    counts = table.group_by("finkclass").aggregate([([], "count_all")]).to_pydict()
    for label, n in zip(counts["finkclass"], counts["count_all"]):
        assert any(line.split("│")[1:3] and line.split("│")[1].strip() == label and line.split("│")[2].strip() == f"{n:,}"
                   for line in err.splitlines() if "│" in line), label
    ids = table["candid"].to_pylist()
    assert len(ids) == len(set(ids)) == N_ALERTS and set(ids) == set(published.ids)
    schema = json.loads((cli_tables["work"] / f"schema_{cli_tables['topic']}.json").read_text())
    assert schema == published.avro_schema


@pytest.mark.kafka
def test_rerun_resumes_nothing_and_restart_from_beginning_with_limit(cli_tables):
    import shutil

    work, env, topic = cli_tables["work"], cli_tables["env"], cli_tables["topic"]
    again = run_cli(["-topic", topic, "-outdir", str(work / "delta"), "-nconsumers", "2"], env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "0 alerts downloaded" in again.stderr
    assert read_delta_table(str(work / "delta")).num_rows == N_ALERTS
    shutil.copytree(work / "parquet", work / "limited")
    fresh = run_cli(["-topic", topic, "-outdir", str(work / "limited"), "-format", "parquet", "-partitionby", "time",
                     "--restart_from_beginning", "-limit", "500", "-nconsumers", "2", "-batchsize", "100"], env)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "--restart_from_beginning: removing" in fresh.stderr
    assert read_parquet_dataset(str(work / "limited")).num_rows == 500


@pytest.mark.kafka
def test_parquet_time_layout_matches_fink_client(cli_tables):
    done = cli_tables["parquet"]
    assert done.returncode == 0, done.stderr[-3000:]
    root = cli_tables["work"] / "parquet"
    folders = {str(p.parent.relative_to(root)) for p in root.rglob("*.parquet")}
    assert folders == {"year=2024/month=03/day=01"}
    assert all(p.name.startswith("part-") for p in root.rglob("*.parquet"))
    assert "year/month/day" in done.stderr and "2024/03/01" in done.stderr


# ------------------------------------------------------------------------------------------
# readers


@pytest.mark.kafka
def test_pandas_polars_duckdb_read_the_parquet_dataset(cli_tables):
    import duckdb
    import pandas as pd
    import polars as pl

    root = cli_tables["work"] / "parquet"
    ids = set(cli_tables["published"].ids)
    frame = pd.read_parquet(root)
    assert set(frame["candid"]) == ids and len(frame) == N_ALERTS
    assert set(frame["month"].astype(str)) == {"3"} or set(frame["month"].astype(str)) == {"03"}
    lazy = pl.scan_parquet(str(root / "**" / "*.parquet"), hive_partitioning=True)
    assert lazy.select(pl.len()).collect().item() == N_ALERTS
    assert set(lazy.select("candid").collect()["candid"]) == ids
    con = duckdb.connect()
    n, distinct, days = con.execute(
        f"SELECT count(*), count(DISTINCT candid), count(DISTINCT day) "
        f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true)").fetchone()
    assert (n, distinct, days) == (N_ALERTS, N_ALERTS, 1)


@pytest.mark.kafka
def test_pandas_polars_duckdb_read_the_delta_table(cli_tables):
    import duckdb
    import polars as pl
    from deltalake import DeltaTable

    root = cli_tables["work"] / "delta"
    ids = set(cli_tables["published"].ids)
    frame = DeltaTable(str(root)).to_pandas(columns=["candid", "finkclass"])
    assert set(frame["candid"]) == ids and len(frame) == N_ALERTS
    polars_frame = pl.read_delta(str(root))
    assert polars_frame.height == N_ALERTS and set(polars_frame["candid"]) == ids
    # DuckDB's delta extension is downloaded at run time (not possible offline): DuckDB reads
    # the Parquet files of the table's current version instead.
    files = delta_data_files(str(root))
    con = duckdb.connect()
    n, distinct, classes = con.execute(
        "SELECT count(*), count(DISTINCT candid), count(DISTINCT finkclass) FROM read_parquet(?, hive_partitioning = true)",
        [files]).fetchone()
    assert (n, distinct) == (N_ALERTS, N_ALERTS)
    assert classes == len(set(frame["finkclass"]))


@pytest.mark.kafka
@pytest.mark.spark
def test_spark_reads_both_outputs(cli_tables, spark):
    root = cli_tables["work"]
    ids = set(cli_tables["published"].ids)
    parquet = spark.read.parquet(str(root / "parquet"))
    assert parquet.count() == N_ALERTS and {"year", "month", "day", "candid", "magpsf"} <= set(parquet.columns)
    assert {r.candid for r in parquet.select("candid").collect()} == ids
    # no delta-spark jar here: Spark reads the current version's data files, partitions from paths
    files = delta_data_files(str(root / "delta"))
    delta = spark.read.option("basePath", str(root / "delta")).parquet(*files)
    assert delta.count() == N_ALERTS and "finkclass" in delta.columns
    by_class = {r.finkclass: r["count"] for r in delta.groupBy("finkclass").count().collect()}
    expected = read_delta_table(str(root / "delta")).group_by("finkclass").aggregate([([], "count_all")]).to_pydict()
    assert by_class == dict(zip(expected["finkclass"], expected["count_all"]))


def test_started_with_the_job_waits_for_the_publication_then_downloads_it(kafka_broker, tmp_path):
    """`fink_datatransfer` run at the moment the transfer is submitted, before its topics exist:
    it says it waits, downloads while the job publishes and exits once the end record is read."""
    import threading
    import time

    from fink_pipeline.kafka.settings import KafkaSettings
    from fink_pipeline_tests.synthetic_topics import TopicWriter

    topic = f"ftransfer_ztf_2024-03-01_{uuid.uuid4().hex[:8]}"
    tables = list(synthetic_alerts(ZTF, 3000, "light", seed=23, batch_size=1000))
    env = {**os.environ}
    env.pop("FINK_KAFKA_BOOTSTRAP_SERVERS", None)
    process = subprocess.Popen([str(BIN / "fink_datatransfer"), "-topic", topic, "-outdir", str(tmp_path / "t"),
                                "-servers", kafka_broker, "-maxtimeout", "60", "-nconsumers", "2"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        assert process.poll() is None, process.communicate()
        writer = TopicWriter(KafkaSettings(bootstrap_servers=kafka_broker), topic, tables[0].schema).start()
        for table in tables[:-1]:
            writer.write(table)
            writer.flush()
            time.sleep(1)
        writer.write(tables[-1], last=True)
        published = writer.end()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err[-3000:]
    assert "for the publication to start" in err
    assert f"{published.total:,} of {published.total:,} published" in err
    assert sorted(read_delta_table(str(tmp_path / "t"))["candid"].to_pylist()) == sorted(published.ids)
