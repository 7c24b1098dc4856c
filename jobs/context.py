"""What every job needs from config: sessions, table paths, progress lines."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from jobs.config import Config
from rdt_spark.lake import table_path


def log(job: str, message: str) -> None:
    # Progress only: counts and versions, never patient identifiers or note text.
    print(f"[rdt {time.strftime('%H:%M:%S')}] {job}: {message}", file=sys.stderr, flush=True)


def spark(cfg: Config):
    from rdt_spark.session import spark_session

    return spark_session(cfg.spark.master, cfg.spark.app_name, cfg.spark.conf)


def ray(cfg: Config) -> None:
    from ray_training.cluster import connect

    connect(cfg.ray.address, cfg.ray.num_cpus)


def path(cfg: Config, table: str) -> str:
    return table_path(cfg.lake, table)


def staging(cfg: Config, name: str) -> str:
    """An empty folder under run_dir where Ray writes Parquet for Spark to commit to Delta."""
    folder = Path(cfg.run_dir) / "staging" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return str(folder)
