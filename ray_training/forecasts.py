"""What the neighbours say: every forecast is made from the neighbours that can answer it, and
suppressed (no estimate, no counts) when fewer than the minimum cell size can.

- ``share``: the share of usable neighbours with the event, with a Wilson 95% interval (events;
  a treatment's good/moderate/none shares).
- ``time_to_event``: a Kaplan-Meier curve over the neighbours (``scipy.stats.ecdf`` on
  right-censored follow-up: a neighbour without the event is censored at its last record), its
  median with the 95% interval where the log-log band crosses one half, and the survival at the
  course months while at least the minimum cell size is still at risk.
- ``response``: among neighbours who started a drug class at their matched time, the EULAR
  good / moderate / none shares at 6 months, and the share of good or moderate.
- ``course``: the median and interquartile range of the neighbours' value at a month.

Example: 30 usable neighbours, 12 with a flare -> share 0.40 (95% CI 0.25 to 0.58); 8 usable ->
suppressed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import CensoredData, ecdf

MONTH_DAYS = 30.4375
EULAR = ("good", "moderate", "none")


def wilson_interval(events: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial share; wilson_interval(5, 10) ~ (0.237, 0.763)."""
    if n == 0:
        return 0.0, 1.0
    p = events / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _suppressed_note(usable: int, min_cell_size: int) -> str:
    return f"suppressed: {usable} usable neighbours < minimum cell size {min_cell_size}"


@dataclass
class Forecast:
    """A share of usable neighbours with an event (a task, or a response category)."""

    task: str
    neighbours: int  # found by the search (all usable for this question)
    usable: int
    events: int | None
    share: float | None
    ci_low: float | None
    ci_high: float | None
    suppressed: bool
    note: str


def share(task: str, labels: np.ndarray, min_cell_size: int, neighbours: int | None = None,
          what: str = "share of usable neighbours with the event") -> Forecast:
    """The share of ``labels`` (one bool per usable neighbour) that are true."""
    n, events = len(labels), int(np.sum(labels))
    found = n if neighbours is None else neighbours
    if n < min_cell_size:
        return Forecast(task, found, n, None, None, None, None, True,
                        _suppressed_note(n, min_cell_size))
    low, high = wilson_interval(events, n)
    return Forecast(task, found, n, events, events / n, low, high, False,
                    f"{what} (Wilson 95% interval)")


@dataclass
class SurvivalPoint:
    month: int
    days: float
    at_risk: int
    survival: float | None  # None where fewer than the minimum cell size are at risk
    low: float | None
    high: float | None


@dataclass
class TimeToEvent:
    """Kaplan-Meier time to the first event after the matched time, over the neighbours."""

    neighbours: int
    events: int | None
    median_days: float | None  # None: not reached (or suppressed)
    low_days: float | None
    high_days: float | None  # None: the upper limit is not reached
    curve: list[SurvivalPoint]
    suppressed: bool
    note: str


def _first_at_or_below(times: np.ndarray, survival: np.ndarray, level: float) -> float | None:
    below = np.flatnonzero(survival <= level)
    return float(times[below[0]]) if len(below) else None


def time_to_event(event_days: np.ndarray, follow_up_days: np.ndarray, months: list[int],
                  min_cell_size: int) -> TimeToEvent:
    """Kaplan-Meier over neighbours: ``event_days`` NaN means no event during the follow-up
    (censored at ``follow_up_days``)."""
    n = len(event_days)
    if n < min_cell_size:
        return TimeToEvent(n, None, None, None, None, [], True, _suppressed_note(n, min_cell_size))
    observed = ~np.isnan(event_days)
    durations = np.where(observed, event_days, follow_up_days)
    if not observed.any():
        curve = [SurvivalPoint(m, m * MONTH_DAYS, int((durations >= m * MONTH_DAYS).sum()),
                               None, None, None) for m in months]
        for p in curve:
            if p.at_risk >= min_cell_size:
                p.survival, p.low, p.high = 1.0, None, None
        return TimeToEvent(n, 0, None, None, None, curve, False,
                           "no neighbour had the event: median not reached")
    sf = ecdf(CensoredData(uncensored=durations[observed], right=durations[~observed])).sf
    with warnings.catch_warnings():  # undefined at S = 0 or 1: NaN there, by design
        warnings.simplefilter("ignore", RuntimeWarning)
        band = sf.confidence_interval(0.95, method="log-log")
    times = sf.quantiles
    median = _first_at_or_below(times, sf.probabilities, 0.5)
    low = _first_at_or_below(times, band.low.evaluate(times), 0.5)
    high = _first_at_or_below(times, band.high.evaluate(times), 0.5)
    curve = []
    for m in months:
        days = m * MONTH_DAYS
        at_risk = int((durations >= days).sum())
        if at_risk < min_cell_size:
            curve.append(SurvivalPoint(m, days, at_risk, None, None, None))
        else:
            lo, hi = band.low.evaluate(days), band.high.evaluate(days)
            curve.append(SurvivalPoint(m, days, at_risk, float(sf.evaluate(days)),
                                       None if np.isnan(lo) else float(lo),
                                       None if np.isnan(hi) else float(hi)))
    note = ("Kaplan-Meier median days to the event (95% interval, log-log)" if median is not None
            else "median not reached within the neighbours' follow-up")
    return TimeToEvent(n, int(observed.sum()), median, low, high, curve, False, note)


@dataclass
class Response:
    """EULAR response 6 months after starting a class, among neighbours who started it."""

    task: str
    drug_class: str
    usable: int
    responded: Forecast  # good or moderate
    categories: dict[str, Forecast]  # good / moderate / none
    suppressed: bool
    note: str


def response(task: str, drug_class: str, labels: np.ndarray, categories: np.ndarray,
             min_cell_size: int, matching: str) -> Response:
    """``labels``: good or moderate, ``categories``: the EULAR category, per usable neighbour."""
    responded = share(task, labels, min_cell_size,
                      what="share of neighbours who started it with a good or moderate response")
    shares = {c: share(f"{task}:{c}", categories == c, min_cell_size,
                       what=f"share with a {c} response") for c in EULAR}
    note = responded.note if responded.suppressed else f"{responded.note}; {matching}"
    return Response(task, drug_class, len(labels), responded, shares, responded.suppressed, note)


@dataclass
class CoursePoint:
    measure: str
    month: int
    usable: int
    median: float | None
    q25: float | None
    q75: float | None
    suppressed: bool


def course(measure: str, month: int, values: np.ndarray, min_cell_size: int) -> CoursePoint:
    """The neighbours' median and interquartile range of ``measure`` at ``month``."""
    values = values[~np.isnan(values)]
    if len(values) < min_cell_size:
        return CoursePoint(measure, month, len(values), None, None, None, True)
    q25, median, q75 = np.percentile(values, [25, 50, 75])
    return CoursePoint(measure, month, len(values), float(median), float(q25), float(q75), False)
