"""What every job needs from config: sessions, table paths, staging folders."""

from __future__ import annotations

import shutil
from pathlib import Path

from jobs.config import Config
from rdt_spark.lake import table_path


def spark(cfg: Config):
    from rdt_spark.session import spark_session

    return spark_session(cfg.spark.master, cfg.spark.app_name, cfg.spark.conf)


def ray(cfg: Config) -> None:
    from ray_training.cluster import connect

    connect(cfg.ray)


def path(cfg: Config, table: str) -> str:
    return table_path(cfg.lake, table)


def staging(cfg: Config, name: str) -> str:
    """An empty folder under run_dir where Ray writes Parquet for Spark to commit to Delta."""
    folder = Path(cfg.run_dir) / "staging" / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return str(folder)
