"""rdt fusion-inputs: one row per embedded patient-time with what each modality knew strictly
before it (gold.event_embeddings + gold.notes/note_features + gold.imaging + gold.omics ->
gold.fusion_inputs, rdt_spark.modality_inputs), the training and embedding input of rdt fuse."""

from __future__ import annotations

import logging
import sys

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, NoOptions
from rdt_spark.lake import read_table, write_table
from rdt_spark.modality_inputs import fusion_inputs
from rdt_spark.schemas import GOLD_FUSION_INPUTS, conform

log = logging.getLogger(__name__)


def run(cfg: Config, opts: NoOptions) -> dict:
    spark = context.spark(cfg)

    def table(name: str):
        return read_table(spark, cfg.lake, name)

    rows = fusion_inputs(table("gold.event_embeddings"), table("gold.note_features"),
                         table("gold.notes"), table("gold.imaging"), table("gold.omics"),
                         notes_per_time=cfg.fusion.notes_per_time)
    version = write_table(conform(rows, GOLD_FUSION_INPUTS), cfg.lake, "gold.fusion_inputs")
    written = table("gold.fusion_inputs")
    counts = written.agg(F.count("*").alias("points"),
                         *[F.sum(F.col(m).isNotNull().cast("int")).alias(m)
                           for m in ("notes", "imaging", "omics")]).first()  # one row
    summary = {k: int(counts[k] or 0) for k in ("points", "notes", "imaging", "omics")}
    log.info(f"gold.fusion_inputs v{version}: {summary['points']:,} patient-times; with notes "
             f"{summary['notes']:,}, a radiograph {summary['imaging']:,}, an expression profile "
             f"{summary['omics']:,}")
    return {**summary, "version": version}


JOB = Job("fusion-inputs", run)

if __name__ == "__main__":
    sys.exit(JOB.main())
