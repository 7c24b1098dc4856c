"""The gradient-boosted baseline: LightGBM on tabularised history, trained with Ray Train.

``fit_gbm`` builds a ``LightGBMTrainer`` over Ray Datasets of labelled points (``model``: which
booster a row trains, e.g. its task; ``features``, an array per row; ``label``; ``latent``, the
simulator's true variables) and fits, in one run, one booster per model and variant: the
baseline on the features, the oracle on features and latent.
Each worker trains on its shard of the training split, every worker evaluates on the whole
validation split and a booster stops when its log loss there has not improved for
``early_stopping_rounds``. ``score`` applies a booster with Ray Data. Nothing is collected to the
driver but the models.

Example::

    models = fit_gbm(train_ds, val_ds, GBMConfig(), {"gbm": False, "oracle": True})
    score(test_ds, models, "oracle", oracle=True).write_parquet(out)  # keys, task, score
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path

import lightgbm
import numpy as np
import pyarrow as pa
import ray
import ray.train
from ray.train import Checkpoint, DataConfig, RunConfig, ScalingConfig
from ray.train.lightgbm import LightGBMTrainer

from ray_training.settings import GBMConfig


def matrix(batch: dict, oracle: bool) -> np.ndarray:
    """The model's input: the features, and with ``oracle`` the true latent variables too."""
    x = np.stack(batch["features"]).astype(np.float32)
    if oracle:
        x = np.hstack([x, np.stack(batch["latent"]).astype(np.float32)])
    return x


def _frame(shard) -> dict[str, np.ndarray]:
    rows = shard.materialize().to_pandas()  # this worker's shard only
    return {c: rows[c].to_numpy() for c in rows.columns}


def _rows(frame: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {c: v[mask] for c, v in frame.items()}


def train_loop_per_worker(config: dict) -> None:
    """One worker: its shard of the training split, the whole validation split; one booster
    per model and variant (``oracle`` false: the features alone; true: with the latent
    variables)."""
    train, valid = _frame(ray.train.get_dataset_shard("train")), _frame(
        ray.train.get_dataset_shard("valid"))
    params = {"objective": "binary", "metric": "binary_logloss", "verbose": -1,
              "num_threads": config["threads"], **config["params"],
              **ray.train.lightgbm.get_network_params()}
    metrics, saved = {}, []
    with tempfile.TemporaryDirectory() as folder:
        for model in sorted(set(train["model"])):
            fit, check = _rows(train, train["model"] == model), _rows(valid, valid["model"] == model)
            for name, oracle in config["variants"].items():
                booster = lightgbm.train(
                    params, lightgbm.Dataset(matrix(fit, oracle), label=fit["label"]),
                    num_boost_round=config["rounds"],
                    valid_sets=[lightgbm.Dataset(matrix(check, oracle), label=check["label"])],
                    valid_names=["valid"],
                    callbacks=[lightgbm.early_stopping(config["patience"], verbose=False)])
                key = f"{name} {model}"
                metrics[f"{key} valid_logloss"] = booster.best_score["valid"]["binary_logloss"]
                metrics[f"{key} trees"] = booster.best_iteration
                booster.save_model(str(Path(folder, f"{len(saved)}.txt")),
                                   num_iteration=booster.best_iteration)
                saved.append({"model": model, "variant": name, "file": f"{len(saved)}.txt"})
        Path(folder, "models.json").write_text(json.dumps(saved))
        # Reported here rather than by RayTrainReportCallback, whose end-of-training
        # checkpoint never comes when early stopping ends the rounds first.
        if ray.train.get_context().get_world_rank() in (0, None):
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)


Models = dict[tuple[str, str], lightgbm.Booster]  # (model, variant) -> booster


def fit_gbm(train: ray.data.Dataset, valid: ray.data.Dataset, cfg: GBMConfig,
            variants: dict[str, bool], storage: str | None = None) -> Models:
    """Boosters fitted on ``train`` with early stopping on ``valid`` (rows with ``model``,
    ``features``, ``label`` and ``latent``), one per model and variant name (value: whether it
    sees ``latent``)."""
    params = {k: v for k, v in asdict(cfg).items()
              if k not in ("num_workers", "cpus_per_worker", "num_boost_round",
                           "early_stopping_rounds")}
    trainer = LightGBMTrainer(
        train_loop_per_worker,
        train_loop_config={"variants": variants, "params": params,
                           "rounds": cfg.num_boost_round, "patience": cfg.early_stopping_rounds,
                           "threads": cfg.cpus_per_worker},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker}),
        datasets={"train": train, "valid": valid},
        dataset_config=DataConfig(datasets_to_split=["train"]),
        run_config=RunConfig(storage_path=storage or tempfile.mkdtemp(prefix="rdt-gbm-"),
                             name="gbm"),
    )
    with trainer.fit().checkpoint.as_directory() as folder:
        saved = json.loads(Path(folder, "models.json").read_text())
        return {(m["model"], m["variant"]): lightgbm.Booster(model_file=str(Path(folder, m["file"])))
                for m in saved}


class GBMScorer:
    """A Ray Data callable: each row's probability from the booster of its ``model``, keyed by
    (subject_id, prediction_time, task)."""

    def __init__(self, models: dict[str, str], oracle: bool):
        self.boosters = {model: lightgbm.Booster(model_str=m) for model, m in models.items()}
        self.oracle = oracle

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        scores = np.full(len(batch["task"]), np.nan)
        for model, booster in self.boosters.items():
            mine = batch["model"] == model
            if mine.any():  # a model's rows share one feature length
                scores[mine] = booster.predict(matrix(_rows(batch, mine), self.oracle))
        return pa.table({
            "subject_id": pa.array(batch["subject_id"], pa.int64()),
            "prediction_time": pa.array(batch["prediction_time"]).cast(
                pa.timestamp("us", tz="UTC")),
            "task": pa.array(batch["task"], pa.string()),
            "score": pa.array(scores, pa.float64()),
        })


def score(points: ray.data.Dataset, models: Models, variant: str, oracle: bool,
          concurrency: int = 1) -> ray.data.Dataset:
    """(subject_id, prediction_time, task, score) for every row of ``points`` from the
    ``variant``'s boosters (``oracle``: it reads the latent variables)."""
    mine = {model: b.model_to_string() for (model, name), b in models.items() if name == variant}
    return points.map_batches(GBMScorer, fn_constructor_args=(mine, oracle), batch_size=1024,
                              batch_format="numpy",
                              compute=ray.data.ActorPoolStrategy(size=concurrency), num_cpus=1)
