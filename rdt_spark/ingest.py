"""OMOP CDM v5.4 tables in, MEDS-shaped ``silver.events`` and ``silver.rejects`` out.

Every source row is either turned into events or refused with the name of the first rule it
breaks; nothing is dropped silently, so per source table rows in = rows accepted + rows rejected.

Example: a measurement row (id 7, person 1, LOINC 1988-5 at 2020-01-02, value 12.0) becomes the
event (subject_id 1, 2020-01-02, "LOINC/1988-5", 12.0, null, source_table "measurement",
source_row_id 7); the same row with value 9000 goes to rejects with reason "impossible_value".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

BIRTH_CODE = "MEDS_BIRTH"
DEATH_CODE = "MEDS_DEATH"


@dataclass(frozen=True)
class EventSource:
    """How one OMOP event table maps onto MEDS columns."""

    table: str
    id_col: str
    time_cols: tuple[str, ...]  # the first non-null wins: datetime before date
    concept_col: str
    source_value_col: str
    value_col: str | None = None
    text_col: str | None = None
    visit_col: str | None = "visit_occurrence_id"


EVENT_SOURCES = [
    EventSource("visit_occurrence", "visit_occurrence_id",
                ("visit_start_datetime", "visit_start_date"), "visit_concept_id",
                "visit_source_value"),
    EventSource("condition_occurrence", "condition_occurrence_id",
                ("condition_start_datetime", "condition_start_date"), "condition_concept_id",
                "condition_source_value"),
    EventSource("drug_exposure", "drug_exposure_id",
                ("drug_exposure_start_datetime", "drug_exposure_start_date"), "drug_concept_id",
                "drug_source_value"),
    EventSource("measurement", "measurement_id", ("measurement_datetime", "measurement_date"),
                "measurement_concept_id", "measurement_source_value", value_col="value_as_number"),
    EventSource("note", "note_id", ("note_datetime", "note_date"), "note_class_concept_id",
                "note_source_value", text_col="note_text"),
]

# Values outside these bounds cannot be real for the code (units as the simulator and most
# registries record them); such rows are refused as impossible_value.
PLAUSIBLE_RANGES = {
    "LOINC/1988-5": (0.0, 1000.0),  # CRP, mg/L
    "LOINC/4537-7": (0.0, 200.0),  # ESR, mm/h
    "LOINC/11572-5": (0.0, 10000.0),  # rheumatoid factor, IU/mL
    "LOINC/33935-8": (0.0, 10000.0),  # anti-CCP, U/mL
    "RDT/DAS28_ESR": (0.0, 10.0),
    "RDT/TJC28": (0.0, 28.0),
    "RDT/SJC28": (0.0, 28.0),
    "RDT/PGA": (0.0, 100.0),
    "RDT/HAQ_DI": (0.0, 3.0),
}

CANDIDATE_COLUMNS = ["source_table", "source_row_id", "subject_id", "time", "code",
                     "numeric_value", "text_value", "visit_id", "row"]


def _col_or_null(df: DataFrame, name: str | None, dtype: str) -> Column:
    return F.col(name).cast(dtype) if name and name in df.columns else F.lit(None).cast(dtype)


def _code(source_value: Column, concepts: DataFrame | None) -> Column:
    """Vocabulary-prefixed code from the concept table, else the source value as SOURCE/…."""
    fallback = F.when(F.trim(source_value) != "", F.concat(F.lit("SOURCE/"), F.trim(source_value)))
    if concepts is None:
        return fallback
    return F.coalesce(F.col("_mapped_code"), fallback)


def _with_concepts(df: DataFrame, concept_col: str, concepts: DataFrame | None) -> DataFrame:
    if concepts is None:
        return df
    lookup = concepts.select(
        F.col("concept_id").cast("long").alias("_concept_id"),
        F.concat_ws("/", "vocabulary_id", "concept_code").alias("_mapped_code"),
    ).where(F.col("_concept_id") != 0).dropDuplicates(["_concept_id"])  # one row per source row
    # No broadcast hint: a full Athena concept table has millions of rows; Spark picks the join.
    return df.join(lookup, F.col(concept_col).cast("long") == F.col("_concept_id"), "left")


def _row_json(df: DataFrame) -> Column:
    # JSON now, because the tables' rows differ in shape and are unioned before validation.
    return F.to_json(F.struct(*[F.col(c) for c in df.columns if not c.startswith("_")]))


def event_candidates(df: DataFrame, src: EventSource, concepts: DataFrame | None) -> DataFrame:
    """One OMOP event table as candidate events, one per source row, before validation."""
    missing = [c for c in (src.id_col, "person_id") if c not in df.columns]
    if missing:
        raise ValueError(f"OMOP table {src.table}: required column(s) {missing} not found; "
                         f"columns are {df.columns}")
    df = df.withColumn("_row", _row_json(df))
    times = [F.col(c).cast("timestamp") for c in src.time_cols if c in df.columns]
    return _with_concepts(df, src.concept_col, concepts).select(
        F.lit(src.table).alias("source_table"),
        F.col(src.id_col).cast("long").alias("source_row_id"),
        F.col("person_id").cast("long").alias("subject_id"),
        (F.coalesce(*times) if times else F.lit(None).cast("timestamp")).alias("time"),
        _code(_col_or_null(df, src.source_value_col, "string"), concepts).alias("code"),
        _col_or_null(df, src.value_col, "float").alias("numeric_value"),
        _col_or_null(df, src.text_col, "string").alias("text_value"),
        _col_or_null(df, src.visit_col, "long").alias("visit_id"),
        F.col("_row").alias("row"),
    )


def person_candidates(person: DataFrame, concepts: DataFrame | None) -> DataFrame:
    """Persons with their birth time and gender code; birth falls back to year/month/day."""
    person = person.withColumn("_row", _row_json(person))
    birth = F.coalesce(
        _col_or_null(person, "birth_datetime", "timestamp"),
        F.make_timestamp_ntz(
            _col_or_null(person, "year_of_birth", "int"),
            F.coalesce(_col_or_null(person, "month_of_birth", "int"), F.lit(7)),
            F.coalesce(_col_or_null(person, "day_of_birth", "int"), F.lit(1)),
            F.lit(0), F.lit(0), F.lit(0),
        ).cast("timestamp"),
    )
    return _with_concepts(person, "gender_concept_id", concepts).select(
        F.lit("person").alias("source_table"),
        F.col("person_id").cast("long").alias("source_row_id"),
        F.col("person_id").cast("long").alias("subject_id"),
        birth.alias("time"),
        _code(_col_or_null(person, "gender_source_value", "string"), concepts).alias("code"),
        F.lit(None).cast("float").alias("numeric_value"),
        F.lit(None).cast("string").alias("text_value"),
        F.lit(None).cast("long").alias("visit_id"),
        F.col("_row").alias("row"),
    )


def death_candidates(death: DataFrame) -> DataFrame:
    times = [F.col(c).cast("timestamp") for c in ("death_datetime", "death_date")
             if c in death.columns]
    death = death.withColumn("_row", _row_json(death))
    return death.select(
        F.lit("death").alias("source_table"),
        F.col("person_id").cast("long").alias("source_row_id"),
        F.col("person_id").cast("long").alias("subject_id"),
        F.coalesce(*times).alias("time"),
        F.lit(DEATH_CODE).alias("code"),
        F.lit(None).cast("float").alias("numeric_value"),
        F.lit(None).cast("string").alias("text_value"),
        F.lit(None).cast("long").alias("visit_id"),
        F.col("_row").alias("row"),
    )


def _first_reason(rules: list[tuple[str, Column]]) -> Column:
    reason = F.lit(None).cast("string")
    for name, broken in reversed(rules):
        reason = F.when(broken, F.lit(name)).otherwise(reason)
    return reason


def _duplicate_id(keys: list[str]) -> Column:
    # Rows sharing a primary key: the first in a stable order is kept, the others refused.
    order = Window.partitionBy(*keys).orderBy("row")
    return (F.row_number().over(order) > 1) & F.col(keys[-1]).isNotNull()


def flag_persons(persons: DataFrame, extract_time: dt.datetime) -> DataFrame:
    """Persons with a ``reason`` column: null where the person is accepted."""
    return persons.withColumn("reason", _first_reason([
        ("missing_person_id", F.col("source_row_id").isNull()),
        ("missing_birth", F.col("time").isNull()),
        ("birth_after_extract", F.col("time") > F.lit(extract_time)),
        ("missing_code", F.col("code").isNull()),
        ("duplicate_row_id", _duplicate_id(["source_row_id"])),
    ]))


def _implausible() -> Column:
    broken = F.lit(False)
    for code, (low, high) in PLAUSIBLE_RANGES.items():
        broken = broken | ((F.col("code") == code) & ~F.col("numeric_value").between(low, high))
    return broken & F.col("numeric_value").isNotNull()


def flag_events(
    candidates: DataFrame, persons: DataFrame, deaths: DataFrame | None, extract_time: dt.datetime
) -> DataFrame:
    """Candidate events with a ``reason`` column: null where the event is accepted."""
    known = persons.where(F.col("reason").isNull()).select(
        F.col("subject_id").alias("_person"), F.col("time").alias("_birth"))
    if deaths is not None:
        known = known.join(
            deaths.where(F.col("time").isNotNull()).groupBy(F.col("subject_id").alias("_person"))
            .agg(F.min("time").alias("_death")), "_person", "left")
    else:
        known = known.withColumn("_death", F.lit(None).cast("timestamp"))
    same_event = Window.partitionBy(
        "source_table", "subject_id", "time", "code", "numeric_value", "text_value"
    ).orderBy("source_row_id")
    flagged = candidates.join(known, F.col("subject_id") == F.col("_person"), "left")
    return flagged.withColumn("reason", _first_reason([
        ("missing_row_id", F.col("source_row_id").isNull()),
        ("missing_person_id", F.col("subject_id").isNull()),
        ("missing_time", F.col("time").isNull()),
        ("missing_code", F.col("code").isNull()),
        ("unknown_person", F.col("_person").isNull()),
        ("before_birth", F.col("time") < F.date_trunc("day", "_birth")),
        ("after_death", F.col("time") >= F.date_add(F.to_date("_death"), 1)),
        ("after_extract", F.col("time") > F.lit(extract_time)),
        ("impossible_value", _implausible()),
        ("duplicate_row_id", _duplicate_id(["source_table", "source_row_id"])),
        ("duplicate_event", F.row_number().over(same_event) > 1),
    ])).drop("_person", "_birth", "_death")


def accepted_events(flagged_persons: DataFrame, flagged_events: DataFrame, run_id: str) -> DataFrame:
    """silver.events rows: birth and gender per person, then every accepted event."""
    ok = flagged_persons.where(F.col("reason").isNull())
    births = ok.select("subject_id", "time", F.lit(BIRTH_CODE).alias("code"), "source_table",
                       "source_row_id")
    genders = ok.select("subject_id", F.lit(None).cast("timestamp").alias("time"), "code",
                        "source_table", "source_row_id")
    statics = births.unionByName(genders).select(
        "subject_id", "time", "code", F.lit(None).cast("float").alias("numeric_value"),
        F.lit(None).cast("string").alias("text_value"), F.lit(None).cast("long").alias("visit_id"),
        "source_table", "source_row_id")
    events = flagged_events.where(F.col("reason").isNull()).select(
        "subject_id", "time", "code", "numeric_value", "text_value", "visit_id", "source_table",
        "source_row_id")
    return statics.unionByName(events).withColumn("ingest_run_id", F.lit(run_id))


def rejected_rows(flagged: DataFrame, run_id: str) -> DataFrame:
    """silver.rejects rows: the refused source row as JSON with the rule it broke."""
    return flagged.where(F.col("reason").isNotNull()).select(
        "source_table", "source_row_id", "reason", F.col("row").alias("raw"),
        F.lit(run_id).alias("ingest_run_id"))


class IngestAccountingError(RuntimeError):
    """Rows in != rows accepted + rows rejected for some source table."""


def ingest_omop(
    tables: dict[str, DataFrame], extract_time: dt.datetime, run_id: str
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.events, silver.rejects, flagged candidates) from OMOP tables by name.

    Persist the flagged candidates while both outputs are written, then unpersist them.
    """
    if "person" not in tables:
        raise ValueError("OMOP extract has no person table")
    concepts = tables.get("concept")
    persons = flag_persons(person_candidates(tables["person"], concepts), extract_time)
    deaths = death_candidates(tables["death"]) if "death" in tables else None
    candidates = [event_candidates(tables[s.table], s, concepts)
                  for s in EVENT_SOURCES if s.table in tables]
    if deaths is not None:
        candidates.append(deaths)
    union = candidates[0]
    for more in candidates[1:]:
        union = union.unionByName(more)
    flagged = persons.unionByName(flag_events(union, persons, deaths, extract_time)).persist()
    events = accepted_events(flagged.where(F.col("source_table") == "person"),
                             flagged.where(F.col("source_table") != "person"), run_id)
    return events, rejected_rows(flagged, run_id), flagged


def account_rows(
    tables: dict[str, DataFrame], events: DataFrame, rejects: DataFrame
) -> list[dict]:
    """Per source table: rows in, accepted, rejected by reason; raises if any row is lost."""
    sources = ["person", "death"] + [s.table for s in EVENT_SOURCES]
    rows_in = {t: tables[t].count() for t in sources if t in tables}
    accepted = dict(events.groupBy("source_table").agg(F.countDistinct("source_row_id"))
                    .collect())  # small: one row per source table
    rejected: dict[str, dict[str, int]] = {}
    by_reason = rejects.groupBy("source_table", "reason").count()
    for table, reason, n in by_reason.collect():  # small: one row per table and reason
        rejected.setdefault(table, {})[reason] = n
    summary = []
    for table, n_in in rows_in.items():
        n_ok, by_reason = accepted.get(table, 0), rejected.get(table, {})
        summary.append({"table": table, "rows_in": n_in, "accepted": n_ok,
                        "rejected": sum(by_reason.values()), "reasons": by_reason})
        if n_in != n_ok + sum(by_reason.values()):
            raise IngestAccountingError(
                f"{table}: {n_in} rows in but {n_ok} accepted + {sum(by_reason.values())} rejected")
    return summary
