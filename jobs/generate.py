"""rdt generate: a synthetic OMOP registry (omop.*), its extra modalities (ext.*) and its hidden
truth (truth.*), all from one simulation pass."""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass

from jobs import context
from jobs.config import Config
from jobs.job import Job, option
from rdt_spark.lake import write_table
from rdt_spark.simulator import generate_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    patients: int | None = option("number of patients (default from config)")
    seed: int | None = option("global seed (default from config)")


def run(cfg: Config, opts: Options) -> dict:
    g = dataclasses.replace(cfg.generate, patients=opts.patients or cfg.generate.patients,
                            seed=cfg.generate.seed if opts.seed is None else opts.seed)
    spark = context.spark(cfg)
    log.info(f"simulating {g.patients:,} patients (seed {g.seed}) into {cfg.lake}")
    tables, records = generate_registry(spark, g)
    counts = {}
    for name, frame in tables.items():
        write_table(frame, cfg.lake, name)
        # Row counts from the Delta log's file statistics: no second scan of the data.
        counts[name] = _rows_written(spark, context.path(cfg, name))
        log.info(f"{name}: {counts[name]:,} rows")
    records.unpersist()
    return {"patients": g.patients, "seed": g.seed, "rows": counts}


def _rows_written(spark, path: str) -> int:
    from delta.tables import DeltaTable

    metrics = (DeltaTable.forPath(spark, path).history(1).select("operationMetrics")
               .first()[0])  # small: one row
    return int(metrics.get("numOutputRows", 0))


JOB = Job("generate", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
