"""Rubin transfers with Fink's LSST filters, blocks and `NOT`, through the user's commands.

`fink-pipeline request submit --survey lsst --filter ... --block "NOT ..." --content "Light static
packet" --wait` on a generated archive publishes exactly the alerts the filter keeps and the
block rejects (evaluated here by Spark on the archive files, independently of the job's plan),
and `fink_datatransfer` writes them to a Delta table partitioned by time with 64-bit ids. A Fink
LSST portal YAML export (no survey key, `filters`, `blocks`, `extra_cond`) validates to the
same selection and runs. That our Spark expressions select what Fink's own functions select is
proven by the opt-in compat test (`test_compat_fink_filters.py`).
"""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

from fink_pipeline.archive.generate import generate_archive
from fink_pipeline.archive.layout import night_dir
from fink_pipeline.cli.main import main
from fink_pipeline.consumer.readers import read_delta_table
from fink_pipeline.surveys import get_survey

START = dt.date(2026, 7, 1)
NIGHTS = [START, START + dt.timedelta(days=1)]
ALERTS_PER_NIGHT = 5000

pytestmark = [pytest.mark.spark, pytest.mark.kafka]


@pytest.fixture(scope="module")
def lsst_archive(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("lsst_selection_archive"))
    generate_archive(get_survey("lsst"), root, START, nights=len(NIGHTS), alerts_per_night=ALERTS_PER_NIGHT,
                     seed=15, with_cutouts=False)
    return root


@pytest.fixture
def managed_broker(kafka_broker, tmp_path, monkeypatch) -> str:
    """The session's broker as the one `fink-pipeline broker start` would have started."""
    import fink_pipeline.kafka.broker as broker

    monkeypatch.setenv("FINK_PIPELINE_HOME", str(tmp_path / "state"))
    monkeypatch.setattr(broker, "status_managed", lambda state_dir: kafka_broker)
    return kafka_broker


def expected_ids(spark, archive: str, columns) -> set[int]:
    """diaSourceIds of the archive's nights keeping every Spark column in `columns`."""
    df = spark.read.option("mergeSchema", "true").parquet(*[night_dir(archive, "lsst", n) for n in NIGHTS])
    for column in columns:
        df = df.filter(column)
    return {r[0] for r in df.select("diaSourceId").collect()}


