"""The ScaNN tree against exact search on the flow's embeddings: forecasts must not move."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from deltalake import DeltaTable
from scipy.stats import rankdata

from jobs import context
from ray_training.index import STATE_FEATURES, Sources, build_index
from ray_training.twin import TwinForecaster
from rdt_spark.tasks import FLARE_TASK, load_tasks, task_catalogue

KEYS = ["subject_id", "prediction_time"]


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    ranks = rankdata(scores)
    n1, n0 = labels.sum(), (~labels).sum()
    return float((ranks[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _test_points(cfg, sources: Sources, limit: int) -> pd.DataFrame:
    """Labelled flare points of the test split with their embedding and state."""
    def read(source, columns):
        path, version = source
        return DeltaTable(path, version=version).to_pandas(columns=columns)

    tasks = read(sources.tasks, [*KEYS, "task", "label", "censored", "split"])
    tasks = tasks[(tasks["task"] == FLARE_TASK) & (tasks["split"] == "test") & ~tasks["censored"]]
    points = (tasks[[*KEYS, "label"]]
              .merge(read(sources.embeddings, [*KEYS, "embedding"]), on=KEYS)
              .merge(read(sources.states, [*KEYS, *STATE_FEATURES]), on=KEYS, how="left"))
    return points.sort_values(KEYS, ignore_index=True).iloc[::max(1, len(points) // limit)]


def test_flare_auroc_from_the_scann_tree_is_within_0_005_of_exact_search(flow, tmp_path):
    cfg, _ = flow
    sources = Sources.latest(*(context.path(cfg, name) for name in (
        "gold.embeddings", "gold.tasks", "gold.patient_states", "gold.trajectories")))
    tree = dataclasses.replace(cfg.index, brute_force_below=0)  # the flow's index is exact
    manifest = build_index(sources, task_catalogue(load_tasks(cfg.tokenize.tasks_file)),
                           FLARE_TASK, tree, str(tmp_path))
    assert manifest["shards"][0]["leaves"] > 0
    points = _test_points(cfg, sources, limit=600)
    batch = {"subject_id": points["subject_id"].to_numpy(),
             "prediction_time": points["prediction_time"].to_numpy(),
             "embedding": np.array(list(points["embedding"]), dtype=object),
             **{c: points[c].to_numpy() for c in STATE_FEATURES}}
    index_dir = str(tmp_path / "index" / manifest["index_version"])
    estimates = {}
    for exact in (True, False):
        forecaster = TwinForecaster(index_dir, dataclasses.replace(cfg.query, exact=exact))
        rows = forecaster(batch).to_pandas()
        estimates[exact] = rows[rows["question"] == FLARE_TASK]["estimate"].to_numpy(float)
    labels = points["label"].to_numpy(bool)
    shown = ~np.isnan(estimates[True]) & ~np.isnan(estimates[False])
    assert shown.mean() > 0.9 and 0 < labels[shown].mean() < 1
    exact_auroc = _auroc(estimates[True][shown], labels[shown])
    scann_auroc = _auroc(estimates[False][shown], labels[shown])
    assert abs(exact_auroc - scann_auroc) < 0.005, (exact_auroc, scann_auroc)
