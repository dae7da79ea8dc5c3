"""Shared fixtures: one SparkSession and one Prefect test server per test session, hermetic homes.

The environment is set at import time, before anything imports Prefect or starts a JVM.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_HOME = Path(tempfile.mkdtemp(prefix="winnow-tests-"))
os.environ.pop("PREFECT_API_URL", None)
os.environ.update({
    "PREFECT_HOME": str(_HOME / "prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DO_NOT_TRACK": "1",
    "HF_HOME": str(_HOME / "hf"),
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "SPARK_LOCAL_IP": "127.0.0.1",
    "PYSPARK_PYTHON": sys.executable,
    "PYSPARK_DRIVER_PYTHON": sys.executable,
})

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "data"


@pytest.fixture(scope="session")
def spark():
    from pipelines.spark import get_spark

    # The driver heap is sized from the machine, as for a user's local run (get_spark without
    # driver_memory): Spark's 1g default is exhausted by one 10 MB document, and the suite runs
    # 12 MB (test_dedup_minhash) and 50 MB (test_hostile) documents through this one JVM.
    session = get_spark("local[2]", app_name="winnow-tests", shuffle_partitions=2)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def ctx(spark):
    from pipelines.stage import StageContext

    context = StageContext(spark=spark, seed=0)
    yield context
    context.release()


@pytest.fixture(scope="session")
def test_home() -> Path:
    return _HOME
