"""The modalities the twin's latent space is built from, one encoder module each.

An encoder module declares its ``MODALITY``: the name ``gold.embeddings.modalities`` records, the
gold table and columns it reads (only what lies strictly before a prediction time reaches it) and
what it contributes to the embedding, and ``fusion_encoder(d_in, cfg)``: its trainable part in the
fusion model (ray_training.fusion), from its input vector in gold.fusion_inputs to the fused
space's width. ``registered()`` lists them in the fusion's order. Adding a modality is a new
encoder module, one line in ``ENCODER_MODULES`` and its column in gold.fusion_inputs.

Example: ``registered()["events"].reads == "gold.timelines"``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch.nn as nn

    from ray_training.settings import FusionConfig

ENCODER_MODULES = ["ray_training.events_encoder", "ray_training.notes_encoder",
                   "ray_training.imaging_encoder", "ray_training.omics_encoder"]


@dataclass(frozen=True)
class Modality:
    name: str
    reads: str  # a gold table
    columns: tuple[str, ...]
    output: str  # what the encoder adds to a patient-time's embedding


@cache
def _modules() -> dict[str, ModuleType]:
    found = [importlib.import_module(module) for module in ENCODER_MODULES]
    return {m.MODALITY.name: m for m in found}


def registered() -> dict[str, Modality]:
    """Every modality by name, in ENCODER_MODULES order."""
    return {name: module.MODALITY for name, module in _modules().items()}


def fusion_encoder(name: str, d_in: int, cfg: FusionConfig) -> nn.Module:
    """Modality ``name``'s trainable encoder: (B, d_in) -> (B, cfg.d_model)."""
    return _modules()[name].fusion_encoder(d_in, cfg)
