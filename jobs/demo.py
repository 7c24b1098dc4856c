"""rdt demo: the whole flow on the embedded default, ending with a twin report and evaluation."""

from __future__ import annotations

import argparse
import time

from pyspark.sql import functions as F

from jobs import context, embed, evaluate, generate, index, ingest, query, tokenize, train
from jobs.config import Config
from rdt_spark.lake import read_table
from rdt_spark.tasks import FLARE_TASK


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patients", type=int, help="number of patients (default from config)")
    parser.add_argument("--seed", type=int, help="global seed (default from config)")


def example_patient(cfg: Config) -> tuple[int, str]:
    """A test-split patient with a long history, asked about at the middle of it."""
    tasks = read_table(context.spark(cfg), cfg.lake, "gold.tasks").where(
        (F.col("split") == "test") & (F.col("task") == FLARE_TASK))
    best = (tasks.groupBy("subject_id")
            .agg(F.count("*").alias("n"), F.sort_array(F.collect_list("prediction_time")).alias("t"))
            .orderBy(F.desc("n"), "subject_id").first())  # small: one row
    return best["subject_id"], best["t"][len(best["t"]) // 2].isoformat()


def run(cfg: Config, args: argparse.Namespace) -> dict:
    started = time.time()
    steps = [("generate", generate, args), ("ingest", ingest, argparse.Namespace(source=None)),
             ("tokenize", tokenize, args), ("train", train, argparse.Namespace(epochs=None)),
             ("embed", embed, args), ("index", index, args)]
    results = {}
    for number, (name, job, job_args) in enumerate(steps, start=1):
        context.log("demo", f"step {number}/8: {name}")
        t0 = time.time()
        results[name] = job.run(cfg, job_args)
        context.log("demo", f"step {number}/8: {name} done in {time.time() - t0:.0f}s")
    subject, at = example_patient(cfg)
    context.log("demo", "step 7/8: query (one test-split patient, middle of their history)")
    print()
    results["query"] = query.run(cfg, argparse.Namespace(subject=subject, time=at, k=None,
                                                         json=False))
    print()
    context.log("demo", "step 8/8: evaluate")
    results["evaluate"] = evaluate.run(cfg, args)
    wall = time.time() - started
    print(f"\nDemo finished in {wall / 60:.1f} min (lake {cfg.lake}).")
    results["wall_seconds"] = wall
    return results


if __name__ == "__main__":  # spark-submit jobs/demo.py / ray job submit -- python jobs/demo.py
    import sys

    from jobs.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
