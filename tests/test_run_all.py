"""rdt run-all in this process: it runs what changed and only that, and records every decision
in ops.runs. (tests/test_clusters.py runs it through the clusters, as the cron entry does.)"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from conftest import small_config
from pyspark.sql import functions as F

from jobs import run_all
from jobs.job import JobFailed
from rdt_spark.lake import table_path
from rdt_spark.lake_uris import open_delta
from rdt_spark.simulator import GenerateConfig, generate_registry

SPARK_STAGES = "ingest,tokenize,states"


@pytest.fixture(scope="module")
def registry(spark, tmp_path_factory):
    """A registry as a folder of OMOP Parquet files (one folder per table), and a lake."""
    root = tmp_path_factory.mktemp("run_all")
    tables, records = generate_registry(spark, GenerateConfig(30, 5, 2, "2016-01-01", "2023-12-31"))
    for name, frame in tables.items():
        if not name.startswith("truth."):
            frame.write.parquet(str(root / "source" / name.removeprefix("omop.").replace(".", "_")))
    records.unpersist()
    return small_config(root / "lake", patients=30), root / "source"


def _run(cfg, folder, **options):
    return run_all.run(cfg, run_all.Options(only=SPARK_STAGES, source=str(folder), **options))


def _runs(cfg, result):
    runs = open_delta(table_path(cfg.lake, "ops.runs")).to_pandas()
    return runs[runs["run_id"] == result["run_id"]].set_index("stage")


def test_a_rerun_skips_what_did_not_change_and_a_new_source_row_flows_through(spark, registry):
    cfg, folder = registry
    first = _run(cfg, folder)
    assert first["ran"] == ["ingest", "tokenize", "states"]
    runs = _runs(cfg, first)
    assert set(runs["status"]) == {"succeeded"} and set(runs["reason"]) == {"never ran"}
    assert runs.loc["ingest", "mode"] == "in-process" and runs.loc["ingest", "user"]
    assert '"silver.events": "0"' in runs.loc["ingest", "outputs"]
    assert '"gold.timelines"' in runs.loc["tokenize", "row_counts"]

    second = _run(cfg, folder)
    assert second["skipped"] == ["ingest", "tokenize", "states"]
    assert set(_runs(cfg, second)["reason"]) == {"unchanged"}

    # One new CRP for patient 5 arrives as a new file of the measurement table.
    measurement = spark.read.parquet(str(folder / "measurement"))
    measurement.where(F.col("person_id") == 5).limit(1) \
        .withColumn("measurement_id", F.lit(5_099_999).cast("long")) \
        .withColumn("measurement_datetime", F.lit(dt.datetime(2023, 6, 1, 10))) \
        .write.mode("append").parquet(str(folder / "measurement"))
    third = _run(cfg, folder)
    assert third["ran"] == ["ingest", "tokenize", "states"]
    runs = _runs(cfg, third)
    assert runs.loc["ingest", "reason"].startswith("source/measurement/part-")
    assert runs.loc["ingest", "reason"].count("->") == 1  # one new file; checksums do not count
    assert runs.loc["tokenize", "reason"] == 'silver.events 0 -> 1'
    events = open_delta(table_path(cfg.lake, "silver.events")).to_pandas()
    assert (events["source_row_id"] == 5_099_999).sum() == 1
    # The second ingest was incremental: it rewrote patient 5's rows and no one else's.
    rewritten = events.groupby("ingest_run_id")["subject_id"].unique()
    assert len(rewritten) == 2 and [5] in [list(s) for s in rewritten]


def test_a_changed_config_section_reruns_only_the_stages_that_read_it(registry):
    cfg, folder = registry
    _run(cfg, folder)
    changed = cfg.replace(states=dataclasses.replace(cfg.states, das28_tolerance_days=30))
    result = _run(changed, folder)
    assert result["ran"] == ["states"] and result["skipped"] == ["ingest", "tokenize"]
    assert _runs(changed, result).loc["states", "reason"] == "config (tokenize, states) changed"


def test_a_dry_run_says_what_would_run_and_writes_nothing(registry):
    cfg, folder = registry
    before = open_delta(table_path(cfg.lake, "ops.runs")).version()
    forced = run_all.run(cfg, run_all.Options(only=SPARK_STAGES, source=str(folder),
                                              dry_run=True, force=True))
    assert forced["ran"] == ["ingest", "tokenize", "states"]
    assert open_delta(table_path(cfg.lake, "ops.runs")).version() == before


def test_an_unknown_stage_is_refused_by_name(registry):
    cfg, folder = registry
    with pytest.raises(JobFailed, match="no stage 'tokenise'"):
        run_all.run(cfg, run_all.Options(only="ingest,tokenise", source=str(folder)))


def test_a_submission_ray_refused_for_want_of_an_agent_is_made_again_and_a_failed_job_is_not(
        registry, tmp_path, monkeypatch):
    cfg, _ = registry
    monkeypatch.setattr(run_all, "SUBMIT_WAIT_SECONDS", 0.0)
    stage = run_all.BY_NAME["train"]
    run_id = "test-submit"
    (Path(cfg.run_dir) / "runs" / run_id).mkdir(parents=True, exist_ok=True)
    marker = tmp_path / "tried"
    refused_once = ["bash", "-c", f"if [ -e {marker} ]; then echo ran; else touch {marker}; "
                    f"echo 'RuntimeError: {run_all.NOT_SUBMITTED}, please try again later.'; "
                    "exit 1; fi"]
    run_all.submit(stage, refused_once, cfg, run_id)
    assert (Path(cfg.run_dir) / "runs" / run_id / "train.log").read_text().count("bash -c") == 2
    tries = tmp_path / "tries"
    failing = ["bash", "-c", f"echo x >> {tries}; echo 'Traceback: the job failed'; exit 1"]
    with pytest.raises(JobFailed, match="stage train failed on its cluster"):
        run_all.submit(stage, failing, cfg, run_id)
    assert tries.read_text().count("x") == 1


def test_a_spark_stage_is_submitted_with_the_configs_spark_settings(registry):
    """The driver's JVM starts before the job's session: its memory and JVM options reach it
    only on spark-submit's command line."""
    cfg, _ = registry
    command = run_all.command_line(run_all.BY_NAME["ingest"], cfg, Path("c.yaml"), run_all.Options())
    pairs = {command[i + 1] for i, arg in enumerate(command) if arg == "--conf"}
    assert {f"{key}={value}" for key, value in cfg.spark.conf.items()} <= pairs
    assert "spark.driver.memory=3g" in pairs
    assert command.index("--master") < command.index(str(run_all.ROOT / "jobs" / "ingest.py"))
