"""rdt demo: the whole flow on the embedded default, ending with a twin report for one patient."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass

from pyspark.sql import functions as F

from jobs import context, generate, query, report
from jobs.config import Config
from jobs.console import Progress, labelled
from jobs.job import Job, option
from jobs.registry import FLOW
from rdt_spark.lake import read_table
from rdt_spark.tasks import FLARE_TASK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    patients: int | None = option("number of patients (default from config)")
    seed: int | None = option("global seed (default from config)")


def example_patient(cfg: Config) -> tuple[int, str]:
    """A test-split patient with a long history, asked about at the middle of it."""
    tasks = read_table(context.spark(cfg), cfg.lake, "gold.tasks").where(
        (F.col("split") == "test") & (F.col("task") == FLARE_TASK))
    best = (tasks.groupBy("subject_id")
            .agg(F.count("*").alias("n"), F.sort_array(F.collect_list("prediction_time")).alias("t"))
            .orderBy(F.desc("n"), "subject_id").first())  # small: one row
    return best["subject_id"], best["t"][len(best["t"]) // 2].isoformat()


def run(cfg: Config, opts: Options) -> dict:
    started = time.time()
    steps = len(FLOW) + 1
    results = {}
    progress = Progress(log, steps, "stages", every=0)
    for number, job in enumerate(FLOW, start=1):
        job_opts = (generate.Options(opts.patients, opts.seed) if job is generate.JOB
                    else job.options())
        log.info(f"step {number}/{steps}: {job.name}")
        t0 = time.time()
        with labelled(job.name):
            results[job.name] = job.run(cfg, job_opts)
        progress.advance(detail=f"{job.name} took {time.time() - t0:.0f}s")
    subject, at = example_patient(cfg)
    log.info(f"step {steps}/{steps}: query and report (one test-split patient, middle of their "
             "history)")
    print()
    results["query"] = query.run(cfg, query.Options(subject=subject, time=at))
    results["report"] = report.run(cfg, report.Options(subject=subject, time=at))
    progress.advance(detail=f"the twin report, as a page: {results['report']['path']}")
    wall = time.time() - started
    print(f"\nDemo finished in {wall / 60:.1f} min (lake {cfg.lake}).")
    results["wall_seconds"] = wall
    return results


JOB = Job("demo", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
