"""The thin path end to end: generated archive -> Dagster run (Spark -> Kafka -> Delta).

Counts are checked against an independent computation on the archive files (pyarrow + the
pure-Arrow classification), and the table's content against what was selected.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import night_dir
from fink_pipeline.consumer.readers import read_delta_table
from fink_pipeline.surveys import get_survey
from fink_pipeline.surveys.ztf.classification import finkclass_arrow
from fink_pipeline.transfer.request import TransferRequest

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

START = dt.date(2024, 3, 1)
CLASSES = ["SN candidate", "Early SN Ia candidate", "Unknown", "RRLyr"]


@pytest.fixture(scope="module")
def small_archive(tmp_path_factory) -> str:
    """3 nights x 1,500 ZTF alerts (no cutouts: the light packet never reads them)."""
    root = str(tmp_path_factory.mktemp("archive"))
    generate_archive(get_survey("ztf"), root, START, nights=3, alerts_per_night=1500, seed=7, with_cutouts=False)
    return root


def independent_selection(root: str, nights: list[dt.date], classes: list[str]) -> pa.Table:
    """The alerts a request should select, computed without Spark."""
    tables = [ds.dataset(night_dir(root, "ztf", n), format="parquet").to_table() for n in nights]
    archive = pa.concat_tables(tables)
    labels = finkclass_arrow(archive)
    return archive.filter(pc.is_in(labels, value_set=pa.array(classes)))


def run_request(request: TransferRequest, broker: str, small_archive: str, tmp_path: Path):
    import dagster as dg

    from fink_pipeline.orchestration.launch import run_transfer

    with dg.instance_for_test() as instance:
        result = run_transfer(
            request,
            bootstrap=broker,
            archive_root=small_archive,
            table_root=str(tmp_path / "tables"),
            request_root=str(tmp_path / "requests"),
            instance=instance,
        )
    return result


def test_transfer_selects_publishes_and_materializes_exactly(spark, kafka_broker, small_archive, tmp_path):
    # two of the three nights: the third must not be read
    request = TransferRequest(
        survey="ztf", start=START.isoformat(), stop=(START + dt.timedelta(days=1)).isoformat(),
        classes=CLASSES, content="light",
    ).with_identity()
    result = run_request(request, kafka_broker, small_archive, tmp_path)
    assert result.success

    expected = independent_selection(small_archive, [START, START + dt.timedelta(days=1)], CLASSES)
    assert expected.num_rows > 100  # the classes are common enough for a meaningful check

    topic_meta = {
        m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("transferred_alerts")
    }
    assert topic_meta["alert_topic"]["alerts_published"].value == expected.num_rows
    assert topic_meta["selected_alerts"]["nights_read"].value == 2
    assert topic_meta["selected_alerts"]["content_read_by"].value == "arrow"  # a local archive
    # nights and classes alone: the estimate from the nightly statistics is exact
    request_meta = result.asset_materializations_for_node("transfer_request")[0].metadata
    assert request_meta["estimated_alerts"].value == expected.num_rows

    table_uri = str(tmp_path / "tables" / request.topic)
    table = read_delta_table(table_uri)
    assert table.num_rows == expected.num_rows
    assert sorted(table["candid"].to_pylist()) == sorted(expected["candid"].to_pylist())
    assert set(table["finkclass"].to_pylist()) <= set(CLASSES)
    # light packet: flattened candidate fields, no cutouts, no history
    assert {"magpsf", "jd", "ra", "dec", "objectId", "finkclass", "rf_snia_vs_nonia"} <= set(table.column_names)
    assert not {"cutoutScience", "prv_candidates", "candidate"} & set(table.column_names)
    # values survived Spark -> Avro -> Delta: compare one numeric column per candid
    by_candid = dict(zip(expected["candid"].to_pylist(), pc.struct_field(expected["candidate"], "magpsf").to_pylist()))
    for candid, magpsf in zip(table["candid"].to_pylist(), table["magpsf"].to_pylist()):
        assert magpsf == pytest.approx(by_candid[candid], rel=1e-6, nan_ok=True) or (magpsf is None and by_candid[candid] is None)
    # partitioned by finkclass on disk
    assert any(p.name.startswith("finkclass=") for p in Path(table_uri).iterdir())
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks == {"row_count_matches_published": True, "candid_unique": True}


def test_request_on_missing_nights_fails_before_spark(spark, kafka_broker, small_archive, tmp_path):
    request = TransferRequest(survey="ztf", start="2023-01-01", stop="2023-01-05").with_identity()
    result = run_request(request, kafka_broker, small_archive, tmp_path)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert failure.step_key == "transfer_request"
    message = failure.event_specific_data.user_failure_data.description
    assert message.startswith("No alert data found in between 2023-01-01 and 2023-01-05")


def test_definitions_validate_cli():
    env = {**os.environ, "DAGSTER_HOME": ""}
    env.pop("DAGSTER_HOME")
    completed = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "fink_pipeline.definitions"],
        capture_output=True, text=True, timeout=180, env=env,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


def _descendants_alive(pids: set[int]) -> list[int]:
    import psutil

    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def test_demo_command_end_to_end_leaves_no_process(tmp_path):
    """README command 1 (the demo), at a small size, in a fresh state directory."""
    import psutil

    env = {**os.environ, "FINK_PIPELINE_HOME": str(tmp_path / "state"), "DAGSTER_HOME": str(tmp_path / "dh")}
    env.pop("FINK_KAFKA_BOOTSTRAP_SERVERS", None)
    (tmp_path / "dh").mkdir()
    # output goes to files, not pipes: nobody reads a pipe while the demo runs, and a full one would block it
    stdout_path, stderr_path = tmp_path / "demo.out", tmp_path / "demo.err"
    with stdout_path.open("w") as stdout, stderr_path.open("w") as stderr:
        process = psutil.Popen(
            [sys.executable, "-m", "fink_pipeline.cli.main", "demo", "--alerts-per-night", "800"],
            stdout=stdout, stderr=stderr, text=True, env=env,
        )
    # pid -> every name it had while sampled: spark-submit starts as bash and exec()s java in the
    # same pid, so on a slow host the first sample of that pid may still say "bash"
    seen: dict[int, set[str]] = {}
    try:
        while process.poll() is None:
            try:
                children = process.children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            for child in children:
                try:
                    seen.setdefault(child.pid, set()).add(child.name())
                except psutil.NoSuchProcess:
                    pass
            try:
                process.wait(0.5)
            except psutil.TimeoutExpired:
                pass
    finally:
        if process.poll() is None:
            process.kill()
    out, err = stdout_path.read_text(), stderr_path.read_text()
    assert process.returncode == 0, err[-3000:]
    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in out.splitlines() if ":" in line}
    published = int(lines["alerts published"].replace(",", ""))
    consumed = int(lines["alerts consumed"].split()[0].replace(",", ""))
    assert published == consumed > 0
    assert lines["topic"].startswith("ftransfer_ztf_")
    assert Path(lines["delta table"]).exists()
    # the demo really started a Spark JVM (and a broker unless one was reachable); none outlived it
    assert "java" in set().union(*seen.values()), seen
    # Dagster's compute-log tailers notice their parent's exit within a second or two
    deadline = time.monotonic() + 15
    while _descendants_alive(set(seen)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _descendants_alive(set(seen)) == []
