"""rdt cohort: select a trial cohort from inclusion/exclusion criteria -> gold.cohorts.

Spark judges every patient at one patient-time against the criteria file
(``conf/cohort.example.yaml``; ``rdt_spark/cohorts.py`` defines each criterion) and keeps, per
selected patient, each criterion met in words. With reference patients, Ray Data ranks the cohort
by nearness to them in the twin's search space. The cohort replaces its own rows of gold.cohorts
(other cohorts stay); the summary's counts under the minimum cell size are suppressed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
import sys
from dataclasses import dataclass

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, JobFailed, option
from ray_training.report_pages import save_cohort_summary
from rdt_spark.cohorts import Criteria, load_criteria, select_cohort, summary
from rdt_spark.lake import read_table, replace_where
from rdt_spark.schemas import GOLD_COHORTS, conform
from rdt_spark.twin_points import query_points

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    criteria: str = option("the criteria YAML file", "conf/cohort.example.yaml")
    json: bool = option("print the summary as JSON", False)


def ranked(cfg: Config, cohort: DataFrame, criteria: Criteria) -> DataFrame:
    """The cohort with ``similarity`` (to the nearest reference patient at their latest
    prediction time) and ``rank``, nearest first, computed by Ray Data."""
    from ray_training.index import STATE_FEATURES, current_index
    from ray_training.twin import nearness

    index_dir, manifest = current_index(cfg.run_dir)
    spark = cohort.sparkSession
    points = query_points(
        read_table(spark, cfg.lake, "gold.embeddings", manifest["embeddings"]["version"]),
        read_table(spark, cfg.lake, "gold.patient_states", manifest["states"]["version"]),
        list(STATE_FEATURES), None, manifest["model_version"])
    refs = criteria.rank.reference_patients
    latest = (points.where(F.col("subject_id").isin(refs)).groupBy("subject_id")
              .agg(F.max("prediction_time").alias("prediction_time")))
    references = points.join(latest, ["subject_id", "prediction_time"])
    candidates = points.join(cohort.select("subject_id", "prediction_time"),
                             ["subject_id", "prediction_time"])
    cohort = cohort.where(~F.col("subject_id").isin(refs))  # look-alikes, not the references
    staged = {name: context.staging(cfg, f"cohort-{name}") for name in ("refs", "points", "out")}
    references.write.parquet(staged["refs"])
    candidates.write.parquet(staged["points"])
    context.ray(cfg)
    found = nearness(str(index_dir), staged["refs"], staged["points"], staged["out"])
    if not found:
        raise JobFailed(f"none of the reference patients {refs} has an embedding")
    scores = spark.read.parquet(staged["out"])
    out = cohort.join(scores, ["subject_id", "prediction_time"], "left")
    # One global order: a rank is a position in the whole cohort (a selection, not the registry).
    out = out.withColumn("rank", F.row_number().over(Window.orderBy(F.desc("similarity"),
                                                                    "subject_id")))
    if criteria.rank.limit:
        out = out.where(F.col("rank") <= criteria.rank.limit)
    return out


def run(cfg: Config, opts: Options) -> dict:
    criteria = load_criteria(opts.criteria)
    spark = context.spark(cfg)
    judged = select_cohort(read_table(spark, cfg.lake, "gold.patient_states"),
                           read_table(spark, cfg.lake, "silver.events"), criteria).persist()
    cohort = judged.where("selected").select("subject_id", "prediction_time", "reasons")
    if criteria.rank.reference_patients:
        cohort = ranked(cfg, cohort, criteria)
    else:
        cohort = cohort.withColumn("similarity", F.lit(None)).withColumn("rank", F.lit(None))
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = (cohort.withColumn("cohort", F.lit(criteria.name))
            .withColumn("criteria_hash", F.lit(criteria.fingerprint()))
            .withColumn("selected_at", F.lit(now)))
    quoted = criteria.name.replace("'", "''")
    version = replace_where(conform(rows, GOLD_COHORTS), cfg.lake, "gold.cohorts",
                            f"cohort = '{quoted}'")
    result = summary(judged, criteria, cfg.query.min_cell_size)
    judged.unpersist()
    result["version"] = version
    result["written_at"] = now.isoformat()
    save_cohort_summary(cfg.run_dir, result)  # the cohort page reads it (report_pages)
    for staged in ("cohort-refs", "cohort-points", "cohort-out"):
        shutil.rmtree(f"{cfg.run_dir}/staging/{staged}", ignore_errors=True)
    print(json.dumps(result, indent=2) if opts.json else format_summary(result))
    return result


def format_summary(s: dict) -> str:
    def count(n: int | None) -> str:
        return f"<{s['min_cell_size']} (suppressed)" if n is None else f"{n:,}"

    lines = [f"Cohort {s['cohort']} (criteria {s['criteria_hash']}): {count(s['selected'])} of "
             f"{count(s['judged'])} patients selected; gold.cohorts v{s['version']}",
             "  not meeting each criterion:"]
    lines += [f"    {name:<36} {count(n)}" for name, n in s["failing"].items()]
    lines.append("  selected, by sex and age band:")
    lines += [f"    {r['sex'] or '?':<3} {r['age_band']:<7} {count(r['patients'])}"
              for r in s["by_sex_and_age"]]
    return "\n".join(lines)


JOB = Job("cohort", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