def submit(capsys, *args: str) -> str:
    rc = main(["request", "submit", *args, "--wait"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return out.splitlines()[0]


def download(capsys, topic: str, broker: str, outdir: Path) -> pa.Table:
    from fink_pipeline.cli.datatransfer import main as datatransfer_main

    assert datatransfer_main(["-topic", topic, "-outdir", str(outdir), "-servers", broker,
                              "-groupid", f"test_{topic}"]) == 0
    capsys.readouterr()
    return read_delta_table(str(outdir))


def test_filter_and_negated_block_from_the_cli_land_in_a_time_partitioned_delta_table(
        spark, lsst_archive, managed_broker, tmp_path, capsys):
    survey = get_survey("lsst")
    wanted = expected_ids(spark, lsst_archive, [survey.livestream_filters["extragalactic_lt20mag_candidate"].column(),
                                                ~survey.blocks["b_is_solar_system"].column()])
    assert 0 < len(wanted) < 2 * ALERTS_PER_NIGHT
    topic = submit(capsys, "--survey", "lsst", "--start", NIGHTS[0].isoformat(), "--stop", NIGHTS[1].isoformat(),
                   "--archive", lsst_archive, "--tables", str(tmp_path / "tables"),
                   "--filter", "extragalactic_lt20mag_candidate", "--block", "NOT b_is_solar_system",
                   "--content", "Light static packet")
    assert topic.startswith("ftransfer_lsst_")
    table = download(capsys, topic, managed_broker, tmp_path / "out")
    ids = table.column("diaSourceId")
    assert ids.type == pa.int64() and table.column("diaObjectId").type == pa.int64()
    assert sorted(ids.to_pylist()) == sorted(wanted), "each selected alert once, no other"
    from deltalake import DeltaTable

    assert DeltaTable(str(tmp_path / "out")).metadata().partition_columns == ["year", "month", "day"]
    assert "cutoutScience" not in table.column_names and "diaSource" not in table.column_names


def test_lsst_portal_export_round_trips(spark, lsst_archive, managed_broker, tmp_path, capsys):
    export = tmp_path / "datatransfer_20260702_101500.yml"
    export.write_text(textwrap.dedent(f"""\
        dates:
          startdate: '{NIGHTS[0].isoformat()}'
          stopdate: '{NIGHTS[1].isoformat()}'
        filters: []
        blocks:
        - b_good_quality
        - NOT b_is_solar_system
        content: Light static packet
        extra_cond:
        - diaSource.snr > 8
        catalog_filename: ''
        """))
    rc = main(["request", "validate", str(export), "--archive", lsst_archive])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert out.splitlines()[0] == f"valid: lsst {NIGHTS[0]}..{NIGHTS[1]}, 2 nights present"
    assert "  condition:  diaSource.snr > 8" in out
    assert "  block:      b_good_quality (fink_filters.rubin.blocks.b_good_quality)" in out
    assert "  block:      NOT b_is_solar_system (fink_filters.rubin.blocks.b_is_solar_system)" in out

    survey = get_survey("lsst")
    from pyspark.sql import functions as F

    wanted = expected_ids(spark, lsst_archive, [F.col("diaSource.snr") > 8, survey.blocks["b_good_quality"].column(),
                                                ~survey.blocks["b_is_solar_system"].column()])
    assert 0 < len(wanted) < 2 * ALERTS_PER_NIGHT
    topic = submit(capsys, str(export), "--archive", lsst_archive, "--tables", str(tmp_path / "tables"))
    table = download(capsys, topic, managed_broker, tmp_path / "out")
    assert sorted(table.column("diaSourceId").to_pylist()) == sorted(wanted)


def test_estimate_counts_filters_and_blocks_from_a_sample_with_its_interval(spark, lsst_archive):
    """Filters and blocks are counted by the job's own expressions on a sample (never Fink's
    fixed yields): exact when the sample covers the nights, an interval holding the truth
    otherwise."""
    from fink_pipeline.transfer.estimate import estimate_request
    from fink_pipeline.transfer.request import TransferRequest

    survey = get_survey("lsst")
    request = TransferRequest(survey="lsst", start=NIGHTS[0].isoformat(), stop=NIGHTS[1].isoformat(),
                              blocks=["b_is_new", "NOT b_is_solar_system"])
    truth = len(expected_ids(spark, lsst_archive, [survey.blocks["b_is_new"].column(),
                                                   ~survey.blocks["b_is_solar_system"].column()]))
    whole = estimate_request(request, lsst_archive, spark=spark, sample_rows=10 * ALERTS_PER_NIGHT).as_metadata()
    # every alert sampled: a zero-width interval on the true count
    assert whole["estimated_alerts_low"] == whole["estimated_alerts"] == whole["estimated_alerts_high"] == truth
    sampled = estimate_request(request, lsst_archive, spark=spark, sample_rows=1000, seed=1).as_metadata()
    assert sampled["estimated_alerts_low"] < sampled["estimated_alerts_high"]
    assert sampled["estimated_alerts_low"] <= truth <= sampled["estimated_alerts_high"]
    assert sampled["estimated_alerts_high"] - sampled["estimated_alerts_low"] < truth


def test_request_filters_lists_every_filter_and_block_with_its_description(capsys):
    assert main(["request", "filters", "--survey", "lsst"]) == 0
    out = capsys.readouterr().out
    survey = get_survey("lsst")
    assert out.startswith(f"lsst filters ({len(survey.livestream_filters)}):")
    assert f"lsst blocks ({len(survey.blocks)}):" in out
    for name, function in [*survey.livestream_filters.items(), *survey.blocks.items()]:
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        assert function.description in line
    assert main(["request", "filters", "--survey", "lsts"]) == 2
    assert "unknown survey 'lsts'" in capsys.readouterr().err


def test_launchpad_form_takes_filters_and_negated_blocks(lsst_archive, kafka_broker, tmp_path):
    """The Dagster launchpad form (submit_transfer_job) carries filters and blocks through the
    same request model: the stored request keeps them, an unknown block fails the run in one line."""
    import dagster as dg

    from fink_pipeline.orchestration.resources import ArchiveResource, KafkaResource, RequestStoreResource
    from fink_pipeline.orchestration.submit import submit_transfer_job
    from fink_pipeline.transfer.store import RequestStore

    def launch(form):
        with dg.instance_for_test() as instance:
            return submit_transfer_job.execute_in_process(
                run_config={"ops": {"submit_transfer": {"config": form}}},
                resources={"archive": ArchiveResource(root=lsst_archive),
                           "kafka": KafkaResource(bootstrap_servers=kafka_broker),
                           "requests": RequestStoreResource(root=str(tmp_path / "requests"))},
                instance=instance, raise_on_error=False)

    form = {"survey": "lsst", "start": NIGHTS[0].isoformat(), "stop": NIGHTS[1].isoformat(),
            "filters": ["in_tns"], "blocks": ["not  b_is_solar_system", "b_good_quality"]}
    result = launch(form)
    assert result.success
    stored = RequestStore(tmp_path / "requests").load(result.output_for_node("submit_transfer"))
    assert stored.filters == ["in_tns"] and stored.blocks == ["NOT b_is_solar_system", "b_good_quality"]
    failed = launch({**form, "blocks": ["NOT b_is_solar_sytem"]})
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure)
    assert failure.event_specific_data.user_failure_data.description.startswith(
        "blocks: unknown Rubin block 'b_is_solar_sytem': did you mean b_is_solar_system")
