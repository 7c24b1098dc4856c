"""The one way to start or join Ray: local by default, an address for a cluster."""

from __future__ import annotations

import logging
import os

import ray


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start a local Ray (``address`` None) or join a running cluster; a no-op if connected."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    kwargs = {"address": address} if address else {"num_cpus": num_cpus}
    ray.init(
        **kwargs,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        configure_logging=True,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
