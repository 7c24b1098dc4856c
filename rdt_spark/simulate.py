"""A synthetic rheumatoid-arthritis registry in OMOP CDM v5.4 shape, with its hidden truth.

Each patient is simulated on its own from a random stream seeded by (global seed, person_id),
so the registry is the same whatever the partitioning. A hidden phenotype drives the weekly
disease activity, the flare hazard and the response to each drug; visits observe that activity
through joint counts, ESR, CRP, patient global (hence DAS28-ESR) and HAQ, with missing values.
Treatment follows treat-to-target: methotrexate with bridging prednisone, escalated when
DAS28-ESR stays above 3.2 for 12 weeks. Flares bring an unscheduled visit that records them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from rdt_spark import concepts as C

DRUG_CLASSES = ["methotrexate", "tnf_inhibitor", "il6r_inhibitor", "jak_inhibitor"]
DRUG_CONCEPTS = {
    "methotrexate": C.METHOTREXATE,
    "tnf_inhibitor": C.ADALIMUMAB,
    "il6r_inhibitor": C.TOCILIZUMAB,
    "jak_inhibitor": C.TOFACITINIB,
}
# Treat-to-target ladder: methotrexate stays as the anchor while the biologic/JAK changes.
LADDER = [
    ["methotrexate"],
    ["methotrexate", "tnf_inhibitor"],
    ["methotrexate", "il6r_inhibitor"],
    ["methotrexate", "jak_inhibitor"],
]


@dataclass(frozen=True)
class Phenotype:
    name: str
    prior: float
    activity: float  # untreated DAS28-like level
    flare_rate: float  # flares per year at activity 3.5
    rf_positive: float
    ccp_positive: float
    response: dict[str, float]  # mean share of excess activity removed by each drug class


PHENOTYPES = [
    Phenotype("seronegative_mild", 0.40, 4.2, 0.3, 0.25, 0.15,
              {"methotrexate": 0.75, "tnf_inhibitor": 0.8, "il6r_inhibitor": 0.75,
               "jak_inhibitor": 0.75}),
    Phenotype("seropositive_erosive", 0.35, 5.4, 0.9, 0.85, 0.85,
              {"methotrexate": 0.4, "tnf_inhibitor": 0.8, "il6r_inhibitor": 0.65,
               "jak_inhibitor": 0.7}),
    Phenotype("refractory_inflammatory", 0.25, 6.2, 1.8, 0.7, 0.6,
              {"methotrexate": 0.15, "tnf_inhibitor": 0.3, "il6r_inhibitor": 0.75,
               "jak_inhibitor": 0.55}),
]

# One long record per OMOP row; the per-table frames below select from it.
RECORD_SCHEMA = StructType([
    StructField("table", StringType()),
    StructField("row_id", LongType()),
    StructField("person_id", LongType()),
    StructField("concept_id", LongType()),
    StructField("start", TimestampType()),
    StructField("end", TimestampType()),
    StructField("value", DoubleType()),
    StructField("unit", StringType()),
    StructField("source_value", StringType()),
    StructField("text", StringType()),
    StructField("visit_id", LongType()),
])

TRUTH_SCHEMA = StructType([
    StructField("person_id", LongType()),
    StructField("phenotype", StringType()),
    StructField("phenotype_id", IntegerType()),
    StructField("untreated_activity", DoubleType()),
    StructField("flare_rate_per_year", DoubleType()),
    StructField("drug_response", StringType()),  # JSON: drug class -> share of activity removed
])

ROWS_PER_PATIENT = 100_000  # row ids are person_id * ROWS_PER_PATIENT + sequence


@dataclass(frozen=True)
class Latent:
    phenotype: int
    female: bool
    age_at_diagnosis: float
    diagnosis_day: float  # days since the registry start
    rf_positive: bool
    ccp_positive: bool
    activity_offset: float
    response: dict[str, float]


def draw_latent(rng: np.random.Generator, span_days: float) -> Latent:
    k = int(rng.choice(len(PHENOTYPES), p=[p.prior for p in PHENOTYPES]))
    ph = PHENOTYPES[k]
    return Latent(
        phenotype=k,
        female=bool(rng.random() < 0.72),
        age_at_diagnosis=float(np.clip(rng.normal(55, 13), 18, 90)),
        diagnosis_day=float(rng.uniform(0, max(span_days - 365, 1))),
        rf_positive=bool(rng.random() < ph.rf_positive),
        ccp_positive=bool(rng.random() < ph.ccp_positive),
        activity_offset=float(rng.normal(0, 0.35)),
        response={d: float(np.clip(ph.response[d] + rng.normal(0, 0.08), 0, 1))
                  for d in DRUG_CLASSES},
    )


class _Rows:
    """Collects one patient's OMOP rows with ids unique across the registry."""

    def __init__(self, person_id: int, origin: dt.datetime):
        self.person_id, self.origin, self.seq, self.rows = person_id, origin, 0, []

    def at(self, day: float) -> dt.datetime:
        return self.origin + dt.timedelta(days=day)

    def add(self, table, concept, start, end=None, value=None, unit=None, source=None,
            text=None, visit_id=None) -> int:
        self.seq += 1
        row_id = self.person_id * ROWS_PER_PATIENT + self.seq
        self.rows.append((table, row_id, self.person_id, concept, start, end, value, unit,
                          source, text, visit_id))
        return row_id


