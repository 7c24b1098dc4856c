"""rdt embed: one embedding per (patient, prediction time) into gold.embeddings."""

from __future__ import annotations

import argparse
import shutil

from jobs import context
from jobs.config import Config
from jobs.train import current_model_dir
from rdt_spark.lake import read_table, write_table
from rdt_spark.schemas import GOLD_EMBEDDINGS, conform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(cfg: Config, args: argparse.Namespace) -> dict:
    from ray_training.datasets import delta_version
    from ray_training.embed import embed_timelines

    context.ray(cfg)
    model_dir = current_model_dir(cfg)
    timelines = context.path(cfg, "gold.timelines")
    staged = context.staging(cfg, "embeddings")
    context.log("embed", f"model {model_dir.name} over {timelines}")
    embed_timelines(timelines, delta_version(timelines), model_dir, staged,
                    cfg.embed.batch_size, cfg.embed.concurrency)
    spark = context.spark(cfg)
    version = write_table(conform(spark.read.parquet(staged), GOLD_EMBEDDINGS), cfg.lake,
                          "gold.embeddings")
    shutil.rmtree(staged, ignore_errors=True)
    rows = read_table(spark, cfg.lake, "gold.embeddings").count()
    context.log("embed", f"gold.embeddings v{version}: {rows:,} patient-times")
    return {"model_version": model_dir.name, "rows": rows, "version": version}


if __name__ == "__main__":  # spark-submit jobs/embed.py / ray job submit -- python jobs/embed.py
    import sys

    from jobs.cli import main

    sys.exit(main(["embed", *sys.argv[1:]]))
