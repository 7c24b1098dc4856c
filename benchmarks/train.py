"""Training throughput of the events encoder: tokens per second and peak memory, on this machine.

Two measurements, one line of figures:
- ``step``: the model's training step alone (forward, backward, AdamW) on batches shaped like the
  config's (batch_size_per_worker timelines of max_seq_len events), on CUDA when there is one
  (bf16 autocast, as training runs there), else on the CPU with torch's threads;
- ``ray`` (with ``--lake``): ``rdt train``'s own path, Ray Train over gold.timelines streamed by
  Ray Data from Delta, tokens counted as the windows it trains on (one per training timeline and
  epoch, at most max_seq_len events each).

    python benchmarks/train.py --config conf/local.yaml [--lake ./lake] [--steps 30] [--repeats 3]

Medians over ``--repeats``; peak memory is the process's maximum resident set (and CUDA's peak
allocation on a GPU).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.config import load_config  # noqa: E402
from ray_training.events_encoder import EventsEncoder  # noqa: E402


def step_rate(cfg, steps: int, device: torch.device) -> float:
    model_cfg = dataclasses.replace(cfg.model, vocab_size=2000)
    model = EventsEncoder(model_cfg).to(device)
    optimizer = model.configure_optimizers(cfg.train.weight_decay, cfg.train.learning_rate)
    B, T = cfg.train.batch_size_per_worker, model_cfg.max_seq_len
    g = torch.Generator().manual_seed(0)
    batch = {"tokens": torch.randint(1, 2000, (B, T), generator=g),
             "ages": 40 + 30 * torch.rand(B, T, generator=g),
             "deltas": torch.rand(B, T, generator=g) * 60,
             "values": torch.rand(B, T, generator=g) * 2 - 1,
             "has_value": (torch.rand(B, T, generator=g) < 0.4).float()}
    batch = {k: v.to(device) for k, v in batch.items()}
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def one() -> None:
        with autocast:
            _, loss = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        one()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * B * T / (time.perf_counter() - start)


def ray_rate(cfg, lake: str, epochs: int) -> float:
    from ray_training.cluster import connect
    from ray_training.train import fit_encoder
    from rdt_spark.lake import table_path
    from rdt_spark.lake_uris import open_delta

    connect(cfg.ray)
    timelines = table_path(lake, "gold.timelines")
    rows = open_delta(timelines).to_pyarrow_table(columns=["tokens", "split"]).to_pandas()
    windows = rows[rows["split"] == "train"]["tokens"].map(len).clip(upper=cfg.model.max_seq_len)
    train = dataclasses.replace(cfg.train, epochs=epochs)
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        fit_encoder(timelines, table_path(lake, "gold.vocab"), cfg.model, train, run_dir)
        seconds = time.perf_counter() - start
    return int(windows.sum()) * epochs / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="conf/local.yaml")
    parser.add_argument("--lake", help="also time rdt train's Ray path on this lake's timelines")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = load_config(args.config)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = (torch.cuda.get_device_name(0) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} torch threads")
    step = statistics.median(step_rate(cfg, args.steps, device) for _ in range(args.repeats))
    line = (f"device={where} batch={cfg.train.batch_size_per_worker}x{cfg.model.max_seq_len} "
            f"d_model={cfg.model.d_model} layers={cfg.model.n_layers} "
            f"step_tokens_per_s={step:,.0f}")
    if args.lake:
        ray = statistics.median(ray_rate(cfg, args.lake, args.epochs) for _ in range(args.repeats))
        line += f" ray_train_tokens_per_s={ray:,.0f}"
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line += f" peak_rss_mb={peak_mb:,.0f}"
    if device.type == "cuda":
        line += f" peak_cuda_mb={torch.cuda.max_memory_allocated() / 2**20:,.0f}"
    print(line)


if __name__ == "__main__":
    main()
