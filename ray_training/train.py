"""Train the events encoder with Ray Train on timelines read from Delta through Ray Data.

``train_loop_per_worker`` knows nothing about clusters; ``fit_encoder`` builds the TorchTrainer
from ``TrainConfig`` (workers, CPUs per worker, GPU) and publishes the best checkpoint as a model
version (``models(run_dir)``). Each worker trains on its own shard of the training split and
validates on the whole validation split (``DataConfig(datasets_to_split=["train"])``), so the best
checkpoint is chosen on all of it, whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import ray.train
import torch
from ray.train import Checkpoint, CheckpointConfig, DataConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ray_training.datasets import TIMELINE_COLUMNS, TrainingCollate, read_delta
from ray_training.events_encoder import EventsEncoder
from ray_training.settings import EventsConfig, TrainConfig
from ray_training.versions import VersionedDir
from rdt_spark.lake_uris import open_delta

MODEL_FILE, CONFIG_FILE = "model.pt", "model.json"


def models(run_dir: str | Path) -> VersionedDir:
    """Where trained model versions are published; CURRENT is the one embed uses."""
    return VersionedDir(Path(run_dir) / "models", "rdt train")


def _batches(shard, batch_size: int, max_seq_len: int, seed: int):
    return shard.iter_torch_batches(batch_size=batch_size,
                                    collate_fn=TrainingCollate(max_seq_len, seed))


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, shard,
                train: TrainConfig, max_seq_len: int, epoch: int) -> float:
    """One pass over this worker's shard; returns the mean batch loss."""
    model.train()
    losses = []
    for batch in _batches(shard, train.batch_size_per_worker, max_seq_len,
                          train.seed * 1000 + epoch):
        _, loss = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


@torch.no_grad()
def validate_epoch(model: EventsEncoder, shard, batch_size: int) -> float:
    """The next-token loss over every target token of the validation split (each batch weighted
    by its tokens, so the figure does not depend on how the split falls into batches)."""
    model.eval()
    total, tokens = 0.0, 0
    # A fixed seed: every epoch reads the same windows, so epochs compare like with like.
    for batch in _batches(shard, batch_size, model.cfg.max_seq_len, seed=0):
        _, loss = model(**batch)
        n = int((batch["tokens"][:, 1:] != 0).sum())
        total, tokens = total + loss.item() * n, tokens + n
    return total / tokens if tokens else float("nan")


def _checkpoint(module: EventsEncoder, meta: dict, folder: Path) -> Checkpoint:
    torch.save(module.state_dict(), folder / MODEL_FILE)
    (folder / CONFIG_FILE).write_text(json.dumps({"model": dataclasses.asdict(module.cfg), **meta}))
    return Checkpoint.from_directory(folder)


def train_loop_per_worker(config: dict) -> None:
    model_cfg: EventsConfig = config["model"]
    train: TrainConfig = config["train"]
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(train.seed + rank)
    model = ray.train.torch.prepare_model(EventsEncoder(model_cfg))  # on its device, DDP if > 1
    module = model.module if hasattr(model, "module") else model  # unwrapped: eval, save, decay
    optimizer = module.configure_optimizers(train.weight_decay, train.learning_rate)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    best = float("inf")
    for epoch in range(train.epochs):
        train_loss = train_epoch(model, optimizer, train_shard, train, model_cfg.max_seq_len, epoch)
        val_loss = validate_epoch(module, val_shard, train.batch_size_per_worker)
        metrics = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss}
        improved = rank == 0 and val_loss <= best
        best = min(best, val_loss)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = _checkpoint(module, config["meta"], Path(tmp)) if improved else None
            ray.train.report(metrics, checkpoint=checkpoint)


def model_version(meta: dict, model: EventsConfig, train: TrainConfig) -> str:
    """Same inputs and settings, same version: a re-run replaces the model, never duplicates it."""
    key = json.dumps({"meta": meta, "model": dataclasses.asdict(model),
                      "train": dataclasses.asdict(train)}, sort_keys=True)
    return "events-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def fit_encoder(timelines_path: str, vocab_path: str, model: EventsConfig, train: TrainConfig,
                run_dir: str) -> tuple[str, Path, dict]:
    """Train on the current timelines version; returns (model_version, model_dir, last metrics)."""
    vocab = open_delta(vocab_path).to_pyarrow_table(columns=["token_id", "vocab_version"])
    timelines_version = open_delta(timelines_path).version()
    model = dataclasses.replace(model, vocab_size=int(max(vocab["token_id"].to_pylist())) + 1)
    meta = {"vocab_version": vocab["vocab_version"][0].as_py(),
            "timelines_version": timelines_version}
    version = model_version(meta, model, train)
    meta["model_version"] = version
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"model": model, "train": train, "meta": meta},
        scaling_config=ScalingConfig(num_workers=train.num_workers, use_gpu=train.use_gpu,
                                     resources_per_worker={"CPU": train.cpus_per_worker}),
        run_config=RunConfig(name=version, storage_path=str(Path(run_dir) / "ray_train"),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
        datasets={split: read_delta(timelines_path, TIMELINE_COLUMNS, timelines_version, split)
                  for split in ("train", "val")},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return (version, *fit_and_publish(trainer, models(run_dir), version))


def fit_and_publish(trainer: TorchTrainer, published: VersionedDir, version: str) -> tuple[Path, dict]:
    """Run ``trainer`` and publish its final checkpoint as ``version``; returns the published
    folder and the last metrics."""
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training {version} produced no checkpoint")
    staging = published.staging(version)
    with result.checkpoint.as_directory() as src:
        shutil.copytree(src, staging, dirs_exist_ok=True)
    return published.publish(version), dict(result.metrics or {})


def load_encoder(model_dir: str | Path) -> tuple[EventsEncoder, dict]:
    meta = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    model = EventsEncoder(EventsConfig(**meta["model"]))
    model.load_state_dict(torch.load(Path(model_dir) / MODEL_FILE, map_location="cpu"))
    return model.eval(), meta
