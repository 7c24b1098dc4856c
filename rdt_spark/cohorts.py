"""Trial cohorts from inclusion and exclusion criteria (a YAML file), in Spark.

Each patient is judged at one patient-time: the latest prediction time at or before ``as_of``
(the latest of all when ``as_of`` is null), with what gold.patient_states says was known then.
A patient is selected when every inclusion criterion holds and no exclusion criterion does; the
row keeps, in words, each criterion met. ``summary`` counts who fell out at each criterion and
breaks the cohort down by sex and age band, suppressing every count under the minimum cell size.

Example (conf/cohort.example.yaml): include age [18, 80), DAS28 above 3.2, on methotrexate for
at least 90 days, seropositive; exclude any past rituximab; imaging required -> a patient of
54 with DAS28 5.1, 400 days on methotrexate and a radiograph is selected with the reasons
["age 54 in [18, 80)", "DAS28 5.10 > 3.2", "on methotrexate for 400 days", "seropositive",
"never rituximab", "has imaging"].
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from rdt_spark.settings import ConfigError, from_mapping, read_yaml

KEYS = ["subject_id", "prediction_time"]
AGE_BANDS = [18, 40, 65]  # summary bands: <18, 18-39, 40-64, 65+


@dataclass(frozen=True)
class Include:
    diagnosis: list[str] = field(default_factory=list)  # any of these codes before the time
    sex: str | None = None  # F / M
    age: list[float] | None = None  # [low, high) years
    das28_above: float | None = None  # the latest DAS28 strictly above this
    seropositive: bool | None = None
    current_classes: list[str] = field(default_factory=list)  # on every one of these
    ever_classes: list[str] = field(default_factory=list)  # ever took every one of these
    min_days_on: dict[str, float] = field(default_factory=dict)  # class -> days on it, at least
    max_disease_years: float | None = None


@dataclass(frozen=True)
class Exclude:
    current_classes: list[str] = field(default_factory=list)  # on any of these
    ever_classes: list[str] = field(default_factory=list)  # ever took any of these


@dataclass(frozen=True)
class Ranking:
    reference_patients: list[int] = field(default_factory=list)  # nearness to these, at their latest
    limit: int | None = None  # keep the nearest N (null: everyone selected)


@dataclass(frozen=True)
class Criteria:
    name: str
    as_of: str | None = None  # ISO date; null: each patient's latest prediction time
    include: Include = field(default_factory=Include)
    exclude: Exclude = field(default_factory=Exclude)
    required_modalities: list[str] = field(default_factory=list)  # missing ones not allowed
    rank: Ranking = field(default_factory=Ranking)

    def fingerprint(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def load_criteria(path: str | os.PathLike) -> Criteria:
    """Read and validate a criteria file; errors name the dotted key."""
    criteria = from_mapping(Criteria, read_yaml(path, "criteria file"), "", str(path))
    age = criteria.include.age
    if age is not None and (len(age) != 2 or age[0] >= age[1]):
        raise ConfigError(f"{path}: 'include.age' must be [low, high) with low < high, got {age}")
    if criteria.include.sex not in (None, "F", "M"):
        raise ConfigError(f"{path}: 'include.sex' must be F or M, got {criteria.include.sex!r}")
    return criteria


def judged_states(states: DataFrame, as_of: str | None) -> DataFrame:
    """Each patient's latest state at or before ``as_of`` (every patient's latest when None)."""
    rows = states if as_of is None else states.where(
        F.col("prediction_time") <= F.to_timestamp(F.lit(as_of)))
    latest = Window.partitionBy("subject_id").orderBy(F.desc("prediction_time"))
    return rows.withColumn("_n", F.row_number().over(latest)).where(F.col("_n") == 1).drop("_n")


def flag(i: int) -> str:
    """The column holding whether criterion ``i`` holds."""
    return f"_criterion_{i}"


def _days_on(drug_class: str) -> Column:
    position = F.array_position("current_classes", drug_class)
    return F.when(position > 0, F.element_at("current_days", position.cast("int")))


def criteria_checks(c: Criteria) -> list[tuple[str, str, Column, Column]]:
    """(criterion, include/exclude, holds, reason in words) for every criterion set in ``c``."""
    inc, exc, checks = c.include, c.exclude, []
    ever = F.array_union("current_classes", "past_classes")
    if inc.diagnosis:
        checks.append((f"diagnosis {inc.diagnosis}", "include", F.col("_diagnosed"),
                       F.lit(f"diagnosed ({', '.join(inc.diagnosis)})")))
    if inc.sex:
        checks.append((f"sex {inc.sex}", "include", F.col("sex") == inc.sex,
                       F.lit(f"sex {inc.sex}")))
    if inc.age:
        low, high = inc.age
        checks.append((f"age in [{low:g}, {high:g})", "include",
                       (F.col("age") >= low) & (F.col("age") < high),
                       F.format_string(f"age %.0f in [{low:g}, {high:g})", F.col("age"))))
    if inc.das28_above is not None:
        checks.append((f"DAS28 > {inc.das28_above:g}", "include", F.col("das28") > inc.das28_above,
                       F.format_string(f"DAS28 %.2f > {inc.das28_above:g}", F.col("das28"))))
    if inc.seropositive is not None:
        word = "seropositive" if inc.seropositive else "seronegative"
        checks.append((word, "include", F.col("seropositive") == inc.seropositive, F.lit(word)))
    for drug in inc.current_classes:
        checks.append((f"on {drug}", "include", F.array_contains("current_classes", drug),
                       F.lit(f"on {drug}")))
    for drug in inc.ever_classes:
        checks.append((f"ever {drug}", "include", F.array_contains(ever, drug),
                       F.lit(f"took {drug}")))
    for drug, days in inc.min_days_on.items():
        checks.append((f"on {drug} >= {days:g} days", "include", _days_on(drug) >= days,
                       F.format_string(f"on {drug} for %.0f days", _days_on(drug))))
    if inc.max_disease_years is not None:
        checks.append((f"disease <= {inc.max_disease_years:g} years", "include",
                       F.col("disease_years") <= inc.max_disease_years,
                       F.format_string("disease duration %.1f years", F.col("disease_years"))))
    for drug in exc.current_classes:
        checks.append((f"not on {drug}", "exclude", F.array_contains("current_classes", drug),
                       F.lit(f"not on {drug}")))
    for drug in exc.ever_classes:
        checks.append((f"never {drug}", "exclude", F.array_contains(ever, drug),
                       F.lit(f"never {drug}")))
    for modality in c.required_modalities:
        checks.append((f"has {modality}", "include", F.array_contains("modalities", modality),
                       F.lit(f"has {modality}")))
    return checks


def select_cohort(states: DataFrame, events: DataFrame, c: Criteria) -> DataFrame:
    """(subject_id, prediction_time, sex, age, reasons, one flag per criterion (``flag(i)``: it
    holds), selected) for every patient judged; ``selected`` rows form the cohort."""
    judged = judged_states(states, c.as_of)
    if c.include.diagnosis:
        first = (events.where(F.col("code").isin(c.include.diagnosis) & F.col("time").isNotNull())
                 .groupBy("subject_id").agg(F.min("time").alias("_first")))
        judged = (judged.join(first, "subject_id", "left")
                  .withColumn("_diagnosed", F.coalesce(F.col("_first") < F.col("prediction_time"),
                                                       F.lit(False))).drop("_first"))
    checks = criteria_checks(c)
    # A criterion on an unknown value (no DAS28, never tested) does not hold: null -> false.
    flags = [F.coalesce(holds, F.lit(False)).alias(flag(i)) for i, (_, _, holds, _) in
             enumerate(checks)]
    passed = [F.col(flag(i)) if kind == "include" else ~F.col(flag(i))
              for i, (_, kind, _, _) in enumerate(checks)]
    reasons = F.array(*[reason for _, _, _, reason in checks]) if checks else F.array()
    selected = F.lit(True)
    for p in passed:
        selected = selected & p
    return (judged.select(*KEYS, "sex", "age", *flags, reasons.alias("reasons"))
            .withColumn("selected", selected))


def summary(judged: DataFrame, c: Criteria, min_cell_size: int) -> dict:
    """Who fell out where, and the cohort by sex and age band; counts under the minimum cell size
    are None (suppressed), never shown or guessed."""
    checks = criteria_checks(c)
    aggregates = [F.count("*").alias("judged"), F.sum(F.col("selected").cast("int")).alias("selected")]
    for i, (_, kind, _, _) in enumerate(checks):
        failing = ~F.col(flag(i)) if kind == "include" else F.col(flag(i))
        aggregates.append(F.sum(failing.cast("int")).alias(flag(i)))
    row = judged.agg(*aggregates).first()  # small: one row

    def cell(n: int | None) -> int | None:
        return None if n is None or n < min_cell_size else int(n)

    band = F.when(F.col("age") < AGE_BANDS[0], f"<{AGE_BANDS[0]}")
    for low, high in zip(AGE_BANDS, AGE_BANDS[1:], strict=False):
        band = band.when(F.col("age") < high, f"{low}-{high - 1}")
    band = band.otherwise(f"{AGE_BANDS[-1]}+")
    breakdown = (judged.where("selected").groupBy("sex", band.alias("age_band")).count()
                 .orderBy("sex", "age_band").collect())  # small: sexes x age bands
    return {
        "cohort": c.name, "criteria_hash": c.fingerprint(), "min_cell_size": min_cell_size,
        "judged": cell(row["judged"]), "selected": cell(row["selected"]),
        "failing": {name: cell(row[flag(i)]) for i, (name, _, _, _) in enumerate(checks)},
        "by_sex_and_age": [{"sex": r["sex"], "age_band": r["age_band"], "patients": cell(r["count"])}
                           for r in breakdown],
    }
