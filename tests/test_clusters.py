"""The whole flow on real clusters started on this machine (tests/local_clusters.py): every Spark
stage through ``spark-submit --master spark://...``, every Ray stage through ``ray job submit``,
driven by ``rdt run-all --submit`` as the cron entry in deploy/ runs it, on a lake whose path
holds a space and is given as a ``file://`` URI. The clusters' own APIs and logs show where the
work ran."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_config, write_config

from jobs import generate
from jobs.config import load_config
from jobs.run_all import STAGES
from rdt_spark.lake import table_path
from rdt_spark.lake_uris import open_delta

ROOT = Path(__file__).resolve().parents[1]
PATIENTS = 40
# Each stage starts a driver and two executors, three cold JVMs sharing two cores on little data:
# without the optimising JIT compiler (C2) and with one GC thread, ingest plus tokenize took 78 s
# instead of 145 s. (In local mode, where one JVM does all the work, the same options were slower.)
SMALL_JVM = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:CICompilerCount=1"


def cron_command() -> tuple[dict[str, str], str]:
    """deploy/cron.example's variables and the command of its schedule line."""
    variables, command = {}, None
    for line in (ROOT / "deploy" / "cron.example").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, eq, value = line.partition("=")
        if eq and re.fullmatch(r"[A-Z_]+", name.strip()):
            variables[name.strip()] = value.strip()
        else:
            command = line.split(None, 5)[5]  # after minute hour day month weekday
    assert command, "deploy/cron.example has no schedule line"
    return variables, command


def cluster_config(folder: Path, clusters):
    lake = folder / "lake with space"
    cfg = small_config(lake, PATIENTS)
    spark_conf = {**cfg.spark.conf, "spark.executor.cores": "1", "spark.cores.max": "2",
                  "spark.executor.memory": "1g", "spark.driver.memory": "1g",
                  "spark.driver.extraJavaOptions": SMALL_JVM,
                  "spark.executor.extraJavaOptions": SMALL_JVM}
    cfg = cfg.replace(
        lake=lake.as_uri(),  # file:///.../lake%20with%20space
        spark=dataclasses.replace(cfg.spark, master=clusters.spark_master, conf=spark_conf),
        ray=dataclasses.replace(cfg.ray, address="auto", num_cpus=None,
                                submit_address=clusters.ray_dashboard),
        model=dataclasses.replace(cfg.model, d_model=16, n_layers=1, n_heads=2, max_seq_len=64),
        train=dataclasses.replace(cfg.train, epochs=1, num_workers=1, cpus_per_worker=1),
        fusion=dataclasses.replace(cfg.fusion, epochs=1),
        gbm=dataclasses.replace(cfg.gbm, num_boost_round=20, early_stopping_rounds=5),
        evaluate=dataclasses.replace(cfg.evaluate, temporal_cutoff=None, windows_days=[0],
                                     max_points_per_patient=2),
    )
    return write_config(cfg, folder / "cluster.yaml")


def rdt(*args: str, env: dict | None = None, timeout: int = 2400) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("rdt")), *args], cwd=ROOT,
                          env={**os.environ, "PYSPARK_PYTHON": sys.executable, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def runs_table(lake: str):
    return open_delta(table_path(lake, "ops.runs")).to_pandas().sort_values("started")


@pytest.fixture(scope="module")
def on_clusters(spark, tmp_path_factory):
    """The flow run twice through the clusters: once to build everything, once by the cron
    command with nothing changed; then the clusters' accounts, and the clusters stopped. The
    registry (the source a scheduled run starts from) is simulated beforehand, in this process."""
    from local_clusters import LocalClusters

    folder = tmp_path_factory.mktemp("clusters")
    # A run stopped from outside (CI's timeout, kill) unwinds too, so the clusters still stop.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    with LocalClusters(folder) as clusters:
        config = cluster_config(folder, clusters)
        generate.run(load_config(config), generate.Options())  # on `spark`'s local session
        first = rdt("run-all", "--config", str(config), "--submit")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        variables, command = cron_command()
        log = folder / "cron.log"
        second = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                timeout=600, env={**os.environ, **variables, "RDT_HOME": str(ROOT),
                                                  "RDT_CONFIG": str(config), "RDT_LOG": str(log),
                                                  "PYSPARK_PYTHON": sys.executable})
        assert second.returncode == 0, log.read_text()[-3000:]
        accounts = {"clusters": clusters, "config": config,
                    "lake": str(folder / "lake with space"), "cron_log": log.read_text(),
                    "spark": clusters.spark_state(), "executor_logs": clusters.executor_logs(),
                    "ray_nodes": clusters.ray_nodes(), "ray_tasks": clusters.ray_tasks(),
                    "ray_jobs": clusters.ray_jobs()}
        (folder / "accounts.json").write_text(json.dumps(
            {k: v for k, v in accounts.items() if k.startswith(("spark", "ray"))}, default=str))
        yield accounts
    signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def test_every_stage_ran_through_its_cluster_and_the_lake_with_a_space_holds_the_tables(
        on_clusters):
    runs = runs_table(on_clusters["lake"])
    first = runs[runs["run_id"] == runs["run_id"].min()]
    assert list(first["stage"]) == [s.job.name for s in STAGES if s.job is not generate.JOB]
    assert set(first["status"]) == {"succeeded"} and set(first["mode"]) == {"submit"}
    counts = {name: n for row in first["row_counts"] for name, n in json.loads(row).items()}
    assert counts["silver.ingest_state"] == PATIENTS
    assert counts["silver.events"] > 0 and counts["gold.timelines"] > 0
    assert counts["gold.embeddings"] > 0 and counts["gold.evaluation"] > 0
    outputs = {k: v for row in first["outputs"] for k, v in json.loads(row).items()}
    assert outputs["model"] and outputs["index"]


