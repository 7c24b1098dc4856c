"""rdt generate: a synthetic OMOP registry (omop.*) and its hidden truth (truth.*)."""

from __future__ import annotations

import argparse

from jobs import context
from jobs.config import Config
from rdt_spark.lake import write_table
from rdt_spark.simulate import generate_registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patients", type=int, help="number of patients (default from config)")
    parser.add_argument("--seed", type=int, help="global seed (default from config)")


def run(cfg: Config, args: argparse.Namespace) -> dict:
    g = cfg.generate
    patients = args.patients or g.patients
    seed = g.seed if args.seed is None else args.seed
    spark = context.spark(cfg)
    context.log("generate", f"simulating {patients:,} patients (seed {seed}) into {cfg.lake}")
    tables, truth, records = generate_registry(spark, patients, seed, g.partitions,
                                               g.start_date, g.extract_date)
    counts = {}
    for name, frame in tables.items():
        write_table(frame, cfg.lake, f"omop.{name}")
        counts[name] = spark.read.format("delta").load(context.path(cfg, f"omop.{name}")).count()
        context.log("generate", f"omop.{name}: {counts[name]:,} rows")
    write_table(truth, cfg.lake, "truth.patient_latent")
    records.unpersist()
    return {"patients": patients, "seed": seed, "rows": counts}


if __name__ == "__main__":  # spark-submit jobs/generate.py / ray job submit -- python jobs/generate.py
    import sys

    from jobs.cli import main

    sys.exit(main(["generate", *sys.argv[1:]]))
