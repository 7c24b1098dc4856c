"""rdt query: a patient's twin report: what happens next, which treatment, where the disease goes.

Every question is answered from the k nearest historical patient-times whose follow-up can answer
it; ``--sex``, ``--age``, ``--disease-years``, ``--seropositive``, ``--on`` and ``--had`` restrict
who may be a neighbour before ranking. The report names the patient by a keyed pseudonym, lists
individual neighbours only where ``privacy.neighbour_rows`` grants it, and hides small cells
(``ray_training.disclosure``).
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
    k: int | None = option("number of neighbours per question (default from config)")
    json: bool = option("print the report as JSON", False)
    sex: str | None = option("neighbours of this sex only: F or M")
    age: str | None = option("neighbours aged LOW-HIGH years at their matched time, e.g. 40-60")
    disease_years: str | None = option("neighbours with a disease duration of LOW-HIGH years")
    seropositive: str | None = option("neighbours who were seropositive (yes) or not (no)")
    on: str | None = option("neighbours on every one of these drug classes (comma-separated)")
    had: str | None = option("neighbours who had and stopped every one of these classes")
    all_points: bool = option("allow several time points of one neighbour patient", False)


def parse_time(text: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise JobFailed(f"--time {text!r} is not an ISO date or time") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def parse_range(flag: str, text: str | None) -> tuple[float, float] | None:
    """``parse_range("--age", "40-60") == (40.0, 60.0)``."""
    if text is None:
        return None
    try:
        low, high = (float(x) for x in text.split("-", 1))
    except ValueError:
        raise JobFailed(f"{flag} {text!r} must look like LOW-HIGH, e.g. 40-60") from None
    if low >= high:
        raise JobFailed(f"{flag} {text!r}: LOW must be below HIGH")
    return low, high


def filters_from(opts: Options):
    from ray_training.search import Filters

    if opts.sex not in (None, "F", "M"):
        raise JobFailed(f"--sex must be F or M, got {opts.sex!r}")
    if opts.seropositive not in (None, "yes", "no"):
        raise JobFailed(f"--seropositive must be yes or no, got {opts.seropositive!r}")

    def classes(text: str | None) -> tuple[str, ...]:
        return tuple(c.strip() for c in text.split(",") if c.strip()) if text else ()

    return Filters(sex=opts.sex, age=parse_range("--age", opts.age),
                   disease_years=parse_range("--disease-years", opts.disease_years),
                   seropositive=None if opts.seropositive is None else opts.seropositive == "yes",
                   current_classes=classes(opts.on), past_classes=classes(opts.had))


def run(cfg: Config, opts: Options) -> dict:
    from ray_training.disclosure import disclosed_report
    from ray_training.twin import TwinIndex, format_report, twin_report

    key = cfg.privacy.key(cfg.run_dir)  # first: no search for a report that cannot be named
    index = TwinIndex.current(cfg.run_dir)
    query = dataclasses.replace(cfg.query, k=opts.k or cfg.query.k,
                                one_point_per_patient=cfg.query.one_point_per_patient
                                and not opts.all_points)
    try:
        report = twin_report(index, opts.subject, parse_time(opts.time), query,
                             filters_from(opts), cfg.privacy.neighbour_rows)
    except LookupError as err:
        raise JobFailed(str(err)) from None
    # The output boundary: pseudonyms, individual rows only where granted, small cells hidden.
    report = disclosed_report(report, cfg.privacy, key, query.min_cell_size)
    print(json.dumps(report, indent=2) if opts.json else format_report(report))
    return report


JOB = Job("query", run, Options)

if __name__ == "__main__":
    sys.exit(JOB.main())
