"""rdt query: a patient's twin report: nearest historical patient-times and the forecast."""

from __future__ import annotations

import argparse
import json

import pandas as pd

from jobs.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subject", type=int, required=True, help="subject_id of the patient")
    parser.add_argument("--time", required=True,
                        help="ISO date or time; the latest prediction time at or before it is used")
    parser.add_argument("--k", type=int, help="number of neighbours (default from config)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def parse_time(text: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise SystemExit(f"rdt query: --time {text!r} is not an ISO date or time") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def run(cfg: Config, args: argparse.Namespace) -> dict:
    from ray_training.twin import TwinIndex, format_report, twin_report

    index = TwinIndex.current(cfg.run_dir)
    try:
        report = twin_report(index, args.subject, parse_time(args.time), args.k or cfg.query.k,
                             cfg.query.min_cell_size, cfg.query.one_point_per_patient)
    except LookupError as err:
        raise SystemExit(f"rdt query: {err}") from None
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return report


if __name__ == "__main__":  # spark-submit jobs/query.py / ray job submit -- python jobs/query.py
    import sys

    from jobs.cli import main

    sys.exit(main(["query", *sys.argv[1:]]))
