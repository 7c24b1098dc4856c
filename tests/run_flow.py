"""The whole flow, then the tools a user takes output from (a twin query, a MEDS export), in one
process at the most verbose logging: what ``conftest.flow`` runs once per test session.

    python tests/run_flow.py CONFIG RESULTS_JSON

Each job runs as ``rdt <job> --verbose`` runs it (``jobs.console.Console``: library output on
the terminal too, our loggers at DEBUG); the config sets Spark's log level to INFO. The caller
keeps the terminal output; the job logs land in ``<run_dir>/logs``. ``test_logs.py`` scans both,
and Ray's session logs, for anything that must never be logged.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np

from jobs import demo, export_meds, query
from jobs.config import load_config
from jobs.console import Console
from jobs.registry import FLOW


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return str(value)


def main(conf: str, out: str) -> int:
    cfg = load_config(conf)
    results = {}
    steps = [(job, job.options()) for job in FLOW]
    for job, options in steps + [(query.JOB, None), (export_meds.JOB, export_meds.Options())]:
        with Console(cfg.run_dir, job.name, verbose=True) as console:
            if options is None:  # a test-split patient with a long history, as the demo asks
                subject, at = demo.example_patient(cfg)
                options = query.Options(subject=subject, time=at)
            results[job.name] = job.run(cfg, options)
        if console.exit_code:
            return console.exit_code
    Path(out).write_text(json.dumps(results, default=_plain))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
