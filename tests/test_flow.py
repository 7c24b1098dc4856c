"""The whole flow on a few hundred simulated patients (built once, in conftest's `flow`)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from pyspark.sql import functions as F

from jobs import ingest
from jobs.cli import main
from ray_training.embed import EMBED_COLUMNS, Embedder, events_before
from ray_training.train import models
from ray_training.twin import QueryConfig, TwinIndex, twin_report
from rdt_spark.lake import read_table, table_path
from rdt_spark.pseudonyms import pseudonym

TABLES = ["omop.person", "omop.measurement", "truth.patient_latent", "silver.events",
          "silver.rejects", "gold.vocab", "gold.timelines", "gold.tasks", "gold.embeddings",
          "gold.evaluation"]


def test_every_stage_commits_a_delta_table(flow):
    cfg, _ = flow
    for name in TABLES:
        assert (Path(table_path(cfg.lake, name)) / "_delta_log").is_dir(), name


def test_ingest_accounts_for_every_row(flow):
    _, results = flow
    for row in results["ingest"]["tables"]:
        assert row["rows_in"] == row["accepted"] + row["rejected"], row
        assert row["rows_in"] > 0


def test_ray_reads_what_spark_wrote(flow, spark):
    cfg, _ = flow
    path = table_path(cfg.lake, "gold.timelines")
    spark_rows = read_table(spark, cfg.lake, "gold.timelines")
    ray_rows = ray.data.read_delta(path, columns=["subject_id", "tokens"])
    assert ray_rows.count() == spark_rows.count()
    first = spark_rows.orderBy("subject_id").first()
    same = ray_rows.filter(expr=f"subject_id == {first.subject_id}").take(1)[0]
    assert list(same["tokens"]) == first.tokens


def _timeline(spark, cfg, split):
    timelines = read_table(spark, cfg.lake, "gold.timelines").where(F.col("split") == split)
    row = timelines.where(F.size("prediction_times") >= 6).orderBy("subject_id").first()
    return {k: row[k] for k in EMBED_COLUMNS}


def _embed(embedder, row):
    batch = {k: np.array([row[k]], dtype=object) for k in EMBED_COLUMNS}
    batch["subject_id"] = np.array([row["subject_id"]])
    batch["times"] = np.array([np.asarray(row["times"], dtype="datetime64[us]")], dtype=object)
    batch["prediction_times"] = np.array(
        [np.asarray(row["prediction_times"], dtype="datetime64[us]")], dtype=object)
    return embedder(batch).to_pandas()


def test_no_event_at_or_after_a_prediction_time_reaches_its_embedding(flow, spark):
    cfg, _ = flow
    row = _timeline(spark, cfg, "test")
    at = row["prediction_times"][len(row["prediction_times"]) // 2]
    end = int(events_before(np.asarray(row["times"], dtype="datetime64[us]"),
                            np.asarray([at], dtype="datetime64[us]"))[0])
    assert 0 < end < len(row["tokens"])
    embedder = Embedder(str(models(cfg.run_dir).current()))
    stored = (read_table(spark, cfg.lake, "gold.embeddings")
              .where((F.col("subject_id") == row["subject_id"])
                     & (F.col("prediction_time") == at)).first().embedding)

    rng = np.random.default_rng(0)
    future_changed = dict(row, prediction_times=[at])
    future_changed["tokens"] = row["tokens"][:end] + list(
        rng.integers(2, 10, len(row["tokens"]) - end))
    future_changed["values"] = row["values"][:end] + [9.0] * (len(row["values"]) - end)
    truncated = {k: row[k][:end] if k in ("tokens", "ages", "deltas", "values", "times")
                 else row[k] for k in EMBED_COLUMNS}
    truncated["prediction_times"] = [at]
    for variant in (future_changed, truncated):
        got = _embed(embedder, variant)
        assert len(got) == 1
        np.testing.assert_allclose(got["embedding"][0], stored, atol=1e-4)


def test_query_never_returns_the_patient_itself(flow, spark):
    cfg, _ = flow
    index = TwinIndex.current(cfg.run_dir)
    assert index.manifest["splits"] == ["train"]
    subjects = (read_table(spark, cfg.lake, "gold.embeddings").where(F.col("split") == "train")
                .select("subject_id", "prediction_time").distinct().orderBy("subject_id")
                .limit(5).collect())
    for s in subjects:
        report = twin_report(index, s.subject_id, pd.Timestamp(s.prediction_time, tz="UTC"),
                             QueryConfig(k=50, min_cell_size=10))
        ids = [n["subject_id"] for n in report["neighbours"]]
        assert s.subject_id not in ids
        assert len(ids) == 50 and len(set(ids)) == 50


def test_index_manifest_pins_what_it_read(flow):
    _, results = flow
    manifest = results["index"]
    assert manifest["embeddings"]["version"] == results["embed"]["version"]
    assert manifest["model_version"] == results["train"]["model_version"]


def test_query_cli_prints_json_naming_the_patient_by_pseudonym(flow, spark, capsys):
    cfg, _ = flow
    row = _timeline(spark, cfg, "test")
    code = main(["query", "--config", "conf/local.yaml", "--lake", cfg.lake,
                 "--subject", str(row["subject_id"]),
                 "--time", row["prediction_times"][-1].isoformat(), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and "subject_id" not in report
    assert report["patient"] == pseudonym(row["subject_id"], cfg.privacy.key(cfg.run_dir))
    assert report["forecast"]["task"] == "flare_within_180d" and report["neighbours"] is None


def test_query_refuses_an_unknown_patient_without_echoing_its_id(flow, capsys):
    cfg, _ = flow
    code = main(["query", "--config", "conf/local.yaml", "--lake", cfg.lake,
                 "--subject", "999999", "--time", "2024-01-01"])
    err = capsys.readouterr().err
    assert code == 2
    assert "the patient asked for has no embeddings" in err and "999999" not in err


def test_twin_beats_the_population_prior(flow):
    _, results = flow
    by_method = {r["method"]: r for r in results["evaluate"]["rows"]}
    assert by_method["population prior"]["auroc"] == pytest.approx(0.5)
    twin = by_method["digital twin (k nearest neighbours)"]
    assert twin["n"] > 200 and twin["auroc"] > 0.5
    assert results["evaluate"]["coverage"] > 0.9


def test_rerunning_ingest_replaces_never_duplicates(flow, spark):
    from rdt_spark.lake import table_version

    cfg, _ = flow
    version = table_version(spark, cfg.lake, "silver.events")
    before = read_table(spark, cfg.lake, "silver.events", version)
    count = before.count()
    assert ingest.run(cfg, ingest.Options())["touched"] == 0
    assert table_version(spark, cfg.lake, "silver.events") == version  # nothing changed
    ingest.run(cfg, ingest.Options(full=True))
    after = read_table(spark, cfg.lake, "silver.events")
    assert after.count() == count
    assert table_version(spark, cfg.lake, "silver.events") == version + 1
    # same events, and the previous version stays readable (time travel)
    assert before.drop("ingest_run_id").exceptAll(after.drop("ingest_run_id")).count() == 0
