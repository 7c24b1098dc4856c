"""rdt ingest: OMOP (and ext.*) tables -> silver.events + silver.rejects, every row accounted for.

Incremental by default: only patients whose source rows changed since the last run are
re-ingested, and their rows are replaced by one Delta MERGE per table; a re-run on the same
input commits nothing. The first run, `--full`, or changed reference data (concepts, extract
date) rebuild everything.
"""

from __future__ import annotations

import argparse
import datetime as dt
import uuid

from pyspark.errors import PySparkException
from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from rdt_spark.ingest import account_rows, ingest_omop
from rdt_spark.ingest_state import (
    reference_fingerprint,
    restrict_to,
    source_fingerprints,
    touched_subjects,
)
from rdt_spark.lake import read_table, replace_subjects, table_exists, write_table
from rdt_spark.omop_source import SourceError, extract_time, read_omop_folder, read_omop_lake
from rdt_spark.schemas import SILVER_EVENTS, SILVER_REJECTS, conform

STATE = "silver.ingest_state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="a folder of OMOP Parquet or CSV files "
                                         "(default: omop.* and ext.* in the lake)")
    parser.add_argument("--full", action="store_true",
                        help="re-ingest every patient, not only those whose rows changed")


def _previous_state(spark, cfg: Config, reference: str):
    """The last run's fingerprints, or None when this run must be a full one."""
    names = ["silver.events", "silver.rejects", STATE]
    if not all(table_exists(spark, cfg.lake, n) for n in names):
        return None
    state = read_table(spark, cfg.lake, STATE)
    last = state.select("reference").limit(1).first()  # small: one row
    return state if last is not None and last[0] == reference else None


def _write(cfg: Config, events, rejects, fingerprints, touched) -> None:
    events, rejects = conform(events, SILVER_EVENTS), conform(rejects, SILVER_REJECTS)
    if touched is None:
        write_table(events, cfg.lake, "silver.events")
        write_table(rejects, cfg.lake, "silver.rejects")
        write_table(fingerprints, cfg.lake, STATE)  # last: a killed run redoes its patients
        return
    replace_subjects(events, touched, cfg.lake, "silver.events")
    replace_subjects(rejects, touched, cfg.lake, "silver.rejects")
    fresh = fingerprints.join(touched, fingerprints.subject_id.eqNullSafe(touched.subject_id),
                              "left_semi")
    replace_subjects(fresh, touched, cfg.lake, STATE)


def ingest(cfg: Config, args: argparse.Namespace) -> dict:
    spark = context.spark(cfg)
    folder = getattr(args, "source", None)
    source = read_omop_folder(spark, folder) if folder else read_omop_lake(spark, cfg.lake)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    extract = extract_time(source)
    reference = reference_fingerprint(source, extract)
    fingerprints = source_fingerprints(source).withColumn("reference", F.lit(reference)).persist()
    previous = None if getattr(args, "full", False) else _previous_state(spark, cfg, reference)
    touched, n_touched = None, None
    if previous is not None:
        touched = touched_subjects(previous, fingerprints).persist()
        n_touched = touched.count()
    mode = "full" if touched is None else f"incremental, {n_touched:,} patients touched"
    context.log("ingest", f"run {run_id}: tables {sorted(source.tables)}, extract date "
                          f"{extract:%Y-%m-%d}, {mode}")
    if n_touched != 0:
        todo = source if touched is None else restrict_to(source, touched)
        events, rejects, flagged = ingest_omop(todo, extract, run_id)
        _write(cfg, events, rejects, fingerprints, touched)
        flagged.unpersist()
    else:
        context.log("ingest", "no source row changed since the last run: nothing to commit")
    fingerprints.unpersist()
    if touched is not None:
        touched.unpersist()
    summary = account_rows(source, read_table(spark, cfg.lake, "silver.events"),
                           read_table(spark, cfg.lake, "silver.rejects"))
    for row in summary:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(row["reasons"].items())) or "none"
        context.log("ingest", f"{row['table']}: {row['rows_in']:,} in = {row['accepted']:,} "
                              f"accepted + {row['rejected']:,} rejected ({reasons})")
    return {"run_id": run_id, "mode": "full" if touched is None else "incremental",
            "touched": n_touched, "tables": summary}


def run(cfg: Config, args: argparse.Namespace) -> dict:
    try:
        return ingest(cfg, args)
    except PySparkException as err:
        # Spark names the file it could not read in the first line; the rest is a JVM trace.
        raise SourceError(f"cannot read the source: {str(err).strip().splitlines()[0]}") from None


if __name__ == "__main__":  # spark-submit jobs/ingest.py / ray job submit -- python jobs/ingest.py
    import sys

    from jobs.cli import main

    sys.exit(main(["ingest", *sys.argv[1:]]))
