"""Shared fixtures: one Spark session, one local Ray, and one small registry run through the
whole flow once per test run."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from jobs.config import Config, load_config
from rdt_spark.session import SparkConfig

ROOT = Path(__file__).resolve().parents[1]
TEST_SPARK_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.databricks.delta.snapshotPartitions": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.memory": "3g",
}


@pytest.fixture(scope="session")
def spark():
    from rdt_spark.session import spark_session

    session = spark_session("local[2]", "rdt-tests", TEST_SPARK_CONF)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ray_local():
    from ray_training.cluster import RayConfig, connect

    connect(RayConfig(None, 2))
    yield


def small_config(lake: Path, patients: int) -> Config:
    cfg = load_config(ROOT / "conf" / "local.yaml", {"lake": str(lake)})
    return cfg.replace(
        spark=SparkConfig("local[2]", "rdt-tests", TEST_SPARK_CONF),
        generate=dataclasses.replace(cfg.generate, patients=patients, partitions=2),
        train=dataclasses.replace(cfg.train, epochs=4),
        gbm=dataclasses.replace(cfg.gbm, num_boost_round=150, early_stopping_rounds=20),
    )


@pytest.fixture(scope="session")
def flow(tmp_path_factory, spark, ray_local):
    """A few hundred simulated patients through the whole flow (generate -> ... -> evaluate), once."""
    from jobs.registry import FLOW

    cfg = small_config(tmp_path_factory.mktemp("lake"), patients=400)
    return cfg, {job.name: job.run(cfg, job.options()) for job in FLOW}


def single_partition_steps(df) -> list[str]:
    """Plan lines that funnel all rows through one partition (a global sort or window); one
    under a limit carries a bounded number of rows and is not counted."""
    lines = df._jdf.queryExecution().executedPlan().toString().splitlines()
    return [line.strip() for i, line in enumerate(lines) if "SinglePartition" in line
            and not (i > 0 and "GlobalLimit" in lines[i - 1])]
