"""The modalities the twin's latent space is built from, one encoder module each.

An encoder module declares its ``MODALITY``: the name ``gold.embeddings.modalities`` records, the
gold table and columns it reads (only what lies strictly before a prediction time reaches it) and
what it contributes to the embedding. ``registered()`` lists them in the order their parts are
concatenated. Adding a modality is a new encoder module and one line in ``ENCODER_MODULES``.

Example: ``registered()["events"].reads == "gold.timelines"``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache

ENCODER_MODULES = ["ray_training.events_encoder"]


@dataclass(frozen=True)
class Modality:
    name: str
    reads: str  # a gold table
    columns: tuple[str, ...]
    output: str  # what the encoder adds to a patient-time's embedding


@cache
def registered() -> dict[str, Modality]:
    """Every modality by name, in ENCODER_MODULES order."""
    found = [importlib.import_module(module).MODALITY for module in ENCODER_MODULES]
    return {m.name: m for m in found}
