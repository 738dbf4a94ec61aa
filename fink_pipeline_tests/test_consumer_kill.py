"""Exactly once under SIGKILL: `fink_datatransfer` (2 consumer processes) is killed at random
moments of a transfer and restarted each time; the final table holds exactly the published
alerts. Every kill lands after the run has committed at least one new batch, plus a random
delay, so kills hit decoding, data-file writing and commits alike."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

from fink_pipeline_tests.synthetic_topics import publish_synthetic_topic
from fink_pipeline.surveys import get_survey
from fink_pipeline_tests.reliability_plugin import count_lost_and_duplicates, table_ids

pytestmark = pytest.mark.kafka

BIN = Path(sys.executable).parent / "fink_datatransfer"


def commits(out: Path, fmt: str) -> int:
    """How many batches the table has committed so far (cheap: counts log entries / markers)."""
    folder = out / ("_delta_log" if fmt == "delta" else "_offsets")
    pattern = "*.json" if fmt == "delta" else "batch-*.json"
    return len(list(folder.glob(pattern))) if folder.exists() else 0


def kill_tree(process: psutil.Popen) -> None:
    """SIGKILL the command only; its consumer processes must die with it (PR_SET_PDEATHSIG)."""
    children = process.children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"consumer processes survived the killed command: {alive}"


def transfer_with_kills(servers: str, topic: str, out: Path | str, fmt: str, kills: int, batchsize: int, seed: int,
                        commits=commits, extra_env: dict[str, str] | None = None) -> dict:
    """Run fink_datatransfer into `out`, SIGKILL it `kills` times (each after a new commit
    counted by `commits(out, fmt)`), then let a last run finish; `extra_env` for the command
    (object-store options and credentials)."""
    rng = random.Random(seed)
    cmd = [str(BIN), "-topic", topic, "-outdir", str(out), "-servers", servers, "-nconsumers", "2",
           "-batchsize", str(batchsize), "-format", fmt]
    env = {k: v for k, v in os.environ.items() if k != "FINK_KAFKA_BOOTSTRAP_SERVERS"}
    env.update(extra_env or {})
    done_kills, early_exits, killed_at = 0, 0, []
    while done_kills < kills:
        before = commits(out, fmt)
        process = psutil.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while commits(out, fmt) <= before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.4))
        if process.poll() is not None:  # it finished the topic before the kill
            assert process.returncode == 0
            early_exits += 1
            break
        kill_tree(process)
        done_kills += 1
        killed_at.append(commits(out, fmt))
    # the last run finishes the topic with the default batch size: only the commit boundaries
    # differ, and resuming must not depend on them
    final_cmd = cmd[:cmd.index("-batchsize")] + cmd[cmd.index("-batchsize") + 2:]
    final = subprocess.run(final_cmd, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    return {"kills": done_kills, "early_exits": early_exits, "commits_at_kills": killed_at}


def check_exact(out: Path, fmt: str, published) -> None:
    ids = table_ids(out, fmt)
    assert len(ids) == published.total, "duplicates or loss"
    assert len(set(ids)) == len(ids), "duplicates"
    assert set(ids) == set(published.ids), "loss"


@pytest.fixture(scope="module")
def kill_topic(kafka_broker):
    from fink_pipeline.kafka.settings import KafkaSettings

    topic = f"ftransfer_ztf_2024-03-01_{uuid.uuid4().hex[:8]}"
    published = publish_synthetic_topic(KafkaSettings(bootstrap_servers=kafka_broker), topic, get_survey("ztf"),
                                        20_000, seed=99)
    return topic, published


# Each restart costs a few seconds of process start-up (imports, consumer processes), so the
# default suite kills 4 + 3 times; the slow suite does the full 20 kills per format, on 20,000
# and on 200,000 alerts.
@pytest.mark.reliability
@pytest.mark.parametrize("fmt, kills", [
    ("delta", 4), ("parquet", 3),
    pytest.param("delta", 20, marks=pytest.mark.slow), pytest.param("parquet", 20, marks=pytest.mark.slow),
])
def test_sigkill_at_random_moments_then_resume_is_exactly_once(kafka_broker, kill_topic, tmp_path, fmt, kills,
                                                               reliability_record):
    topic, published = kill_topic
    out = tmp_path / fmt
    stats = transfer_with_kills(kafka_broker, topic, out, fmt, kills=kills, batchsize=150, seed=kills)
    lost, duplicates = count_lost_and_duplicates(table_ids(out, fmt), published.ids)
    reliability_record(cases=1, failures_survived=stats["kills"], lost=lost, duplicates=duplicates)
    assert stats["kills"] == kills, stats  # every kill interrupted a transfer in progress
    check_exact(out, fmt, published)


@pytest.mark.reliability
@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_sigkill_twenty_times_on_200k_alerts(kafka_broker, tmp_path, fmt, reliability_record):
    from fink_pipeline.kafka.settings import KafkaSettings

    topic = f"ftransfer_ztf_2024-03-01_{uuid.uuid4().hex[:8]}"
    published = publish_synthetic_topic(KafkaSettings(bootstrap_servers=kafka_broker), topic, get_survey("ztf"),
                                        200_000, seed=7)
    out = tmp_path / fmt
    stats = transfer_with_kills(kafka_broker, topic, out, fmt, kills=20, batchsize=2000, seed=5)
    lost, duplicates = count_lost_and_duplicates(table_ids(out, fmt), published.ids)
    reliability_record(cases=1, failures_survived=stats["kills"], lost=lost, duplicates=duplicates)
    assert stats["kills"] == 20, stats
    check_exact(out, fmt, published)
