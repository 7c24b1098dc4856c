"""The one way to start or join Ray: local by default, an address for a cluster."""

from __future__ import annotations

import logging
import os

import ray

from ray_training.settings import RayConfig


def connect(cfg: RayConfig) -> None:
    """Start a local Ray or join a running cluster; a no-op if already connected."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs = {"address": cfg.address} if cfg.address else {"num_cpus": cfg.num_cpus}
    ray.init(
        **kwargs,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=True,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
