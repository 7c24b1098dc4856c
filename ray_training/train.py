"""Train the EHR encoder with Ray Train on timelines read from Delta through Ray Data.

``train_loop_per_worker`` knows nothing about clusters; ``fit_encoder`` builds the TorchTrainer
from config (workers, CPUs per worker, GPU) and saves the best checkpoint as a model version.
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
from ray.train import Checkpoint, CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from ray_training.datasets import TIMELINE_COLUMNS, TrainingCollate, read_delta
from ray_training.model import EHRConfig, EHRTransformer

MODEL_FILE, CONFIG_FILE = "model.pt", "model.json"


def _batches(shard, batch_size: int, max_seq_len: int, seed: int):
    return shard.iter_torch_batches(batch_size=batch_size,
                                    collate_fn=TrainingCollate(max_seq_len, seed))


def train_loop_per_worker(config: dict) -> None:
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(config["seed"] + rank)
    model_cfg = EHRConfig(**config["model"])
    model = ray.train.torch.prepare_model(EHRTransformer(model_cfg))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["learning_rate"],
                                  weight_decay=0.01)
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    best = float("inf")
    for epoch in range(config["epochs"]):
        model.train()
        losses = []
        for batch in _batches(train_shard, config["batch_size"], model_cfg.max_seq_len,
                              config["seed"] * 1000 + epoch):
            _, loss = model(**batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.no_grad():
            val = [model(**b)[1].item() for b in
                   _batches(val_shard, config["batch_size"], model_cfg.max_seq_len, 0)]
        metrics = {"epoch": epoch, "train_loss": float(np.mean(losses)),
                   "val_loss": float(np.mean(val)) if val else float("nan")}
        improved = rank == 0 and metrics["val_loss"] <= best
        best = min(best, metrics["val_loss"])
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if improved:
                module = model.module if hasattr(model, "module") else model
                torch.save(module.state_dict(), Path(tmp) / MODEL_FILE)
                (Path(tmp) / CONFIG_FILE).write_text(json.dumps(
                    {"model": dataclasses.asdict(model_cfg), **config["meta"]}))
                checkpoint = Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)


def model_version(meta: dict, model: dict, train: dict) -> str:
    """Same inputs and settings, same version: a re-run replaces the model, never duplicates it."""
    key = json.dumps({"meta": meta, "model": model, "train": train}, sort_keys=True)
    return "ehr-" + hashlib.sha1(key.encode()).hexdigest()[:12]


def fit_encoder(
    timelines_path: str, timelines_version: int, vocab_size: int, vocab_version: str,
    model: dict, train: dict, run_dir: str,
) -> tuple[str, Path, dict]:
    """Train on the pinned timelines version; returns (model_version, model_dir, last metrics)."""
    meta = {"vocab_version": vocab_version, "timelines_version": timelines_version}
    version = model_version(meta, model, train)
    meta["model_version"] = version
    datasets = {
        split: read_delta(timelines_path, TIMELINE_COLUMNS, timelines_version, split)
        for split in ("train", "val")
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "model": {**model, "vocab_size": vocab_size}, "meta": meta,
            "epochs": train["epochs"], "batch_size": train["batch_size"],
            "learning_rate": train["learning_rate"], "seed": train["seed"],
        },
        scaling_config=ScalingConfig(
            num_workers=train["num_workers"], use_gpu=train["use_gpu"],
            resources_per_worker={"CPU": train["cpus_per_worker"]},
        ),
        run_config=RunConfig(name=version, storage_path=str(Path(run_dir) / "ray_train"),
                             checkpoint_config=CheckpointConfig(num_to_keep=1)),
        datasets=datasets,
    )
    result = trainer.fit()
    best = result.checkpoint
    if best is None:
        raise RuntimeError(f"training {version} produced no checkpoint")
    target = Path(run_dir) / "models" / version
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    with best.as_directory() as src:
        shutil.copytree(src, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return version, target, dict(result.metrics or {})


def load_encoder(model_dir: str | Path) -> tuple[EHRTransformer, dict]:
    meta = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    model = EHRTransformer(EHRConfig(**meta["model"]))
    model.load_state_dict(torch.load(Path(model_dir) / MODEL_FILE, map_location="cpu"))
    return model.eval(), meta
