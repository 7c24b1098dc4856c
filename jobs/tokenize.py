"""rdt tokenize: silver.events -> gold.vocab, gold.timelines, gold.tasks."""

from __future__ import annotations

import argparse

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config, load_tasks
from rdt_spark.lake import read_table, write_table
from rdt_spark.schemas import GOLD_TASKS, GOLD_TIMELINES, GOLD_VOCAB, conform
from rdt_spark.splits import split_of
from rdt_spark.tasks import task_labels
from rdt_spark.timelines import build_timelines
from rdt_spark.vocab import build_vocab, vocab_version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(cfg: Config, args: argparse.Namespace) -> dict:
    t = cfg.tokenize
    suite = load_tasks(t.tasks_file)
    spark = context.spark(cfg)
    events = read_table(spark, cfg.lake, "silver.events")
    train_events = events.where(split_of(F.col("subject_id"), t.split_fractions) == "train")
    write_table(conform(build_vocab(train_events, t.min_code_count, t.value_bins), GOLD_VOCAB),
                cfg.lake, "gold.vocab")
    vocab = read_table(spark, cfg.lake, "gold.vocab")
    version = vocab_version(vocab)
    context.log("tokenize", f"gold.vocab {version}: {vocab.count():,} tokens")
    timelines = build_timelines(events, vocab, t.split_fractions, t.max_timeline_events,
                                context=cfg.model.max_seq_len)
    write_table(conform(timelines, GOLD_TIMELINES), cfg.lake, "gold.timelines")
    write_table(conform(task_labels(events, suite, t.split_fractions), GOLD_TASKS), cfg.lake,
                "gold.tasks")
    timelines = read_table(spark, cfg.lake, "gold.timelines")
    tasks = read_table(spark, cfg.lake, "gold.tasks")
    per_split = timelines.groupBy("split").agg(
        F.count("*").alias("patients"), F.sum(F.col("dropped_events")).alias("dropped"),
        F.sum((F.col("dropped_events") > 0).cast("int")).alias("capped"))
    splits, capped = {}, 0
    for row in per_split.collect():  # small: three rows
        splits[row["split"]] = row["patients"]
        capped += row["capped"]
    labels = tasks.groupBy("task").agg(
        F.count("*").alias("points"), F.sum(F.col("label").cast("int")).alias("positive"),
        F.sum(F.col("censored").cast("int")).alias("censored")).orderBy("task")
    counts = {}
    context.log("tokenize", f"gold.timelines: {sum(splits.values()):,} patients {splits}; "
                            f"{capped:,} over max_timeline_events={t.max_timeline_events:,}")
    for row in labels.collect():  # small: one row per task
        counts[row["task"]] = {k: row[k] for k in ("points", "positive", "censored")}
        context.log("tokenize", f"gold.tasks {row['task']}: {row['points']:,} prediction times, "
                                f"{row['positive']:,} positive, {row['censored']:,} censored")
    return {"vocab_version": version, "splits": splits, "tasks": counts}


if __name__ == "__main__":  # spark-submit jobs/tokenize.py / ray job submit -- python jobs/tokenize.py
    import sys

    from jobs.cli import main

    sys.exit(main(["tokenize", *sys.argv[1:]]))
