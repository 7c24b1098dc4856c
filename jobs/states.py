"""rdt states: silver.events -> gold.patient_states (what was known of each patient at each
prediction time) and gold.trajectories (what followed it).

The twin filters its neighbours and shows their course from these, ``rdt cohort`` selects by them
and ``rdt evaluate`` scores the course against them (rdt_spark/states.py defines every column).
"""

from __future__ import annotations

import logging
import sys

from pyspark import StorageLevel
from pyspark.sql import functions as F

from jobs import context
from jobs.config import Config
from jobs.job import Job, NoOptions
from rdt_spark.lake import read_table, write_table
from rdt_spark.schemas import GOLD_PATIENT_STATES, GOLD_TRAJECTORIES, conform
from rdt_spark.states import states_and_trajectories
from rdt_spark.tasks import load_tasks
from rdt_spark.timelines import prediction_times

log = logging.getLogger(__name__)


def run(cfg: Config, opts: NoOptions) -> dict:
    suite = load_tasks(cfg.tokenize.tasks_file)
    spark = context.spark(cfg)
    events = read_table(spark, cfg.lake, "silver.events")
    both = states_and_trajectories(events, prediction_times(events), cfg.states,
                                   suite.drug_classes, cfg.tokenize.split_fractions)
    both = both.persist(StorageLevel.MEMORY_AND_DISK)  # one pass over the events for two tables
    versions = {name: write_table(conform(both, schema), cfg.lake, name)
                for name, schema in [("gold.patient_states", GOLD_PATIENT_STATES),
                                     ("gold.trajectories", GOLD_TRAJECTORIES)]}
    row = both.agg(F.count("*").alias("points"), F.countDistinct("subject_id").alias("patients"),
                   F.sum(F.col("das28").isNotNull().cast("int")).alias("with_das28"),
                   F.sum(F.col("event_days").isNotNull().cast("int")).alias("with_event")
                   ).first()  # small: one row
    both.unpersist()
    summary = {k: int(row[k] or 0) for k in ("points", "patients", "with_das28", "with_event")}
    log.info(f"gold.patient_states v{versions['gold.patient_states']}, gold.trajectories "
             f"v{versions['gold.trajectories']}: {summary['points']:,} prediction times of "
             f"{summary['patients']:,} patients; {summary['with_das28']:,} with an earlier DAS28, "
             f"{summary['with_event']:,} followed by an event of {cfg.states.event_codes}")
    return {**summary, "versions": versions}


JOB = Job("states", run)

if __name__ == "__main__":
    sys.exit(JOB.main())
