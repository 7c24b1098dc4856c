"""rdt forecast: twin forecasts for every patient-time of a split -> gold.twin_forecasts.

A population study in one distributed job: Spark picks the patient-times and their state, Ray
Data answers every question of a twin report for each of them (each Ray actor loads the index
once), Spark commits the answers. Rows are (patient-time, question): each event task, each drug
class's response, the Kaplan-Meier median time to event and the DAS28/mTSS course; suppressed
answers carry no estimate.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import shutil
import sys
from dataclasses import dataclass

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, JobFailed, option
from rdt_spark.lake import read_table, write_table
from rdt_spark.twin_points import forecast_table, query_points

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class Options:
    split: str = option("which patients: train, val, test or all", "test")
    exact: bool = option("exact (brute-force) search instead of the index's ScaNN pools", False)


def run(cfg: Config, opts: Options) -> dict:
    from ray_training.index import STATE_FEATURES, current_index
    from ray_training.twin import forecast_points

    if opts.split not in SPLITS:
        raise JobFailed(f"--split must be one of {', '.join(SPLITS)}, got {opts.split!r}")
    index_dir, manifest = current_index(cfg.run_dir)
    spark = context.spark(cfg)
    points = query_points(
        read_table(spark, cfg.lake, "gold.embeddings", manifest["embeddings"]["version"]),
        read_table(spark, cfg.lake, "gold.patient_states", manifest["states"]["version"]),
        list(STATE_FEATURES), None if opts.split == "all" else opts.split,
        manifest["model_version"])
    staged_points, staged_forecasts = (context.staging(cfg, "forecast_points"),
                                       context.staging(cfg, "twin_forecasts"))
    points.write.parquet(staged_points)
    context.ray(cfg)
    query = dataclasses.replace(cfg.query, exact=opts.exact or cfg.query.exact)
    forecast_points(str(index_dir), staged_points, staged_forecasts, query, cfg.embed.concurrency)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    table = forecast_table(spark.read.parquet(staged_forecasts), spark.read.parquet(staged_points),
                           manifest, now)
    version = write_table(table, cfg.lake, "gold.twin_forecasts")
    summary = (read_table(spark, cfg.lake, "gold.twin_forecasts", version)
               .agg(F.countDistinct("subject_id", "prediction_time").alias("points"),
                    F.count("*").alias("rows"),
                    F.sum(F.col("suppressed").cast("int")).alias("suppressed"))
               .first())  # small: one row
    shutil.rmtree(staged_points, ignore_errors=True)
    shutil.rmtree(staged_forecasts, ignore_errors=True)
    result = {"split": opts.split, "points": summary["points"], "rows": summary["rows"],
              "suppressed": summary["suppressed"] or 0, "version": version,
              "index_version": manifest["index_version"]}
    log.info(f"gold.twin_forecasts v{version}: {result['points']:,} patient-times of split "
             f"{opts.split}, {result['rows']:,} answers ({result['suppressed']:,} suppressed) "
             f"from index {manifest['index_version']}")
    return result


JOB = Job("forecast", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
