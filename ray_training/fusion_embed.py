"""Fused embeddings of every patient-time with Ray Data: gold.fusion_inputs -> gold.embeddings rows.

``modalities`` records what each embedding actually used: the modalities the row had, less any
the model was built without and any masked at query time. Masking at query time hides modalities
of the patients being asked about (rows outside the index's reference splits) while the
reference population keeps them: how the twin behaves for a patient who arrives with less.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch

from ray_training.datasets import read_delta
from ray_training.embed import OUTPUT_SCHEMA
from ray_training.fusion import collate
from ray_training.fusion_train import FUSION_COLUMNS, load_fusion
from ray_training.settings import EmbedConfig

EMBED_COLUMNS = [*FUSION_COLUMNS, "prediction_time"]


class FusionEmbedder:
    """A Ray Data callable class: loads the fusion model once per actor."""

    def __init__(self, model_dir: str, query_mask: tuple[str, ...], reference_splits: tuple[str, ...]):
        self.model, meta = load_fusion(model_dir)
        self.version = meta["model_version"]
        self.names = self.model.modalities
        self.query_mask = [self.names.index(m) for m in query_mask if m in self.names]
        self.reference_splits = set(reference_splits)

    def __call__(self, batch: pa.Table) -> pa.Table:
        inputs = collate(batch, self.model.dims)
        present = inputs["present"]
        splits = batch.column("split").to_pylist()
        if self.query_mask:
            queries = torch.tensor([s not in self.reference_splits for s in splits])
            for j in self.query_mask:
                present[:, j] &= ~queries
        with torch.no_grad():
            vectors = self.model.fused(self.model.encode(inputs), present).numpy()
        used = [[m for j, m in enumerate(self.names) if row[j]] for row in present.numpy()]
        return pa.Table.from_pydict({
            "subject_id": batch.column("subject_id").cast(pa.int64()),
            "prediction_time": batch.column("prediction_time").cast(
                OUTPUT_SCHEMA.field("prediction_time").type),
            "model_version": [self.version] * len(used),
            "embedding": pa.array(list(vectors.astype(np.float32)), pa.list_(pa.float32())),
            "modalities": used,
            "split": pa.array(splits, pa.string()),
        }, schema=OUTPUT_SCHEMA)


def fuse_events_only(model, events: np.ndarray) -> np.ndarray:
    """Fused embeddings of patient-times known by their events alone (a new patient's query)."""
    n = len(events)
    columns = {m: pa.nulls(n, pa.list_(pa.float32())) for m in model.dims}
    columns["events"] = pa.array(list(np.asarray(events, dtype=np.float32)), pa.list_(pa.float32()))
    inputs = collate(pa.table({"subject_id": pa.array(np.zeros(n, dtype=np.int64)), **columns}),
                     model.dims)
    with torch.no_grad():
        return model.fused(model.encode(inputs), inputs["present"]).numpy()


def embed_fused(fusion_inputs_path: str, version: int, model_dir: str | Path, staging_dir: str,
                cfg: EmbedConfig, query_mask: tuple[str, ...] = (),
                reference_splits: tuple[str, ...] = ("train",)) -> None:
    """Write the fused embedding of every row of gold.fusion_inputs as Parquet under staging_dir."""
    ds = read_delta(fusion_inputs_path, EMBED_COLUMNS, version)
    ds.map_batches(
        FusionEmbedder, fn_constructor_args=(str(model_dir), tuple(query_mask), tuple(reference_splits)),
        batch_size=cfg.batch_size, batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.concurrency), num_cpus=1,
    ).write_parquet(staging_dir)
