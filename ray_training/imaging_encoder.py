"""The imaging encoder: a radiograph study's per-joint scores -> the fused space.

Input: the newest study strictly before the prediction time, as ``gold.fusion_inputs.imaging``:
the erosion scores of every joint then the joint-space-narrowing scores (rdt_spark.sharp_score
joint orders), so the encoder sees which joints are damaged and how, not only the mTSS total.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ray_training.modalities import Modality
from ray_training.settings import FusionConfig

MODALITY = Modality(
    name="imaging", reads="gold.imaging", columns=("subject_id", "time", "erosion", "jsn"),
    output="d_model: the newest radiograph's per-joint erosion and JSN scores, encoded",
)


class ImagingEncoder(nn.Module):
    def __init__(self, d_in: int, cfg: FusionConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 2 * cfg.d_model), nn.GELU(),
                                 nn.Dropout(cfg.dropout), nn.Linear(2 * cfg.d_model, cfg.d_model))

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        # Joint scores are small counts with a long tail: log1p keeps one badly eroded joint from
        # drowning the pattern of which joints are affected.
        return self.net(torch.log1p(scores.clamp(min=0)))


def fusion_encoder(d_in: int, cfg: FusionConfig) -> nn.Module:
    return ImagingEncoder(d_in, cfg)
