"""rdt ingest: OMOP tables -> silver.events + silver.rejects, every row accounted for."""

from __future__ import annotations

import argparse
import datetime as dt
import uuid

from jobs import context
from jobs.config import Config
from rdt_spark.ingest import account_rows, ingest_omop
from rdt_spark.lake import read_table, write_table
from rdt_spark.omop_source import extract_time, read_omop_lake, read_omop_parquet


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="a folder of OMOP Parquet files (default: omop.* in the lake)")


def run(cfg: Config, args: argparse.Namespace) -> dict:
    spark = context.spark(cfg)
    source = getattr(args, "source", None)
    tables = read_omop_parquet(spark, source) if source else read_omop_lake(spark, cfg.lake)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    extract = extract_time(tables)
    context.log("ingest", f"run {run_id}: tables {sorted(tables)}, extract date {extract:%Y-%m-%d}")
    events, rejects, flagged = ingest_omop(tables, extract, run_id)
    write_table(events, cfg.lake, "silver.events")
    write_table(rejects, cfg.lake, "silver.rejects")
    flagged.unpersist()
    summary = account_rows(tables, read_table(spark, cfg.lake, "silver.events"),
                           read_table(spark, cfg.lake, "silver.rejects"))
    for row in summary:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(row["reasons"].items())) or "none"
        context.log("ingest", f"{row['table']}: {row['rows_in']:,} in = {row['accepted']:,} "
                              f"accepted + {row['rejected']:,} rejected ({reasons})")
    return {"run_id": run_id, "tables": summary}


if __name__ == "__main__":  # spark-submit jobs/ingest.py / ray job submit -- python jobs/ingest.py
    import sys

    from jobs.cli import main

    sys.exit(main(["ingest", *sys.argv[1:]]))
