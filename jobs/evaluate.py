"""rdt evaluate: the twin's forecast on the test split next to the baselines -> gold.evaluation."""

from __future__ import annotations

import datetime as dt
import shutil
import sys

from jobs import context
from jobs.config import Config
from jobs.job import Job, NoOptions
from rdt_spark.evaluation import evaluate_forecasts
from rdt_spark.lake import read_table, write_table
from rdt_spark.schemas import GOLD_EVALUATION, conform


def format_table(rows: list[dict], coverage: dict, task: str) -> str:
    lines = [f"Evaluation: {task} on the test split ({coverage['forecast']:,} of "
             f"{coverage['test_points']:,} uncensored test patient-times forecast, "
             f"{coverage['coverage']:.1%}; training event rate {coverage['prior_rate']:.1%})",
             f"  {'method':<38} {'AUROC':>7} {'Brier':>7} {'n':>7}"]
    for r in rows:
        lines.append(f"  {r['method']:<38} {r['auroc']:>7.3f} {r['brier']:>7.3f} {r['n']:>7,}")
    return "\n".join(lines)


def run(cfg: Config, opts: NoOptions) -> dict:
    from ray_training.twin import forecast_split

    context.ray(cfg)
    staged = context.staging(cfg, "twin_forecasts")
    manifest = forecast_split(cfg.run_dir, "test", cfg.query, cfg.embed.concurrency, staged)
    task = manifest["tasks"]["default"]
    spark = context.spark(cfg)
    rows, coverage = evaluate_forecasts(
        read_table(spark, cfg.lake, "gold.tasks", manifest["tasks"]["version"]),
        read_table(spark, cfg.lake, "silver.events"), spark.read.parquet(staged), task)
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    table = spark.createDataFrame(
        [(task, r["method"], r["auroc"], r["brier"], r["n"], manifest["model_version"],
          manifest["index_version"], now) for r in rows], GOLD_EVALUATION)
    write_table(conform(table, GOLD_EVALUATION), cfg.lake, "gold.evaluation")
    shutil.rmtree(staged, ignore_errors=True)
    print(format_table(rows, coverage, task))
    return {"task": task, "rows": rows, **coverage}


JOB = Job("evaluate", run)

if __name__ == "__main__":
    sys.exit(JOB.main())
