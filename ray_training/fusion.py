"""The fused patient embedding: one small encoder per modality into a shared space, then one
fusion of whichever modalities a patient-time has (CLIP-shaped alignment, modality dropout).

Inputs are the rows of ``gold.fusion_inputs`` (rdt_spark.modality_inputs): the events encoder's
embedding of the patient-time, and the notes' text features, the newest radiograph's per-joint
scores and the newest expression profile (batch-normalised by Spark), each strictly before the
prediction time, each possibly missing.

Two objectives, both contrastive (InfoNCE), so nothing here is told the phenotype or an outcome:
- alignment: a patient-time's events embedding and each of its other modalities are a positive
  pair, every other patient in the batch a negative. What one modality can predict of another is
  what the shared space keeps: a phenotype shows in the course *and* the expression profile, the
  simulator's batch shift shows in neither the course nor the radiographs, so it is not kept.
- fusion: two views of the same patient-time, each with a random subset of its modalities
  (modality dropout), map to the same fused embedding; so any subset lands near the whole.
Rows of the same patient are never each other's negatives (a baseline omics sample is shared by
all of a patient's times).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn as nn
import torch.nn.functional as F
from ray.data.collate_fn import ArrowBatchCollateFn

from ray_training.modalities import fusion_encoder, registered
from ray_training.settings import FusionConfig

MODALITIES = tuple(registered())  # the fusion's order; gold.fusion_inputs has a column each


class FusionModel(nn.Module):
    def __init__(self, cfg: FusionConfig, dims: dict[str, int]):
        super().__init__()
        self.cfg, self.dims = cfg, dict(dims)
        # Each modality's own module (ray_training.modalities) provides its encoder.
        self.encoders = nn.ModuleDict({m: fusion_encoder(m, d, cfg) for m, d in dims.items()})
        self.fuse = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(),
                                  nn.Linear(cfg.d_model, cfg.d_model))
        self.log_scale = math.log(1.0 / cfg.temperature)

    @property
    def modalities(self) -> list[str]:
        return list(self.encoders)

    def encode(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each modality's (B, d_model) unit vectors (rows where it is absent are meaningless)."""
        return {m: F.normalize(encoder(inputs[m]), dim=-1) for m, encoder in self.encoders.items()}

    def fused(self, z: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        """(B, d_model) unit vectors from the modalities ``present`` (B, M) marks, in MODALITIES
        order of ``self.modalities``; a row needs at least one."""
        stacked = torch.stack([z[m] for m in self.modalities], dim=1)  # (B, M, d)
        weights = present.float().unsqueeze(-1)
        mean = (stacked * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return F.normalize(mean + self.fuse(mean), dim=-1)

    def info_nce(self, a: torch.Tensor, b: torch.Tensor, subjects: torch.Tensor,
                 rows: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the ``rows`` (bool, B) where both sides exist."""
        a, b, subjects = a[rows], b[rows], subjects[rows]
        if len(a) < 2:
            return a.sum() * 0.0
        logits = a @ b.T * self.log_scale
        same = subjects[:, None] == subjects[None, :]
        logits = logits.masked_fill(same & ~torch.eye(len(a), dtype=torch.bool, device=a.device),
                                    float("-inf"))
        target = torch.arange(len(a), device=a.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one batch, and its parts."""
        present, subjects = batch["present"], batch["subject_id"]
        z = self.encode(batch)
        names = self.modalities
        parts = {}
        events = names.index("events") if "events" in names else None
        for i, m in enumerate(names):
            if i == events or events is None:
                continue
            rows = present[:, events] & present[:, i]
            parts[f"align_{m}"] = self.info_nce(z["events"], z[m], subjects, rows)
        view_a, view_b = modality_dropout(present, self.cfg.modality_dropout)
        parts["fusion"] = self.info_nce(self.fused(z, view_a), self.fused(z, view_b), subjects,
                                        present.any(1))
        loss = sum(parts.values())
        return loss, {k: float(v.detach()) for k, v in parts.items()}


def modality_dropout(present: torch.Tensor, p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of each row, each hiding every present modality with chance ``p`` but keeping at
    least one (a random one of those present)."""
    views = []
    for _ in range(2):
        keep = present & (torch.rand(present.shape, device=present.device) >= p)
        empty = ~keep.any(1)
        if empty.any():
            scores = torch.rand(present.shape, device=present.device).masked_fill(~present, -1.0)
            one = F.one_hot(scores.argmax(1), present.shape[1]).bool()
            keep = torch.where(empty[:, None], one & present, keep)
        views.append(keep)
    return views[0], views[1]


def collate(batch: pa.Table, dims: dict[str, int],
            hidden: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """A batch of gold.fusion_inputs rows (an Arrow table) -> model inputs: a (B, d) float tensor
    per modality (zeros where absent), ``present`` (B, M) in ``dims`` order, and ``subject_id``.
    Modalities in ``hidden`` are treated as absent (ablations; masking at query time)."""
    n = batch.num_rows
    out: dict[str, torch.Tensor] = {}
    present = np.zeros((n, len(dims)), dtype=bool)
    for j, (m, d) in enumerate(dims.items()):
        x = np.zeros((n, d), dtype=np.float32)
        column = batch.column(m)
        valid = column.is_valid().to_numpy(zero_copy_only=False) & (m not in hidden)
        if valid.any():
            rows = pc.filter(column, pa.array(valid))
            lengths = pc.list_value_length(rows).to_numpy(zero_copy_only=False)
            if (lengths != d).any():
                bad = int(np.flatnonzero(valid)[np.argmax(lengths != d)])
                raise ValueError(f"gold.fusion_inputs: subject {batch.column('subject_id')[bad]}: "
                                 f"{m} has {lengths[lengths != d][0]} values, the model was built "
                                 f"for {d}")
            flat = pc.list_flatten(rows).to_numpy(zero_copy_only=False)
            x[valid] = np.nan_to_num(flat.astype(np.float32)).reshape(-1, d)
        present[:, j] = valid
        out[m] = torch.from_numpy(x)
    out["present"] = torch.from_numpy(present)
    out["subject_id"] = torch.from_numpy(
        batch.column("subject_id").to_numpy(zero_copy_only=False).astype(np.int64))
    return out


class TrainingCollate(ArrowBatchCollateFn):
    """collate for ``iter_torch_batches``: Ray Data hands it Arrow, no per-row Python objects."""

    def __init__(self, dims: dict[str, int]):
        super().__init__()
        self.dims = dims

    def __call__(self, batch: pa.Table) -> dict[str, torch.Tensor]:
        return collate(batch, self.dims)
