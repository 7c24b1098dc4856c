"""Ingest reads extracts as registries write them: CSV or Parquet, any case, units and modalities."""

import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from jobs.cli import main
from rdt_spark import sharp_score
from rdt_spark.ingest import OMICS_CODE, RULES, account_rows, ingest_omop
from rdt_spark.omop_source import SourceError, extract_time, read_omop_folder

T = dt.datetime
PERSON_CSV = """PERSON_ID,GENDER_CONCEPT_ID,YEAR_OF_BIRTH,MONTH_OF_BIRTH,DAY_OF_BIRTH,BIRTH_DATETIME
1,8532,1960,3,1,1960-03-01 00:00:00
2,8507,1971,,,
3,8532,nineteen-fifty,,,
"""
MEASUREMENT_CSV = ("MEASUREMENT_ID,PERSON_ID,MEASUREMENT_CONCEPT_ID,MEASUREMENT_DATE,"
                   "MEASUREMENT_DATETIME,VALUE_AS_NUMBER,UNIT_SOURCE_VALUE,MEASUREMENT_SOURCE_VALUE\n"
                   + """\
10,1,3020460,2020-01-02,2020-01-02 09:00:00,12,mg/L,CRP
11,1,3020460,2020-02-02,,1.5,mg/dL,CRP
12,1,3020460,2020-03-02,,4,mmol/L,CRP
13,1,3020460,2020-04-31,,4,mg/L,CRP
14,1,3020460,20200502,,four,mg/L,CRP
15,2,3020460,20200502,,2.5,[IU]/mL,"CRP, ""hs"" assay"
16,2,2000000010,2020-06-01,,29,,TJC28
17,2,2000000010,2020-06-01,,3.5,,TJC28
18,2,2000000010,2020-06-01,,4,,TJC28
""")
CONCEPT_CSV = ("CONCEPT_ID,CONCEPT_NAME,DOMAIN_ID,VOCABULARY_ID,CONCEPT_CLASS_ID,STANDARD_CONCEPT,"
               "CONCEPT_CODE,VALID_START_DATE,VALID_END_DATE,INVALID_REASON\n" + """\
3020460,C reactive protein,Measurement,LOINC,Lab Test,S,1988-5,19700101,20991231,
2000000010,Tender joint count (28),Measurement,RDT,Clinical Observation,,TJC28,19700101,20991231,
8532,FEMALE,Gender,Gender,Gender,S,F,19700101,20991231,
8507,MALE,Gender,Gender,Gender,S,M,19700101,20991231,
""")
CDM_SOURCE_CSV = "CDM_SOURCE_NAME,SOURCE_RELEASE_DATE\ntest,2024-12-31\n"


