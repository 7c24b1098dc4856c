"""Twin reports and cohort summaries as self-contained HTML pages (Jinja2 templates in
``ray_training/templates``, charts from ``report_charts`` inlined as SVG; no script, no link to
anything outside the page, a print stylesheet).

Rendering only: the caller hands over what may be shown (a *disclosed* twin report,
``disclosure.disclosed_report``; a cohort summary whose small counts are already None), so a
page cannot show more than the disclosure layer let through. A suppressed figure reads
"suppressed (fewer than 10)", never zero.

Example: a flare forecast of 17 of 47 usable neighbours reads "36% of 47 similar patients
followed for 180 days had a flare (95% CI 24% to 50%)."
"""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, select_autoescape

from ray_training import report_charts as charts
from ray_training.patient_course import PatientCourse

# Task -> what the outcome is, in words ("... had <words>"); others read as their name.
TASK_WORDS = {
    "flare_within_180d": "a flare within 6 months",
    "das28_remission_12m": "DAS28 remission (below 2.6) at 12 months",
    "radiographic_progression_2y": "radiographic progression (mTSS up 5 or more) within 2 years",
}
MEASURE_WORDS = {"das28": "DAS28", "mtss": "Sharp score (mTSS)"}


@cache
def _templates() -> Environment:
    return Environment(loader=PackageLoader("ray_training", "templates"),
                       autoescape=select_autoescape(), trim_blocks=True, lstrip_blocks=True)


def _pct(x: float) -> str:
    return f"{x:.0%}"


def task_words(task: str) -> str:
    return TASK_WORDS.get(task, task.replace("_", " "))


def share_sentence(f: dict, what: str, who: str, m: int) -> str:
    """One disclosed share (``disclosure.disclosed_forecast``) in plain words."""
    if f["suppressed"]:
        return f"Not shown: fewer than {m} {who} could tell whether they had {what}."
    interval = f"95% CI {_pct(f['ci_low'])} to {_pct(f['ci_high'])}"
    if f["share"] is None:
        return (f"{f['events']} of {f['usable']} {who} had {what} ({interval}); a small group, "
                "so the exact count is not shown.")
    return f"{_pct(f['share'])} of {f['usable']} {who} had {what} ({interval})."


def event_rows(report: dict, m: int) -> list[dict]:
    """Every event forecast, the ones ``TASK_WORDS`` names first in its order (a flare first)."""
    known = list(TASK_WORDS)
    ordered = sorted(report["events"], key=lambda f: (known.index(f["task"]) if f["task"] in known
                                                     else len(known), f["task"]))
    return [{"label": task_words(f["task"]), "forecast": f, "rests_on": f["usable"],
             "sentence": share_sentence(f, task_words(f["task"]),
                                        "similar patients followed long enough", m)}
            for f in ordered]


def response_rows(report: dict, m: int) -> list[dict]:
    """Per drug class, most promising first (``report_charts.promise``); suppressed last."""
    ordered = sorted(report["treatment_response"], key=lambda r: -charts.promise(r["responded"]))
    return [{"label": r["drug_class"], "forecast": r["responded"], "rests_on": r["usable"],
             "categories": r["categories"],
             "sentence": share_sentence(r["responded"], "a good or moderate EULAR response "
                                        "6 months later", f"similar patients who started "
                                        f"{r['drug_class']}", m)}
            for r in ordered]


def time_to_event_sentence(t: dict, m: int) -> str:
    if t["suppressed"]:
        return f"Not shown: fewer than {m} similar patients to draw a Kaplan-Meier curve from."
    shown = [p for p in t["curve"] if p["survival"] is not None]
    later = (f" After {shown[-1]['month']} months, {_pct(shown[-1]['survival'])} were still "
             "without a flare." if shown else "")
    if t["median_days"] is None:
        return (f"Fewer than half of {t['neighbours']} similar patients had a flare during their "
                f"follow-up (median not reached).{later}")
    high = "not reached" if t["high_days"] is None else f"{t['high_days']:.0f}"
    low = "" if t["low_days"] is None else f" (95% CI {t['low_days']:.0f} to {high} days)"
    return (f"Half of {t['neighbours']} similar patients had a flare within "
            f"{t['median_days']:.0f} days{low}.{later}")


def course_rows(report: dict, m: int) -> list[dict]:
    rows = []
    for c in report["course"]:
        what = MEASURE_WORDS.get(c["measure"], c["measure"])
        sentence = (f"Not shown: fewer than {m} similar patients had a {what} recorded "
                    f"{c['month']} months later." if c["suppressed"] else
                    f"{c['month']} months later, similar patients' {what} was {c['median']:.1f} "
                    f"in the middle (half between {c['q25']:.1f} and {c['q75']:.1f}).")
        rows.append({"label": f"{what} at {c['month']} months", "point": c,
                     "rests_on": c["usable"], "sentence": sentence})
    return rows


def report_html(report: dict, course: PatientCourse, min_cell_size: int) -> str:
    """One patient's disclosed twin report and course as a self-contained HTML page."""
    m = min_cell_size
    events, responses = event_rows(report, m), response_rows(report, m)
    t = report["time_to_event"]
    headline = [time_to_event_sentence(t, m)] + [r["sentence"] for r in events[:1]]
    best = [r for r in responses if not r["forecast"]["suppressed"]]
    if best:
        headline.append(f"Most promising next class: {best[0]['label']}. {best[0]['sentence']}")
    course_points = course_rows(report, m)
    headline += [r["sentence"] for r in course_points
                 if r["point"]["measure"] == "das28" and r["point"]["month"] == 12]
    return _templates().get_template("report.html").render(
        report=report, course=course, m=m, suppressed=charts.suppressed_text(m),
        headline=headline, events=events, responses=responses, course_rows=course_points,
        time_to_event=t, time_to_event_sentence=time_to_event_sentence(t, m),
        charts={
            "course": charts.course_chart(course),
            "das28": charts.outlook_chart(course, report, "das28", "DAS28"),
            "mtss": charts.outlook_chart(course, report, "mtss", "mTSS"),
            "survival": charts.survival_chart(t, m),
            "events": charts.interval_chart([(r["label"], r["forecast"]) for r in events], m,
                                            "share of similar patients with the outcome"),
            "responses": charts.interval_chart([(r["label"], r["forecast"]) for r in responses],
                                               m, "good or moderate EULAR response at 6 months"),
        })


def cohort_html(summary: dict) -> str:
    """An ``rdt cohort`` summary (counts per criterion; None where suppressed) as a page."""
    return _templates().get_template("cohort.html").render(
        s=summary, suppressed=charts.suppressed_text(summary["min_cell_size"]))


def search_html(cohorts: list[str], subject: int | None = None, times: list[str] | None = None,
                message: str | None = None) -> str:
    """The page to pick a patient (and, once one is named, one of their prediction times)."""
    return _templates().get_template("search.html").render(
        cohorts=cohorts, subject=subject, times=times or [], message=message)
