import datetime as dt
import json
import zipfile
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from rdt_spark.ingest import BIRTH_CODE, account_rows, ingest_omop
from rdt_spark.omop_source import extract_time, read_omop_folder

EXTRACT = dt.datetime(2024, 12, 31, 23, 59, 59)
T = dt.datetime


@pytest.fixture(scope="module")
def omop(spark):
    person = spark.createDataFrame(
        [(1, 8532, 1960, 3, 1, T(1960, 3, 1)), (2, 8507, 1970, None, None, None),
         (3, 8532, None, None, None, None), (1, 8532, 1961, 1, 1, T(1961, 1, 1))],
        "person_id long, gender_concept_id int, year_of_birth int, month_of_birth int, "
        "day_of_birth int, birth_datetime timestamp")
    measurement = spark.createDataFrame([
        (10, 1, 3020460, T(2020, 1, 2, 9), 12.0, "CRP"),  # accepted
        (11, None, 3020460, T(2020, 1, 2, 9), 12.0, "CRP"),  # missing_person_id
        (12, 99, 3020460, T(2020, 1, 2, 9), 12.0, "CRP"),  # unknown_person
        (13, 1, 3020460, T(1950, 1, 2, 9), 12.0, "CRP"),  # before_birth
        (14, 1, 3020460, T(2020, 1, 3, 9), 9000.0, "CRP"),  # impossible_value
        (15, 1, 3020460, T(2020, 1, 2, 9), 12.0, "CRP"),  # duplicate_event of 10
        (16, 1, 3020460, None, 5.0, "CRP"),  # missing_time
        (17, 1, 0, T(2021, 5, 5), 3.0, "local-lab-x"),  # no concept: SOURCE/ fallback
        (18, 1, 3020460, T(2030, 1, 1), 4.0, "CRP"),  # after_extract
        (17, 1, 0, T(2021, 6, 5), 3.0, "local-lab-x"),  # duplicate_row_id
    ], "measurement_id long, person_id long, measurement_concept_id int, "
       "measurement_datetime timestamp, value_as_number double, measurement_source_value string")
    concept = spark.createDataFrame(
        [(3020460, "LOINC", "1988-5"), (8532, "Gender", "F"), (8507, "Gender", "M")],
        "concept_id long, vocabulary_id string, concept_code string")
    return {"person": person, "measurement": measurement, "concept": concept}


@pytest.fixture(scope="module")
def ingested(omop):
    events, rejects, flagged = ingest_omop(omop, EXTRACT, "test-run")
    events, rejects = events.cache(), rejects.cache()
    events.count(), rejects.count()
    flagged.unpersist()
    return events, rejects


def reasons(rejects, table):
    return {r.source_row_id: r.reason for r in
            rejects.where(F.col("source_table") == table).collect()}


def test_each_bad_measurement_is_rejected_with_its_rule(ingested):
    _, rejects = ingested
    got = reasons(rejects, "measurement")
    assert got[11] == "missing_person_id"
    assert got[12] == "unknown_person"
    assert got[13] == "before_birth"
    assert got[14] == "impossible_value"
    assert got[15] == "duplicate_event"
    assert got[16] == "missing_time"
    assert got[18] == "after_extract"
    assert got[17] == "duplicate_row_id"
    assert 10 not in got


def test_bad_persons_are_rejected_and_their_events_too(ingested):
    _, rejects = ingested
    got = reasons(rejects, "person")
    assert got[3] == "missing_birth"
    assert got[1] == "duplicate_row_id"
    assert 2 not in got  # year of birth alone is enough


def test_rows_in_equal_accepted_plus_rejected(omop, ingested):
    events, rejects = ingested
    summary = {row["table"]: row for row in account_rows(omop, events, rejects)}
    assert summary["measurement"]["rows_in"] == 10
    assert summary["measurement"]["accepted"] == 2
    assert summary["measurement"]["rejected"] == 8
    assert summary["person"]["accepted"] + summary["person"]["rejected"] == 4


def test_codes_map_through_concepts_with_source_fallback(ingested):
    events, _ = ingested
    codes = {r.code for r in events.where(F.col("subject_id") == 1).collect()}
    assert {"LOINC/1988-5", "SOURCE/local-lab-x", "Gender/F", BIRTH_CODE} <= codes


def test_rejects_keep_the_raw_row(ingested):
    _, rejects = ingested
    raw = json.loads(rejects.where(F.col("source_row_id") == 14).first()["raw"])
    assert raw["value_as_number"] == 9000.0 and raw["measurement_id"] == 14


def test_ingest_is_idempotent_for_the_same_input(omop):
    first, _, f1 = ingest_omop(omop, EXTRACT, "run")
    second, _, f2 = ingest_omop(omop, EXTRACT, "run")
    assert first.count() == second.count() and first.exceptAll(second).count() == 0
    f1.unpersist(), f2.unpersist()


EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "external" / \
    "synthea27nj_omop54_parquet.zip"


@pytest.mark.skipif(not EXTERNAL.exists(), reason="../shared/data/external is not beside the checkout")
def test_external_omop_extract_ingests_with_every_row_accounted_for(spark, tmp_path):
    with zipfile.ZipFile(EXTERNAL) as archive:
        archive.extractall(tmp_path)  # never beside the read-only archive
    tables = read_omop_folder(spark, str(tmp_path / "Synthea27NjParquet"))
    events, rejects, flagged = ingest_omop(tables, extract_time(tables), "external")
    events, rejects = events.cache(), rejects.cache()
    summary = account_rows(tables, events, rejects)
    flagged.unpersist()
    assert {row["table"] for row in summary} >= {
        "person", "measurement", "drug_exposure", "observation", "procedure_occurrence", "death"}
    assert all(row["rows_in"] == row["accepted"] + row["rejected"] for row in summary)
    codes = {r.code.split("/")[0] for r in events.select("code").distinct().collect()}
    assert {"SNOMED", "LOINC", "RxNorm"} <= codes


def test_ingest_plans_never_funnel_through_one_partition(omop):
    from conftest import single_partition_steps

    events, rejects, flagged = ingest_omop(omop, EXTRACT, "plan")
    assert single_partition_steps(events) == [] and single_partition_steps(rejects) == []
    flagged.unpersist()
