"""SIGKILL each long job part-way, as a scheduler or a dying node would: readers still see the
previous table versions and the previous model and index, nothing partial is visible, and the
re-run converges to exactly the contents of an uninterrupted run.

The lake is a copy of the whole flow's (``conftest.flow``, itself an uninterrupted run). Each job
is started again on it in a subprocess (``tests/sigkill_at.py``) that kills its process group
(driver, Spark JVM, Ray) at named points: between two Delta commits, in the middle of a Delta
write, while Ray writes staging files or trains, while a model or index version is being published.
After each kill every output of the job must read exactly as before; the re-run must then read
exactly as the uninterrupted run (contents compared row by row through a digest of every column,
except the ingest run's own id). The incremental ingest is killed on a changed extract: there each
table must read as before or as the finished run, and the finished run as a full ingest.

``make test`` kills each job once, at the first of its points, the most telling one (ingest in its
incremental mode; of the jobs that only commit tables through ``write_table``, tokenize alone); the
long profile ``RDT_KILL_POINTS=all pytest tests/test_kill_jobs.py`` kills each at every point,
generate and a full ingest too, and compares the finished incremental ingest with a full one.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import write_config
from deltalake import DeltaTable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.registry import JOBS
from ray_training.index import MANIFEST, ROWS, SCALING, indexes
from ray_training.train import CONFIG_FILE, MODEL_FILE, models
from rdt_spark.lake import read_table, table_path, write_table

ROOT = Path(__file__).resolve().parents[1]
KILLER = Path(__file__).with_name("sigkill_at.py")
SILVER = ["silver.events", "silver.rejects", "silver.ingest_state"]
GOLD = ["gold.vocab", "gold.timelines", "gold.tasks"]
RUN_IDS = ["ingest_run_id"]  # the run's own id: the one column a re-run changes by design
EVERY_POINT = os.environ.get("RDT_KILL_POINTS", "first") == "all"


def kill_points(points: list) -> list:
    """Every point in the long profile, else the first (each kill restarts a job: a minute)."""
    return points if EVERY_POINT else points[:1]


def delta_tables(lake: str, schemas: tuple[str, ...]) -> list[str]:
    return sorted(f"{s}.{p.name}" for s in schemas for p in (Path(lake) / s).iterdir()
                  if (p / "_delta_log").is_dir())


def digests(spark, lake: str, names: list[str]) -> dict[str, tuple[int, int, int]]:
    """Per table: rows and two order-free sums of per-row hashes over every column. Equal digests,
    equal contents (a row lost, doubled or changed in any column changes them). One Spark job for
    all the tables (a union of one-row aggregates), not a job each."""
    def one(name: str):
        df = read_table(spark, lake, name)
        row = F.to_json(F.struct(*[F.col(c) for c in sorted(df.columns) if c not in RUN_IDS]))
        return df.select(F.xxhash64(row).alias("a"), F.hash(row).alias("b")).agg(
            F.lit(name).alias("name"), F.count("*").alias("rows"),
            F.sum(F.col("a") % 1_000_000_007).alias("a"), F.sum("b").alias("b"))
    found = {r["name"]: (r["rows"], r["a"], r["b"])  # small: one row per table
             for r in functools.reduce(DataFrame.unionByName, map(one, names)).collect()}
    for name in names:
        rows_by_delta_rs = DeltaTable(table_path(lake, name)).to_pyarrow_dataset().count_rows()
        assert rows_by_delta_rs == found[name][0], (
            f"{name}: delta-rs and Spark read different versions")
    return found


def model_contents(run_dir: str) -> tuple[dict, dict]:
    folder = models(run_dir).current()
    return json.loads((folder / CONFIG_FILE).read_text()), torch.load(folder / MODEL_FILE)


def same_model(a: tuple[dict, dict], b: tuple[dict, dict]) -> bool:
    return a[0] == b[0] and a[1].keys() == b[1].keys() and all(
        torch.equal(a[1][k], b[1][k]) for k in a[1])


def index_contents(run_dir: str) -> dict:
    """The current index as a reader sees it, without build time and absolute paths."""
    folder = indexes(run_dir).current()
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest.pop("built_at")
    manifest.pop("index_version")  # a hash that includes the sources' paths: a copied lake's differs
    for pinned in ("embeddings", "tasks", "states", "trajectories"):
        manifest[pinned].pop("path")
    with np.load(folder / SCALING) as arrays:  # the search space: whatever arrays it keeps
        scaling = {name: arrays[name].tolist() for name in sorted(arrays.files)}
    rows = {s["path"]: pd.read_parquet(folder / s["path"] / ROWS).to_json()
            for s in manifest["shards"]}
    return {"manifest": manifest, "rows": rows,
            "scaling": scaling}


@dataclasses.dataclass
class Lake:
    cfg: object
    conf: Path
    log: Path


@pytest.fixture
def lake(flow, spark, tmp_path_factory) -> Lake:
    """A copy of the flow's lake (run dir included), and a config file naming it: one per test,
    so a re-run in one test (a new Delta version of gold.timelines, say) cannot change the input
    versions, and so the model and index versions, another test compares with the flow's."""
    cfg, _ = flow
    root = tmp_path_factory.mktemp("killed")
    shutil.copytree(cfg.lake, root / "lake", symlinks=True)
    copy = cfg.replace(lake=str(root / "lake"), run_dir=str(root / "lake" / "_runs"))
    return Lake(copy, write_config(copy, root / "kill.yaml"), root / "killed.log")


