"""The whole flow on a few hundred simulated patients (built once, in conftest's `flow`)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
from conftest import write_config
from deltalake import DeltaTable
from pyspark.sql import functions as F

from jobs import ingest
from jobs.cli import main
from ray_training.embed import EMBED_COLUMNS, Embedder, events_before
from ray_training.settings import QueryConfig
from ray_training.train import models
from ray_training.twin import TwinIndex, twin_report
from rdt_spark import evaluation as ev
from rdt_spark.lake import read_table, table_path
from rdt_spark.pseudonyms import pseudonym
from rdt_spark.tasks import FLARE_TASK

TABLES = ["omop.person", "omop.measurement", "truth.patient_latent", "silver.events",
          "silver.rejects", "gold.vocab", "gold.timelines", "gold.tasks", "gold.patient_states",
          "gold.trajectories", "gold.notes", "gold.imaging", "gold.omics", "gold.note_features",
          "gold.event_embeddings", "gold.fusion_inputs", "gold.embeddings",
          "gold.tabular_features", "gold.evaluation"]


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
    stored = (read_table(spark, cfg.lake, "gold.event_embeddings")
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
    assert manifest["embeddings"]["version"] == results["fuse"]["version"]
    assert manifest["model_version"] == results["fuse"]["model_version"]


def test_query_cli_prints_json_naming_the_patient_by_pseudonym(flow, spark, capsys):
    cfg, _ = flow
    row = _timeline(spark, cfg, "test")
    code = main(["query", "--config", "conf/local.yaml", "--lake", cfg.lake,
                 "--subject", str(row["subject_id"]),
                 "--time", row["prediction_times"][-1].isoformat(), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and "subject_id" not in report and report["neighbours"] is None
    assert report["patient"] == pseudonym(row["subject_id"], cfg.privacy.key(cfg.run_dir))
    assert {f["task"] for f in report["events"]} == {
        "flare_within_180d", "das28_remission_12m", "radiographic_progression_2y"}


def test_query_refuses_an_unknown_patient_without_echoing_its_id(flow, capsys):
    cfg, _ = flow
    code = main(["query", "--config", "conf/local.yaml", "--lake", cfg.lake,
                 "--subject", "999999", "--time", "2024-01-01"])
    err = capsys.readouterr().err
    assert code == 2
    assert "the patient asked for has no embeddings" in err and "999999" not in err


def _metrics(results: dict, evaluation: str = "test split") -> dict:
    """(task, method, metric) -> value of one evaluation."""
    return {(r["task"], r["method"], r["metric"]): r["value"] for r in results["evaluate"]["rows"]
            if r["evaluation"] == evaluation}


def test_twin_beats_the_code_count_logistic_regression_on_the_flare_task(flow):
    m = _metrics(flow[1])
    twin, logistic = m[(FLARE_TASK, ev.TWIN, "auroc")], m[(FLARE_TASK, ev.LOGISTIC, "auroc")]
    assert twin > logistic, (twin, logistic)
    assert m[(FLARE_TASK, ev.PRIOR, "auroc")] == pytest.approx(0.5)


def test_evaluation_scores_every_task_with_every_method_on_the_same_points(flow):
    cfg, results = flow
    m = _metrics(results)
    events = ["flare_within_180d", "das28_remission_12m", "radiographic_progression_2y"]
    for task in events:
        points = {m[(task, method, "points")] for method in
                  (ev.TWIN, ev.PRIOR, ev.LOGISTIC, ev.GBM, ev.ORACLE)}
        assert len(points) == 1 and points.pop() > 100, task
        for method in (ev.TWIN, ev.LOGISTIC, ev.GBM, ev.ORACLE):
            for metric in ("auroc", "auprc", "brier"):
                assert 0 <= m[(task, method, metric)] <= 1, (task, method, metric)
    responses = {t for (t, method, metric) in m if t.startswith("eular_response_6m/")
                 and method == ev.GBM and metric == "auroc"}
    assert responses, "no drug class had a twin response to score"
    for task in responses:
        assert m[(task, ev.TWIN, "points")] == m[(task, ev.ORACLE, "points")]
    for month in cfg.evaluate.course_months:
        assert m[(f"das28 at {month} months", ev.TWIN, "mae")] > 0
        assert m[(f"das28 at {month} months", ev.LOCF, "mae")] > 0
    purity = m[("phenotype purity", ev.TWIN, "purity")]
    chance = m[("phenotype purity", "chance (random reference patients)", "purity")]
    assert 0 < chance < purity <= 1
    temporal = _metrics(results, f"temporal {cfg.evaluate.temporal_cutoff}")
    assert {method for (task, method, metric) in temporal if metric == "auroc"} == {
        ev.TWIN, ev.PRIOR, ev.LOGISTIC, ev.GBM}


def test_evaluation_draws_a_calibration_plot_per_task(flow):
    _, results = flow
    plots = Path(results["evaluate"]["plots"]) / "test-split"
    assert (plots / "calibration-flare_within_180d.png").stat().st_size > 1000
    assert list(plots.glob("calibration-eular_response_6m-*.png"))


def test_a_twin_report_answers_every_question_or_suppresses_it(flow, spark):
    cfg, _ = flow
    index = TwinIndex.current(cfg.run_dir)
    row = _timeline(spark, cfg, "test")
    at = pd.Timestamp(row["prediction_times"][-1], tz="UTC")
    report = twin_report(index, row["subject_id"], at, QueryConfig(k=30, min_cell_size=10))
    assert len(report["events"]) == 3 and len(report["treatment_response"]) == 7
    assert len(report["course"]) == 2 * len(index.manifest["course_months"])
    for f in report["events"]:
        assert f["usable"] == 30 and not f["suppressed"]  # a filtered search fills every question
    for r in report["treatment_response"]:
        assert r["suppressed"] == (r["usable"] < 10)
        assert (r["responded"]["share"] is None) == r["suppressed"]
    assert report["time_to_event"]["neighbours"] == 30


def test_query_filters_choose_neighbours_before_ranking(flow, spark):
    from jobs import query

    cfg, _ = flow
    granted = cfg.replace(privacy=dataclasses.replace(cfg.privacy, neighbour_rows=True))
    row = _timeline(spark, cfg, "test")
    report = query.run(granted, query.Options(
        subject=row["subject_id"], time=row["prediction_times"][-1].isoformat(), k=15, json=True,
        sex="F", age="30-90", on="methotrexate"))
    assert len(report["neighbours"]) == 15
    index = TwinIndex.current(cfg.run_dir)
    key = cfg.privacy.key(cfg.run_dir)
    rows = index.rows.assign(patient=[pseudonym(s, key) for s in index.rows["subject_id"]])
    rows = rows.set_index(["patient", "prediction_time"])
    for n in report["neighbours"]:
        r = rows.loc[(n["patient"], pd.Timestamp(n["prediction_time"]))]
        assert r["sex"] == "F" and 30 <= r["age"] < 90 and "methotrexate" in r["current_classes"]


def test_forecast_job_answers_every_question_for_every_test_point(flow, spark):
    from jobs import forecast

    cfg, _ = flow
    result = forecast.run(cfg, forecast.Options(split="test"))
    table = read_table(spark, cfg.lake, "gold.twin_forecasts")
    points = (read_table(spark, cfg.lake, "gold.embeddings").where(F.col("split") == "test")
              .count())
    questions = table.select("question").distinct().count()
    assert result["points"] == points and table.count() == points * questions
    assert questions == 3 + 7 + 1 + 2 * 4
    assert table.where(F.col("suppressed") & F.col("estimate").isNotNull()).count() == 0
    assert table.where(~F.col("suppressed") & (F.col("kind") != "time_to_event")
                       & (F.col("usable") < cfg.query.min_cell_size)).count() == 0


def test_cohort_selects_by_the_criteria_and_suppresses_small_counts(flow, spark, tmp_path):
    from jobs import cohort

    cfg, _ = flow
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text("name: active_on_mtx\ninclude:\n  age: [18, 90]\n  das28_above: 3.2\n"
                        "  current_classes: [methotrexate]\nexclude:\n  ever_classes: [rituximab]\n")
    summary = cohort.run(cfg, cohort.Options(criteria=str(criteria)))
    chosen = read_table(spark, cfg.lake, "gold.cohorts").where(F.col("cohort") == "active_on_mtx")
    states = read_table(spark, cfg.lake, "gold.patient_states")
    judged = chosen.join(states, ["subject_id", "prediction_time"]).collect()  # small: a cohort
    assert judged and (summary["selected"] is None or summary["selected"] == len(judged))
    for r in judged:
        assert r["das28"] > 3.2 and "methotrexate" in r["current_classes"]
        assert "rituximab" not in r["current_classes"] + r["past_classes"]
        assert any(reason.startswith("DAS28") for reason in r["reasons"])
    counts = [summary["judged"], *summary["failing"].values(),
              *(c["patients"] for c in summary["by_sex_and_age"])]
    assert all(n is None or n >= cfg.query.min_cell_size for n in counts)


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


@pytest.mark.parametrize("modality", ["notes", "imaging", "omics"])
def test_no_modality_row_at_or_after_a_prediction_time_reaches_its_fused_inputs(
        flow, spark, modality):
    """On the flow's own lake: every modality a patient-time's inputs carry is strictly older than
    the time, and each modality is present for some patient-times (the check is not vacuous)."""
    cfg, _ = flow
    inputs = read_table(spark, cfg.lake, "gold.fusion_inputs")
    row = inputs.agg(
        F.sum(F.col(modality).isNotNull().cast("int")).alias("present"),
        F.sum((F.col(modality).isNotNull()
               & ~(F.col(f"{modality}_time") < F.col("prediction_time"))).cast("int")).alias("late"),
    ).first()
    assert row["present"] > 0 and row["late"] == 0


def test_the_fused_embeddings_record_what_they_used(flow, spark):
    cfg, results = flow
    embeddings = read_table(spark, cfg.lake, "gold.embeddings")
    inputs = read_table(spark, cfg.lake, "gold.fusion_inputs")
    joined = embeddings.join(inputs, ["subject_id", "prediction_time"])
    assert joined.count() == embeddings.count() == inputs.count()
    for m in ("notes", "imaging", "omics"):
        mismatched = joined.where(F.array_contains("modalities", m) != F.col(m).isNotNull()).count()
        assert mismatched == 0, m
    assert results["fuse"]["model_version"].startswith("fusion-")
    assert len(embeddings.first().embedding) == cfg.fusion.d_model


def test_a_twin_only_evaluation_scores_the_twin_as_the_full_one_did(flow, tmp_path):
    cfg, results = flow
    config = write_config(cfg, tmp_path / "flow.yaml")
    assert main(["evaluate", "--config", str(config), "--twin-only", "--no-temporal"]) == 0
    full = pd.DataFrame(results["evaluate"]["rows"])
    full = full[full["evaluation"] == "test split"]
    alone = DeltaTable(table_path(cfg.lake, "gold.evaluation")).to_pandas()  # replaced whole
    assert set(alone["method"]) == {ev.TWIN, ev.LOCF, "chance (random reference patients)"}
    assert set(alone["evaluation"]) == {"test split"}
    twin = full[full["method"] == ev.TWIN].set_index(["task", "metric"])["value"]
    again = alone[alone["method"] == ev.TWIN].set_index(["task", "metric"])["value"]
    assert sorted(again.index) == sorted(twin.index)
    assert np.allclose(again.sort_index(), twin.sort_index(), atol=1e-9, equal_nan=True)