def test_spark_stages_ran_on_both_workers_executors(on_clusters):
    spark = on_clusters["spark"]
    assert len([w for w in spark["workers"] if w["state"] == "ALIVE"]) == 2
    apps = spark["completedapps"]
    spark_stages = [s for s in STAGES if s.engine == "spark" and s.job is not generate.JOB]
    assert len(apps) >= len(spark_stages), [a["name"] for a in apps]
    for app in apps:
        logs = on_clusters["executor_logs"].get(app["id"], [])
        workers = {p.parents[1].parent.name for p in logs}
        tasks = sum(len(re.findall(r"Finished task", p.read_text())) for p in logs)
        assert workers == {"spark-worker-1", "spark-worker-2"}, (app["id"], workers)
        assert tasks > 0, app["id"]


def test_ray_stages_ran_as_ray_jobs_on_the_worker_node(on_clusters):
    jobs = on_clusters["ray_jobs"]
    ray_stages = [s.job.run.__module__.removeprefix("jobs.") for s in STAGES if s.engine == "ray"]
    succeeded = [j["entrypoint"] for j in jobs if str(j["status"]).endswith("SUCCEEDED")]
    for module in ray_stages:
        assert any(f"jobs/{module}.py" in e for e in succeeded), (module, succeeded)
    head = {n["node_id"] for n in on_clusters["ray_nodes"] if n["is_head_node"]}
    worker = {n["node_id"] for n in on_clusters["ray_nodes"] if not n["is_head_node"]}
    # Work is what needs a CPU: Ray Train's and Ray Data's coordinators (no CPU) may sit anywhere.
    ran = [t for t in on_clusters["ray_tasks"] if t["node_id"] and t["state"] == "FINISHED"]
    work = [t for t in ran if (t.get("required_resources") or {}).get("CPU", 0) > 0]
    assert work and {t["node_id"] for t in work} == worker, \
        sorted({t["name"] for t in work if t["node_id"] in head})
    # The training loop and Ray Data's reads and inference ran there (names as Ray gives them).
    for what in ("RayTrainWorker", "Read"):
        nodes = {t["node_id"] for t in ran if what in str(t["name"])}
        assert nodes == worker, (what, nodes, sorted({str(t["name"]) for t in ran})[:40])


def test_the_cron_run_with_nothing_changed_skips_every_stage(on_clusters):
    runs = runs_table(on_clusters["lake"])
    second = runs[runs["run_id"] == runs["run_id"].max()]
    assert list(second["stage"]) == [s.job.name for s in STAGES if s.job is not generate.JOB]
    assert set(second["status"]) == {"skipped"}, second[["stage", "reason"]]
    assert "rdt run-all finished" in on_clusters["cron_log"]


def test_a_changed_source_row_makes_ingest_and_what_follows_due(on_clusters):
    import pyarrow as pa
    from deltalake import write_deltalake

    lake = on_clusters["lake"]
    path = table_path(lake, "omop.measurement")
    before = open_delta(path).version()
    one = open_delta(path).to_pyarrow_dataset().head(1)
    one = one.set_column(one.schema.get_field_index("measurement_id"), "measurement_id",
                         pa.array([10**12], one.schema.field("measurement_id").type))
    write_deltalake(path, one, mode="append")
    dry = rdt("run-all", "--config", str(on_clusters["config"]), "--dry-run", "--verbose")
    assert dry.returncode == 0, dry.stderr[-3000:]
    said = dry.stdout + dry.stderr
    assert f"ingest: would run: omop.measurement {before} -> {before + 1}" in said
    for later in ("tokenize", "states"):
        assert f"{later}: would run: after ingest" in said, said[-3000:]
    assert "train: would run: after tokenize" in said
