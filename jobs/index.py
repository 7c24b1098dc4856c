"""rdt index: a ScaNN index over gold.embeddings with a manifest pinning what it read."""

from __future__ import annotations

import logging
import sys

from jobs import context
from jobs.config import Config
from jobs.job import Job, NoOptions
from rdt_spark.tasks import FLARE_TASK

log = logging.getLogger(__name__)


def run(cfg: Config, opts: NoOptions) -> dict:
    from ray_training.index import build_index

    manifest = build_index(context.path(cfg, "gold.embeddings"), context.path(cfg, "gold.tasks"),
                           FLARE_TASK, cfg.index, cfg.run_dir)
    log.info(f"{manifest['index_version']}: {manifest['rows']:,} patient-times of splits "
             f"{manifest['splits']} in {len(manifest['shards'])} shard(s) with the outcomes of "
             f"{len(manifest['tasks']['names'])} tasks, gold.embeddings "
             f"v{manifest['embeddings']['version']}, model {manifest['model_version']}")
    return manifest


JOB = Job("index", run)

if __name__ == "__main__":
    sys.exit(JOB.main())
