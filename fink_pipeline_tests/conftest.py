"""Shared fixtures: one Spark session per test run, a private embedded broker, data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["fink_pipeline_tests.reliability_plugin"]

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FINK_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only sample alerts of ../shared/data (skip when absent)."""
    if not SHARED_DATA.exists():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spark():
    """The one local SparkSession of this test run (2 cores, retries enabled)."""
    from fink_pipeline.spark import build_spark_session

    session = build_spark_session(
        master="local[2]",
        app_name="fink-pipeline-tests",
        # this JVM runs the whole suite's jobs: C2 pays back (the product's short-lived local
        # JVMs stop at C1, see LOCAL_DEFAULT_CONF)
        conf={"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "2g",
              "spark.driver.extraJavaOptions": "-XX:-DontCompileHugeMethods"},
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def kafka_broker():
    """`host:port` of a private embedded Kafka broker (Tansu) on a free loopback port.

    Memory storage: topics live until the end of the test session. Use unique topic names.
    """
    from fink_pipeline.kafka.broker import EmbeddedBroker

    broker = EmbeddedBroker()
    address = broker.start()
    try:
        yield address
    finally:
        broker.stop()


@pytest.fixture
def kafka_settings(kafka_broker):
    """`KafkaSettings` (PLAINTEXT) for the session's embedded broker."""
    from fink_pipeline.kafka.settings import KafkaSettings

    return KafkaSettings(bootstrap_servers=kafka_broker)
