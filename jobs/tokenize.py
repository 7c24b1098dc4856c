"""rdt tokenize: silver.events -> gold.vocab, gold.timelines, gold.tasks."""

from __future__ import annotations

import argparse

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from rdt_spark.lake import read_table, write_table
from rdt_spark.splits import split_of
from rdt_spark.tasks import flare_tasks
from rdt_spark.timelines import build_timelines
from rdt_spark.vocab import build_vocab, vocab_version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(cfg: Config, args: argparse.Namespace) -> dict:
    t = cfg.tokenize
    spark = context.spark(cfg)
    events = read_table(spark, cfg.lake, "silver.events")
    train_events = events.where(split_of(F.col("subject_id"), t.split_fractions) == "train")
    vocab = build_vocab(train_events, t.min_code_count)
    version = vocab_version(vocab)
    write_table(vocab.withColumn("vocab_version", F.lit(version)), cfg.lake, "gold.vocab")
    vocab = read_table(spark, cfg.lake, "gold.vocab")
    context.log("tokenize", f"gold.vocab {version}: {vocab.count():,} tokens")
    write_table(build_timelines(events, vocab, t.split_fractions, version), cfg.lake,
                "gold.timelines")
    write_table(flare_tasks(events, t.flare_code, t.flare_horizon_days, t.split_fractions),
                cfg.lake, "gold.tasks")
    timelines = read_table(spark, cfg.lake, "gold.timelines")
    tasks = read_table(spark, cfg.lake, "gold.tasks")
    splits = dict(timelines.groupBy("split").count().collect())  # small: three rows
    labels = tasks.groupBy("task").agg(
        F.count("*").alias("points"), F.sum(F.col("label").cast("int")).alias("positive"),
        F.sum(F.col("censored").cast("int")).alias("censored")).collect()  # small: per task
    context.log("tokenize", f"gold.timelines: {sum(splits.values()):,} patients {splits}")
    for row in labels:
        context.log("tokenize", f"gold.tasks {row['task']}: {row['points']:,} prediction times, "
                                f"{row['positive']:,} positive, {row['censored']:,} censored")
    return {"vocab_version": version, "splits": splits}


if __name__ == "__main__":  # spark-submit jobs/tokenize.py / ray job submit -- python jobs/tokenize.py
    import sys

    from jobs.cli import main

    sys.exit(main(["tokenize", *sys.argv[1:]]))
