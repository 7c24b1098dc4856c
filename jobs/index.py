"""rdt index: a ScaNN index over gold.embeddings with a manifest pinning what it read.

Its rows carry every task's outcome (gold.tasks), the state a search filters on
(gold.patient_states) and the course that followed (gold.trajectories).
"""

from __future__ import annotations

import logging
import sys

from jobs import context
from jobs.config import Config
from jobs.job import Job, NoOptions
from rdt_spark.tasks import FLARE_TASK, load_tasks, task_catalogue

log = logging.getLogger(__name__)


def run(cfg: Config, opts: NoOptions) -> dict:
    from ray_training.index import Sources, build_index

    sources = Sources.latest(*(context.path(cfg, name) for name in (
        "gold.embeddings", "gold.tasks", "gold.patient_states", "gold.trajectories")))
    catalogue = task_catalogue(load_tasks(cfg.tokenize.tasks_file))
    context.ray(cfg)  # every shard is built by a Ray task from its own slice of the tables
    manifest = build_index(sources, catalogue, FLARE_TASK, cfg.index, cfg.run_dir)
    log.info(f"{manifest['index_version']}: {manifest['rows']:,} patient-times of splits "
             f"{manifest['splits']} in {len(manifest['shards'])} shard(s) with the outcomes of "
             f"{len(manifest['task_names'])} tasks, gold.embeddings "
             f"v{manifest['embeddings']['version']}, model {manifest['model_version']}")
    return manifest


JOB = Job("index", run)

if __name__ == "__main__":
    sys.exit(JOB.main())
