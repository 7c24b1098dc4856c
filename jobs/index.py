"""rdt index: a ScaNN index over gold.embeddings with a manifest pinning what it read."""

from __future__ import annotations

import argparse
import dataclasses

from jobs import context
from jobs.config import Config
from rdt_spark.tasks import FLARE_TASK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(cfg: Config, args: argparse.Namespace) -> dict:
    from ray_training.index import build_index

    manifest = build_index(context.path(cfg, "gold.embeddings"), context.path(cfg, "gold.tasks"),
                           FLARE_TASK, dataclasses.asdict(cfg.index), cfg.run_dir)
    context.log("index", f"{manifest['index_version']}: {manifest['rows']:,} patient-times of "
                         f"splits {manifest['splits']} in {len(manifest['shards'])} shard(s), "
                         f"gold.embeddings v{manifest['embeddings']['version']}, "
                         f"model {manifest['model_version']}")
    return manifest


if __name__ == "__main__":  # spark-submit jobs/index.py / ray job submit -- python jobs/index.py
    import sys

    from jobs.cli import main

    sys.exit(main(["index", *sys.argv[1:]]))
