"""rdt export-meds: silver.events as a MEDS dataset (data shards and metadata) for MEDS tools."""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from rdt_spark.lake import read_table, table_exists, table_version
from rdt_spark.meds_export import export_meds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="output folder (default: <run_dir>/meds); replaced whole")


def _etl_version() -> str:
    try:
        return metadata.version("rheumatic-digital-twin")
    except metadata.PackageNotFoundError:
        return "unknown"


def run(cfg: Config, args: argparse.Namespace) -> dict:
    spark = context.spark(cfg)
    out = getattr(args, "out", None) or str(Path(cfg.run_dir) / "meds")
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
    summary = export_meds(events, out, cfg.tokenize.split_fractions,
                          cfg.tokenize.meds_subjects_per_shard, dataset, descriptions)
    for split, s in sorted(summary["splits"].items()):
        context.log("export-meds", f"data/{split}: {s['shards']} shard(s), {s['subjects']:,} "
                                   f"subjects, {s['rows']:,} events")
    context.log("export-meds", f"{summary['codes']:,} codes, {summary['subjects']:,} subjects "
                               f"-> {summary['out']}")
    return summary


if __name__ == "__main__":  # spark-submit jobs/export_meds.py
    import sys

    from jobs.cli import main

    sys.exit(main(["export-meds", *sys.argv[1:]]))
