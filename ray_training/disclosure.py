"""What a twin report shows, and to whom: aggregates for everyone, individuals only where granted.

Applied at the output boundary (``rdt query``, ``rdt demo``), after the report is computed and
before anything is printed or returned:

- **Pseudonyms.** The queried patient is named by its keyed pseudonym (``rdt_spark.pseudonyms``),
  never by its source id; the report records the key's fingerprint.
- **Individuals.** Neighbour rows (a historical patient-time each, with its own outcome) are listed
  only where ``privacy.neighbour_rows`` grants it, and then under pseudonyms. Otherwise the report
  carries their aggregates only and says the rows are withheld.
- **Small cells.** A count of patients from 1 to ``min_cell_size - 1`` is never shown: it reads
  ``"<10"``. A forecast from fewer usable neighbours is suppressed whole. Inside a forecast from
  enough usable neighbours, a small count of those *with* the event, or *without* it (the
  complement gives the count away as surely), is published as a bound (``"<10"`` or ``">33"`` of
  43), with no point share and with the 95% interval widened to the hull of the intervals of every
  count the published facts allow. So neither count, share nor interval pins the exact count, while
  a rare-event forecast ("fewer than 10 of 43: 95% CI 0% to 38%") still informs; suppressing such
  forecasts whole would silence exactly the low and high risks a clinician asks about. Zero is
  shown: it describes nobody.

Example (``min_cell_size`` 10): a forecast of 3 flares among 43 usable neighbours becomes
``{"usable": 43, "events": "<10", "share": None, "ci_low": 0.004, "ci_high": 0.352, ...}``; 38
of 43 becomes ``">33"`` (5 without the event is a small cell too); 20 of 43 is shown as it is.
"""

from __future__ import annotations

from typing import Any

from ray_training.forecasts import wilson_interval
from rdt_spark.pseudonyms import PrivacyConfig, PseudonymKey, pseudonym


def is_small(count: int, min_cell_size: int) -> bool:
    """A cell that would single out fewer than ``min_cell_size`` patients (zero is no cell)."""
    return 0 < count < min_cell_size


def shown_count(count: int, min_cell_size: int) -> int | str:
    """The count as published: itself, or ``"<10"`` for a small cell."""
    return f"<{min_cell_size}" if is_small(count, min_cell_size) else count


def _consistent_counts(events: int, n: int, m: int) -> list[int]:
    """Every event count that publishes the same facts: which of the two cells are small."""
    return [e for e in range(n + 1)
            if (is_small(e, m), is_small(n - e, m)) == (is_small(events, m), is_small(n - events, m))]


def disclosed_forecast(f: dict[str, Any], min_cell_size: int) -> dict[str, Any]:
    """A forecast (``twin.Forecast`` as a dict) with its small cells suppressed or bounded."""
    m, usable, events = min_cell_size, f["usable"], f["events"]
    out = {**f, "neighbours": shown_count(f["neighbours"], m), "usable": shown_count(usable, m)}
    if f["suppressed"] or usable < m:
        return {**out, "events": None, "share": None, "ci_low": None, "ci_high": None,
                "suppressed": True,
                "note": f"suppressed: {out['usable']} usable neighbours, fewer than the minimum "
                        f"cell size {m}"}
    if not (is_small(events, m) or is_small(usable - events, m)):
        return out
    allowed = _consistent_counts(events, usable, m)
    fewest, most = min(allowed), max(allowed)
    low, high = wilson_interval(fewest, usable)[0], wilson_interval(most, usable)[1]
    bound = (f"<{m}" if fewest == 1 else f">{fewest - 1}" if most == usable - 1
             else f"{fewest}-{most}")  # the last: both cells small
    return {**out, "events": bound, "share": None, "ci_low": low, "ci_high": high,
            "note": f"{bound} of {usable} usable neighbours had the event (a small cell: the "
                    "95% interval covers every count it allows)"}


def disclosed_response(r: dict[str, Any], min_cell_size: int) -> dict[str, Any]:
    """A treatment-response forecast (``forecasts.Response`` as a dict), each share disclosed."""
    m = min_cell_size
    out = {**r, "usable": shown_count(r["usable"], m),
           "responded": disclosed_forecast(r["responded"], m),
           "categories": {c: disclosed_forecast(f, m) for c, f in r["categories"].items()}}
    if out["responded"]["suppressed"]:
        out["suppressed"], out["note"] = True, out["responded"]["note"]
    return out


def disclosed_time_to_event(t: dict[str, Any], min_cell_size: int) -> dict[str, Any]:
    """The Kaplan-Meier forecast with its counts of patients disclosed: suppressed whole below
    the minimum cell size; otherwise a small count of events (or of neighbours without one) is a
    bound, and each curve point's number at risk is shown only where its survival is."""
    m, n = min_cell_size, t["neighbours"]
    if t["suppressed"] or n < m:
        return {**t, "neighbours": shown_count(n, m), "events": None, "median_days": None,
                "low_days": None, "high_days": None, "curve": [], "suppressed": True,
                "note": f"suppressed: {shown_count(n, m)} usable neighbours, fewer than the "
                        f"minimum cell size {m}"}
    events = t["events"]
    if is_small(events, m):
        events = f"<{m}"
    elif is_small(n - events, m):
        events = f">{n - m}"
    curve = [{**p, "at_risk": p["at_risk"] if p["survival"] is not None else f"<{m}"}
             for p in t["curve"]]
    return {**t, "events": events, "curve": curve}


def disclosed_course(c: dict[str, Any], min_cell_size: int) -> dict[str, Any]:
    """A disease-course point: its count shown, or a small cell hidden with its figures."""
    if c["suppressed"] or c["usable"] < min_cell_size:
        return {**c, "usable": shown_count(c["usable"], min_cell_size), "median": None,
                "q25": None, "q75": None, "suppressed": True}
    return c


def disclosed_report(report: dict[str, Any], privacy: PrivacyConfig, key: PseudonymKey,
                     min_cell_size: int) -> dict[str, Any]:
    """The twin report as a user may take it away (see the module doc)."""
    m = min_cell_size
    hidden = ("subject_id", "neighbours", "neighbours_found", "events", "time_to_event",
              "treatment_response", "course")
    out = {"patient": pseudonym(report["subject_id"], key), "pseudonym_key_id": key.key_id,
           **{k: v for k, v in report.items() if k not in hidden},
           "neighbours_found": shown_count(report["neighbours_found"], m),
           "events": [disclosed_forecast(f, m) for f in report["events"]],
           "time_to_event": disclosed_time_to_event(report["time_to_event"], m),
           "treatment_response": [disclosed_response(r, m) for r in report["treatment_response"]],
           "course": [disclosed_course(c, m) for c in report["course"]]}
    if privacy.neighbour_rows:
        out["neighbours"] = [{"patient": pseudonym(n["subject_id"], key),
                              **{k: v for k, v in n.items() if k != "subject_id"}}
                             for n in report["neighbours"]]
    else:
        out["neighbours"] = None
        out["neighbours_note"] = ("individual neighbours withheld: only aggregates are shown "
                                  "unless privacy.neighbour_rows grants access")
    return out
