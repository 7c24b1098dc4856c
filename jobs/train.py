"""rdt train: the events encoder with Ray Train on gold.timelines; publishes a model version."""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass

from jobs import context
from jobs.config import Config
from jobs.job import Job, option

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    epochs: int | None = option("override train.epochs")


def run(cfg: Config, opts: Options) -> dict:
    from ray_training.train import fit_encoder

    context.ray(cfg)
    train = dataclasses.replace(cfg.train, epochs=opts.epochs or cfg.train.epochs)
    log.info(f"{train.epochs} epochs on {train.num_workers} Ray Train worker(s), "
             f"{train.batch_size_per_worker} timelines per worker and batch")
    version, model_dir, metrics = fit_encoder(
        context.path(cfg, "gold.timelines"), context.path(cfg, "gold.vocab"), cfg.model, train,
        cfg.run_dir)
    log.info(f"model {version}: train loss {metrics.get('train_loss', float('nan')):.3f}, "
             f"val loss {metrics.get('val_loss', float('nan')):.3f} -> {model_dir}")
    return {"model_version": version, "model_dir": str(model_dir), **metrics}


JOB = Job("train", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
