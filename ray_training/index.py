"""The ScaNN index over gold.embeddings: shards by subject, each with its rows' outcomes, and a
manifest that pins the Delta versions and the model it was built from.

Layout under ``<run_dir>/index``: ``<index_version>/manifest.json``, ``<index_version>/shard-N/``
(``scann/`` and ``rows.parquet``), and ``CURRENT`` naming the version queries use.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import scann
from deltalake import DeltaTable

MANIFEST, CURRENT, ROWS, SCALING = "manifest.json", "CURRENT", "rows.parquet", "scaling.npz"


def standardise(vectors: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per-dimension z-scores, then unit length: dot product becomes cosine of z-scores.

    Raw encoder states share a large common direction that would make every pair look alike.
    """
    z = (np.asarray(vectors, dtype=np.float32) - mean) / std
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def read_reference(embeddings_path: str, tasks_path: str, task: str, splits: list[str],
                   embeddings_version: int, tasks_version: int) -> pd.DataFrame:
    """Reference patient-times (embedding, label, censored) from pinned table versions."""
    emb = DeltaTable(embeddings_path, version=embeddings_version).to_pyarrow_dataset().to_table(
        columns=["subject_id", "prediction_time", "model_version", "embedding", "split"],
        filter=pc.field("split").isin(splits)).to_pandas()
    tasks = DeltaTable(tasks_path, version=tasks_version).to_pyarrow_dataset().to_table(
        columns=["subject_id", "prediction_time", "label", "censored"],
        filter=(pc.field("task") == task) & pc.field("split").isin(splits)).to_pandas()
    ref = emb.merge(tasks, on=["subject_id", "prediction_time"], how="left")
    # A patient-time without a label cannot inform a forecast: keep it searchable, mark it unusable.
    ref["censored"] = ref["censored"].fillna(True).astype(bool)
    ref["label"] = ref["label"].fillna(False).astype(bool)
    return ref.sort_values(["subject_id", "prediction_time"], ignore_index=True)


def tree_shape(n: int, cfg: dict) -> tuple[int, int]:
    """(leaves, leaves searched by default); (0, 0) for exact search of a small shard."""
    if n < cfg["brute_force_below"]:
        return 0, 0
    leaves = max(2, int(cfg["leaves_per_sqrt_n"] * math.sqrt(n)))
    return leaves, max(1, int(leaves * cfg["leaves_to_search_fraction"]))


def build_searcher(db: np.ndarray, cfg: dict):
    """Exact dot-product search for small shards, a ScaNN tree with AH scoring above."""
    builder = scann.scann_ops_pybind.builder(db, 10, "dot_product")
    leaves, searched = tree_shape(len(db), cfg)
    if not leaves:
        return builder.score_brute_force().build()
    return (builder.tree(num_leaves=leaves, num_leaves_to_search=searched,
                         training_sample_size=min(len(db), 250_000))
            .score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(cfg["reorder"]).build())


def index_version(embeddings_version: int, tasks_version: int, model_version: str,
                  cfg: dict) -> str:
    key = json.dumps([embeddings_version, tasks_version, model_version, cfg], sort_keys=True)
    return "idx-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def build_index(embeddings_path: str, tasks_path: str, task: str, cfg: dict,
                run_dir: str) -> dict:
    """Build every shard, then switch CURRENT to the new version; returns the manifest."""
    emb_version = DeltaTable(embeddings_path).version()
    tasks_version = DeltaTable(tasks_path).version()
    ref = read_reference(embeddings_path, tasks_path, task, cfg["splits"], emb_version,
                         tasks_version)
    if ref.empty:
        raise ValueError(f"no embeddings in splits {cfg['splits']} at {embeddings_path}")
    models = sorted(ref["model_version"].unique())
    if len(models) != 1:
        raise ValueError(f"{embeddings_path} mixes model versions {models}: re-run embed")
    version = index_version(emb_version, tasks_version, models[0], cfg)
    root = Path(run_dir) / "index"
    staging = root / f"{version}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    vectors = np.stack(ref["embedding"].to_numpy()).astype(np.float32)
    mean, std = vectors.mean(axis=0), vectors.std(axis=0) + 1e-6
    staging.mkdir(parents=True)
    np.savez(staging / SCALING, mean=mean, std=std)
    shards = []
    for shard in range(cfg["num_shards"]):
        in_shard = (ref["subject_id"] % cfg["num_shards"] == shard).to_numpy()
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
        "tasks": {"path": tasks_path, "version": tasks_version, "task": task},
        "splits": cfg["splits"], "distance": "dot_product (unit vectors: cosine)",
        "dim": int(len(ref["embedding"].iloc[0])), "rows": len(ref), "shards": shards,
        "config": cfg,
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
    target = root / version
    for assets in staging.glob("shard-*/scann/scann_assets.pbtxt"):
        # ScaNN records absolute asset paths: point them at where the shard will live.
        assets.write_text(assets.read_text().replace(str(staging), str(target)))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    pointer = root / f"{CURRENT}.tmp"
    pointer.write_text(version)
    os.replace(pointer, root / CURRENT)  # atomic: queries see the old or the new index
    return manifest


def current_index_dir(run_dir: str) -> Path:
    pointer = Path(run_dir) / "index" / CURRENT
    if not pointer.exists():
        raise FileNotFoundError(f"no index under {pointer.parent}: run `rdt index` first")
    return pointer.parent / pointer.read_text().strip()
