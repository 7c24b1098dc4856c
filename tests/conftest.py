"""Shared fixtures: one Spark session, one local Ray, and one small registry run through the
whole flow once per test run."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def write_config(cfg: Config, path: Path) -> Path:
    """``cfg`` as a YAML config file, for a job run in another process."""
    path.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
    return path


@dataclasses.dataclass(frozen=True)
class FlowOutput:
    console: Path  # everything the flow's process wrote to its terminal
    run_dir: Path  # <run_dir>/logs holds the job logs
    ray_tmp: Path  # Ray's session logs


@pytest.fixture(scope="session")
def flow_run(tmp_path_factory) -> tuple[Config, dict, FlowOutput]:
    """A few hundred simulated patients through the whole flow (generate -> ... -> evaluate),
    then a twin query and a MEDS export, once, in one process at the most verbose logging
    (``tests/run_flow.py``), as ``rdt <job> --verbose`` runs each."""
    folder = tmp_path_factory.mktemp("flow")
    cfg = small_config(folder / "lake", patients=400)
    verbose = cfg.replace(spark=dataclasses.replace(
        cfg.spark, conf={**cfg.spark.conf, "spark.log.level": "INFO"}))
    output = FlowOutput(folder / "console.log", Path(cfg.run_dir), folder / "ray")
    output.ray_tmp.mkdir()
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "RAY_TMPDIR": str(output.ray_tmp)}
    with open(output.console, "w") as console:
        done = subprocess.run([sys.executable, str(ROOT / "tests" / "run_flow.py"),
                               str(write_config(verbose, folder / "flow.yaml")),
                               str(folder / "results.json")], cwd=ROOT, env=env,
                              stdout=console, stderr=subprocess.STDOUT, timeout=3600)
    assert done.returncode == 0, output.console.read_text()[-5000:]
    return cfg, json.loads((folder / "results.json").read_text()), output


@pytest.fixture(scope="session")
def flow(flow_run, spark, ray_local):
    """The whole flow's config and each job's summary (``flow_run``)."""
    cfg, results, _ = flow_run
    return cfg, results


def single_partition_steps(df) -> list[str]:
    """Plan lines that funnel all rows through one partition (a global sort or window); one
    under a limit carries a bounded number of rows and is not counted."""
    lines = df._jdf.queryExecution().executedPlan().toString().splitlines()
    return [line.strip() for i, line in enumerate(lines) if "SinglePartition" in line
            and not (i > 0 and "GlobalLimit" in lines[i - 1])]
