"""Task labels (gold.tasks) from the declarative definitions in conf/tasks.yaml, in the spirit of ACES.

A task is a name, a kind and the kind's parameters. Every kind is one Spark function over
silver.events giving rows (subject_id, prediction_time, task, label, horizon_days, censored,
category); ``task_labels`` runs them all and adds the split. Four kinds:

- ``event_within``: prediction times at the end of each visit day; label when one of ``codes``
  is recorded in [t, t + horizon_days); without one, censored when the patient's last recorded
  event falls before t + horizon_days (we cannot know the window stayed event-free).
- ``value_at``: visit-day ends; the measurement of ``codes`` nearest t + offset_days within
  ``tolerance_days`` (and at or after t); label when it is below ``below``; censored when none.
- ``eular_response``: one task per drug class (``<name>/<class>``), indexed at the end of the day
  the class first starts (its first event of any of the class's codes); baseline = the latest
  measurement before the index and at most ``baseline_lookback_days`` before the start day;
  outcome = the measurement nearest index + offset_days within ``tolerance_days``. EULAR:
  ``good`` when outcome <= 3.2 and improvement > 1.2; ``moderate`` when improvement > 1.2 (with
  outcome > 3.2) or 0.6 < improvement <= 1.2 with outcome <= 5.1; else ``none``. Label = good or
  moderate; censored (category null) when the baseline or the outcome is missing.
- ``value_rise_within``: visit-day ends with a baseline value (the latest of ``codes`` before t,
  at most ``baseline_lookback_days`` earlier); label when a value in [t, t + horizon_days)
  exceeds the baseline by at least ``min_increase``; without that, censored unless a value was
  recorded at least ``min_follow_up_days`` after t within the horizon.

Time convention: features are the events strictly before the prediction time t (the timeline
prefix the embedding reads); labels read only events at or after t. The one documented exception
is a kind's baseline (eular_response, value_rise_within), taken before t, as the criteria define
the outcome relative to it.

Example (event_within, codes [RDT/FLARE], 180 days): a visit on 2020-01-01 gives t 2020-01-02;
a flare on 2020-03-01 gives label true; with no flare and the last event on 2020-02-01, label
false and censored true.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from rdt_spark.columns import end_of_day, plus_days, seconds, union_all
from rdt_spark.settings import ConfigError, checked, from_mapping, read_yaml
from rdt_spark.splits import split_of
from rdt_spark.timelines import prediction_times

FLARE_TASK = "flare_within_180d"
TASK_COLUMNS = ["subject_id", "prediction_time", "task", "label", "horizon_days", "censored",
                "category"]


@dataclass(frozen=True)
class EventWithin:
    kind: ClassVar[str] = "event_within"
    codes: list[str]
    horizon_days: int


@dataclass(frozen=True)
class ValueAt:
    kind: ClassVar[str] = "value_at"
    codes: list[str]
    offset_days: int
    tolerance_days: int
    below: float


@dataclass(frozen=True)
class EularResponse:
    kind: ClassVar[str] = "eular_response"
    codes: list[str]
    offset_days: int
    tolerance_days: int
    baseline_lookback_days: int
    drug_classes: list[str] | None = None  # null: every class of conf/tasks.yaml drug_classes


@dataclass(frozen=True)
class ValueRiseWithin:
    kind: ClassVar[str] = "value_rise_within"
    codes: list[str]
    horizon_days: int
    baseline_lookback_days: int
    min_increase: float
    min_follow_up_days: int


@dataclass(frozen=True)
class TaskSuite:
    """conf/tasks.yaml: drug class -> codes, and task name -> definition (a kind's settings)."""

    drug_classes: dict[str, list[str]]
    tasks: dict[str, Any]


@dataclass(frozen=True)
class LabelInputs:
    """What every labelling function may read: the events, the visit-day prediction times
    (subject_id, prediction_time) and the drug classes of the suite."""

    events: DataFrame
    points: DataFrame
    drug_classes: dict[str, list[str]]


def _rows(labelled: DataFrame, task: Column | str, horizon_days: int) -> DataFrame:
    return labelled.select(
        "subject_id", "prediction_time", (F.lit(task) if isinstance(task, str) else task)
        .alias("task"), F.coalesce("label", F.lit(False)).alias("label"),
        F.lit(horizon_days).cast("int").alias("horizon_days"), F.col("censored"),
        F.col("category").cast("string"))


def _measurements(events: DataFrame, codes: list[str]) -> DataFrame:
    """(_s, _t, _v, _rank) for the codes with a value; _rank is the code's place in ``codes``."""
    return events.where(F.col("code").isin(codes) & F.col("numeric_value").isNotNull()
                        & F.col("time").isNotNull()).select(
        F.col("subject_id").alias("_s"), F.col("time").alias("_t"),
        F.col("numeric_value").cast("double").alias("_v"),
        F.array_position(F.array(*[F.lit(c) for c in codes]), F.col("code")).alias("_rank"))


def _nearest(points: DataFrame, measured: DataFrame, at: Column, tolerance_days: int,
             after: Column) -> DataFrame:
    """Each point with ``nearest``: the value nearest ``at`` within the tolerance, at or after
    ``after`` (ties: the earlier, then the code listed first); null when there is none."""
    tol = tolerance_days * 86400.0
    distance = F.abs(seconds(F.col("_t")) - seconds(at))
    joined = points.join(measured, (F.col("subject_id") == F.col("_s")) & (F.col("_t") >= after)
                         & (distance <= tol), "left")
    best = F.min(F.when(F.col("_t").isNotNull(),
                        F.struct(distance.alias("d"), F.col("_t"), F.col("_rank"), F.col("_v"))))
    return joined.groupBy(*points.columns).agg(best["_v"].alias("nearest"))


def event_within(inputs: LabelInputs, spec: EventWithin, task: str) -> DataFrame:
    """Rows (1, t=2021-01-02) + flare 2021-06-30 -> label true (180 d); flare 2021-07-01 -> false.

    Without the event and with the last recorded event before t + horizon, censored.
    """
    events, points = inputs.events, inputs.points
    hits = events.where(F.col("code").isin(spec.codes) & F.col("time").isNotNull()).select(
        F.col("subject_id").alias("_s"), F.col("time").alias("_t"))
    end = plus_days(F.col("prediction_time"), spec.horizon_days)
    follow_up = (events.where(F.col("time").isNotNull()).groupBy("subject_id")
                 .agg(F.max("time").alias("_last")))
    labelled = (points.join(hits, (F.col("subject_id") == F.col("_s"))
                            & (F.col("_t") >= F.col("prediction_time")) & (F.col("_t") < end),
                            "left")
                .groupBy("subject_id", "prediction_time")
                .agg((F.count("_t") > 0).alias("label"))
                .join(follow_up, "subject_id", "left")
                .withColumn("censored", ~F.col("label") & (F.col("_last") < end))
                .withColumn("category", F.lit(None)))
    return _rows(labelled, task, spec.horizon_days)


def value_at(inputs: LabelInputs, spec: ValueAt, task: str) -> DataFrame:
    """DAS28 remission at 12 months: t=2020-01-02, DAS28 2.1 on 2021-01-05 -> label true;
    DAS28 3.0 there -> false; no DAS28 within t+365d +- tolerance -> censored."""
    events, points = inputs.events, inputs.points
    target = plus_days(F.col("prediction_time"), spec.offset_days)
    nearest = _nearest(points, _measurements(events, spec.codes), target, spec.tolerance_days,
                       F.col("prediction_time"))
    labelled = nearest.select(
        "subject_id", "prediction_time", (F.col("nearest") < spec.below).alias("label"),
        F.col("nearest").isNull().alias("censored"), F.lit(None).alias("category"))
    return _rows(labelled, task, spec.offset_days)


def class_starts(events: DataFrame, drug_classes: dict[str, list[str]]) -> DataFrame:
    """(subject_id, drug_class, start, prediction_time): each class's first event per subject,
    indexed at the end of that day. RxNorm/6851 on 2020-03-04 10:00 -> (methotrexate,
    2020-03-04 10:00, 2020-03-05)."""
    spark = events.sparkSession
    codes = spark.createDataFrame([(code, name) for name, cs in drug_classes.items() for code in cs],
                                  "code string, drug_class string")
    return (events.where(F.col("time").isNotNull()).join(F.broadcast(codes), "code")
            .groupBy("subject_id", "drug_class").agg(F.min("time").alias("start"))
            .withColumn("prediction_time", end_of_day(F.col("start"))))


def eular_category(baseline: Column, outcome: Column) -> Column:
    """EULAR response from DAS28 at baseline and at follow-up: good, moderate or none.

    (6.0, 3.0) -> good; (6.0, 4.5) -> moderate; (5.0, 4.2) -> moderate; (6.0, 5.3) -> none.
    """
    improvement = baseline - outcome
    return (F.when(baseline.isNull() | outcome.isNull(), F.lit(None).cast("string"))
            .when((outcome <= 3.2) & (improvement > 1.2), "good")
            .when((improvement > 1.2) | ((improvement > 0.6) & (outcome <= 5.1)), "moderate")
            .otherwise("none"))


def eular_response(inputs: LabelInputs, spec: EularResponse, task: str) -> DataFrame:
    """One row per (subject, drug class start); task ``<task>/<class>``; see the module doc."""
    events, drug_classes = inputs.events, inputs.drug_classes
    classes = {c: drug_classes[c] for c in (spec.drug_classes or drug_classes)}
    starts = class_starts(events, classes)
    measured = _measurements(events, spec.codes)
    lookback_from = plus_days(F.date_trunc("day", "start"), -spec.baseline_lookback_days)
    baseline = (starts.join(measured, (F.col("subject_id") == F.col("_s"))
                            & (F.col("_t") < F.col("prediction_time"))
                            & (F.col("_t") >= lookback_from), "left")
                .groupBy(*starts.columns)
                .agg(F.max(F.when(F.col("_t").isNotNull(),
                                  F.struct(F.col("_t"), -F.col("_rank"), F.col("_v"))))["_v"]
                     .alias("baseline")))
    outcome = _nearest(baseline, measured, plus_days(F.col("prediction_time"), spec.offset_days),
                       spec.tolerance_days, F.col("prediction_time"))
    category = eular_category(F.col("baseline"), F.col("nearest"))
    labelled = outcome.select(
        "subject_id", "prediction_time",
        F.concat(F.lit(f"{task}/"), F.col("drug_class")).alias("task"),
        category.isin("good", "moderate").alias("label"), category.isNull().alias("censored"),
        category.alias("category"))
    return _rows(labelled, F.col("task"), spec.offset_days)


def value_rise_within(inputs: LabelInputs, spec: ValueRiseWithin, task: str) -> DataFrame:
    """Radiographic progression: t with a baseline mTSS 10 in the lookback; a study of 16 within
    2 years (min_increase 5) -> label true; only 12 two years on -> false; only 12 a month
    on -> censored (too short a follow-up to call it no progression)."""
    events, points = inputs.events, inputs.points
    measured = _measurements(events, spec.codes)
    t = F.col("prediction_time")
    baseline = (points.join(measured, (F.col("subject_id") == F.col("_s")) & (F.col("_t") < t)
                            & (F.col("_t") >= plus_days(t, -spec.baseline_lookback_days)))
                .groupBy("subject_id", "prediction_time")
                .agg(F.max(F.struct(F.col("_t"), -F.col("_rank"), F.col("_v")))["_v"]
                     .alias("baseline")))
    end = plus_days(t, spec.horizon_days)
    follow = (baseline.join(measured, (F.col("subject_id") == F.col("_s")) & (F.col("_t") >= t)
                            & (F.col("_t") < end), "left")
              .groupBy("subject_id", "prediction_time", "baseline")
              .agg(F.max("_v").alias("_peak"), F.max("_t").alias("_last")))
    label = F.coalesce(F.col("_peak") >= F.col("baseline") + spec.min_increase, F.lit(False))
    enough = F.col("_last") >= plus_days(t, spec.min_follow_up_days)
    labelled = follow.select("subject_id", "prediction_time", label.alias("label"),
                             (~label & ~F.coalesce(enough, F.lit(False))).alias("censored"),
                             F.lit(None).alias("category"))
    return _rows(labelled, task, spec.horizon_days)


@dataclass(frozen=True)
class TaskKind:
    """A kind of task: the settings a definition of it holds, and how it labels events."""

    settings: type
    labels: Callable[[LabelInputs, Any, str], DataFrame]


# One entry per kind: adding a kind is a settings dataclass, its labelling function and a line here.
TASK_KINDS = {
    kind.settings.kind: kind for kind in (
        TaskKind(EventWithin, event_within), TaskKind(ValueAt, value_at),
        TaskKind(EularResponse, eular_response), TaskKind(ValueRiseWithin, value_rise_within))
}


def task_labels(events: DataFrame, suite: TaskSuite, fractions: dict[str, float]) -> DataFrame:
    """gold.tasks: every task of the suite, one row per (subject, prediction time, task)."""
    inputs = LabelInputs(events, prediction_times(events), suite.drug_classes)
    frames = [TASK_KINDS[spec.kind].labels(inputs, spec, name) for name, spec in suite.tasks.items()]
    return union_all(frames).withColumn("split", split_of(F.col("subject_id"), fractions))


def flare_tasks(events: DataFrame, flare_code: str, horizon_days: int,
                fractions: dict[str, float], task: str = FLARE_TASK) -> DataFrame:
    """The flare task alone (an event_within task), with its split."""
    suite = TaskSuite({}, {task: EventWithin([flare_code], horizon_days)})
    return task_labels(events, suite, fractions)


def outcome_window_days(spec: Any) -> int:
    """How long after its prediction time a task's outcome may still be recorded: the horizon,
    or the offset plus its tolerance. ``ValueAt(offset 365, tolerance 90)`` -> 455."""
    return getattr(spec, "horizon_days", 0) or spec.offset_days + spec.tolerance_days


def task_catalogue(suite: TaskSuite) -> dict[str, dict]:
    """Every task name gold.tasks holds -> its kind, outcome window (days) and, for a treatment
    response task (``eular_response``), the drug class: what the twin needs to ask each one.

    ``{"flare_within_180d": {"kind": "event_within", "window_days": 180, "drug_class": None},
    "eular_response_6m/methotrexate": {"kind": "eular_response", "window_days": 227,
    "drug_class": "methotrexate"}, ...}``
    """
    out = {}
    for name, spec in suite.tasks.items():
        entry = {"kind": spec.kind, "window_days": outcome_window_days(spec), "drug_class": None}
        if isinstance(spec, EularResponse):
            for drug_class in spec.drug_classes or suite.drug_classes:
                out[f"{name}/{drug_class}"] = {**entry, "drug_class": drug_class}
        else:
            out[name] = entry
    return out


def load_tasks(path: str | os.PathLike) -> TaskSuite:
    """Read and validate task definitions (conf/tasks.yaml); errors name the dotted key."""
    source = str(path)
    data = read_yaml(path, "task file")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '<top>' must be a mapping, got {data!r}")
    unknown = sorted(set(data) - {"drug_classes", "tasks"})
    if unknown:
        raise ConfigError(f"{source}: unknown key '{unknown[0]}' (expected one of: "
                          "drug_classes, tasks)")
    for key in ("drug_classes", "tasks"):
        if key not in data:
            raise ConfigError(f"{source}: missing required key '{key}'")
    classes = checked(data["drug_classes"], dict[str, list[str]], "drug_classes", source)
    if not isinstance(data["tasks"], dict) or not data["tasks"]:
        raise ConfigError(f"{source}: 'tasks' must be a non-empty mapping of task name to definition")
    tasks = {}
    for name, spec in data["tasks"].items():
        key = f"tasks.{name}"
        if not isinstance(spec, dict) or spec.get("kind") not in TASK_KINDS:
            raise ConfigError(f"{source}: '{key}.kind' must be one of {', '.join(TASK_KINDS)}")
        settings = TASK_KINDS[spec["kind"]].settings
        tasks[str(name)] = from_mapping(settings, {k: v for k, v in spec.items() if k != "kind"},
                                        key, source)
        for i, drug_class in enumerate(getattr(tasks[str(name)], "drug_classes", None) or []):
            if drug_class not in classes:
                raise ConfigError(f"{source}: '{key}.drug_classes[{i}]' names no class of "
                                  f"drug_classes: {drug_class!r}")
    return TaskSuite(classes, tasks)