def _das28_esr(tjc: int, sjc: int, esr: float, global_mm: float) -> float:
    return (0.56 * math.sqrt(tjc) + 0.28 * math.sqrt(sjc) + 0.70 * math.log(max(esr, 1.0))
            + 0.014 * global_mm)


def _note(rng, tjc, sjc, activity, flare, plan) -> str:
    stiffness = (f"morning stiffness ~{int(rng.integers(30, 120))} min" if activity > 4
                 else rng.choice(["no morning stiffness", "denies AM stiffness"]))
    opener = rng.choice(["Seen in RA clinic.", "RA follow-up.", "Pt reviewed today for RA."])
    flare_text = rng.choice(["Reports flare since last visit.", "Flare of hands and wrists."])
    return " ".join([
        opener, f"{tjc} tender, {sjc} swollen joints;", f"{stiffness}.",
        flare_text if flare else "", f"Plan: {plan}.",
    ]).replace("  ", " ")


def simulate_patient(person_id: int, seed: int, origin: dt.datetime, span_days: float) -> list:
    """All OMOP rows of one patient, as RECORD_SCHEMA tuples."""
    rng = np.random.default_rng([seed, person_id])
    z = draw_latent(rng, span_days)
    ph = PHENOTYPES[z.phenotype]
    rows = _Rows(person_id, origin)
    birth = rows.at(z.diagnosis_day - z.age_at_diagnosis * 365.25)
    gender = C.FEMALE if z.female else C.MALE
    rows.add("person", gender.concept_id, birth, source=gender.concept_code)

    untreated = ph.activity + z.activity_offset
    regimen_step, regimen_week, prednisone_until = 0, 0, 12
    bump, noise, pending_flare_visit, flares_since_visit = 0.0, 0.0, None, 0
    next_visit, first_visit, last_visit_day = 0, True, z.diagnosis_day
    weeks = int((span_days - z.diagnosis_day) // 7)
    for week in range(weeks):
        day = z.diagnosis_day + 7 * week
        on = LADDER[regimen_step]
        effect = max(z.response[d] * min(1.0, (week - regimen_week + 1) / 12) for d in on)
        treated = untreated - effect * max(untreated - 2.2, 0)
        if week < prednisone_until:
            treated -= 0.8
        noise = 0.85 * noise + rng.normal(0, 0.15)
        activity = max(treated + bump + noise, 1.0)
        if rng.random() < ph.flare_rate / 52 * math.exp(0.5 * (treated - 3.5)):
            bump += 1.8
            flares_since_visit += 1
            pending_flare_visit = week + 1 if pending_flare_visit is None else pending_flare_visit
        bump *= 0.84
        flare_visit = pending_flare_visit == week
        if week != next_visit and not flare_visit:
            if rng.random() < 0.12 / 52:  # lost to follow-up
                break
            continue

        visit_day = day + float(rng.uniform(0, 5)) + 9 / 24 + float(rng.uniform(0, 8)) / 24
        start = rows.at(visit_day)
        visit_id = rows.add("visit_occurrence", C.OUTPATIENT_VISIT.concept_id, start,
                            end=start + dt.timedelta(minutes=30), source="rheumatology clinic")
        if first_visit:
            rows.add("condition_occurrence", C.RHEUMATOID_ARTHRITIS.concept_id, start,
                     source="M06.9", visit_id=visit_id)
            rf = rng.lognormal(math.log(90 if z.rf_positive else 7), 0.5)
            ccp = rng.lognormal(math.log(150 if z.ccp_positive else 3), 0.6)
            rows.add("measurement", C.RHEUMATOID_FACTOR.concept_id, start, value=round(rf, 1),
                     unit="[IU]/mL", source="RF", visit_id=visit_id)
            rows.add("measurement", C.ANTI_CCP.concept_id, start, value=round(ccp, 1),
                     unit="U/mL", source="anti-CCP", visit_id=visit_id)
        if flare_visit:
            rows.add("condition_occurrence", C.RA_FLARE.concept_id, start, source="RA flare",
                     visit_id=visit_id)

        tjc = int(min(28, rng.poisson(max(0.0, 1.6 * (activity - 2.2)) ** 1.6)))
        sjc = int(min(28, rng.poisson(max(0.0, 1.2 * (activity - 2.4)) ** 1.5)))
        global_mm = float(np.clip(rng.normal(14 * activity - 30, 10), 0, 100))
        esr = float(rng.lognormal(math.log(6 + 9 * max(activity - 2, 0)), 0.3))
        crp = float(rng.lognormal(math.log(1 + 5 * max(activity - 2.3, 0)), 0.5))
        haq = float(np.clip(round((0.35 * activity - 0.5 + rng.normal(0, 0.25)) * 8) / 8, 0, 3))
        has_esr, has_crp = rng.random() > 0.15, rng.random() > 0.1
        measures = [(C.TENDER_JOINTS, tjc, "{count}"), (C.SWOLLEN_JOINTS, sjc, "{count}"),
                    (C.PATIENT_GLOBAL, round(global_mm), "mm"), (C.HAQ_DI, haq, "{score}")]
        if has_esr:
            measures += [(C.ESR, round(esr), "mm/h"),
                         (C.DAS28_ESR, round(_das28_esr(tjc, sjc, esr, global_mm), 2), "{score}")]
        if has_crp:
            measures.append((C.CRP, round(crp, 1), "mg/L"))
        for concept, value, unit in measures:
            rows.add("measurement", concept.concept_id, start, value=float(value), unit=unit,
                     source=concept.concept_code, visit_id=visit_id)

        das28 = _das28_esr(tjc, sjc, esr, global_mm)
        plan = "continue current therapy"
        if das28 > 3.2 and week - regimen_week >= 12 and regimen_step + 1 < len(LADDER):
            regimen_step, regimen_week = regimen_step + 1, week
            plan = f"escalate to {LADDER[regimen_step][-1].replace('_', ' ')}"
        if flare_visit or first_visit:
            prednisone_until = week + (12 if first_visit else 6)
        for drug in LADDER[regimen_step]:
            concept = DRUG_CONCEPTS[drug]
            rows.add("drug_exposure", concept.concept_id, start,
                     end=start + dt.timedelta(days=90), source=concept.name, visit_id=visit_id)
        if week < prednisone_until:
            rows.add("drug_exposure", C.PREDNISONE.concept_id, start,
                     end=rows.at(z.diagnosis_day + 7 * prednisone_until),
                     source=C.PREDNISONE.name, visit_id=visit_id)
        if rng.random() < 0.6:
            rows.add("note", C.RHEUM_NOTE.concept_id, start, source="rheumatology note",
                     text=_note(rng, tjc, sjc, activity, flares_since_visit > 0, plan),
                     visit_id=visit_id)

        last_visit_day = visit_day
        first_visit, flares_since_visit = False, 0
        if flare_visit:
            pending_flare_visit = None
        if week == next_visit or next_visit <= week:
            low, high = (4, 7) if das28 > 5.1 else (8, 13) if das28 > 3.2 else (12, 27)
            next_visit = week + int(rng.integers(low, high))

    rows.add("observation_period", 0, rows.at(z.diagnosis_day), end=rows.at(last_visit_day))
    return rows.rows


def latent_truth(person_id: int, seed: int, span_days: float) -> tuple:
    rng = np.random.default_rng([seed, person_id])
    z = draw_latent(rng, span_days)  # the same first draws as simulate_patient makes
    ph = PHENOTYPES[z.phenotype]
    return (person_id, ph.name, z.phenotype, ph.activity + z.activity_offset, ph.flare_rate,
            json.dumps(z.response, sort_keys=True))


def _span(start_date: str, extract_date: str) -> tuple[dt.datetime, float]:
    origin = dt.datetime.fromisoformat(start_date)
    return origin, (dt.datetime.fromisoformat(extract_date) - origin).days


def _record_partitions(seed: int, start_date: str, extract_date: str):
    origin, span = _span(start_date, extract_date)

    def simulate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            rows = [r for pid in batch["person_id"] for r in
                    simulate_patient(int(pid), seed, origin, span)]
            yield pd.DataFrame(rows, columns=RECORD_SCHEMA.fieldNames())

    return simulate


def _truth_partitions(seed: int, start_date: str, extract_date: str):
    _, span = _span(start_date, extract_date)

    def truth(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield pd.DataFrame([latent_truth(int(pid), seed, span) for pid in batch["person_id"]],
                               columns=TRUTH_SCHEMA.fieldNames())

    return truth


def _date(col: str) -> F.Column:
    return F.to_date(F.col(col))


def omop_tables(records: DataFrame) -> dict[str, DataFrame]:
    """Split the long records into OMOP CDM v5.4 tables (field names as the standard spells them)."""
    def of(table: str) -> DataFrame:
        return records.where(F.col("table") == table)

    ehr_type = F.lit(32817)  # Type Concept "EHR"
    return {
        "person": of("person").select(
            F.col("person_id"), F.col("concept_id").cast("int").alias("gender_concept_id"),
            F.year("start").alias("year_of_birth"), F.month("start").alias("month_of_birth"),
            F.dayofmonth("start").alias("day_of_birth"), F.col("start").alias("birth_datetime"),
            F.lit(0).alias("race_concept_id"), F.lit(0).alias("ethnicity_concept_id"),
            F.col("person_id").cast("string").alias("person_source_value"),
            F.col("source_value").alias("gender_source_value")),
        "observation_period": of("observation_period").select(
            F.col("row_id").alias("observation_period_id"), "person_id",
            _date("start").alias("observation_period_start_date"),
            _date("end").alias("observation_period_end_date"),
            F.lit(32817).alias("period_type_concept_id")),
        "visit_occurrence": of("visit_occurrence").select(
            F.col("row_id").alias("visit_occurrence_id"), "person_id",
            F.col("concept_id").cast("int").alias("visit_concept_id"),
            _date("start").alias("visit_start_date"), F.col("start").alias("visit_start_datetime"),
            _date("end").alias("visit_end_date"), F.col("end").alias("visit_end_datetime"),
            ehr_type.alias("visit_type_concept_id"), F.col("source_value").alias("visit_source_value")),
        "condition_occurrence": of("condition_occurrence").select(
            F.col("row_id").alias("condition_occurrence_id"), "person_id",
            F.col("concept_id").cast("int").alias("condition_concept_id"),
            _date("start").alias("condition_start_date"),
            F.col("start").alias("condition_start_datetime"),
            ehr_type.alias("condition_type_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("condition_source_value")),
        "drug_exposure": of("drug_exposure").select(
            F.col("row_id").alias("drug_exposure_id"), "person_id",
            F.col("concept_id").cast("int").alias("drug_concept_id"),
            _date("start").alias("drug_exposure_start_date"),
            F.col("start").alias("drug_exposure_start_datetime"),
            _date("end").alias("drug_exposure_end_date"),
            ehr_type.alias("drug_type_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("drug_source_value")),
        "measurement": of("measurement").select(
            F.col("row_id").alias("measurement_id"), "person_id",
            F.col("concept_id").cast("int").alias("measurement_concept_id"),
            _date("start").alias("measurement_date"), F.col("start").alias("measurement_datetime"),
            ehr_type.alias("measurement_type_concept_id"), F.col("value").alias("value_as_number"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("measurement_source_value"),
            F.col("unit").alias("unit_source_value")),
        "note": of("note").select(
            F.col("row_id").alias("note_id"), "person_id", _date("start").alias("note_date"),
            F.col("start").alias("note_datetime"), F.lit(32831).alias("note_type_concept_id"),
            F.col("concept_id").cast("int").alias("note_class_concept_id"),
            F.lit("Rheumatology visit").alias("note_title"), F.col("text").alias("note_text"),
            F.lit(32678).alias("encoding_concept_id"), F.lit(4180186).alias("language_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("note_source_value")),
    }


def concept_table(spark: SparkSession) -> DataFrame:
    rows = [(c.concept_id, c.name, c.domain_id, c.vocabulary_id, c.concept_class_id,
             "S" if c.vocabulary_id != "RDT" else None, c.concept_code,
             dt.date(1970, 1, 1), dt.date(2099, 12, 31), None) for c in C.ALL]
    return spark.createDataFrame(rows, "concept_id long, concept_name string, domain_id string, "
                                 "vocabulary_id string, concept_class_id string, "
                                 "standard_concept string, concept_code string, "
                                 "valid_start_date date, valid_end_date date, "
                                 "invalid_reason string")


def cdm_source_table(spark: SparkSession, extract_date: str) -> DataFrame:
    release = dt.date.fromisoformat(extract_date)
    return spark.createDataFrame(
        [("RDT synthetic registry", "RDT-SIM", "v5.4", release, release)],
        "cdm_source_name string, cdm_source_abbreviation string, cdm_version string, "
        "source_release_date date, cdm_release_date date")


def generate_registry(
    spark: SparkSession, patients: int, seed: int, partitions: int,
    start_date: str, extract_date: str,
) -> tuple[dict[str, DataFrame], DataFrame, DataFrame]:
    """The OMOP tables (by name, without schema), the truth table, and the persisted records.

    Unpersist the records once the tables are written.
    """
    people = spark.range(1, patients + 1, numPartitions=partitions).withColumnRenamed(
        "id", "person_id")
    records = people.mapInPandas(
        _record_partitions(seed, start_date, extract_date), RECORD_SCHEMA
    ).persist(StorageLevel.MEMORY_AND_DISK)
    tables = omop_tables(records)
    tables["concept"] = concept_table(spark)
    tables["cdm_source"] = cdm_source_table(spark, extract_date)
    truth = people.mapInPandas(_truth_partitions(seed, start_date, extract_date), TRUTH_SCHEMA)
    return tables, truth, records
