"""rdt ingest: OMOP (and ext.*) tables -> silver.events + silver.rejects, every row accounted for.

Incremental by default: only patients whose source rows changed since the last run are
re-ingested (``rdt_spark.ingest_run``); ``--full`` re-ingests everyone.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from jobs import context
from jobs.config import Config
from jobs.job import Job, option
from rdt_spark.ingest_run import ingest_into_lake

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Options:
    source: str | None = option("a folder of OMOP Parquet or CSV files "
                                "(default: omop.* and ext.* in the lake)")
    full: bool = option("re-ingest every patient, not only those whose rows changed", False)


def run(cfg: Config, opts: Options) -> dict:
    result = ingest_into_lake(context.spark(cfg), cfg.lake, opts.source, opts.full)
    for row in result["tables"]:
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(row["reasons"].items())) or "none"
        log.info(f"{row['table']}: {row['rows_in']:,} in = {row['accepted']:,} accepted + "
                 f"{row['rejected']:,} rejected ({reasons})")
    return result


JOB = Job("ingest", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
