"""The omics encoder: an expression profile -> the fused space.

Input: the newest sample strictly before the prediction time, as ``gold.fusion_inputs.omics``:
``gold.omics.expression_norm``, each gene standardised within its batch with statistics of the
training split's samples (rdt_spark.modality_inputs), which removes the platform's per-batch
shift before any model sees it. Training then keeps what the profile shares with the patient's
course (alignment with the events, ray_training.fusion): the phenotype's signatures, not the batch.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ray_training.modalities import Modality
from ray_training.settings import FusionConfig

MODALITY = Modality(
    name="omics", reads="gold.omics", columns=("subject_id", "time", "batch", "expression_norm"),
    output="d_model: the newest expression profile, batch-standardised, encoded",
)


class OmicsEncoder(nn.Module):
    def __init__(self, d_in: int, cfg: FusionConfig):
        super().__init__()
        # Dropout on the genes first: hundreds of noisy inputs, a few hundred samples.
        self.net = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d_in, 2 * cfg.d_model),
                                 nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(2 * cfg.d_model, cfg.d_model))

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        return self.net(expression)


def fusion_encoder(d_in: int, cfg: FusionConfig) -> nn.Module:
    return OmicsEncoder(d_in, cfg)
