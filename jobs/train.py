"""rdt train: the EHR encoder with Ray Train on gold.timelines; saves a model version."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from jobs import context
from jobs.config import Config

CURRENT_MODEL = "CURRENT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, help="override train.epochs")


def current_model_dir(cfg: Config) -> Path:
    pointer = Path(cfg.run_dir) / "models" / CURRENT_MODEL
    if not pointer.exists():
        raise FileNotFoundError(f"no trained model under {pointer.parent}: run `rdt train` first")
    return pointer.parent / pointer.read_text().strip()


def run(cfg: Config, args: argparse.Namespace) -> dict:
    from deltalake import DeltaTable

    from ray_training.train import fit_encoder

    context.ray(cfg)
    vocab = DeltaTable(context.path(cfg, "gold.vocab")).to_pyarrow_table(
        columns=["token_id", "vocab_version"]).to_pydict()
    timelines = context.path(cfg, "gold.timelines")
    train = dataclasses.asdict(cfg.train)
    if getattr(args, "epochs", None):
        train["epochs"] = args.epochs
    context.log("train", f"{train['epochs']} epochs on {train['num_workers']} Ray Train worker(s)")
    version, model_dir, metrics = fit_encoder(
        timelines, DeltaTable(timelines).version(), max(vocab["token_id"]) + 1,
        vocab["vocab_version"][0], dataclasses.asdict(cfg.model), train, cfg.run_dir)
    pointer = model_dir.parent / f"{CURRENT_MODEL}.tmp"
    pointer.write_text(version)
    os.replace(pointer, model_dir.parent / CURRENT_MODEL)
    context.log("train", f"model {version}: train loss {metrics.get('train_loss', float('nan')):.3f}"
                         f", val loss {metrics.get('val_loss', float('nan')):.3f} -> {model_dir}")
    return {"model_version": version, "model_dir": str(model_dir), **metrics}


if __name__ == "__main__":  # spark-submit jobs/train.py / ray job submit -- python jobs/train.py
    import sys

    from jobs.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
