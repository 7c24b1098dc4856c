"""The twin report's charts, drawn by matplotlib and returned as inline SVG text.

Each function takes a patient's course (``patient_course.PatientCourse``) or parts of a disclosed
twin report (``disclosure.disclosed_report``) and draws only what those hold: a suppressed
figure is written on the chart as suppressed, never drawn as zero. Figures are built with
``matplotlib.figure.Figure`` (no pyplot state), so pages can be drawn from server threads.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ray_training.forecasts import MONTH_DAYS
from ray_training.patient_course import PatientCourse

ACTIVITY = [(2.6, "remission"), (3.2, "low"), (5.1, "high")]  # DAS28 thresholds (EULAR)
INK, BAND, ALERT, MUTED = "#1f4e79", "#9ecae1", "#c0392b", "#7f7f7f"


def svg(fig: Figure) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), for inlining in HTML."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def suppressed_text(min_cell_size: int) -> str:
    return f"suppressed (fewer than {min_cell_size})"


def _activity_lines(ax) -> None:
    for level, name in ACTIVITY:
        ax.axhline(level, color=MUTED, lw=0.6, ls=":")
        ax.text(1.0, level, f" {name}", transform=ax.get_yaxis_transform(), va="center",
                fontsize=7, color=MUTED)


def course_chart(course: PatientCourse) -> str:
    """The course so far: one panel per configured group of measures (DAS28 with its activity
    thresholds and flares, components, CRP/ESR, Sharp score), then the drug classes as bars."""
    classes = sorted({name for name, _, _ in course.treatments})
    heights = [2.2] * len(course.panels) + [0.35 * max(len(classes), 1) + 0.5]
    fig = Figure(figsize=(9, sum(heights) + 0.6))
    axes = fig.subplots(len(heights), 1, sharex=True, gridspec_kw={"height_ratios": heights})
    now = course.until
    for ax, (panel, labels) in zip(axes, course.panels.items(), strict=False):
        drawn = False
        for label in labels:
            s = course.series[label]
            if len(s):
                ax.plot(s["time"], s["value"], marker="o", ms=2.5, lw=1.2, label=label,
                        drawstyle="steps-post" if panel == "Sharp score" else "default")
                drawn = True
        if panel == "DAS28":
            _activity_lines(ax)
            for i, t in enumerate(course.flares):
                ax.axvline(t, color=ALERT, lw=0.8, alpha=0.6, label="flare" if i == 0 else None)
        if not drawn:
            ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", color=MUTED)
        ax.set_ylabel(panel, fontsize=8)
        if drawn and (len(labels) > 1 or (panel == "DAS28" and course.flares)):
            ax.legend(fontsize=7, loc="upper left", frameon=False, ncol=len(labels) + 1)
    bars = axes[-1]
    for row, name in enumerate(classes):
        spans = [(start, max(end - start, pd.Timedelta(days=14)))
                 for c, start, end in course.treatments if c == name]
        bars.broken_barh(spans, (row - 0.35, 0.7), color=INK, alpha=0.75)
    bars.set_yticks(range(len(classes)), classes, fontsize=7)
    bars.set_ylim(-0.7, max(len(classes), 1) - 0.3)
    if not classes:
        bars.text(0.5, 0.5, "no treatment recorded", transform=bars.transAxes, ha="center",
                  color=MUTED)
    bars.set_ylabel("treatments", fontsize=8)
    for ax in axes:
        ax.axvline(now, color="black", lw=1)
        ax.tick_params(labelsize=7)
    axes[0].text(now, 1.02, " now", transform=axes[0].get_xaxis_transform(), fontsize=8)
    fig.subplots_adjust(hspace=0.12)
    return svg(fig)


def outlook_chart(course: PatientCourse, report: dict, measure: str, label: str,
                  past_months: int = 24) -> str:
    """The patient's ``measure`` over the last ``past_months`` and, from "now" on, the
    neighbours' median and interquartile band at the course months (with each neighbour's own
    line where the report lists neighbours). Months on the x axis, 0 is now."""
    fig = Figure(figsize=(9, 2.8))
    ax = fig.subplots()
    s = course.series.get(label, pd.DataFrame({"time": [], "value": []}))
    months = (s["time"] - course.until).dt.days / MONTH_DAYS if len(s) else pd.Series([], float)
    recent = months >= -past_months
    ax.plot(months[recent], s["value"][recent], color="black", marker="o", ms=3, lw=1.4,
            label="this patient")
    for n in report.get("neighbours") or []:
        values = n["course"][measure]
        xs = [0, *report["course_months"]]
        ax.plot([x for x, v in zip(xs, values, strict=True) if v is not None],
                [v for v in values if v is not None], color=MUTED, lw=0.5, alpha=0.35)
    points = [c for c in report["course"] if c["measure"] == measure and not c["suppressed"]]
    if points:
        xs = [c["month"] for c in points]
        ax.fill_between(xs, [c["q25"] for c in points], [c["q75"] for c in points], color=BAND,
                        alpha=0.6, label="neighbours: interquartile range")
        ax.plot(xs, [c["median"] for c in points], color=INK, marker="o", lw=2,
                label="neighbours: median")
        if len(s):  # from where the patient stands now to the neighbours' first median
            ax.plot([months.iloc[-1], xs[0]], [s["value"].iloc[-1], points[0]["median"]],
                    color=INK, ls="--", lw=1)
    else:
        ax.text(0.75, 0.5, "forecast suppressed", transform=ax.transAxes, ha="center",
                color=ALERT)
    if measure == "das28":
        _activity_lines(ax)
    ax.axvline(0, color="black", lw=1)
    ax.text(0, 1.02, " now", transform=ax.get_xaxis_transform(), fontsize=8)
    ax.set_xlabel("months from now", fontsize=8)
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3,
              frameon=False)  # below the axes: the patient's line stays readable
    return svg(fig)


def survival_chart(t: dict, min_cell_size: int) -> str:
    """Kaplan-Meier: the share of neighbours still without the event at the course months (the
    disclosed points, with their 95% band), from 1 at the matched time."""
    fig = Figure(figsize=(4.5, 2.8))
    ax = fig.subplots()
    shown = [p for p in t["curve"] if p["survival"] is not None]
    if t["suppressed"] or not shown:
        ax.text(0.5, 0.5, suppressed_text(min_cell_size), transform=ax.transAxes, ha="center",
                color=ALERT)
    else:
        xs = [0.0] + [p["month"] for p in shown]
        ax.step(xs, [1.0] + [p["survival"] for p in shown], where="post", color=INK, lw=2,
                marker="o", ms=3, label="Kaplan-Meier")
        band = [p for p in shown if p["low"] is not None and p["high"] is not None]
        if band:
            ax.fill_between([p["month"] for p in band], [p["low"] for p in band],
                            [p["high"] for p in band], step="post", color=BAND, alpha=0.6,
                            label="95% band")
        ax.legend(fontsize=7, frameon=False, loc="lower left")
        last = shown[-1]["month"]
        if t["curve"] and last < t["curve"][-1]["month"]:  # the months not shown, and why
            ax.axvspan(last, t["curve"][-1]["month"], color=MUTED, alpha=0.08)
            ax.text((last + t["curve"][-1]["month"]) / 2, 0.5, f"fewer than {min_cell_size}\n"
                    "still followed", ha="center", va="center", fontsize=7, color=MUTED)
    ax.set_xlim(0, max([p["month"] for p in t["curve"]] or [1]))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("months from now", fontsize=8)
    ax.set_ylabel("without a flare", fontsize=8)
    ax.tick_params(labelsize=7)
    return svg(fig)


def interval_chart(rows: list[tuple[str, dict]], min_cell_size: int, xlabel: str) -> str:
    """A forest plot: one row per (label, disclosed forecast), its share (a dot; none for a
    bounded small cell) and 95% interval; a suppressed row reads as suppressed."""
    fig = Figure(figsize=(6.5, 0.45 * len(rows) + 0.9))
    ax = fig.subplots()
    for y, (_, f) in enumerate(rows):
        if f["suppressed"]:
            ax.text(0.5, y, suppressed_text(min_cell_size), ha="center", va="center",
                    fontsize=8, color=ALERT)
            continue
        ax.plot([f["ci_low"], f["ci_high"]], [y, y], color=INK, lw=2.5, alpha=0.6)
        if f["share"] is not None:
            ax.plot([f["share"]], [y], "o", color=INK, ms=6)
    ax.set_yticks(range(len(rows)), [label for label, _ in rows], fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first row on top
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda x, _: f"{x:.0%}")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(axis="x", color=MUTED, lw=0.3, alpha=0.5)
    return svg(fig)


def promise(f: dict) -> float:
    """How a response forecast ranks, most promising first: its share, or for a bounded small
    cell the middle of its interval; suppressed last."""
    if f["suppressed"]:
        return -np.inf
    return f["share"] if f["share"] is not None else (f["ci_low"] + f["ci_high"]) / 2
