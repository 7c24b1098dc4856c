"""Ray Datasets read from the lake's Delta tables, and batches padded for the encoder.

Long histories: a timeline longer than the model's context is read as a window of
``max_seq_len`` consecutive events, a random one in training and the one ending at the prediction
time when embedding. The stored timeline holds at most ``tokenize.max_timeline_events`` timed
events, the newest (rdt_spark.timelines documents the cap and its ``dropped_events`` count).
"""

from __future__ import annotations

import numpy as np
import ray
import torch
from ray.data.collate_fn import NumpyBatchCollateFn

from rdt_spark.lake_uris import delta_rs_uri, open_delta

TIMELINE_COLUMNS = ["subject_id", "tokens", "ages", "deltas", "values", "split"]


def delta_version(path: str) -> int:
    return open_delta(path).version()


def read_delta(path: str, columns: list[str] | None = None, version: int | None = None,
               split: str | None = None) -> ray.data.Dataset:
    """A Delta table (written by Spark) as a Ray Dataset, optionally one split of it."""
    ds = ray.data.read_delta(delta_rs_uri(path), version=version, columns=columns)
    if split is not None:
        ds = ds.filter(expr=f"split == '{split}'")
    return ds


def _floats(seq) -> np.ndarray:
    return np.asarray([np.nan if v is None else v for v in seq], dtype=np.float32)


def pad_windows(
    windows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> dict[str, torch.Tensor]:
    """Right-pad (tokens, ages, deltas, values) windows into model inputs; nulls become 0."""
    T = max(len(w[0]) for w in windows)
    out = {k: np.zeros((len(windows), T), dtype=np.float32)
           for k in ("ages", "deltas", "values", "has_value")}
    tokens = np.zeros((len(windows), T), dtype=np.int64)
    for i, (tok, age, delta, value) in enumerate(windows):
        n = len(tok)
        tokens[i, :n] = tok
        out["ages"][i, :n] = np.nan_to_num(age)
        out["deltas"][i, :n] = np.nan_to_num(delta)
        out["has_value"][i, :n] = ~np.isnan(value)
        out["values"][i, :n] = np.nan_to_num(value)
    return {"tokens": torch.from_numpy(tokens), **{k: torch.from_numpy(v) for k, v in out.items()}}


def window(row: dict, start: int, end: int) -> tuple[np.ndarray, ...]:
    return (np.asarray(row["tokens"][start:end], dtype=np.int64), _floats(row["ages"][start:end]),
            _floats(row["deltas"][start:end]), _floats(row["values"][start:end]))


class TrainingCollate(NumpyBatchCollateFn):
    """Collate timelines for training: a random window of at most max_seq_len per timeline."""

    def __init__(self, max_seq_len: int, seed: int):
        super().__init__()
        self.max_seq_len, self.rng = max_seq_len, np.random.default_rng(seed)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        windows = []
        for i in range(len(batch["tokens"])):
            row = {k: batch[k][i] for k in ("tokens", "ages", "deltas", "values")}
            n = len(row["tokens"])
            start = int(self.rng.integers(0, n - self.max_seq_len + 1)) if n > self.max_seq_len else 0
            windows.append(window(row, start, start + self.max_seq_len))
        return pad_windows(windows)
