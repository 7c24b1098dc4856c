"""Calibration plots: per task, each method's mean predicted risk against the observed rate in
bins of its predictions (matplotlib, written as PNG files).

The bins arrive already aggregated and suppressed (``evaluation.binary_metrics``): a bin with
fewer points than the minimum cell size is not drawn.

Example: ``plot_calibration([{"task": "flare_within_180d", "method": "digital twin ...",
"bin": 1, "predicted": 0.08, "observed": 0.1, "n": 120, ...}], folder)`` writes
``folder/calibration-flare_within_180d.png`` and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node

import matplotlib.pyplot as plt  # noqa: E402


def file_name(task: str) -> str:
    """``file_name("eular_response_6m/abatacept")``: ``calibration-eular_response_6m-abatacept.png``."""
    return "calibration-" + task.replace("/", "-").replace(" ", "_") + ".png"


def plot_calibration(bins: list[dict], folder: Path) -> list[Path]:
    """One PNG per task with every method's calibration curve; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for task in sorted({b["task"] for b in bins}):
        fig, ax = plt.subplots(figsize=(5.5, 5))
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect")
        for method in sorted({b["method"] for b in bins if b["task"] == task}):
            mine = sorted((b for b in bins if b["task"] == task and b["method"] == method),
                          key=lambda b: b["bin"])
            ax.plot([b["predicted"] for b in mine], [b["observed"] for b in mine], marker="o",
                    markersize=3, linewidth=1, label=method)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted risk (bin mean)",
               ylabel="observed rate", title=task)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = folder / file_name(task)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
