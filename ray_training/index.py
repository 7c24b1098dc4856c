"""The ScaNN index over gold.embeddings: shards by subject, each with its rows' outcomes, and a
manifest that pins the Delta versions and the model it was built from.

Layout under ``<run_dir>/index`` (a ``VersionedDir``): ``<index_version>/manifest.json``,
``<index_version>/shard-N/`` (``scann/`` and ``rows.parquet``), and ``CURRENT`` naming the version
queries use. A shard's rows carry the outcome of every task in gold.tasks at that patient-time, as
``<task>:label``, ``<task>:censored`` and ``<task>:category`` (``outcome_column``); a patient-time
a task has no row for is censored for it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import scann
from deltalake import DeltaTable

from ray_training.versions import VersionedDir

MANIFEST, ROWS, SCALING = "manifest.json", "rows.parquet", "scaling.npz"
KEYS = ["subject_id", "prediction_time"]
OUTCOME_FIELDS = ("label", "censored", "category")


@dataclass(frozen=True)
class IndexConfig:
    splits: list[str] = field(default_factory=lambda: ["train"])  # the reference population
    num_shards: int = 1
    brute_force_below: int = 20000  # exact search for small shards, a ScaNN tree above
    leaves_per_sqrt_n: float = 1.0
    leaves_to_search_fraction: float = 0.1
    reorder: int = 200


def indexes(run_dir: str | Path) -> VersionedDir:
    """Where index versions are published; CURRENT is the one queries use."""
    return VersionedDir(Path(run_dir) / "index", "rdt index")


def outcome_column(task: str, field: str) -> str:
    """``outcome_column("flare_within_180d", "label") == "flare_within_180d:label"``."""
    return f"{task}:{field}"


def standardise(vectors: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-dimension z-scores, then unit length: dot product becomes cosine of z-scores.

    Raw encoder states share a large common direction that would make every pair look alike.
    """
    z = (np.asarray(vectors, dtype=np.float32) - mean) / std
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def read_reference(embeddings_path: str, tasks_path: str, splits: list[str],
                   embeddings_version: int, tasks_version: int) -> tuple[pd.DataFrame, list[str]]:
    """Reference patient-times (embedding and every task's outcome) from pinned table versions,
    and the task names."""
    emb = DeltaTable(embeddings_path, version=embeddings_version).to_pyarrow_dataset().to_table(
        columns=[*KEYS, "model_version", "embedding", "split"],
        filter=pc.field("split").isin(splits)).to_pandas()
    tasks = DeltaTable(tasks_path, version=tasks_version).to_pyarrow_dataset().to_table(
        columns=[*KEYS, "task", *OUTCOME_FIELDS],
        filter=pc.field("split").isin(splits)).to_pandas()
    names = sorted(tasks["task"].unique())
    wide = tasks.pivot(index=KEYS, columns="task", values=list(OUTCOME_FIELDS))
    wide.columns = [outcome_column(task, f) for f, task in wide.columns]
    ref = emb.merge(wide.reset_index(), on=KEYS, how="left")
    for task in names:
        # A patient-time without a label cannot inform a forecast: keep it searchable, unusable.
        censored, label = outcome_column(task, "censored"), outcome_column(task, "label")
        ref[censored] = ref[censored].astype("boolean").fillna(True).astype(bool)
        ref[label] = ref[label].astype("boolean").fillna(False).astype(bool)
        category = outcome_column(task, "category")
        ref[category] = ref[category].astype(object).where(ref[category].notna(), None)
    ref = ref.reindex(columns=[*emb.columns, *(outcome_column(t, f) for t in names
                                                for f in OUTCOME_FIELDS)])
    return ref.sort_values(KEYS, ignore_index=True), names


