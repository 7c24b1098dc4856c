"""rdt modalities: silver.events (+ the source's ext.imaging and ext.omics) -> gold.notes,
gold.imaging, gold.omics, the per-modality inputs of the multimodal twin.

rdt_spark/modality_inputs.py defines each table. A source without ext.imaging or ext.omics (an
OMOP extract has neither) gives an empty table. Notes are counted, never logged.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, option
from rdt_spark.lake import read_table, write_table
from rdt_spark.modality_inputs import (
    CHUNK_WORDS,
    MIN_BATCH_SAMPLES,
    imaging_inputs,
    note_chunks,
    omics_inputs,
)
from rdt_spark.omop_source import read_omop_folder, read_omop_lake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    source: str | None = option("the folder of OMOP Parquet or CSV files that was ingested "
                                "(default: omop.* and ext.* in the lake)")
    chunk_words: int = option("most whitespace-separated words per note chunk", CHUNK_WORDS)
    min_batch_samples: int = option("train samples an omics batch needs for its own statistics "
                                    "(fewer: the pooled train statistics)", MIN_BATCH_SAMPLES)


def run(cfg: Config, opts: Options) -> dict:
    spark = context.spark(cfg)
    events = read_table(spark, cfg.lake, "silver.events")
    source = read_omop_folder(spark, opts.source) if opts.source else read_omop_lake(spark, cfg.lake)
    tables = {
        "gold.notes": note_chunks(events, opts.chunk_words),
        "gold.imaging": imaging_inputs(events, source.tables.get("ext.imaging")),
        "gold.omics": omics_inputs(events, source.tables.get("ext.omics"),
                                   cfg.tokenize.split_fractions, opts.min_batch_samples),
    }
    versions = {name: write_table(df, cfg.lake, name) for name, df in tables.items()}
    written = {name: read_table(spark, cfg.lake, name) for name in tables}
    notes = written["gold.notes"].agg(F.count("*").alias("chunks"),
                                      F.countDistinct("note_id").alias("notes")).first()  # small: one row
    omics = written["gold.omics"].agg(F.count("*").alias("samples"),
                                      F.countDistinct("batch").alias("batches")).first()  # small: one row
    studies = written["gold.imaging"].count()
    log.info(f"gold.notes v{versions['gold.notes']}: {notes['chunks']:,} chunks of "
             f"{notes['notes']:,} notes (at most {opts.chunk_words} words each)")
    log.info(f"gold.imaging v{versions['gold.imaging']}: {studies:,} radiograph studies"
             + ("" if "ext.imaging" in source.tables else " (the source has no ext.imaging)"))
    log.info(f"gold.omics v{versions['gold.omics']}: {omics['samples']:,} expression samples in "
             f"{omics['batches']:,} batches"
             + ("" if "ext.omics" in source.tables else " (the source has no ext.omics)"))
    return {"note_chunks": int(notes["chunks"]), "notes": int(notes["notes"]),
            "imaging_studies": int(studies), "omics_samples": int(omics["samples"]),
            "omics_batches": int(omics["batches"]), "versions": versions}


JOB = Job("modalities", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
