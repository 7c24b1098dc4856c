"""What was known of each patient at each prediction time, and what followed it.

Two tables over the same patient-times (the visit-day ends of ``timelines.prediction_times``):

- ``gold.patient_states`` reads only events strictly before the prediction time t: sex, age,
  disease duration, serostatus, current and past drug classes, the latest DAS28 and mTSS, and the
  data modalities recorded so far. A twin search filters its neighbours on them, a cohort
  selects patients by them, and the evaluation's last-value-carried-forward baseline reads them.
- ``gold.trajectories`` reads only events at or after t: how long the patient was followed, the
  days to the first event (a flare: the Kaplan-Meier time to flare), and the DAS28 and mTSS
  nearest t + 3, 6, 12 and 24 months. These are outcomes: a twin report shows its neighbours'
  and the evaluation scores forecasts against them; nothing may use them as features.

Both are computed patient by patient (``cogroup`` of events and prediction times, one pandas
function per patient), so no step grows with the population on one machine.

Definitions (``StatesConfig`` holds the codes):

- *current* classes are those recorded at the latest visit before t (a registry records every
  drug taken at each visit); *past* classes were recorded earlier but not at that visit;
  ``current_days`` is the time since each current class was first recorded.
- *seropositive* is true once RF or anti-CCP was above its cut-off before t, false when tested
  and never above, null when never tested.
- a course value is the measurement nearest t + months (30.44 days a month) within the measure's
  tolerance, never before t; ties go to the earlier one, then to the code listed first.

Example: a woman born 1960-01-01, diagnosed (SNOMED/69896004) 2019-12-31, RF 35 on that day,
methotrexate at visits on 2019-12-31 and 2020-01-01, DAS28 5.1 on 2020-01-01, gives at
t = 2020-01-02 the state (F, age 60.0, disease 0.005 years, seropositive, current
[methotrexate], current_days [1.x], das28 5.1); a DAS28 of 3.0 on 2020-04-03 and a flare on
2020-05-01 give das28_course [3.0, null, null, null] and event_days 120.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from rdt_spark.schemas import GOLD_PATIENT_STATES, GOLD_TRAJECTORIES
from rdt_spark.splits import split_of

DAY_US = 86_400_000_000
YEAR_DAYS, MONTH_DAYS = 365.25, 30.4375
SEX_PREFIX, BIRTH_CODE = "Gender/", "MEDS_BIRTH"
# Data modalities by the source table their events came from (silver.events lineage); every
# patient-time has structured events.
SOURCE_MODALITIES = {"note": "notes", "ext.imaging": "imaging", "ext.omics": "omics"}


@dataclass(frozen=True)
class StatesConfig:
    diagnosis_codes: list[str] = field(default_factory=lambda: ["SNOMED/69896004"])
    # Serology code -> upper limit of normal: positive above it (RF [IU]/mL, anti-CCP U/mL).
    serology: dict[str, float] = field(
        default_factory=lambda: {"LOINC/11572-5": 20.0, "LOINC/33935-8": 20.0})
    das28_codes: list[str] = field(default_factory=lambda: ["RDT/DAS28_ESR", "RDT/DAS28_CRP"])
    mtss_codes: list[str] = field(default_factory=lambda: ["RDT/MTSS"])
    event_codes: list[str] = field(default_factory=lambda: ["RDT/FLARE"])  # time to event
    course_months: list[int] = field(default_factory=lambda: [3, 6, 12, 24])
    das28_tolerance_days: int = 45
    mtss_tolerance_days: int = 180


EVENT_COLUMNS = ["subject_id", "time", "code", "numeric_value", "visit_id", "source_table"]


def _micros(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype="datetime64[us]").astype(np.int64)


def _series(events: pd.DataFrame, codes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(times, values) of ``codes`` with a value, one per time: at equal times the code listed
    first wins. Sorted by time."""
    rows = events[events["code"].isin(codes) & events["numeric_value"].notna()]
    if rows.empty:
        return np.empty(0, np.int64), np.empty(0)
    rank = rows["code"].map({c: i for i, c in enumerate(codes)})
    rows = rows.assign(_rank=rank).sort_values(["_t", "_rank"]).drop_duplicates("_t")
    # Values are stored as float32: round away the widening noise (6.2, not 6.19999981).
    return rows["_t"].to_numpy(), np.round(rows["numeric_value"].to_numpy(dtype=float), 6)