def tree_shape(n: int, cfg: IndexConfig) -> tuple[int, int]:
    """(leaves, leaves searched by default); (0, 0) for exact search of a small shard."""
    if n < cfg.brute_force_below:
        return 0, 0
    leaves = max(2, int(cfg.leaves_per_sqrt_n * math.sqrt(n)))
    return leaves, max(1, int(leaves * cfg.leaves_to_search_fraction))


def build_searcher(db: np.ndarray, cfg: IndexConfig):
    """Exact dot-product search for small shards, a ScaNN tree with AH scoring above."""
    builder = scann.scann_ops_pybind.builder(db, 10, "dot_product")
    leaves, searched = tree_shape(len(db), cfg)
    if not leaves:
        return builder.score_brute_force().build()
    return (builder.tree(num_leaves=leaves, num_leaves_to_search=searched,
                         training_sample_size=min(len(db), 250_000))
            .score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(cfg.reorder).build())


def index_version(embeddings_version: int, tasks_version: int, model_version: str,
                  cfg: IndexConfig) -> str:
    key = json.dumps([embeddings_version, tasks_version, model_version, dataclasses.asdict(cfg)],
                     sort_keys=True)
    return "idx-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def build_index(embeddings_path: str, tasks_path: str, default_task: str, cfg: IndexConfig,
                 run_dir: str) -> dict:
    """Build every shard, then publish the new version; returns the manifest.

    ``default_task`` is the forecast a twin report leads with; the rows carry every task.
    """
    emb_version = DeltaTable(embeddings_path).version()
    tasks_version = DeltaTable(tasks_path).version()
    ref, task_names = read_reference(embeddings_path, tasks_path, cfg.splits, emb_version,
                                     tasks_version)
    if ref.empty:
        raise ValueError(f"no embeddings in splits {cfg.splits} at {embeddings_path}")
    if default_task not in task_names:
        raise ValueError(f"gold.tasks at {tasks_path} has no task {default_task!r}")
    models = sorted(ref["model_version"].unique())
    if len(models) != 1:
        raise ValueError(f"{embeddings_path} mixes model versions {models}: re-run embed")
    version = index_version(emb_version, tasks_version, models[0], cfg)
    published = indexes(run_dir)
    staging, target = published.staging(version), published.path(version)
    vectors = np.stack(ref["embedding"].to_numpy()).astype(np.float32)
    mean, std = vectors.mean(axis=0), vectors.std(axis=0) + 1e-6
    np.savez(staging / SCALING, mean=mean, std=std)
    shards = []
    for shard in range(cfg.num_shards):
        in_shard = (ref["subject_id"] % cfg.num_shards == shard).to_numpy()
        rows = ref[in_shard].reset_index(drop=True)
        if rows.empty:
            continue
        shard_dir = staging / f"shard-{shard}"
        (shard_dir / "scann").mkdir(parents=True)
        build_searcher(standardise(vectors[in_shard], mean, std), cfg).serialize(str(shard_dir / "scann"))
        rows.drop(columns=["embedding", "model_version", "split"]).to_parquet(shard_dir / ROWS)
        leaves, searched = tree_shape(len(rows), cfg)
        shards.append({"shard": shard, "rows": len(rows), "subjects": int(rows["subject_id"].nunique()),
                       "leaves": leaves, "leaves_searched": searched, "path": shard_dir.name})
    manifest = {
        "index_version": version,
        "built_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model_version": models[0],
        "embeddings": {"path": embeddings_path, "version": emb_version},
        "tasks": {"path": tasks_path, "version": tasks_version, "names": task_names,
                  "default": default_task},
        "splits": cfg.splits, "distance": "dot_product (unit vectors: cosine)",
        "dim": int(len(ref["embedding"].iloc[0])), "rows": len(ref), "shards": shards,
        "config": dataclasses.asdict(cfg),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    for assets in staging.glob("shard-*/scann/scann_assets.pbtxt"):
        # ScaNN records absolute asset paths: point them at where the shard will live.
        assets.write_text(assets.read_text().replace(str(staging), str(target)))
    published.publish(version)
    return manifest
