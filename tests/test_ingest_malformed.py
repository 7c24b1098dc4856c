"""Property: whatever a malformed OMOP extract holds, as CSV or as Parquet, ingest accounts for
every row (accepted, or refused with a named reason), refuses each broken row for what is wrong
with it, accepts the sound rows around it, and stops on an unreadable file with one message that
names the file, the table and (where one is to blame) the column.

Hypothesis draws a small registry (persons, measurements, conditions), then breaks it: rows with
wrong types, truncated lines, huge and negative values, dates far in the past and future,
duplicated primary keys, persons missing from ``person``; whole files with extra or missing
columns, byte-order marks, Latin-1 or UTF-16 bytes, CRLF line ends, gzip, truncation.

``make test`` runs a few examples (``RDT_MALFORMED_EXAMPLES``, default 3 per format); a longer
profile: ``RDT_MALFORMED_EXAMPLES=200 pytest tests/test_ingest_malformed.py``. With
``RDT_MALFORMED_REPORT=<file>`` the run also writes, per kind of bad input, what it produced.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from rdt_spark.ingest import RULES
from rdt_spark.ingest_run import ingest_into_lake
from rdt_spark.lake import read_table
from rdt_spark.omop_source import SourceError

EXAMPLES = int(os.environ.get("RDT_MALFORMED_EXAMPLES", "3"))
REPORT = os.environ.get("RDT_MALFORMED_REPORT")
EXTRACT_DATE = dt.date(2024, 12, 31)
CRP, UNMAPPED, RA = 3020460, 4000001, 80809
PERSON = ["person_id", "gender_concept_id", "year_of_birth", "month_of_birth", "day_of_birth",
          "birth_datetime", "gender_source_value"]
MEASUREMENT = ["measurement_id", "person_id", "measurement_concept_id", "measurement_date",
               "measurement_datetime", "value_as_number", "unit_source_value",
               "measurement_source_value", "visit_occurrence_id"]
CONDITION = ["condition_occurrence_id", "person_id", "condition_concept_id", "condition_start_date",
             "condition_source_value"]
COLUMNS = {"person": PERSON, "measurement": MEASUREMENT, "condition_occurrence": CONDITION}
TYPES = {"person_id": pa.int64(), "gender_concept_id": pa.int64(), "year_of_birth": pa.int64(),
         "month_of_birth": pa.int64(), "day_of_birth": pa.int64(), "birth_datetime": pa.timestamp("us"),
         "measurement_id": pa.int64(), "measurement_concept_id": pa.int64(),
         "measurement_date": pa.date32(), "measurement_datetime": pa.timestamp("us"),
         "value_as_number": pa.float64(), "visit_occurrence_id": pa.int64(),
         "condition_occurrence_id": pa.int64(), "condition_concept_id": pa.int64(),
         "condition_start_date": pa.date32()}
CONCEPTS = [(CRP, "C reactive protein", "LOINC", "1988-5"), (RA, "Rheumatoid arthritis", "SNOMED",
            "69896004"), (8507, "MALE", "Gender", "M"), (8532, "FEMALE", "Gender", "F")]

# Row-level breakage: (what it does to one measurement field, the reason it must be refused for;
# None: it must be accepted). Person-level: the person, and so each of their events, is refused.
ROW_KINDS = {
    "unparseable_id": ("measurement_id", "x17", "unparseable_row_id"),
    "id_beyond_int64": ("measurement_id", "99999999999999999999", "unparseable_row_id"),
    "unparseable_person_id": ("person_id", "1.5e", "unparseable_person_id"),
    "impossible_date": ("measurement_date", "2021-02-30", "unparseable_time"),
    "unparseable_value": ("value_as_number", "twelve", "unparseable_value"),
    "huge_value": ("value_as_number", 1e300, "impossible_value"),
    "infinite_value": ("value_as_number", float("inf"), "impossible_value"),
    "negative_crp": ("value_as_number", -5.0, "impossible_value"),
    "date_far_in_the_past": ("measurement_date", dt.date(1, 1, 1), "before_birth"),
    "date_far_in_the_future": ("measurement_date", dt.date(9999, 12, 31), "after_extract"),
    "person_missing_from_person": ("person_id", 987654321, "unknown_person"),
    "negative_row_id": ("measurement_id", -7, None),
    "strange_text": ("measurement_source_value", "CRP \u202e\u00e9\u4e2d\U0001f600 \"q\"", None),
}
CSV_ROW_KINDS = {"truncated_line", "extra_field"}  # "malformed_line"
PERSON_KINDS = {"person_unparseable_birth": ("birth_datetime", "19xx-01-01", "unparseable_time"),
                "person_born_after_extract": ("birth_datetime", dt.datetime(2090, 1, 1),
                                              "birth_after_extract")}
FILE_KINDS = ["byte_order_mark", "crlf", "latin1", "utf16", "extra_column", "missing_optional_column",
              "missing_required_column", "gzip", "truncated_file", "truncated_gzip", "binary_person_id",
              "string_columns"]
CSV_ONLY = {"byte_order_mark", "crlf", "latin1", "utf16", "gzip", "truncated_gzip"}
PARQUET_ONLY = {"binary_person_id", "string_columns"}
FATAL = {"utf16", "missing_required_column", "truncated_gzip", "binary_person_id"}
OUTCOMES: dict[str, Counter] = defaultdict(Counter)


@dataclass
class Extract:
    """Rows as Python values per table, and what was broken: row id -> (kind, expected reason)."""

    rows: dict[str, list[dict]]
    broken: dict[tuple[str, int], tuple[str, str | None]] = field(default_factory=dict)
    duplicates: list[tuple[str, int]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    fmt: str = "csv"


@st.composite
def extracts(draw, fmt: str) -> Extract:
    n = draw(st.integers(2, 5))
    persons = [{"person_id": 100 + i, "gender_concept_id": draw(st.sampled_from([8507, 8532])),
                "year_of_birth": 1950 + i, "month_of_birth": 3, "day_of_birth": 1,
                "birth_datetime": dt.datetime(1950 + i, 3, 1), "gender_source_value": "x"}
               for i in range(n)]
    measurements, conditions = [], []
    for p in persons:
        for j in range(draw(st.integers(2, 4))):
            day = dt.date(2016 + j, 1 + p["person_id"] % 12, 1 + j)
            measurements.append({
                "measurement_id": 1000 + len(measurements), "person_id": p["person_id"],
                "measurement_concept_id": draw(st.sampled_from([CRP, UNMAPPED])),
                "measurement_date": day, "measurement_datetime": dt.datetime.combine(day, dt.time(9)),
                "value_as_number": draw(st.floats(0.5, 90, allow_nan=False)),
                "unit_source_value": "mg/L", "measurement_source_value": "CRP",
                "visit_occurrence_id": 5000 + len(measurements)})
        conditions.append({"condition_occurrence_id": 7000 + p["person_id"],
                           "person_id": p["person_id"], "condition_concept_id": RA,
                           "condition_start_date": dt.date(2015, 6, 1),
                           "condition_source_value": "M06.9"})
    extract = Extract({"person": persons, "measurement": measurements,
                       "condition_occurrence": conditions}, fmt=fmt)
    refused = None
    if draw(st.booleans()):
        person = draw(st.sampled_from(persons[1:]))
        kind = draw(st.sampled_from(sorted(PERSON_KINDS)))
        column, value, expected = PERSON_KINDS[kind]
        person[column], refused = value, person["person_id"]
        extract.broken[("person", refused)] = (kind, expected)
    row_kinds = sorted(ROW_KINDS) + (sorted(CSV_ROW_KINDS) if fmt == "csv" else [])
    targets = draw(st.lists(st.sampled_from(range(len(measurements))), unique=True,
                            max_size=min(6, len(measurements) - 2)))
    for target in targets:
        kind = draw(st.sampled_from(row_kinds))
        row = measurements[target]
        if kind in CSV_ROW_KINDS:
            row["_line"] = kind
            expected = "malformed_line"
        else:
            column, value, expected = ROW_KINDS[kind]
            if column == "measurement_id":  # each broken id its own, or they would be duplicates
                value = f"{value}{target}" if isinstance(value, str) else value - target
            if kind == "negative_crp":
                row["measurement_concept_id"] = CRP
            if column == "measurement_date":
                row.pop("measurement_datetime")  # the date alone: its value decides
            row[column] = value
        extract.broken[("measurement", row["measurement_id"])] = (kind, expected)
    clean = [m for m in measurements if ("measurement", m["measurement_id"]) not in extract.broken
             and m["person_id"] != refused]
    if clean and draw(st.booleans()):  # a primary key twice: one row is kept, the other refused
        original = draw(st.sampled_from(clean))
        measurements.insert(0, {**original, "measurement_date": dt.date(2023, 5, 5),
                                "measurement_datetime": dt.datetime(2023, 5, 5, 9)})
        extract.duplicates.append(("measurement", original["measurement_id"]))
    allowed = [k for k in FILE_KINDS if not (fmt == "csv" and k in PARQUET_ONLY)
               and not (fmt == "parquet" and k in CSV_ONLY)]
    extract.files = draw(st.lists(st.sampled_from(allowed), unique=True, max_size=2))
    if len(FATAL & set(extract.files)) > 1:
        extract.files = [k for k in extract.files if k not in FATAL][:1] + sorted(
            FATAL & set(extract.files))[:1]
    return extract


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.date):
        return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else str(value)
    text = str(value)
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if any(c in text for c in ',"\n') else text


def _csv(table: str, rows: list[dict], files: list[str]) -> str:
    columns = list(COLUMNS[table])
    if table == "measurement" and "extra_column" in files:
        columns.append("unexpected_column")
    if table == "measurement" and "missing_optional_column" in files:
        columns.remove("visit_occurrence_id")
    if table == "measurement" and "missing_required_column" in files:
        columns.remove("person_id")
    lines = [",".join(c.upper() for c in columns)]
    for row in rows:
        fields = [_text(row.get(c, "surplus" if c == "unexpected_column" else None)) for c in columns]
        if row.get("_line") == "truncated_line":
            fields = fields[:4]  # cut short after the date
        elif row.get("_line") == "extra_field":
            fields.append("one too many")
        lines.append(",".join(fields))
    end = "\r\n" if "crlf" in files else "\n"
    return end.join(lines) + end


def _parquet_table(table: str, rows: list[dict], files: list[str]) -> pa.Table:
    columns, arrays = list(COLUMNS[table]), {}
    if table == "measurement" and "missing_required_column" in files:
        columns.remove("person_id")
    if table == "measurement" and "missing_optional_column" in files:
        columns.remove("visit_occurrence_id")
    for c in columns:
        values = [row.get(c) for row in rows]
        kind = TYPES.get(c, pa.string())
        if kind == pa.string() or "string_columns" in files or any(isinstance(v, str) for v in values):
            arrays[c] = pa.array([None if v is None else _text(v).strip('"') if not isinstance(v, str)
                                  else v for v in values], pa.string())
        elif kind == pa.int64() and any(v is not None and not -2**63 <= v < 2**63 for v in values):
            arrays[c] = pa.array([None if v is None else str(v) for v in values], pa.string())
        else:
            arrays[c] = pa.array(values, kind)
    if table == "measurement" and "binary_person_id" in files:
        arrays["person_id"] = pa.array([b"\x00\x01"] * len(rows), pa.binary())
    if table == "measurement" and "extra_column" in files:
        arrays["unexpected_column"] = pa.array([[1, 2]] * len(rows), pa.list_(pa.int64()))
    return pa.table(arrays)


def write_extract(extract: Extract, folder: Path) -> None:
    files = extract.files
    concept = [dict(zip(["concept_id", "concept_name", "vocabulary_id", "concept_code"], c,
                        strict=True)) for c in CONCEPTS]
    if extract.fmt == "parquet":
        for table, rows in extract.rows.items():
            path = folder / f"{table}.parquet"
            pq.write_table(_parquet_table(table, rows, files if table == "measurement" else []),
                           path)
            if table == "measurement" and "truncated_file" in files:
                data = path.read_bytes()
                path.write_bytes(data[: len(data) * 2 // 3])
        pq.write_table(pa.Table.from_pylist(concept), folder / "concept.parquet")
        pq.write_table(pa.table({"source_release_date": pa.array([EXTRACT_DATE], pa.date32())}),
                       folder / "cdm_source.parquet")
        return
    (folder / "CONCEPT.csv").write_text("CONCEPT_ID,CONCEPT_NAME,VOCABULARY_ID,CONCEPT_CODE\n" + "".join(
        f"{c[0]},{c[1]},{c[2]},{c[3]}\n" for c in CONCEPTS))
    (folder / "CDM_SOURCE.csv").write_text(f"SOURCE_RELEASE_DATE\n{EXTRACT_DATE}\n")
    for table, rows in extract.rows.items():
        text = _csv(table, rows, files if table == "measurement" else [])
        if table != "measurement":
            (folder / f"{table.upper()}.csv").write_text(text)
            continue
        if "truncated_file" in files or "truncated_gzip" in files:
            last = text.rstrip("\r\n").rfind("\n")  # cut inside the last line, after its 2nd field
            text = text[: text.index(",", text.index(",", last) + 1) + 3]
        encoding = "latin-1" if "latin1" in files else "utf-16" if "utf16" in files else "utf-8"
        data = ("\ufeff" if "byte_order_mark" in files else "").encode() + text.encode(
            encoding, errors="replace")
        if "gzip" in files or "truncated_gzip" in files:
            data = gzip.compress(data)
            if "truncated_gzip" in files:
                data = data[: len(data) * 2 // 3]
            (folder / "MEASUREMENT.csv.gz").write_bytes(data)
        else:
            (folder / "MEASUREMENT.csv").write_bytes(data)


def expected_fatal(extract: Extract) -> set[str]:
    fatal = FATAL & set(extract.files)
    if extract.fmt == "parquet" and "truncated_file" in extract.files:
        fatal.add("truncated_file")
    return fatal


def _cut_row(extract: Extract) -> int | None:
    """The measurement row a truncated CSV file ends in the middle of."""
    if extract.fmt == "csv" and "truncated_file" in extract.files:
        return extract.rows["measurement"][-1]["measurement_id"]
    return None


def check(spark, extract: Extract) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder, lake = Path(tmp) / "extract", Path(tmp) / "lake"
        folder.mkdir()
        write_extract(extract, folder)
        fatal = expected_fatal(extract)
        try:
            summary = ingest_into_lake(spark, str(lake), str(folder), full=True)
        except SourceError as err:
            message = str(err)
            assert fatal, f"unexpected SourceError for {extract.files}: {message}"
            assert "\n" not in message.strip() and "Traceback" not in message
            assert "measurement" in message.lower(), message  # the table, by file or name
            if "missing_required_column" in fatal or "binary_person_id" in fatal:
                assert "person_id" in message, message  # the column
            if fatal & {"utf16", "missing_required_column"}:
                assert "MEASUREMENT.csv" in message or "measurement.parquet" in message, message
            for kind in fatal:
                OUTCOMES[kind]["stops: " + message.replace(f"{folder}/", "")[:90]] += 1
            return
        assert not fatal, f"{sorted(fatal)} did not stop the run"
        events = read_table(spark, str(lake), "silver.events")
        rejects = read_table(spark, str(lake), "silver.rejects")
        for row in summary["tables"]:
            assert row["rows_in"] == row["accepted"] + row["rejected"], row
            assert set(row["reasons"]) <= set(RULES), row
        reasons = {(r.source_table, r.source_row_id): r.reason
                   for r in rejects.where(F.col("source_row_id").isNotNull()).collect()}
        accepted = {(r.source_table, r.source_row_id) for r in events.select(
            "source_table", "source_row_id").distinct().collect()}
        unkeyed = Counter({r.reason: r["count"] for r in rejects.where(
            F.col("source_row_id").isNull()).groupBy("reason").count().collect()})
        refused_persons = {pid for (table, pid), (_, why) in extract.broken.items()
                           if table == "person" and why}
        rank = {r: i for i, r in enumerate(RULES)}
        cut, expected_unkeyed = _cut_row(extract), Counter()
        for table, rows in extract.rows.items():
            for row in rows:
                key = (table, row.get(COLUMNS[table][0]))
                kind, why = extract.broken.get(key, (None, None))
                if key in extract.duplicates:
                    continue
                if table != "person" and row.get("person_id") in refused_persons:
                    why = min([w for w in (why, "unknown_person") if w], key=rank.get)
                if kind == "strange_text" and "latin1" in extract.files:
                    why = "invalid_encoding"  # its accent was not UTF-8
                if cut is not None and key == ("measurement", cut):
                    kind, why = "truncated_file", "malformed_line"
                if not isinstance(key[1], int):  # an id that does not parse: no row id to find
                    expected_unkeyed[why] += 1
                    OUTCOMES[kind][why] += 1
                    continue
                got = reasons.get(key, "accepted" if key in accepted else None)
                if kind:
                    OUTCOMES[kind][got] += 1
                assert got == (why or "accepted"), (key, kind, got, why, extract.files)
        assert unkeyed == expected_unkeyed, (unkeyed, expected_unkeyed)
        for table, row_id in extract.duplicates:
            pair = rejects.where((F.col("source_table") == table) & (F.col("source_row_id") == row_id))
            assert [r.reason for r in pair.collect()] == ["duplicate_row_id"]
            assert (table, row_id) in accepted  # the other of the two
            OUTCOMES["duplicate_primary_key"]["one kept, one duplicate_row_id"] += 1
        for kind in extract.files:
            OUTCOMES[kind]["ingested, every row accounted for"] += 1


# No shrinking in the bounded run: one Spark ingest per step would take many minutes; a failure
# prints its example and seed, and the long run (more examples) shrinks.
# make test's few examples are the same on every run (derandomize), so a landing never hangs on
# a lucky draw; the long profile draws afresh each time to keep finding new breakage.
FIXED = {"derandomize": True, "database": None} if EXAMPLES <= 20 else {}
BOUNDED = settings(max_examples=EXAMPLES, deadline=None, print_blob=True, **FIXED,
                   phases=[Phase.explicit, Phase.reuse, Phase.generate]
                   + ([Phase.shrink] if EXAMPLES > 20 else []),
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@BOUNDED
@given(extract=extracts("csv"))
def test_every_row_of_a_malformed_csv_extract_is_accepted_or_refused_with_its_reason(spark, extract):
    check(spark, extract)


@BOUNDED
@given(extract=extracts("parquet"))
def test_every_row_of_a_malformed_parquet_extract_is_accepted_or_refused_with_its_reason(
        spark, extract):
    check(spark, extract)


@pytest.fixture(scope="module", autouse=True)
def outcomes_report():
    yield
    if REPORT:
        Path(REPORT).write_text(json.dumps({k: dict(v) for k, v in sorted(OUTCOMES.items())},
                                           indent=2) + "\n")
