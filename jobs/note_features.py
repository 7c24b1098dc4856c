"""rdt note-features: gold.notes -> gold.note_features, the frozen text features of each distinct
note chunk text, computed once per text by a Ray Data actor pool (ray_training/notes_encoder.py).

Only the texts whose hash the table lacks are encoded and added (an insert-only Delta MERGE on
text_hash, so a re-run adds nothing twice); when the model changed, every text is encoded again
and the table is replaced. Texts are counted, never logged.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import dataclass

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, option
from rdt_spark.lake import read_table, table_exists, table_version, write_table
from rdt_spark.schemas import GOLD_NOTE_FEATURES, conform

log = logging.getLogger(__name__)

TABLE = "gold.note_features"


@dataclass(frozen=True)
class Options:
    batch_size: int | None = option("override notes.batch_size: texts per Ray Data batch")
    concurrency: int | None = option("override notes.concurrency: encoder actors (each loads "
                                     "the model once and takes one CPU)")


def run(cfg: Config, opts: Options) -> dict:
    from delta.tables import DeltaTable

    from ray_training.notes_encoder import cached_model, model_name, note_features

    spark = context.spark(cfg)
    notes = read_table(spark, cfg.lake, "gold.notes")  # fails naming the job to run first
    counts = notes.agg(F.count("*").alias("chunks"),
                       F.countDistinct("text_hash").alias("texts")).first()  # small: one row
    features_path = context.path(cfg, TABLE)
    model, previous = model_name(), cached_model(features_path)
    replace = previous != model  # no table yet, an empty one, or another model's features
    if replace and previous is not None:
        log.info(f"{TABLE} holds features of {previous}: all texts are encoded again with {model}")

    batch_size = opts.batch_size or cfg.notes.batch_size
    concurrency = opts.concurrency or cfg.notes.concurrency
    context.ray(cfg)
    staged = context.staging(cfg, "note_features")
    started = time.monotonic()
    encoded = note_features(context.path(cfg, "gold.notes"), None if replace else features_path,
                            staged, batch_size, concurrency)
    seconds = time.monotonic() - started
    log.info(f"{counts['texts']:,} distinct texts in {counts['chunks']:,} note chunks; {encoded:,} "
             f"new, encoded in {seconds:.1f} s ({encoded / max(seconds, 1e-9):.1f} texts/s, "
             f"batch {batch_size}, {concurrency} actor(s))")

    if encoded:
        new = conform(spark.read.parquet(staged), GOLD_NOTE_FEATURES)
    else:
        new = spark.createDataFrame([], GOLD_NOTE_FEATURES)
    if replace or not table_exists(spark, cfg.lake, TABLE):
        write_table(new, cfg.lake, TABLE)
    elif encoded:
        # Insert-only MERGE: a hash already there (a racing run's) is not added twice.
        (DeltaTable.forPath(spark, features_path).alias("t")
         .merge(new.alias("s"), "t.text_hash = s.text_hash")
         .whenNotMatchedInsertAll().execute())
    version = table_version(spark, cfg.lake, TABLE)
    shutil.rmtree(staged, ignore_errors=True)
    log.info(f"{TABLE} v{version}: {model}")
    return {"model": model, "distinct_texts": int(counts["texts"]), "encoded": encoded,
            "seconds": round(seconds, 1), "replaced": replace, "version": version}


JOB = Job("note-features", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
