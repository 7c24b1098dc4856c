"""The report pages: gather what a page shows, and serve the pages as a FastAPI router.

``report_page`` computes a twin report (``twin.twin_report``), passes it through the disclosure
layer (``disclosure.disclosed_report``: pseudonyms, neighbours only where granted, small cells
suppressed), reads the patient's course up to that time (``patient_course``) and renders it
(``report_html``). ``rdt report`` writes that page to a file; ``router`` serves it, a page to
pick a patient and one page per ``rdt cohort`` result, behind the caller's token check::

    app = FastAPI()
    app.include_router(router(sources, bearer_check, lambda: index), prefix="/pages")
    # GET /pages/                         pick a patient (and one of their visits)
    # GET /pages/report?subject=ID&time=T  the twin report
    # GET /pages/cohorts/NAME              an rdt cohort summary
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow.compute as pc

from ray_training.disclosure import disclosed_report
from ray_training.patient_course import modalities_at, patient_course
from ray_training.report_html import cohort_html, report_html, search_html
from ray_training.search import Filters, TwinIndex
from ray_training.settings import QueryConfig, ReportConfig
from ray_training.twin import twin_report
from rdt_spark.lake_uris import open_delta
from rdt_spark.pseudonyms import PrivacyConfig


@dataclass(frozen=True)
class ReportSources:
    """Where a report's figures come from, and the settings that say what may be shown."""

    run_dir: str
    events_path: str  # silver.events
    drug_classes: dict[str, list[str]]  # conf/tasks.yaml
    query: QueryConfig
    privacy: PrivacyConfig
    report: ReportConfig

    @property
    def cohorts_dir(self) -> Path:
        return cohorts_dir(self.run_dir)


def cohorts_dir(run_dir: str) -> Path:
    """Where ``rdt cohort`` leaves each cohort's summary (``<name>.json``) for the pages."""
    return Path(run_dir) / "cohorts"


def save_cohort_summary(run_dir: str, summary: dict) -> Path:
    """Write a cohort's (already suppressed) summary atomically: a reader sees the old or the
    new file whole."""
    folder = cohorts_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cohort_file_name(summary['cohort'])}.json"
    staged = path.with_suffix(f".{os.getpid()}.tmp")
    staged.write_text(json.dumps(summary, indent=2, default=str))
    os.replace(staged, path)
    return path


def cohort_file_name(name: str) -> str:
    """A cohort name as a file name: ``cohort_file_name("a/b c") == "a%2Fb%20c"``."""
    return urllib.parse.quote(name, safe="")


def report_page(sources: ReportSources, index: TwinIndex, key, subject_id: int,
                time: pd.Timestamp, filters: Filters | None = None) -> tuple[str, dict]:
    """One patient's twin report page at ``time`` and the disclosed report it shows. Raises
    LookupError when the patient has no prediction time at or before ``time``."""
    report = twin_report(index, subject_id, time, sources.query, filters,
                         sources.privacy.neighbour_rows)
    at = pd.Timestamp(report["prediction_time"])
    m = index.manifest
    used = modalities_at(m["embeddings"]["path"], m["embeddings"]["version"], m["model_version"],
                         subject_id, at)
    course = patient_course(sources.events_path, subject_id, at, sources.drug_classes,
                            sources.report, used)
    # The output boundary: nothing reaches the page that the disclosure layer did not let out.
    shown = disclosed_report(report, sources.privacy, key, sources.query.min_cell_size)
    return report_html(shown, course, sources.query.min_cell_size), shown


def prediction_times(manifest: dict, subject_id: int) -> list[str]:
    """The patient's prediction times in the embeddings an index pins (ISO strings)."""
    m = manifest
    table = open_delta(m["embeddings"]["path"], version=m["embeddings"]["version"])
    times = table.to_pyarrow_dataset().to_table(
        columns=["prediction_time"], filter=(pc.field("subject_id") == subject_id)
        & (pc.field("model_version") == m["model_version"])).column(0).to_pylist()
    return [t.isoformat() for t in sorted(times)]


def saved_cohorts(run_dir: str) -> list[str]:
    folder = cohorts_dir(run_dir)
    return sorted(urllib.parse.unquote(p.stem) for p in folder.glob("*.json")) \
        if folder.is_dir() else []


def router(sources: ReportSources, token_check: Callable,
           serving_index: Callable[[], TwinIndex]):
    """The pages as a FastAPI ``APIRouter``; every route depends on ``token_check`` (the
    service's bearer-token dependency) and reports from ``serving_index()``, the index the
    service already holds (and swaps when CURRENT moves)."""
    from fastapi import APIRouter, Depends, HTTPException
    from fastapi.responses import HTMLResponse

    pages = APIRouter(dependencies=[Depends(token_check)], default_response_class=HTMLResponse)
    key = sources.privacy.key(sources.run_dir)

    @pages.get("/")
    def search(subject: int | None = None) -> str:
        cohorts = saved_cohorts(sources.run_dir)
        if subject is None:
            return search_html(cohorts)
        # The index the reports come from: a time listed here is one it can answer.
        times = prediction_times(serving_index().manifest, subject)
        return search_html(cohorts, subject, times,
                           None if times else "No twin report for that patient id.")

    @pages.get("/report")
    def report(subject: int, time: str) -> str:
        try:
            at = pd.Timestamp(time)
        except ValueError:
            raise HTTPException(422, "time must be an ISO date or time") from None
        at = at.tz_localize("UTC") if at.tzinfo is None else at.tz_convert("UTC")
        try:
            return report_page(sources, serving_index(), key, subject, at)[0]
        except LookupError:
            raise HTTPException(404, "no twin report for that patient at that time") from None

    @pages.get("/cohorts/{name}")
    def cohort(name: str) -> str:
        path = sources.cohorts_dir / f"{cohort_file_name(name)}.json"
        if not path.is_file():
            raise HTTPException(404, "no such cohort: rdt cohort writes one")
        return cohort_html(json.loads(path.read_text()))

    return pages