def latest_before(times: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The value of the latest time strictly before each ``at`` (NaN when none)."""
    idx = np.searchsorted(times, at, side="left") - 1
    out = np.full(len(at), np.nan)
    ok = idx >= 0
    out[ok] = values[idx[ok]]
    return out


def nearest_after(times: np.ndarray, values: np.ndarray, start: np.ndarray, target: np.ndarray,
                  tolerance_us: int) -> np.ndarray:
    """The value nearest each ``target`` within the tolerance and at or after ``start`` (ties:
    the earlier); NaN when none."""
    out = np.full(len(target), np.nan)
    if not len(times):
        return out
    right = np.clip(np.searchsorted(times, target, side="left"), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    best = np.full(len(target), np.inf)
    for cand in (left, right):  # left first: at equal distance the earlier wins
        d = np.abs(times[cand] - target).astype(float)
        ok = (times[cand] >= start) & (d <= tolerance_us) & (d < best)
        best[ok], out[ok] = d[ok], values[cand[ok]]
    return out


def _states_and_course(events: pd.DataFrame, points: pd.DataFrame, cfg: StatesConfig,
                       drug_classes: dict[str, list[str]]) -> pd.DataFrame:
    """One patient's states and trajectories at each of its prediction times."""
    at = np.sort(_micros(points["prediction_time"]))
    n = len(at)
    static = events[events["time"].isna()]
    timed = events[events["time"].notna()].assign(_t=lambda e: _micros(e["time"]))
    timed = timed.sort_values("_t", kind="stable")
    t = timed["_t"].to_numpy()
    sex = next((c.removeprefix(SEX_PREFIX) for c in static["code"] if c.startswith(SEX_PREFIX)),
               None)
    birth = timed.loc[timed["code"] == BIRTH_CODE, "_t"]
    age = (at - birth.iloc[0]) / DAY_US / YEAR_DAYS if len(birth) else np.full(n, np.nan)
    dx = timed.loc[timed["code"].isin(cfg.diagnosis_codes), "_t"]
    disease = np.full(n, np.nan)
    if len(dx):
        disease = np.where(dx.iloc[0] < at, (at - dx.iloc[0]) / DAY_US / YEAR_DAYS, np.nan)

    sero = timed[timed["code"].isin(list(cfg.serology)) & timed["numeric_value"].notna()]
    positive = sero["numeric_value"].to_numpy() > sero["code"].map(cfg.serology).to_numpy()
    first_test = sero["_t"].min() if len(sero) else np.iinfo(np.int64).max
    first_pos = sero["_t"][positive].min() if positive.any() else np.iinfo(np.int64).max
    seropositive = [True if first_pos < x else False if first_test < x else None for x in at]

    das_t, das_v = _series(timed, cfg.das28_codes)
    mtss_t, mtss_v = _series(timed, cfg.mtss_codes)

    # The latest visit before each t, from its first event of the day: its drugs are current.
    visits = timed.loc[timed["visit_id"].notna(), "_t"].to_numpy()
    last_visit = np.full(n, np.iinfo(np.int64).min)
    idx = np.searchsorted(visits, at, side="left") - 1
    last_visit[idx >= 0] = visits[idx[idx >= 0]] // DAY_US * DAY_US
    current = [[] for _ in range(n)]
    current_days = [[] for _ in range(n)]
    past = [[] for _ in range(n)]
    for name, codes in drug_classes.items():
        times = timed.loc[timed["code"].isin(codes), "_t"].to_numpy()
        if not len(times):
            continue
        before = np.searchsorted(times, at, side="left")  # exposures before t
        since_visit = np.searchsorted(times, last_visit, side="left")  # before that visit's day
        for i in np.flatnonzero(before > 0):
            if before[i] > since_visit[i]:
                current[i].append(name)
                current_days[i].append(float((at[i] - times[0]) / DAY_US))
            else:
                past[i].append(name)
    seen = {name: timed.loc[timed["source_table"] == table, "_t"].min()
            for table, name in SOURCE_MODALITIES.items()}
    modalities = [["events"] + [m for m, first in seen.items() if first < x] for x in at]

    last_event = t[-1] if len(t) else np.iinfo(np.int64).min
    hits = timed.loc[timed["code"].isin(cfg.event_codes), "_t"].to_numpy()
    nxt = np.searchsorted(hits, at, side="left")
    event_days = np.full(n, np.nan)
    event_days[nxt < len(hits)] = (hits[nxt[nxt < len(hits)]] - at[nxt < len(hits)]) / DAY_US

    def course(times: np.ndarray, values: np.ndarray, tolerance_days: int) -> list[list]:
        cols = [nearest_after(times, values, at, at + int(m * MONTH_DAYS * DAY_US),
                              tolerance_days * DAY_US) for m in cfg.course_months]
        return [[None if np.isnan(c[i]) else float(c[i]) for c in cols] for i in range(n)]

    def nullable(values: np.ndarray) -> list:
        return [None if np.isnan(v) else float(v) for v in values]

    return pd.DataFrame({
        "prediction_time": pd.to_datetime(at, unit="us", utc=True),
        "sex": sex,
        "age": nullable(age),
        "disease_years": nullable(disease),
        "seropositive": seropositive,
        "current_classes": current,
        "current_days": current_days,
        "past_classes": past,
        "das28": nullable(latest_before(das_t, das_v, at)),
        "mtss": nullable(latest_before(mtss_t, mtss_v, at)),
        "modalities": modalities,
        "follow_up_days": np.maximum((last_event - at) / DAY_US, 0.0),
        "event_days": nullable(event_days),
        "das28_course": course(das_t, das_v, cfg.das28_tolerance_days),
        "mtss_course": course(mtss_t, mtss_v, cfg.mtss_tolerance_days),
        "course_months": [list(cfg.course_months)] * n,
    })


def _computed() -> StructType:
    """Both contracts' columns but the split (added by Spark afterwards), in one schema."""
    fields = {f.name: f for f in [*GOLD_PATIENT_STATES.fields, *GOLD_TRAJECTORIES.fields]}
    return StructType([f for name, f in fields.items() if name != "split"])


def states_and_trajectories(events: DataFrame, points: DataFrame, cfg: StatesConfig,
                            drug_classes: dict[str, list[str]],
                            fractions: dict[str, float]) -> DataFrame:
    """Both tables' columns for every (subject_id, prediction_time) of ``points``, patient by
    patient, with the split; ``conform`` it to GOLD_PATIENT_STATES or GOLD_TRAJECTORIES."""
    both = _computed()

    def per_patient(key, ev: pd.DataFrame, pts: pd.DataFrame) -> pd.DataFrame:
        if pts.empty:
            return pd.DataFrame(columns=both.fieldNames())
        out = _states_and_course(ev, pts, cfg, drug_classes)
        out.insert(0, "subject_id", key[0])
        return out[both.fieldNames()]

    return (events.select(*EVENT_COLUMNS).groupBy("subject_id")
            .cogroup(points.select("subject_id", "prediction_time").groupBy("subject_id"))
            .applyInPandas(per_patient, both)
            .withColumn("split", split_of(F.col("subject_id"), fractions)))


