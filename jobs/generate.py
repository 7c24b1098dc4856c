"""rdt generate: a synthetic OMOP registry (omop.*), its extra modalities (ext.*) and its hidden
truth (truth.*), all from one simulation pass."""

from __future__ import annotations

import argparse

from jobs import context
from jobs.config import Config
from rdt_spark.lake import write_table
from rdt_spark.simulator import generate_registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patients", type=int, help="number of patients (default from config)")
    parser.add_argument("--seed", type=int, help="global seed (default from config)")


def run(cfg: Config, args: argparse.Namespace) -> dict:
    g = cfg.generate
    patients = args.patients or g.patients
    seed = g.seed if args.seed is None else args.seed
    spark = context.spark(cfg)
    context.log("generate", f"simulating {patients:,} patients (seed {seed}) into {cfg.lake}")
    tables, records = generate_registry(spark, patients, seed, g.partitions,
                                        g.start_date, g.extract_date)
    counts = {}
    for name, frame in tables.items():
        write_table(frame, cfg.lake, name)
        # Row counts from the Delta log's file statistics: no second scan of the data.
        counts[name] = _rows_written(spark, context.path(cfg, name))
        context.log("generate", f"{name}: {counts[name]:,} rows")
    records.unpersist()
    return {"patients": patients, "seed": seed, "rows": counts}


def _rows_written(spark, path: str) -> int:
    from delta.tables import DeltaTable

    metrics = (DeltaTable.forPath(spark, path).history(1).select("operationMetrics")
               .first()[0])  # small: one row
    return int(metrics.get("numOutputRows", 0))


if __name__ == "__main__":  # spark-submit jobs/generate.py / ray job submit -- python jobs/generate.py
    import sys

    from jobs.cli import main

    sys.exit(main(["generate", *sys.argv[1:]]))
