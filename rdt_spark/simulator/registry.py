"""The synthetic registry as Spark frames: OMOP CDM v5.4 tables, ext.* modalities, truth.*.

``generate_registry`` simulates every patient in one ``mapInPandas`` pass (``patient``, seeded
by global seed and person_id, so the registry is identical whatever the partitioning), persists
the long records (``records.RECORD_SCHEMA``) and selects each table from them, field names as
the standards spell them.

Example: ``generate_registry(spark, GenerateConfig(60, 3, 2))`` returns
({"omop.person": <60 rows>, "omop.measurement": <10,925 rows>, ..., "ext.imaging": ...,
"truth.patient_latent": <60 rows>, "truth.treatment_response": ...}, <persisted records>); one
``omop.measurement`` row, patient 1's anti-CCP at diagnosis, reads (measurement_id=100005,
person_id=1, measurement_concept_id=3030367, measurement_date=2014-08-19, ...,
value_as_number=170.4, unit_concept_id=8763, visit_occurrence_id=100002,
measurement_source_value="33935-8", unit_source_value="U/mL").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from rdt_spark import schemas
from rdt_spark.simulator import concepts as C
from rdt_spark.simulator.modalities import GENE_SYMBOLS
from rdt_spark.simulator.patient import simulate_patient
from rdt_spark.simulator.records import FIELDS, N_EROSION, N_JSN, RECORD_SCHEMA

PATIENTS_PER_CHUNK = 500  # patients per frame handed back to Spark: bounds worker memory

LATENT_JSONFIELDS = StructType([
    StructField("phenotype", StringType()),
    StructField("phenotype_id", IntegerType()),
    StructField("female", BooleanType()),
    StructField("age_at_diagnosis", DoubleType()),
    StructField("symptom_months", DoubleType()),
    StructField("smoking", StringType()),
    StructField("comorbidities", ArrayType(StringType())),
    StructField("rf_positive", BooleanType()),
    StructField("ccp_positive", BooleanType()),
    StructField("untreated_activity", DoubleType()),
    StructField("activity_floor", DoubleType()),
    StructField("flare_rate_per_year", DoubleType()),
    StructField("responsiveness", DoubleType()),
    StructField("drug_response", StringType()),  # JSON: class -> first-line efficacy (0..1)
    StructField("care_site_id", IntegerType()),
    StructField("end_reason", StringType()),  # death / lost_to_follow_up / extract
    StructField("flares", IntegerType()),
    StructField("treatment_decisions", IntegerType()),
])


def _span(start_date: str, extract_date: str) -> tuple[dt.datetime, float]:
    origin = dt.datetime.fromisoformat(start_date)
    return origin, (dt.datetime.fromisoformat(extract_date) - origin).days


def _table_of(row: list) -> str:
    return row[0]


def _record_partitions(seed: int, start_date: str, extract_date: str):
    origin, span = _span(start_date, extract_date)

    def simulate(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            people = batch["person_id"].tolist()
            for first in range(0, len(people), PATIENTS_PER_CHUNK):
                yield _frame([r for pid in people[first:first + PATIENTS_PER_CHUNK]
                              for r in simulate_patient(int(pid), seed, origin, span)])

    return simulate


def _frame(rows: list[list]) -> pd.DataFrame:
    # Grouped by table, so the cached records' column batches each hold (mostly) one table and
    # every per-table select skips the others' batches by their statistics.
    rows.sort(key=_table_of)
    columns = zip(*rows, strict=True) if rows else [[] for _ in FIELDS]
    return pd.DataFrame(dict(zip(FIELDS, columns, strict=True)), columns=FIELDS)


def _ts(col: str) -> F.Column:
    return F.timestamp_micros(F.col(col))


def _date(col: str) -> F.Column:
    return F.to_date(_ts(col))


def omop_tables(records: DataFrame) -> dict[str, DataFrame]:
    """Split the long records into OMOP CDM v5.4 tables (field names as the standard spells them)."""
    def of(table: str) -> DataFrame:
        return records.where(F.col("table") == table)

    ehr_type = F.lit(32817)  # Type Concept "EHR"
    return {
        "person": of("person").select(
            F.col("person_id"), F.col("concept_id").cast("int").alias("gender_concept_id"),
            F.year(_ts("start")).alias("year_of_birth"),
            F.month(_ts("start")).alias("month_of_birth"),
            F.dayofmonth(_ts("start")).alias("day_of_birth"), _ts("start").alias("birth_datetime"),
            F.lit(0).alias("race_concept_id"), F.lit(0).alias("ethnicity_concept_id"),
            F.col("care_site_id").cast("long").alias("care_site_id"),
            F.col("person_id").cast("string").alias("person_source_value"),
            F.col("source_value").alias("gender_source_value")),
        "death": of("death").select(
            "person_id", _date("start").alias("death_date"), _ts("start").alias("death_datetime"),
            ehr_type.alias("death_type_concept_id"), F.lit(0).alias("cause_concept_id")),
        "observation_period": of("observation_period").select(
            F.col("row_id").alias("observation_period_id"), "person_id",
            _date("start").alias("observation_period_start_date"),
            _date("end").alias("observation_period_end_date"),
            F.lit(32817).alias("period_type_concept_id")),
        "visit_occurrence": of("visit_occurrence").select(
            F.col("row_id").alias("visit_occurrence_id"), "person_id",
            F.col("concept_id").cast("int").alias("visit_concept_id"),
            _date("start").alias("visit_start_date"), _ts("start").alias("visit_start_datetime"),
            _date("end").alias("visit_end_date"), _ts("end").alias("visit_end_datetime"),
            ehr_type.alias("visit_type_concept_id"),
            F.col("care_site_id").cast("long").alias("care_site_id"),
            F.col("source_value").alias("visit_source_value")),
        "condition_occurrence": of("condition_occurrence").select(
            F.col("row_id").alias("condition_occurrence_id"), "person_id",
            F.col("concept_id").cast("int").alias("condition_concept_id"),
            _date("start").alias("condition_start_date"),
            _ts("start").alias("condition_start_datetime"),
            ehr_type.alias("condition_type_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("condition_source_value")),
        "drug_exposure": of("drug_exposure").select(
            F.col("row_id").alias("drug_exposure_id"), "person_id",
            F.col("concept_id").cast("int").alias("drug_concept_id"),
            _date("start").alias("drug_exposure_start_date"),
            _ts("start").alias("drug_exposure_start_datetime"),
            _date("end").alias("drug_exposure_end_date"),
            _ts("end").alias("drug_exposure_end_datetime"),
            ehr_type.alias("drug_type_concept_id"),
            F.col("extra").alias("stop_reason"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("drug_source_value")),
        "measurement": of("measurement").select(
            F.col("row_id").alias("measurement_id"), "person_id",
            F.col("concept_id").cast("int").alias("measurement_concept_id"),
            _date("start").alias("measurement_date"), _ts("start").alias("measurement_datetime"),
            ehr_type.alias("measurement_type_concept_id"), F.col("value").alias("value_as_number"),
            F.col("unit_concept_id").cast("int").alias("unit_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("measurement_source_value"),
            F.col("unit").alias("unit_source_value")),
        "note": of("note").select(
            F.col("row_id").alias("note_id"), "person_id", _date("start").alias("note_date"),
            _ts("start").alias("note_datetime"), F.lit(32831).alias("note_type_concept_id"),
            F.col("concept_id").cast("int").alias("note_class_concept_id"),
            F.lit("Rheumatology visit").alias("note_title"), F.col("text").alias("note_text"),
            F.lit(32678).alias("encoding_concept_id"), F.lit(4180186).alias("language_concept_id"),
            F.col("visit_id").alias("visit_occurrence_id"),
            F.col("source_value").alias("note_source_value")),
    }


def ext_tables(records: DataFrame) -> dict[str, DataFrame]:
    """``ext.imaging`` and ``ext.omics`` conformed to their contracts in ``schemas``."""
    imaging = records.where(F.col("table") == "imaging").select(
        F.col("row_id").alias("imaging_id"), "person_id",
        F.col("visit_id").alias("visit_occurrence_id"), _ts("start").alias("imaging_datetime"),
        _date("start").alias("imaging_date"), F.lit("XR").alias("modality"),
        F.lit("hands_feet").alias("body_site"),
        F.slice("ints", 1, N_EROSION).alias("erosion_scores"),
        F.slice("ints", N_EROSION + 1, N_JSN).alias("jsn_scores"))
    omics = records.where(F.col("table") == "omics").select(
        F.col("row_id").alias("sample_id"), "person_id",
        F.col("visit_id").alias("visit_occurrence_id"), _ts("start").alias("sample_datetime"),
        F.lit("whole blood").alias("specimen"), F.col("source_value").alias("platform"),
        F.col("extra").alias("batch"), F.col("floats").alias("expression"))
    return {"imaging": schemas.conform(imaging, schemas.EXT_IMAGING),
            "omics": schemas.conform(omics, schemas.EXT_OMICS)}


def omics_genes_table(spark: SparkSession) -> DataFrame:
    genes = spark.createDataFrame(list(enumerate(GENE_SYMBOLS)), "gene_index int, gene_symbol string")
    return schemas.conform(genes, schemas.EXT_OMICS_GENES)


def truth_tables(records: DataFrame) -> dict[str, DataFrame]:
    """``truth.patient_latent`` (one row per patient) and ``truth.treatment_response`` (one row
    per treatment decision and drug class: the EULAR response 6 months after starting it)."""
    latent = records.where(F.col("table") == "truth_latent").select(
        "person_id", F.from_json("text", LATENT_JSONFIELDS).alias("z"),
        _ts("start").alias("diagnosis_datetime")).select("person_id", "z.*", "diagnosis_datetime")
    response = records.where(F.col("table") == "truth_response").select(
        "person_id", F.col("concept_id").cast("int").alias("decision_number"),
        _ts("start").alias("decision_time"), F.col("visit_id").alias("visit_occurrence_id"),
        F.col("source_value").alias("drug_class"), F.col("extra").alias("response"),
        F.col("flag").alias("chosen"), F.col("text").alias("regimen"),
        F.col("floats")[0].cast("double").alias("efficacy"),
        F.col("value").alias("das28_at_decision"), F.col("value2").alias("das28_at_6_months"))
    return {"patient_latent": latent, "treatment_response": response}


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


@dataclass(frozen=True)
class GenerateConfig:
    patients: int = 2000
    seed: int = 7  # with the person id, seeds each patient's random streams
    partitions: int = 8  # Spark partitions of the simulation (the output does not depend on it)
    start_date: str = "2012-01-01"  # the registry's first diagnoses
    extract_date: str = "2025-12-31"  # nothing is recorded after it


def generate_registry(
    spark: SparkSession, cfg: GenerateConfig,
) -> tuple[dict[str, DataFrame], DataFrame]:
    """All tables by their ``schema.name`` (omop.*, ext.*, truth.*), and the persisted records.

    Every table is a selection from one simulation pass; unpersist the records once the tables
    are written.
    """
    people = spark.range(1, cfg.patients + 1, numPartitions=cfg.partitions).withColumnRenamed(
        "id", "person_id")
    records = people.mapInPandas(
        _record_partitions(cfg.seed, cfg.start_date, cfg.extract_date), RECORD_SCHEMA
    ).persist(StorageLevel.MEMORY_AND_DISK)
    tables = {f"omop.{name}": frame for name, frame in omop_tables(records).items()}
    tables["omop.concept"] = concept_table(spark)
    tables["omop.cdm_source"] = cdm_source_table(spark, cfg.extract_date)
    tables.update({f"ext.{name}": frame for name, frame in ext_tables(records).items()})
    tables["ext.omics_genes"] = omics_genes_table(spark)
    tables.update({f"truth.{name}": frame for name, frame in truth_tables(records).items()})
    return tables, records