@pytest.fixture(scope="module")
def csv_extract(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csv_extract")
    for name, text in [("PERSON.csv", PERSON_CSV), ("MEASUREMENT.csv", MEASUREMENT_CSV),
                       ("CONCEPT.csv", CONCEPT_CSV), ("CDM_SOURCE.csv", CDM_SOURCE_CSV),
                       ("._PERSON.csv", "macOS resource fork, not a table")]:
        (folder / name).write_text(text)
    return folder


@pytest.fixture(scope="module")
def csv_ingested(spark, csv_extract):
    source = read_omop_folder(spark, str(csv_extract))
    events, rejects, flagged = ingest_omop(source, extract_time(source), "csv")
    events, rejects = events.cache(), rejects.cache()
    summary = account_rows(source, events, rejects)
    flagged.unpersist()
    return source, events, rejects, summary


def _reasons(rejects, table):
    return {r.source_row_id: r.reason for r in
            rejects.where(F.col("source_table") == table).collect()}


def test_csv_export_with_upper_case_names_is_read(csv_ingested):
    source, events, _, summary = csv_ingested
    assert set(source.tables) == {"person", "measurement", "concept", "cdm_source"}
    assert extract_time(source) == T(2024, 12, 31, 23, 59, 59)
    by_table = {row["table"]: row for row in summary}
    assert by_table["measurement"]["rows_in"] == 9
    assert all(row["rows_in"] == row["accepted"] + row["rejected"] for row in summary)
    assert events.where(F.col("code") == "LOINC/1988-5").count() == 2


def test_unparseable_fields_are_rejected_by_name(csv_ingested):
    _, _, rejects, _ = csv_ingested
    assert _reasons(rejects, "person") == {3: "unparseable_time"}
    got = _reasons(rejects, "measurement")
    assert got[13] == "unparseable_time"  # 31 April
    assert got[14] == "unparseable_value"
    raw = json.loads(rejects.where(F.col("source_row_id") == 14).first().raw)
    assert raw["value_as_number"] == "four"


def test_lab_values_are_converted_to_the_canonical_unit(csv_ingested):
    _, events, rejects, _ = csv_ingested
    values = {r.source_row_id: r.numeric_value for r in
              events.where(F.col("source_table") == "measurement").collect()}
    assert values[10] == pytest.approx(12.0)
    assert values[11] == pytest.approx(15.0)  # 1.5 mg/dL
    assert values[18] == pytest.approx(4.0)
    got = _reasons(rejects, "measurement")
    assert got[12] == "unknown_unit"  # CRP in mmol/L
    assert got[15] == "unknown_unit"  # CRP in IU/mL
    assert got[16] == "impossible_value"  # 29 of 28 joints
    assert got[17] == "impossible_value"  # half a joint
    assert set(got.values()) <= set(RULES)


def test_compact_dates_parse(csv_ingested):
    _, events, _, _ = csv_ingested
    births = {r.subject_id: r.time for r in events.where(F.col("code") == "MEDS_BIRTH").collect()}
    assert births[2] == T(1971, 7, 1)  # year of birth alone: mid-year


@pytest.fixture(scope="module")
def modalities(spark, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ext_extract")
    spark.createDataFrame([(1, 8532, 1960, T(1960, 3, 1))],
                          "person_id long, gender_concept_id int, year_of_birth int, "
                          "birth_datetime timestamp").write.parquet(str(folder / "person.parquet"))
    erosion = [0] * len(sharp_score.EROSION_JOINTS)
    jsn = [0] * len(sharp_score.JSN_JOINTS)
    erosion[1], erosion[-1], jsn[5] = 2, 7, 1
    imaging = [
        (100, 1, T(2020, 1, 1, 10), erosion, jsn),  # mTSS 10
        (101, 1, T(2021, 1, 1, 10), erosion[:-1], jsn),  # a joint missing
        (102, 1, T(2022, 1, 1, 10), [6] + erosion[1:], jsn),  # a hand erosion above 5
        (103, 1, T(2023, 1, 1, 10), erosion, [None] + jsn[1:]),  # an unread joint
    ]
    spark.createDataFrame(imaging, "imaging_id long, person_id long, imaging_datetime timestamp, "
                          "erosion_scores array<int>, jsn_scores array<int>") \
        .write.parquet(str(folder / "EXT_IMAGING.parquet"))
    omics = [(200, 1, T(2020, 1, 1, 10), "b1", [1.0, 2.0, 3.0]),
             (201, 1, T(2020, 1, 1, 11), "b1", [1.0, float("nan"), 3.0]),
             (202, 1, T(2020, 1, 1, 12), "b2", [1.0, 2.0])]
    spark.createDataFrame(omics, "sample_id long, person_id long, sample_datetime timestamp, "
                          "batch string, expression array<float>") \
        .write.parquet(str(folder / "omics.parquet"))
    spark.createDataFrame([(0, "IL6"), (1, "TNF"), (2, "CXCL13")],
                          "gene_index int, gene_symbol string") \
        .write.parquet(str(folder / "omics_genes.parquet"))
    source = read_omop_folder(spark, str(folder))
    events, rejects, flagged = ingest_omop(source, T(2024, 12, 31), "ext")
    events, rejects = events.cache(), rejects.cache()
    summary = account_rows(source, events, rejects)
    flagged.unpersist()
    return events, rejects, summary


def test_radiograph_scores_become_sharp_score_events(modalities):
    events, rejects, summary = modalities
    study = {r.code: r.numeric_value for r in events.where(F.col("source_row_id") == 100).collect()}
    assert study == {sharp_score.MTSS_CODE: 10.0, sharp_score.EROSION_CODE: 9.0,
                     sharp_score.JSN_CODE: 1.0}
    assert _reasons(rejects, "ext.imaging") == {101: "invalid_scores", 102: "invalid_scores",
                                                103: "invalid_scores"}
    imaging = next(r for r in summary if r["table"] == "ext.imaging")
    assert imaging["rows_in"] == 4 and imaging["accepted"] == 1


def test_expression_samples_are_checked_against_the_panel(modalities):
    events, rejects, _ = modalities
    assert [r.source_row_id for r in events.where(F.col("code") == OMICS_CODE).collect()] == [200]
    assert _reasons(rejects, "ext.omics") == {201: "invalid_expression", 202: "invalid_expression"}


def test_a_missing_required_column_names_file_table_and_column(spark, tmp_path, capsys):
    (tmp_path / "person.csv").write_text("PERSON_ID,YEAR_OF_BIRTH\n1,1960\n")
    (tmp_path / "Measurement.csv").write_text("MEASUREMENT_ID,MEASUREMENT_DATE\n1,2020-01-01\n")
    source = read_omop_folder(spark, str(tmp_path))
    with pytest.raises(SourceError, match=r"Measurement\.csv: table measurement lacks required "
                                          r"column\(s\) \['person_id'\]"):
        ingest_omop(source, T(2024, 12, 31), "bad")
    code = main(["ingest", "--lake", str(tmp_path / "lake"), "--source", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Measurement.csv" in err and "Traceback" not in err


def test_a_column_of_the_wrong_type_is_named(spark, tmp_path):
    spark.createDataFrame([(1, (1960, 3))], "person_id long, birth_datetime struct<y:int,m:int>") \
        .write.parquet(str(tmp_path / "person"))
    with pytest.raises(SourceError, match="table person, column birth_datetime"):
        ingest_omop(read_omop_folder(spark, str(tmp_path)), T(2024, 12, 31), "bad")


MEASUREMENT_V54 = ["measurement_id", "person_id", "measurement_concept_id", "measurement_date",
                   "measurement_datetime", "measurement_time", "measurement_type_concept_id",
                   "operator_concept_id", "value_as_number", "value_as_concept_id",
                   "unit_concept_id", "range_low", "range_high", "provider_id",
                   "visit_occurrence_id", "visit_detail_id", "measurement_source_value",
                   "measurement_source_concept_id", "unit_source_value", "unit_source_concept_id",
                   "value_source_value", "measurement_event_id", "meas_event_field_concept_id"]


def test_a_csv_line_cut_short_or_not_utf8_is_refused_not_ingested(spark, tmp_path):
    (tmp_path / "PERSON.csv").write_text(PERSON_CSV)
    full = "20,1,3020460,2020-01-02,,,32817,,12,,8751,,,,7,,CRP,,mg/L,,12,,"
    rows = [full, full.replace("20,", "21,", 1).replace("2020-01-02", "2020-02-02"),
            full.replace("20,", "22,", 1) + ",surplus",  # an extra separator: no longer aligned
            full.replace("20,", "24,", 1).replace("CRP", "Entz\xfcndung"),  # a Latin-1 byte
            "23,1,3020460,2020-01-02,2020-01-02 09:00:00,09:00"]  # cut after 6 of 23 fields
    text = ",".join(c.upper() for c in MEASUREMENT_V54) + "\n" + "\n".join(rows)
    (tmp_path / "MEASUREMENT.csv").write_bytes(text.encode("latin-1"))  # and no final newline
    source = read_omop_folder(spark, str(tmp_path))
    events, rejects, flagged = ingest_omop(source, T(2024, 12, 31), "cut")
    summary = {r["table"]: r for r in account_rows(source, events, rejects)}
    flagged.unpersist()
    assert summary["measurement"]["rows_in"] == 5 and summary["measurement"]["accepted"] == 2
    assert _reasons(rejects, "measurement") == {22: "malformed_line", 23: "malformed_line",
                                                24: "invalid_encoding"}
    raw = json.loads(rejects.where(F.col("source_row_id") == 23).first().raw)
    assert raw["_malformed_line"] == rows[-1]  # the line as it arrived


def test_a_concept_file_cut_short_stops_the_run_naming_it(spark, tmp_path, capsys):
    (tmp_path / "PERSON.csv").write_text(PERSON_CSV)
    (tmp_path / "CONCEPT.csv").write_text(CONCEPT_CSV + "8507,MALE,Gen")
    code = main(["ingest", "--lake", str(tmp_path / "lake"), "--source", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "CONCEPT.csv: table concept has 1 line(s)" in err
    assert "Traceback" not in err
