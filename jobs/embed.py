"""rdt embed: the events encoder's embedding of every (patient, prediction time) into
gold.event_embeddings, the events part of the fused space (rdt fuse)."""

from __future__ import annotations

import logging
import shutil
import sys

from jobs import context
from jobs.config import Config
from jobs.job import Job, NoOptions
from rdt_spark.lake import read_table, write_table
from rdt_spark.schemas import GOLD_EMBEDDINGS, conform

log = logging.getLogger(__name__)


def run(cfg: Config, opts: NoOptions) -> dict:
    from ray_training.datasets import delta_version
    from ray_training.embed import embed_timelines
    from ray_training.train import models

    context.ray(cfg)
    model_dir = models(cfg.run_dir).current()
    timelines = context.path(cfg, "gold.timelines")
    staged = context.staging(cfg, "embeddings")
    log.info(f"model {model_dir.name} over {timelines}")
    embed_timelines(timelines, delta_version(timelines), model_dir, staged, cfg.embed)
    spark = context.spark(cfg)
    version = write_table(conform(spark.read.parquet(staged), GOLD_EMBEDDINGS), cfg.lake,
                          "gold.event_embeddings")
    shutil.rmtree(staged, ignore_errors=True)
    rows = read_table(spark, cfg.lake, "gold.event_embeddings").count()
    log.info(f"gold.event_embeddings v{version}: {rows:,} patient-times")
    return {"model_version": model_dir.name, "rows": rows, "version": version}


JOB = Job("embed", run)

if __name__ == "__main__":
    sys.exit(JOB.main())
