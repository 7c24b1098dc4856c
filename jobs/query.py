"""rdt query: a patient's twin report: nearest historical patient-times and the forecast.

The report names the patient by a keyed pseudonym, lists individual neighbours only where
``privacy.neighbour_rows`` grants it, and hides small cells (``ray_training.disclosure``).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass

import pandas as pd

from jobs.config import Config
from jobs.job import Job, JobFailed, option


@dataclass(frozen=True)
class Options:
    subject: int = option("subject_id of the patient", dataclasses.MISSING)
    time: str = option("ISO date or time; the latest prediction time at or before it is used",
                       dataclasses.MISSING)
    k: int | None = option("number of neighbours (default from config)")
    json: bool = option("print the report as JSON", False)


def parse_time(text: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise JobFailed(f"--time {text!r} is not an ISO date or time") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def run(cfg: Config, opts: Options) -> dict:
    from ray_training.disclosure import disclosed_report
    from ray_training.twin import TwinIndex, format_report, twin_report

    key = cfg.privacy.key(cfg.run_dir)  # first: no search for a report that cannot be named
    index = TwinIndex.current(cfg.run_dir)
    query = dataclasses.replace(cfg.query, k=opts.k or cfg.query.k)
    try:
        report = twin_report(index, opts.subject, parse_time(opts.time), query)
    except LookupError as err:
        raise JobFailed(str(err)) from None
    # The output boundary: pseudonyms, individual rows only where granted, small cells hidden.
    report = disclosed_report(report, cfg.privacy, key, query.min_cell_size)
    print(json.dumps(report, indent=2) if opts.json else format_report(report))
    return report


JOB = Job("query", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
