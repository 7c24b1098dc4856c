"""One patient's course up to a prediction time, read from the lake for a twin report's charts.

From silver.events (deltalake, filtered to one subject and to events at or before the prediction
time: a report at time t shows nothing the clinician could not have known then): the DAS28 and
its components, CRP and ESR, the Sharp score, flares, and each drug class as periods on a time
axis; from gold.embeddings, the modalities the twin's embedding saw at that time.

A class is *on* from a record of one of its codes until its last record before a gap longer
than ``ReportConfig.treatment_gap_days`` (a registry records each drug taken at each visit, so a
gap of several visits is a stop). Note text (``text_value``) is never read.

Example: DAS28 records 5.1 (2019-03-01) and 3.0 (2019-09-01), methotrexate recorded on both
days, asked at 2019-09-01 -> ``series["DAS28"]`` holds both values and ``treatments`` one period
``("methotrexate", 2019-03-01, 2019-09-01)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from ray_training.settings import ReportConfig
from rdt_spark.lake_uris import open_delta


@dataclass
class PatientCourse:
    """What the course charts draw: ``series[label]`` is a (time, value) frame sorted by time."""

    until: pd.Timestamp
    series: dict[str, pd.DataFrame]
    panels: dict[str, list[str]]  # panel -> labels in it, as configured
    flares: list[pd.Timestamp]
    treatments: list[tuple[str, pd.Timestamp, pd.Timestamp]]  # (class, first, last record)
    modalities: list[str]

    @property
    def first(self) -> pd.Timestamp | None:
        times = [s["time"].min() for s in self.series.values() if len(s)]
        times += self.flares + [start for _, start, _ in self.treatments]
        return min(times) if times else None


def _events(events_path: str, subject_id: int, until: pd.Timestamp) -> pd.DataFrame:
    return open_delta(events_path).to_pyarrow_dataset().to_table(
        columns=["time", "code", "numeric_value"],
        filter=(pc.field("subject_id") == subject_id) & pc.field("time").is_valid()
        & (pc.field("time") <= until.to_pydatetime())).to_pandas()


def series(events: pd.DataFrame, codes: list[str]) -> pd.DataFrame:
    """(time, value) of ``codes`` with a value, one per time (the first listed code wins)."""
    rows = events[events["code"].isin(codes) & events["numeric_value"].notna()]
    rank = rows["code"].map({c: i for i, c in enumerate(codes)})
    rows = rows.assign(_rank=rank).sort_values(["time", "_rank"]).drop_duplicates("time")
    return pd.DataFrame({"time": rows["time"].to_numpy(),
                         "value": rows["numeric_value"].to_numpy(float)})


def periods(times: pd.Series, gap_days: int) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Runs of record times no more than ``gap_days`` apart, as (first, last)."""
    ordered = times.sort_values().drop_duplicates().reset_index(drop=True)
    if ordered.empty:
        return []
    breaks = np.flatnonzero(ordered.diff().dt.days.fillna(0).to_numpy() > gap_days)
    starts, ends = np.r_[0, breaks], np.r_[breaks - 1, len(ordered) - 1]
    return [(ordered[s], ordered[e]) for s, e in zip(starts, ends, strict=True)]


def modalities_at(embeddings_path: str, version: int, model_version: str, subject_id: int,
                  at: pd.Timestamp) -> list[str]:
    """The modalities gold.embeddings records for the patient's embedding at ``at``."""
    rows = open_delta(embeddings_path, version=version).to_pyarrow_dataset().to_table(
        columns=["modalities"],
        filter=(pc.field("subject_id") == subject_id)
        & (pc.field("model_version") == model_version)
        & (pc.field("prediction_time") == at.to_pydatetime())).to_pylist()
    return sorted(rows[0]["modalities"] or []) if rows else []


def patient_course(events_path: str, subject_id: int, until: pd.Timestamp,
                   drug_classes: dict[str, list[str]], cfg: ReportConfig,
                   modalities: list[str]) -> PatientCourse:
    """The patient's course up to and including ``until`` (see the module doc)."""
    events = _events(events_path, subject_id, until)
    events["time"] = pd.to_datetime(events["time"], utc=True)
    found = {label: series(events, codes) for labels in cfg.panels.values()
             for label, codes in labels.items()}
    treatments = [(name, start, end) for name, codes in drug_classes.items()
                  for start, end in periods(events.loc[events["code"].isin(codes), "time"],
                                            cfg.treatment_gap_days)]
    flares = sorted(events.loc[events["code"].isin(cfg.flare_codes), "time"].drop_duplicates())
    return PatientCourse(until, found, {p: list(labels) for p, labels in cfg.panels.items()},
                         list(flares), sorted(treatments, key=lambda t: (t[1], t[0])), modalities)
