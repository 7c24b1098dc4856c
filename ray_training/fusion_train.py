"""Train the fusion model with Ray Train on gold.fusion_inputs streamed from Delta by Ray Data.

Every epoch ends in a checkpoint (model, optimizer, epoch). A run killed part-way and started
again with the same settings resumes from its last checkpoint: Ray Train finds the run by its
name (the model version) under ``<run_dir>/ray_train``. Epochs are replayable: the data order
(Ray Data with ``preserve_order`` and a per-epoch shuffle seed), dropout and modality dropout are
seeded by epoch, so a resumed run ends where an uninterrupted one does.

Metrics of each epoch go to the console and to ``metrics.jsonl`` beside the checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import ray.train
import torch
from ray.data import ExecutionOptions
from ray.train import Checkpoint, CheckpointConfig, DataConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ray_training import fusion
from ray_training.datasets import read_delta
from ray_training.fusion import MODALITIES, FusionModel, TrainingCollate
from ray_training.modalities import ENCODER_MODULES
from ray_training.settings import FusionConfig
from ray_training.train import fit_and_publish
from ray_training.versions import VersionedDir
from rdt_spark.lake_uris import open_delta

STATE_FILE, CONFIG_FILE, METRICS_FILE = "state.pt", "model.json", "metrics.jsonl"
FUSION_COLUMNS = ["subject_id", "split", *MODALITIES]


def models(run_dir: str | Path) -> VersionedDir:
    return VersionedDir(Path(run_dir) / "fusion_models", "rdt fuse")


def input_dims(fusion_inputs_path: str, version: int, without: tuple[str, ...] = ()) -> dict[str, int]:
    """Each modality's vector length, for the modalities the table holds at all (in MODALITIES
    order); ``without`` leaves some out (ablations)."""
    dataset = open_delta(fusion_inputs_path, version).to_pyarrow_dataset()
    dims = {}
    for m in MODALITIES:
        if m in without:
            continue
        first = dataset.head(1, columns=[m], filter=pc.field(m).is_valid())
        if first.num_rows:
            dims[m] = len(first[m][0].as_py())
    if "events" not in dims:
        raise ValueError(f"{fusion_inputs_path} v{version}: no events embeddings; run rdt embed")
    return dims


def _batches(shard, dims: dict[str, int], batch_size: int, seed: int | None, device):
    for batch in shard.iter_torch_batches(
        batch_size=batch_size, collate_fn=TrainingCollate(dims),
        local_shuffle_buffer_size=None if seed is None else 4 * batch_size,
        local_shuffle_seed=seed, drop_last=seed is not None,
    ):
        yield {k: v.to(device) for k, v in batch.items()}


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_epoch(model, optimizer, shard, cfg: FusionConfig, dims, epoch: int, device) -> float:
    model.train()
    losses = []
    for batch in _batches(shard, dims, cfg.batch_size_per_worker, cfg.seed * 1000 + epoch, device):
        with _autocast(device):
            loss, _ = model(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def validate_epoch(model: FusionModel, shard, cfg: FusionConfig, dims, device) -> dict[str, float]:
    """Mean loss parts over the validation split, with the same modality-dropout draws each epoch."""
    model.eval()
    generator_state = torch.get_rng_state()
    torch.manual_seed(cfg.seed)
    sums, batches = {}, 0
    for batch in _batches(shard, dims, cfg.batch_size_per_worker, None, device):
        with _autocast(device):
            loss, parts = model(batch)
        for k, v in {"val_loss": float(loss), **{f"val_{k}": v for k, v in parts.items()}}.items():
            sums[k] = sums.get(k, 0.0) + v
        batches += 1
    torch.set_rng_state(generator_state)
    return {k: v / batches for k, v in sums.items()} if batches else {"val_loss": float("nan")}


def _save(module: FusionModel, optimizer, epoch: int, meta: dict, folder: Path) -> Checkpoint:
    torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch},
               folder / STATE_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps(
        {"fusion": dataclasses.asdict(module.cfg), "dims": module.dims, **meta}))
    return Checkpoint.from_directory(folder)


def train_loop_per_worker(config: dict) -> None:
    cfg: FusionConfig = config["fusion"]
    dims: dict[str, int] = config["dims"]
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(cfg.seed)
    module = FusionModel(cfg, dims)
    optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    start = 0
    resumed = ray.train.get_checkpoint()
    if resumed:
        with resumed.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu")
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["epoch"] + 1
    model = ray.train.torch.prepare_model(module)  # on its device, DDP if > 1 worker
    device = ray.train.torch.get_device()
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    metrics_file = Path(config["metrics_file"])
    for epoch in range(start, cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout and modality masks, replayable
        train_loss = train_epoch(model, optimizer, train_shard, cfg, dims, epoch, device)
        metrics = {"epoch": epoch, "train_loss": train_loss,
                   **validate_epoch(module, val_shard, cfg, dims, device),
                   "resumed_from": start if resumed else None}
        if rank == 0:
            with metrics_file.open("a") as out:
                out.write(json.dumps(metrics) + "\n")
            print(f"fusion epoch {epoch + 1}/{cfg.epochs}: train loss {train_loss:.4f}, "
                  f"val loss {metrics['val_loss']:.4f}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = _save(module, optimizer, epoch, config["meta"], Path(tmp)) if rank == 0 else None
            ray.train.report(metrics, checkpoint=checkpoint)


def code_digest() -> str:
    """The fusion's own source: a changed encoder or loss is a new version, so a finished run of
    the old code is never taken for a checkpoint to resume."""
    sources = [fusion.__file__, __file__, *[sys.modules[m].__file__ for m in ENCODER_MODULES]]
    return hashlib.sha1(b"".join(Path(f).read_bytes() for f in sources)).hexdigest()[:12]


def model_version(meta: dict, cfg: FusionConfig, dims: dict[str, int]) -> str:
    key = json.dumps({"meta": meta, "fusion": dataclasses.asdict(cfg), "dims": dims,
                      "code": code_digest()}, sort_keys=True)
    return "fusion-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def fit_fusion(fusion_inputs_path: str, events_model_version: str, cfg: FusionConfig, run_dir: str,
               without: tuple[str, ...] = ()) -> tuple[str, Path, dict]:
    """Train on the current gold.fusion_inputs; returns (model_version, model_dir, last metrics).
    The same inputs and settings give the same version, and a killed run of it resumes."""
    version_in = open_delta(fusion_inputs_path).version()
    dims = input_dims(fusion_inputs_path, version_in, without)
    meta = {"fusion_inputs_version": version_in, "events_model_version": events_model_version,
            "without": sorted(without)}
    version = model_version(meta, cfg, dims)
    meta["model_version"] = version
    storage = Path(run_dir) / "ray_train"
    metrics_file = storage / version / METRICS_FILE
    metrics_file.parent.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"fusion": cfg, "dims": dims, "meta": meta,
                           "metrics_file": str(metrics_file)},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=RunConfig(name=version, storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={split: read_delta(fusion_inputs_path, FUSION_COLUMNS, version_in, split)
                  for split in ("train", "val")},
        dataset_config=DataConfig(datasets_to_split=["train"],
                                  execution_options=ExecutionOptions(preserve_order=True)),
    )
    return (version, *fit_and_publish(trainer, models(run_dir), version))


def load_fusion(model_dir: str | Path) -> tuple[FusionModel, dict]:
    meta = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    model = FusionModel(FusionConfig(**meta["fusion"]), meta["dims"])
    state = torch.load(Path(model_dir) / STATE_FILE, map_location="cpu")
    model.load_state_dict(state["model"])
    return model.eval(), meta