class Launcher:
    """``sigkill_at.py --serve``: forks each job to be killed from one process that imported
    the jobs once."""

    def __init__(self):
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
        self.proc = subprocess.Popen([sys.executable, str(KILLER), "--serve"], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def start(self, point: str, argv: list[str], log: Path) -> int:
        self.proc.stdin.write(json.dumps({"point": point, "argv": argv, "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["pid"]

    def ended(self, timeout: float) -> int | None:
        """The job's exit code, or None if it is still running after ``timeout`` seconds."""
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return json.loads(self.proc.stdout.readline())["returncode"] if ready else None

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def launcher():
    started = Launcher()
    yield started
    started.close()


def run_killed(lake: Lake, launcher: Launcher, point: str, job: str, *options: str,
               watch: str | None = None, timeout: int = 600) -> None:
    """Run ``rdt <job>`` in a process group of its own and SIGKILL the group at ``point`` (or
    when a new file matching the glob ``watch`` appears under the lake: a write in progress);
    returns once every process of the group is gone."""
    with open(lake.log, "a") as log:
        log.write(f"\n== {job} {' '.join(options)} killed at {point or watch}\n")
    root = Path(lake.cfg.lake)
    there = set(root.glob(watch)) if watch else set()
    pid = launcher.start(point or "none:#0", [job, "--config", str(lake.conf), *options],
                         lake.log)
    deadline, code = time.time() + timeout, None
    while code is None and time.time() < deadline:
        if watch and set(root.glob(watch)) - there:
            os.killpg(pid, signal.SIGKILL)
        code = launcher.ended(0.05)
    if code is None:
        os.killpg(pid, signal.SIGKILL)
        pytest.fail(f"rdt {job} neither finished nor reached {point or watch} in {timeout}s")
    assert code == -signal.SIGKILL, (
        f"rdt {job} exited with {code} before {point or watch} (log {lake.log})")
    for _ in range(200):  # the JVM and Ray's processes die with the group
        if not live_members(pid):
            return
        time.sleep(0.05)
    os.killpg(pid, signal.SIGKILL)
    pytest.fail(f"processes of the killed rdt {job} outlived it: {live_members(pid)}")


def live_members(group: int) -> list[int]:
    """Processes of a process group that are not zombies waiting to be reaped."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def rerun(lake: Lake, job: str, **options) -> dict:
    job_ = JOBS[job]
    return job_.run(lake.cfg, job_.options(**options))


TABLE_JOBS = {
    # job: output tables, and kill points: (point, None) at a call between two Delta commits,
    # (None, glob) when the first new data file of a write appears (a Delta write in progress).
    "generate": (lambda lake: delta_tables(lake, ("omop", "ext", "truth")),
                 [(None, "omop/measurement/*.parquet"),
                  ("call:rdt_spark.lake:write_table#3", None)]),
    "ingest": (lambda lake: SILVER, [("call:rdt_spark.lake:write_table#2", None),
                                     (None, "silver/ingest_state/*.parquet")]),
    "tokenize": (lambda lake: GOLD, [(None, "gold/timelines/*.parquet"),
                                     ("call:rdt_spark.lake:write_table#3", None)]),
}


# make test kills tokenize, in the middle of its second table's Delta write, and ingest in its
# incremental mode (the last test), where it replaces patients' rows table by table. A full ingest
# and generate commit their tables through the same write_table as tokenize: killing them is left
# to the long profile (generate is the simulator, not a stage a scheduled run repeats).
@pytest.mark.parametrize("job", list(TABLE_JOBS) if EVERY_POINT else ["tokenize"])
def test_a_killed_spark_job_leaves_its_tables_as_they_were_and_its_rerun_converges(
        job, lake, launcher, flow, spark):
    tables, points = TABLE_JOBS[job]
    names = tables(lake.cfg.lake)
    uninterrupted = digests(spark, flow[0].lake, names)  # the copy's, before any kill
    options = ["--full"] if job == "ingest" else []
    for point, watch in kill_points(points):
        run_killed(lake, launcher, point, job, *options, watch=watch)
        assert digests(spark, lake.cfg.lake, names) == uninterrupted, point or watch
    rerun(lake, job, **({"full": True} if job == "ingest" else {}))
    assert digests(spark, lake.cfg.lake, names) == uninterrupted


def test_a_killed_training_leaves_the_published_model_and_its_rerun_converges(
        lake, launcher, flow):
    before = model_contents(lake.cfg.run_dir)
    assert same_model(before, model_contents(flow[0].run_dir))
    # While Ray Train runs; once trained, before the staged version moves into place; moved,
    # before CURRENT switches to it.
    for point, watch in kill_points([(None, "_runs/ray_train/*/checkpoint_*"),
                                     (r"audit:os.rename:models/events-\w+\.tmp#1", None),
                                     (r"audit:os.rename:models/CURRENT\.tmp#1", None)]):
        run_killed(lake, launcher, point, "train", watch=watch)
        assert same_model(model_contents(lake.cfg.run_dir), before), point
    rerun(lake, "train")
    assert same_model(model_contents(lake.cfg.run_dir), before)


def test_a_killed_embed_leaves_the_embeddings_as_they_were_and_its_rerun_converges(
        lake, launcher, flow, spark):
    uninterrupted = digests(spark, flow[0].lake, ["gold.event_embeddings"])
    # While Ray Data writes its staging files; inside the Delta write of gold.event_embeddings.
    for point, watch in kill_points([(None, "gold/event_embeddings/*.parquet"),
                                     (None, "_runs/staging/embeddings/*.parquet")]):
        run_killed(lake, launcher, point, "embed", watch=watch)
        assert digests(spark, lake.cfg.lake, ["gold.event_embeddings"]) == uninterrupted, point
    rerun(lake, "embed")
    assert digests(spark, lake.cfg.lake, ["gold.event_embeddings"]) == uninterrupted


def fusion_contents(run_dir: str) -> tuple[dict, dict]:
    from ray_training.fusion_train import CONFIG_FILE as FUSION_CONFIG
    from ray_training.fusion_train import STATE_FILE
    from ray_training.fusion_train import models as fusion_models

    folder = fusion_models(run_dir).current()
    return (json.loads((folder / FUSION_CONFIG).read_text()),
            torch.load(folder / STATE_FILE)["model"])


def test_a_fusion_training_killed_after_some_epochs_resumes_to_the_uninterrupted_weights(
        lake, launcher, flow, spark):
    """rdt fuse is killed once two epochs have ended (their checkpoints reported); the re-run
    resumes from the last checkpoint, not from scratch, and ends with the same weights as the
    flow's uninterrupted training of the same version."""
    from ray_training.fusion_train import METRICS_FILE

    before = fusion_contents(lake.cfg.run_dir)
    version = before[0]["model_version"]
    storage = Path(lake.cfg.run_dir) / "ray_train"
    shutil.rmtree(storage / version)  # the copied lake's finished run: train it again
    metrics = storage / version / METRICS_FILE

    def epochs_done() -> int:
        return len(metrics.read_text().splitlines()) if metrics.exists() else 0

    with open(lake.log, "a") as log:
        log.write("\n== fuse killed after two epochs\n")
    pid = launcher.start("none:#0", ["fuse", "--config", str(lake.conf)], lake.log)
    deadline, code = time.time() + 600, None
    while code is None and epochs_done() < 3 and time.time() < deadline:
        code = launcher.ended(0.2)
    assert code is None, f"rdt fuse ended ({code}) before its third epoch (log {lake.log})"
    os.killpg(pid, signal.SIGKILL)
    assert launcher.ended(60) == -signal.SIGKILL
    killed_after = epochs_done()
    assert killed_after < lake.cfg.fusion.epochs
    rerun(lake, "fuse")
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    resumed = [m for m in lines[killed_after:]]
    assert resumed and resumed[0]["resumed_from"] and resumed[0]["resumed_from"] >= 1
    assert [m["epoch"] for m in resumed][-1] == lake.cfg.fusion.epochs - 1
    after = fusion_contents(lake.cfg.run_dir)
    assert after[0] == before[0]
    for name, weights in before[1].items():
        torch.testing.assert_close(after[1][name], weights, rtol=0, atol=1e-6, msg=name)


def test_a_killed_index_build_leaves_the_current_index_and_its_rerun_converges(
        lake, launcher, flow):
    from ray_training.twin import TwinIndex

    uninterrupted = index_contents(flow[0].run_dir)
    assert index_contents(lake.cfg.run_dir) == uninterrupted
    for point in kill_points([r"audit:os.rename:index/idx-\w+\.tmp#1",
                              # between the Ray rounds: slices summarised, shards not built
                              "call:ray_training.index:SearchSpace.from_moments#1",
                              r"audit:os.rename:index/CURRENT\.tmp#1"]):
        run_killed(lake, launcher, point, "index")
        assert index_contents(lake.cfg.run_dir) == uninterrupted, point
        assert TwinIndex.current(lake.cfg.run_dir).shards  # and it loads for search
    rerun(lake, "index")
    assert index_contents(lake.cfg.run_dir) == uninterrupted


def test_a_killed_incremental_ingest_leaves_each_table_before_or_after_and_converges(
        lake, launcher, spark):
    cfg = lake.cfg
    measurement = read_table(spark, cfg.lake, "omop.measurement")
    ids = [r.person_id for r in measurement.select("person_id").distinct()
           .orderBy("person_id").limit(6).collect()]  # small: six ids
    changed = (measurement.where(~F.col("person_id").isin(ids[:3]))  # three lose their rows
               .withColumn("value_as_number", F.when(F.col("person_id").isin(ids[3:]),
                                                     F.col("value_as_number") + 1)
                           .otherwise(F.col("value_as_number"))))  # three get new values
    write_table(changed.localCheckpoint(), cfg.lake, "omop.measurement")
    before = digests(spark, cfg.lake, SILVER)
    seen = []
    for point, watch in kill_points([("call:rdt_spark.lake:replace_subjects#2", None),
                                     (None, "silver/ingest_state/*.parquet")]):
        run_killed(lake, launcher, point, "ingest", watch=watch)
        seen.append(digests(spark, cfg.lake, SILVER))
    assert rerun(lake, "ingest")["mode"] == "incremental"
    after = digests(spark, cfg.lake, SILVER)
    assert after != before
    for state in seen:
        for name in SILVER:
            assert state[name] in (before[name], after[name]), name
    if EVERY_POINT:
        rerun(lake, "ingest", full=True)
        assert digests(spark, cfg.lake, SILVER) == after  # the same as a full ingest
