"""Embed every (patient, prediction time) with Ray Data, from events strictly before that time.

A timeline is sorted with static facts first; ``searchsorted`` on its times gives, for each
prediction time, how many events precede it. The causal encoder's state at the last of them is
the embedding (with the running mean
of the states up to it), computed over the window of at most ``max_seq_len`` events that ends there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch

from ray_training.datasets import pad_windows, read_delta, window
from ray_training.events_encoder import MODALITY
from ray_training.settings import EmbedConfig
from ray_training.train import load_encoder

EMBED_COLUMNS = ["subject_id", "tokens", "ages", "deltas", "values", "times",
                 "prediction_times", "split"]
OUTPUT_SCHEMA = pa.schema([
    ("subject_id", pa.int64()),
    ("prediction_time", pa.timestamp("us", tz="UTC")),
    ("model_version", pa.string()),
    ("embedding", pa.list_(pa.float32())),
    ("modalities", pa.list_(pa.string())),
    ("split", pa.string()),
])


def _micros(times) -> np.ndarray:
    """Timestamps as int64 microseconds; nulls (static facts) become the smallest int64."""
    values = np.asarray(times, dtype="datetime64[us]")
    return values.astype(np.int64)  # NaT is int64 min, so static facts sort first


def events_before(times, prediction_times) -> np.ndarray:
    """For each prediction time, the number of timeline events strictly before it."""
    return np.searchsorted(_micros(times), _micros(prediction_times), side="left")


class Embedder:
    """A Ray Data callable class: loads the encoder once per actor, embeds batches of timelines."""

    def __init__(self, model_dir: str):
        self.model, meta = load_encoder(model_dir)
        self.version = meta["model_version"]
        self.max_len = self.model.cfg.max_seq_len

    def requests(self, row: dict) -> list[tuple[int, int, int, int]]:
        """(prediction index, window start, window end, position of the embedding in it)."""
        ends = events_before(row["times"], row["prediction_times"])
        n, out = len(row["tokens"]), []
        for i, end in enumerate(ends):
            if end == 0:
                continue  # nothing known before this time
            if end <= self.max_len:
                start, stop = 0, min(n, self.max_len)  # one causal pass serves all early times
            else:
                start, stop = end - self.max_len, end
            out.append((i, start, stop, end - 1 - start))
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        windows, index, targets = {}, [], []
        for r in range(len(batch["subject_id"])):
            row = {k: batch[k][r] for k in EMBED_COLUMNS}
            at = _micros(row["prediction_times"])
            for i, start, stop, pos in self.requests(row):
                key = (r, start, stop)
                if key not in windows:
                    windows[key] = (len(windows), window(row, start, stop))
                index.append((r, int(at[i])))
                targets.append((windows[key][0], pos))
        rows = {name: [] for name in OUTPUT_SCHEMA.names}
        if windows:
            inputs = pad_windows([w for _, w in sorted(windows.values(), key=lambda x: x[0])])
            with torch.no_grad():
                hidden = self.model.hidden(**inputs)  # (W, T, d)
            w_idx = torch.tensor([t[0] for t in targets])
            p_idx = torch.tensor([t[1] for t in targets])
            # The state at the last event says what comes next; the running mean over the
            # window says where the course has been. Both see only events before the time.
            running_mean = hidden.cumsum(dim=1)[w_idx, p_idx] / (p_idx + 1).unsqueeze(-1)
            vectors = torch.cat([hidden[w_idx, p_idx], running_mean], dim=-1).numpy()
            for (r, at_micros), vector in zip(index, vectors, strict=True):
                rows["subject_id"].append(int(batch["subject_id"][r]))
                rows["prediction_time"].append(at_micros)
                rows["model_version"].append(self.version)
                rows["embedding"].append(vector.astype(np.float32))
                rows["modalities"].append([MODALITY.name])
                rows["split"].append(batch["split"][r])
        rows["prediction_time"] = pa.array(rows["prediction_time"], pa.int64()).cast(
            OUTPUT_SCHEMA.field("prediction_time").type)
        return pa.Table.from_pydict(rows, schema=OUTPUT_SCHEMA)


def embed_timelines(timelines_path: str, timelines_version: int, model_dir: str | Path,
                    staging_dir: str, cfg: EmbedConfig) -> None:
    """Write embeddings of every prediction time as Parquet under ``staging_dir``."""
    ds = read_delta(timelines_path, EMBED_COLUMNS, timelines_version)
    ds.map_batches(
        Embedder, fn_constructor_args=(str(model_dir),), batch_size=cfg.batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=cfg.concurrency), num_cpus=1,
    ).write_parquet(staging_dir)
