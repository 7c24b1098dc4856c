"""rdt tokenize: silver.events -> gold.vocab, gold.timelines, gold.tasks.

(The module is not called tokenize.py: run as a script, it would shadow the standard library's
``tokenize``.)
"""

from __future__ import annotations

import logging
import sys

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, NoOptions
from rdt_spark.lake import read_table, write_table
from rdt_spark.schemas import GOLD_TASKS, GOLD_TIMELINES, GOLD_VOCAB, conform
from rdt_spark.splits import split_of
from rdt_spark.tasks import load_tasks, task_labels
from rdt_spark.timelines import build_timelines
from rdt_spark.vocab import build_vocab, vocab_version

log = logging.getLogger(__name__)


def run(cfg: Config, opts: NoOptions) -> dict:
    t = cfg.tokenize
    suite = load_tasks(t.tasks_file)
    spark = context.spark(cfg)
    events = read_table(spark, cfg.lake, "silver.events")
    train_events = events.where(split_of(F.col("subject_id"), t.split_fractions) == "train")
    # build_vocab's frame holds the vocabulary in the driver (a local relation): the timelines
    # use it as written, without reading gold.vocab back (a Delta snapshot and two jobs).
    vocab = conform(build_vocab(train_events, t.min_code_count, t.value_bins), GOLD_VOCAB)
    write_table(vocab, cfg.lake, "gold.vocab")
    version = vocab_version(vocab)
    log.info(f"gold.vocab {version}: {vocab.count():,} tokens")
    timelines = build_timelines(events, vocab, t.split_fractions, t.max_timeline_events,
                                context=cfg.model.max_seq_len)
    write_table(conform(timelines, GOLD_TIMELINES), cfg.lake, "gold.timelines")
    write_table(conform(task_labels(events, suite, t.split_fractions), GOLD_TASKS), cfg.lake,
                "gold.tasks")
    return {"vocab_version": version, **_summary(spark, cfg)}


def _summary(spark, cfg: Config) -> dict:
    """Patients per split and labels per task, as written (logged, and returned)."""
    timelines = read_table(spark, cfg.lake, "gold.timelines")
    tasks = read_table(spark, cfg.lake, "gold.tasks")
    per_split = timelines.groupBy("split").agg(
        F.count("*").alias("patients"), F.sum(F.col("dropped_events")).alias("dropped"),
        F.sum((F.col("dropped_events") > 0).cast("int")).alias("capped"))
    splits, capped = {}, 0
    for row in per_split.collect():  # small: three rows
        splits[row["split"]] = row["patients"]
        capped += row["capped"]
    log.info(f"gold.timelines: {sum(splits.values()):,} patients {splits}; {capped:,} over "
             f"max_timeline_events={cfg.tokenize.max_timeline_events:,}")
    labels = tasks.groupBy("task").agg(
        F.count("*").alias("points"), F.sum(F.col("label").cast("int")).alias("positive"),
        F.sum(F.col("censored").cast("int")).alias("censored")).orderBy("task")
    counts = {}
    for row in labels.collect():  # small: one row per task
        counts[row["task"]] = {k: row[k] for k in ("points", "positive", "censored")}
        log.info(f"gold.tasks {row['task']}: {row['points']:,} prediction times, "
                 f"{row['positive']:,} positive, {row['censored']:,} censored")
    return {"splits": splits, "tasks": counts}


JOB = Job("tokenize", run)

if __name__ == "__main__":
    sys.exit(JOB.main())
