"""rdt export-meds: silver.events as a MEDS dataset (data shards and metadata) for MEDS tools.

Subject ids are keyed pseudonyms unless ``privacy.meds_subject_ids`` is ``source``; the
export's ``metadata/dataset.json`` records which (``rdt_subject_ids``).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, option
from rdt_spark.lake import read_table, table_exists, table_version
from rdt_spark.meds_export import export_meds

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    out: str | None = option("output folder (default: <run_dir>/meds); replaced whole")


def _etl_version() -> str:
    try:
        return metadata.version("rheumatic-digital-twin")
    except metadata.PackageNotFoundError:
        return "unknown"


def run(cfg: Config, opts: Options) -> dict:
    spark = context.spark(cfg)
    out = opts.out or str(Path(cfg.run_dir) / "meds")
    events = read_table(spark, cfg.lake, "silver.events")
    version = table_version(spark, cfg.lake, "silver.events")
    descriptions = None
    if table_exists(spark, cfg.lake, "omop.concept"):
        descriptions = read_table(spark, cfg.lake, "omop.concept").select(
            F.concat_ws("/", "vocabulary_id", "concept_code").alias("code"),
            F.col("concept_name").alias("description"))
    dataset = {"dataset_name": f"rdt:{Path(cfg.lake).name}",
               "dataset_version": f"silver.events v{version}",
               "etl_name": "rheumatic-digital-twin rdt export-meds",
               "etl_version": _etl_version()}
    key = cfg.privacy.key(cfg.run_dir) if cfg.privacy.meds_subject_ids == "pseudonym" else None
    log.info("subject ids: " + (f"keyed pseudonyms (key {key.key_id})" if key else
                                "source ids (privacy.meds_subject_ids: source)"))
    summary = export_meds(events, out, cfg.tokenize.split_fractions,
                          cfg.tokenize.meds_subjects_per_shard, dataset, descriptions, key)
    for split, s in sorted(summary["splits"].items()):
        log.info(f"data/{split}: {s['shards']} shard(s), {s['subjects']:,} "
                 f"subjects, {s['rows']:,} events")
    log.info(f"{summary['codes']:,} codes, {summary['subjects']:,} subjects -> {summary['out']}")
    return summary


JOB = Job("export-meds", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
