"""Shared fixtures: one Spark session, one local Ray, and one small registry run through the
whole flow once per test run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

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
    from ray_training.cluster import connect
    from ray_training.settings import RayConfig

    connect(RayConfig(None, 2))
    yield


def small_config(lake: Path, patients: int) -> Config:
    cfg = load_config(ROOT / "conf" / "local.yaml", {"lake": str(lake)})
    return cfg.replace(
        spark=SparkConfig("local[2]", "rdt-tests", TEST_SPARK_CONF),
        generate=dataclasses.replace(cfg.generate, patients=patients, partitions=2),
        train=dataclasses.replace(cfg.train, epochs=4),
        fusion=dataclasses.replace(cfg.fusion, epochs=4),
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


class BackgroundFlow:
    """A few hundred simulated patients through the whole flow (generate -> ... -> evaluate),
    then a twin query and a MEDS export, in one process of its own at the most verbose logging
    (``tests/run_flow.py``), as ``rdt <job> --verbose`` runs each. It starts with the session
    and runs while the tests that do not need it run (they are ordered first)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.cfg = small_config(folder / "lake", patients=400)
        verbose = self.cfg.replace(spark=dataclasses.replace(
            self.cfg.spark, conf={**self.cfg.spark.conf, "spark.log.level": "INFO"}))
        self.output = FlowOutput(folder / "console.log", Path(self.cfg.run_dir), folder / "ray")
        self.output.ray_tmp.mkdir()
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable,
               "RAY_TMPDIR": str(self.output.ray_tmp)}
        with open(self.output.console, "w") as console:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "run_flow.py"),
                                          str(write_config(verbose, folder / "flow.yaml")),
                                          str(folder / "results.json")], cwd=ROOT, env=env,
                                         stdout=console, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def result(self, timeout: float = 3600) -> tuple[Config, dict, FlowOutput]:
        code = self.proc.wait(timeout=timeout)
        assert code == 0, self.output.console.read_text()[-5000:]
        return self.cfg, json.loads((self.folder / "results.json").read_text()), self.output

    def stop(self) -> None:
        if self.proc.poll() is None:  # a run cut short: take its Spark JVM and Ray along
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _needs_flow(item) -> bool:
    return "flow_run" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items):
    items.sort(key=_needs_flow)  # stable: file order within each group


@pytest.fixture(scope="session", autouse=True)
def background_flow(request, tmp_path_factory):
    """The flow, started at once when any selected test needs it."""
    started = (BackgroundFlow(tmp_path_factory.mktemp("flow"))
               if any(_needs_flow(item) for item in request.session.items) else None)
    yield started
    if started is not None:
        started.stop()


@pytest.fixture(scope="session")
def flow_run(background_flow) -> tuple[Config, dict, FlowOutput]:
    """The whole flow's config, each job's summary and where its output went, once it ended."""
    return background_flow.result()


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


def table_fingerprint(frame) -> tuple[int, str]:
    """Row count and an order-free sum of hashes of each row's JSON (column names and values):
    equal tables give equal fingerprints."""
    row = frame.agg(F.count("*"), F.sum(F.xxhash64(F.to_json(F.struct(*frame.columns)))
                                        .cast("decimal(38,0)"))).first()  # small: one row
    return int(row[0]), str(row[1])


# What the simulator writes for 60 patients, seed 3, conf/local.yaml's dates (see
# test_simulate's pinned patients: a change to the model's output updates these on purpose).
PINNED_REGISTRY = {  # table: table_fingerprint (rows, sum of xxhash64 of each row's JSON)
    "ext.imaging": (124, "-13919296030930496798"),
    "ext.omics": (15, "18990219116335266937"),
    "ext.omics_genes": (300, "144039864060370644626"),
    "omop.cdm_source": (1, "4720730893412639480"),
    "omop.concept": (44, "-34360698129552883560"),
    "omop.condition_occurrence": (266, "-114514798486661227735"),
    "omop.death": (1, "1751175324854564079"),
    "omop.drug_exposure": (2961, "-508297457009596933583"),
    "omop.measurement": (10925, "300735269892304782700"),
    "omop.note": (1041, "-42565399662386281807"),
    "omop.observation_period": (60, "63525969870878545068"),
    "omop.person": (60, "40372859613502615552"),
    "omop.visit_occurrence": (1614, "-127190970048919504833"),
    "truth.patient_latent": (60, "-62206270131379902409"),
    "truth.treatment_response": (2051, "656154580988290461299"),
}
