"""The fusion model on its own (plain torch, no Ray): what a fused embedding may depend on, the
modality-dropout views, and that contrastive training finds what two modalities share."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from ray_training.fusion import FusionModel, collate, modality_dropout
from ray_training.settings import FusionConfig

DIMS = {"events": 8, "imaging": 6, "omics": 12}


def _batch(n: int, rng: np.random.Generator, omics_every: int = 2) -> pa.Table:
    def column(d: int, every: int):
        return pa.array([rng.normal(size=d).astype(np.float32) if i % every == 0 else None
                         for i in range(n)], pa.list_(pa.float32()))
    return pa.table({"subject_id": np.arange(n), "events": column(8, 1), "imaging": column(6, 3),
                     "omics": column(12, omics_every)})


def test_a_fused_embedding_ignores_the_inputs_of_absent_modalities():
    torch.manual_seed(0)
    model = FusionModel(FusionConfig(d_model=16), DIMS).eval()
    inputs = collate(_batch(9, np.random.default_rng(0)), DIMS)
    fused = model.fused(model.encode(inputs), inputs["present"])
    absent = ~inputs["present"][:, 2]
    inputs["omics"][absent] = 100.0  # garbage where the row has no expression profile
    again = model.fused(model.encode(inputs), inputs["present"])
    assert torch.allclose(fused, again)
    assert torch.allclose(fused.norm(dim=1), torch.ones(9))


def test_collate_marks_what_is_present_and_hides_what_is_asked():
    batch = _batch(6, np.random.default_rng(1))
    inputs = collate(batch, DIMS)
    assert inputs["present"][:, 0].all()
    assert inputs["present"][:, 1].tolist() == [True, False, False, True, False, False]
    np.testing.assert_array_equal(inputs["imaging"][3].numpy(), batch.column("imaging")[3].as_py())
    hidden = collate(batch, DIMS, hidden=("omics",))
    assert not hidden["present"][:, 2].any() and not hidden["omics"].any()


def test_modality_dropout_keeps_at_least_one_present_modality_and_never_adds_one():
    torch.manual_seed(0)
    present = torch.rand(500, 4) < 0.5
    present[:, 0] |= ~present.any(1)
    for view in modality_dropout(present, 0.9):
        assert view.any(1).all()
        assert not (view & ~present).any()


def test_contrastive_training_aligns_what_events_and_omics_share_and_not_the_batch():
    """Events and omics share a hidden class (a phenotype); omics also carry a batch shift the
    events know nothing about. After training, a nearest-centroid rule reads the class from the
    omics embedding far better than the batch."""
    rng = np.random.default_rng(0)
    n, classes, batches = 1200, 4, 4
    cls, batch_of = rng.integers(0, classes, n), rng.integers(0, batches, n)
    centres_e, centres_o = rng.normal(size=(classes, 8)), rng.normal(size=(classes, 12))
    shift = rng.normal(size=(batches, 12)) * 1.5
    events = centres_e[cls] + 0.7 * rng.normal(size=(n, 8))
    omics = centres_o[cls] + shift[batch_of] + 0.7 * rng.normal(size=(n, 12))
    dims = {"events": 8, "omics": 12}
    cfg = FusionConfig(d_model=16, dropout=0.0, temperature=0.2)
    torch.manual_seed(0)
    model = FusionModel(cfg, dims)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        for start in range(0, n, 200):
            rows = slice(start, start + 200)
            batch = pa.table({
                "subject_id": np.arange(n)[rows],
                "events": pa.array(list(events[rows].astype(np.float32)), pa.list_(pa.float32())),
                "omics": pa.array(list(omics[rows].astype(np.float32)), pa.list_(pa.float32()))})
            loss, _ = model(collate(batch, dims))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        z = model.encode({"omics": torch.tensor(omics, dtype=torch.float32),
                          "events": torch.tensor(events, dtype=torch.float32)})["omics"].numpy()

    def centroid_accuracy(labels: np.ndarray, k: int) -> float:
        train, test = slice(0, 800), slice(800, n)
        centres = np.stack([z[train][labels[train] == c].mean(0) for c in range(k)])
        return float((np.argmax(z[test] @ centres.T, 1) == labels[test]).mean())

    assert centroid_accuracy(cls, classes) > 0.85
    assert centroid_accuracy(batch_of, batches) < 0.5  # chance 0.25; measured 0.97 and 0.39
