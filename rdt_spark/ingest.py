"""OMOP CDM v5.4 tables (and ext.imaging, ext.omics) in, MEDS-shaped ``silver.events`` and
``silver.rejects`` out.

Every source row is either turned into events or refused with the name of the first rule it
breaks; nothing is dropped silently, so per source table rows in = rows accepted + rows rejected.
The rules, in the order they are tried, are RULES below; each is named in ``silver.rejects``.

Example: a measurement row (id 7, person 1, LOINC 1988-5 at 2020-01-02, value 1.2, unit mg/dL)
becomes the event (subject_id 1, 2020-01-02, "LOINC/1988-5", 12.0 [mg/L], null, source_table
"measurement", source_row_id 7); the same row with value 900 mg/dL goes to rejects with reason
"impossible_value", with unit "mmol/L" with reason "unknown_unit", as a CSV line cut short
after its sixth field with reason "malformed_line", and from a Latin-1 file with an accented
source value (not UTF-8) with reason "invalid_encoding".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from rdt_spark import sharp_score
from rdt_spark.columns import union_all
from rdt_spark.omop_source import MALFORMED, Source, SourceError, parse_field

BIRTH_CODE = "MEDS_BIRTH"
DEATH_CODE = "MEDS_DEATH"
OMICS_CODE = "RDT/OMICS_PANEL"

RULES = [
    "malformed_line", "invalid_encoding", "unparseable_row_id", "unparseable_person_id",
    "unparseable_time", "unparseable_value", "unparseable_visit_id", "missing_row_id",
    "missing_person_id", "missing_time", "missing_birth", "missing_code", "unknown_person",
    "before_birth", "after_death", "after_extract", "birth_after_extract", "unknown_unit",
    "impossible_value", "invalid_scores", "invalid_expression", "duplicate_row_id",
    "duplicate_event",
]


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
    unit_cols: tuple[str, str] | None = None  # (unit_source_value, unit_concept_id)


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
                "measurement_concept_id", "measurement_source_value", value_col="value_as_number",
                unit_cols=("unit_source_value", "unit_concept_id")),
    EventSource("procedure_occurrence", "procedure_occurrence_id",
                ("procedure_datetime", "procedure_date"), "procedure_concept_id",
                "procedure_source_value"),
    EventSource("device_exposure", "device_exposure_id",
                ("device_exposure_start_datetime", "device_exposure_start_date"),
                "device_concept_id", "device_source_value"),
    EventSource("observation", "observation_id", ("observation_datetime", "observation_date"),
                "observation_concept_id", "observation_source_value", value_col="value_as_number",
                text_col="value_as_string", unit_cols=("unit_source_value", "unit_concept_id")),
    EventSource("note", "note_id", ("note_datetime", "note_date"), "note_class_concept_id",
                "note_source_value", text_col="note_text"),
]
EXT_SOURCES = ["ext.imaging", "ext.omics"]
SOURCE_TABLES = ["person", "death"] + [s.table for s in EVENT_SOURCES] + EXT_SOURCES


@dataclass(frozen=True)
class LabRule:
    """Plausible range in the canonical unit, and the factor from each accepted unit to it."""

    unit: str
    low: float
    high: float
    factors: dict[str, float]
    integer: bool = False


# Units are compared lower-case without brackets or spaces ("[IU]/mL" == "iu/ml"); a missing
# unit is read as the canonical one. Values are stored in the canonical unit. Scores and counts
# have no unit to check, only a range.
_SCORE = {"": 1.0, "{score}": 1.0, "score": 1.0}
_COUNT = {"": 1.0, "{count}": 1.0, "count": 1.0, "joints": 1.0}
LAB_RULES = {
    "LOINC/1988-5": LabRule("mg/L", 0.0, 1000.0, {"mg/l": 1.0, "mg/dl": 10.0, "ug/ml": 1.0}),
    "LOINC/4537-7": LabRule("mm/h", 0.0, 200.0, {"mm/h": 1.0, "mm/hr": 1.0}),
    "LOINC/11572-5": LabRule("[IU]/mL", 0.0, 10000.0, {"iu/ml": 1.0, "kiu/l": 1.0, "u/ml": 1.0}),
    "LOINC/33935-8": LabRule("U/mL", 0.0, 10000.0, {"u/ml": 1.0, "eu/ml": 1.0, "iu/ml": 1.0}),
    "RDT/DAS28_ESR": LabRule("{score}", 0.0, 10.0, _SCORE),
    "RDT/DAS28_CRP": LabRule("{score}", 0.0, 10.0, _SCORE),
    "RDT/TJC28": LabRule("{count}", 0.0, 28.0, _COUNT, integer=True),
    "RDT/SJC28": LabRule("{count}", 0.0, 28.0, _COUNT, integer=True),
    "RDT/PGA": LabRule("mm", 0.0, 100.0, {"": 1.0, "mm": 1.0, "cm": 10.0}),
    "RDT/HAQ_DI": LabRule("{score}", 0.0, 3.0, _SCORE),
}

DERIVED = "array<struct<code:string,numeric_value:float>>"


def row_json(df: DataFrame) -> Column:
    # JSON now, because the tables' rows differ in shape and are unioned before validation.
    # A malformed CSV line keeps its raw text: its fields cannot be trusted.
    return F.to_json(F.struct(*[F.col(c) for c in df.columns
                                if not c.startswith("_") or c == MALFORMED]))


def _first_error(checks: list[tuple[str, Column]]) -> Column:
    error = F.lit(None).cast("string")
    for name, broken in reversed(checks):
        error = F.when(broken, F.lit(name)).otherwise(error)
    return error


def _code(source_value: Column, concepts: DataFrame | None, mapped: str = "_mapped_code") -> Column:
    """Vocabulary-prefixed code from the concept table, else the source value as SOURCE/…."""
    fallback = F.when(F.trim(source_value) != "", F.concat(F.lit("SOURCE/"), F.trim(source_value)))
    if concepts is None:
        return fallback
    return F.coalesce(F.col(mapped), fallback)


def _with_concepts(df: DataFrame, concept: Column, concepts: DataFrame | None,
                   mapped: str = "_mapped_code") -> DataFrame:
    if concepts is None:
        return df
    concept_id, _ = parse_field(concepts, "concept_id", "long", "concept")
    lookup = concepts.select(
        concept_id.alias(f"{mapped}_id"),
        F.concat_ws("/", "vocabulary_id", "concept_code").alias(mapped),
    ).where(F.col(f"{mapped}_id") != 0).dropDuplicates([f"{mapped}_id"])  # one row per source row
    # No broadcast hint: a full Athena concept table has millions of rows; Spark picks the join.
    return df.join(lookup, concept == F.col(f"{mapped}_id"), "left")


def _require(df: DataFrame, table: str, columns: list[str], origin: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SourceError(f"{origin}: table {table} lacks required column(s) {missing}; "
                          f"its columns are {df.columns}")


def _candidates(df: DataFrame, table: str, *, row_id: str, time_cols: tuple[str, ...],
                value: str | None = None, visit: str | None = None, origin: str = "",
                person: str = "person_id") -> DataFrame:
    """The fields every table shares, parsed, with the first parse failure named."""
    _require(df, table, [row_id, person], origin or table)
    rid, bad_rid = parse_field(df, row_id, "long", table)
    pid, bad_pid = parse_field(df, person, "long", table)
    times = [parse_field(df, c, "time", table) for c in time_cols if c in df.columns]
    num, bad_num = parse_field(df, value, "float", table)
    vid, bad_vid = parse_field(df, visit, "long", table)
    bad_time = F.lit(False)
    for _, bad in times:
        bad_time = bad_time | bad
    malformed = F.col(MALFORMED).isNotNull() if MALFORMED in df.columns else F.lit(False)
    # Bytes that are not UTF-8 (a Latin-1 export) reach us as U+FFFD: the text is already lost.
    not_utf8 = F.instr(row_json(df), "\ufffd") > 0
    return df.select(
        "*",
        F.lit(table).alias("source_table"),
        rid.alias("source_row_id"),
        pid.alias("subject_id"),
        (F.coalesce(*[t for t, _ in times]) if times else F.lit(None).cast("timestamp"))
        .alias("time"),
        num.cast("float").alias("numeric_value"),
        vid.alias("visit_id"),
        _first_error([("malformed_line", malformed), ("invalid_encoding", not_utf8),
                      ("unparseable_row_id", bad_rid), ("unparseable_person_id", bad_pid),
                      ("unparseable_time", bad_time), ("unparseable_value", bad_num),
                      ("unparseable_visit_id", bad_vid)]).alias("parse_error"),
        row_json(df).alias("row"),
    )


def _finish(df: DataFrame, code: Column | None = None, text: Column | None = None,
            unit: Column | None = None, derived: Column | None = None,
            value_error: Column | None = None, concept: Column | None = None,
            source_value: Column | None = None, unit_concept: Column | None = None) -> DataFrame:
    """The shape every table's candidates share. A table with a fixed code gives ``code``; the
    others give their concept ids and source value, and ``coded`` looks the codes up."""
    def typed(column: Column | None, kind: str) -> Column:
        return (column if column is not None else F.lit(None)).cast(kind)

    return df.select(
        "source_table", "source_row_id", "subject_id", "time", typed(code, "string").alias("code"),
        "numeric_value", typed(text, "string").alias("text_value"), "visit_id",
        typed(unit, "string").alias("unit"), typed(derived, DERIVED).alias("derived"),
        "parse_error", typed(value_error, "string").alias("value_error"), "row",
        typed(concept, "long").alias("_concept_id"),
        typed(source_value, "string").alias("_source_value"),
        typed(unit_concept, "long").alias("_unit_concept_id"))


def coded(candidates: DataFrame, concepts: DataFrame | None, units: bool = True) -> DataFrame:
    """Codes (and units) from the concept table, looked up once for every event table together:
    a lookup per table cost a broadcast (a Spark job) each, seconds of a small extract's run."""
    looked_up = _with_concepts(candidates, F.col("_concept_id"), concepts)
    if units:
        looked_up = _with_concepts(looked_up, F.col("_unit_concept_id"), concepts, "_unit_code")
    unit = F.col("unit")
    if concepts is not None and units:
        unit = F.coalesce(unit, F.split(F.col("_unit_code"), "/", 2)[1])
    extra = [c for c in looked_up.columns if c.startswith(("_concept", "_source", "_unit", "_mapped"))]
    return (looked_up.withColumn("code", F.coalesce(F.col("code"),
                                                    _code(F.col("_source_value"), concepts)))
            .withColumn("unit", unit).drop(*extra))


def event_candidates(df: DataFrame, src: EventSource, origin: str = "") -> DataFrame:
    """One OMOP event table as candidate events, one per source row, before validation and
    before its codes are looked up (``coded``)."""
    base = _candidates(df, src.table, row_id=src.id_col, time_cols=src.time_cols,
                       value=src.value_col, visit=src.visit_col, origin=origin)
    concept, _ = parse_field(df, src.concept_col, "long", src.table)
    unit, unit_concept = None, None
    if src.unit_cols:
        unit, _ = parse_field(df, src.unit_cols[0], "string", src.table)
        unit_concept, _ = parse_field(df, src.unit_cols[1], "long", src.table)
    text, _ = parse_field(df, src.text_col, "string", src.table)
    source_value, _ = parse_field(df, src.source_value_col, "string", src.table)
    return _finish(base, text=text, unit=unit, concept=concept, source_value=source_value,
                   unit_concept=unit_concept)


def person_candidates(person: DataFrame, concepts: DataFrame | None, origin: str = "") -> DataFrame:
    """Persons with their birth time and gender code; birth falls back to year/month/day."""
    year, bad_year = parse_field(person, "year_of_birth", "long", "person")
    month, bad_month = parse_field(person, "month_of_birth", "long", "person")
    day, bad_day = parse_field(person, "day_of_birth", "long", "person")
    base = _candidates(person, "person", row_id="person_id", time_cols=("birth_datetime",),
                       origin=origin)
    from_parts = F.try_make_timestamp(year.cast("int"), F.coalesce(month.cast("int"), F.lit(7)),
                                      F.coalesce(day.cast("int"), F.lit(1)), F.lit(0), F.lit(0),
                                      F.lit(0))
    base = base.withColumn("time", F.coalesce("time", from_parts)).withColumn(
        "parse_error", F.coalesce("parse_error", F.when(bad_year | bad_month | bad_day,
                                                        F.lit("unparseable_time"))))
    gender, _ = parse_field(person, "gender_concept_id", "long", "person")
    source_value, _ = parse_field(person, "gender_source_value", "string", "person")
    return coded(_finish(base, concept=gender, source_value=source_value), concepts, units=False)


def death_candidates(death: DataFrame, origin: str = "") -> DataFrame:
    # One death row per person: the person id is the row id.
    base = _candidates(death, "death", row_id="person_id",
                       time_cols=("death_datetime", "death_date"), origin=origin)
    return _finish(base, F.lit(DEATH_CODE))


def imaging_candidates(imaging: DataFrame, origin: str = "") -> DataFrame:
    """Radiograph studies: the mTSS with its erosion and JSN parts, from the per-joint scores."""
    base = _candidates(imaging, "ext.imaging", row_id="imaging_id",
                       time_cols=("imaging_datetime", "imaging_date"),
                       visit="visit_occurrence_id", origin=origin)
    _require(imaging, "ext.imaging", ["erosion_scores", "jsn_scores"], origin or "ext.imaging")

    def valid(scores: str, maxima: list[int]) -> Column:
        limits = F.array(*[F.lit(m) for m in maxima])
        in_range = F.forall(F.arrays_zip(F.col(scores).alias("s"), limits.alias("m")),
                            lambda p: p["s"].isNotNull() & p["s"].between(0, p["m"]))
        return (F.size(scores) == len(maxima)) & in_range

    def total(scores: str) -> Column:
        return F.aggregate(scores, F.lit(0).cast("long"), lambda acc, s: acc + s).cast("float")

    ok = F.coalesce(valid("erosion_scores", sharp_score.EROSION_MAX)
                    & valid("jsn_scores", sharp_score.JSN_MAX), F.lit(False))
    erosion, jsn = total("erosion_scores"), total("jsn_scores")
    base = base.withColumn("numeric_value", F.when(ok, erosion + jsn))
    derived = F.when(ok, F.array(
        F.struct(F.lit(sharp_score.EROSION_CODE).alias("code"), erosion.alias("numeric_value")),
        F.struct(F.lit(sharp_score.JSN_CODE).alias("code"), jsn.alias("numeric_value"))))
    return _finish(base, F.lit(sharp_score.MTSS_CODE), derived=derived,
                   value_error=F.when(~ok, F.lit("invalid_scores")))


def omics_candidates(omics: DataFrame, panel_size: int | None, origin: str = "") -> DataFrame:
    """Expression samples: one event each; the profile itself stays in ext.omics for its encoder."""
    base = _candidates(omics, "ext.omics", row_id="sample_id",
                       time_cols=("sample_datetime", "sample_date"), visit="visit_occurrence_id",
                       origin=origin)
    _require(omics, "ext.omics", ["expression"], origin or "ext.omics")
    finite = F.forall("expression", lambda x: x.isNotNull() & ~F.isnan(x)
                      & (F.abs(x) < float("inf")))
    size_ok = F.size("expression") > 0
    if panel_size is not None:
        size_ok = F.size("expression") == panel_size
    ok = F.coalesce(size_ok & finite, F.lit(False))
    batch, _ = parse_field(omics, "batch", "string", "ext.omics")
    return _finish(base, F.lit(OMICS_CODE), text=batch,
                   value_error=F.when(~ok, F.lit("invalid_expression")))


def _normalised_unit(unit: Column) -> Column:
    return F.lower(F.regexp_replace(F.coalesce(unit, F.lit("")), r"[\[\]\s]", ""))


def lab_rules(spark: SparkSession) -> DataFrame:
    """LAB_RULES as a small table: (_rule_code, _low, _high, _integer, _factors), where
    ``_factors`` maps each accepted unit (normalised; "" for none recorded) to its factor."""
    rows = [(code, rule.low, rule.high, rule.integer, {"": 1.0, **rule.factors})
            for code, rule in LAB_RULES.items()]
    return spark.createDataFrame(rows, "_rule_code string, _low double, _high double, "
                                       "_integer boolean, _factors map<string,double>")


def checked_values(candidates: DataFrame) -> DataFrame:
    """Lab values converted to their canonical unit; unknown units and impossible values named.

    Example: (LOINC/1988-5, 1.2, "mg/dL") -> 12.0; (LOINC/1988-5, 5, "mmol/L") -> unknown_unit;
    (RDT/TJC28, 30, null) -> impossible_value. A value that is not a finite float (NaN, infinity,
    or 1e300, beyond float's range) is impossible whatever its code.

    The rules are joined in as a (broadcast) table rather than spelled as one CASE per code and
    unit: that expression, repeated wherever the factor is used, outgrew the 64 KB a generated
    Java method may hold, and Spark ran the whole validation stage interpreted instead.
    """
    rules = F.broadcast(lab_rules(candidates.sparkSession))
    ruled_rows = candidates.join(rules, F.col("code") == F.col("_rule_code"), "left")
    factor = F.try_element_at(F.col("_factors"), _normalised_unit(F.col("unit")))
    ruled = F.col("_rule_code").isNotNull() & F.col("numeric_value").isNotNull()
    value = (F.col("numeric_value") * factor).cast("float")
    impossible = ~value.between(F.col("_low"), F.col("_high")) | (
        F.col("_integer") & (value != F.floor(value)))
    given = F.col("numeric_value")
    not_finite = given.isNotNull() & (F.isnan(given) | (F.abs(given) == float("inf")))
    error = F.when(not_finite, F.lit("impossible_value")).when(
        ruled & factor.isNull(), F.lit("unknown_unit")).when(ruled & impossible,
                                                              F.lit("impossible_value"))
    return (ruled_rows.withColumn("value_error", F.coalesce("value_error", error))
            .withColumn("numeric_value", F.when(ruled & factor.isNotNull(), value)
                        .otherwise(F.col("numeric_value")))
            .drop("_rule_code", "_low", "_high", "_integer", "_factors"))


def _duplicate_id(keys: list[str]) -> Column:
    # Rows sharing a primary key: the first in a stable order is kept, the others refused.
    order = Window.partitionBy(*keys).orderBy("row")
    return (F.row_number().over(order) > 1) & F.col(keys[-1]).isNotNull()


def flag_persons(persons: DataFrame, extract_time: dt.datetime) -> DataFrame:
    """Persons with a ``reason`` column: null where the person is accepted."""
    return persons.withColumn("reason", _first_error([
        ("parse_error", F.col("parse_error").isNotNull()),
        ("missing_person_id", F.col("source_row_id").isNull()),
        ("missing_birth", F.col("time").isNull()),
        ("birth_after_extract", F.col("time") > F.lit(extract_time)),
        ("duplicate_row_id", _duplicate_id(["source_row_id"])),
    ])).withColumn("reason", F.when(F.col("reason") == "parse_error", F.col("parse_error"))
                   .otherwise(F.col("reason")))


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
    ).orderBy("source_row_id", "row")
    flagged = checked_values(candidates).join(known, F.col("subject_id") == F.col("_person"), "left")
    reason = _first_error([
        ("parse_error", F.col("parse_error").isNotNull()),
        ("missing_row_id", F.col("source_row_id").isNull()),
        ("missing_person_id", F.col("subject_id").isNull()),
        ("missing_time", F.col("time").isNull()),
        ("missing_code", F.col("code").isNull()),
        ("unknown_person", F.col("_person").isNull()),
        ("before_birth", F.col("time") < F.date_trunc("day", "_birth")),
        ("after_death", F.col("time") >= F.date_add(F.to_date("_death"), 1)),
        ("after_extract", F.col("time") > F.lit(extract_time)),
        ("value_error", F.col("value_error").isNotNull()),
        ("duplicate_row_id", _duplicate_id(["source_table", "source_row_id"])),
        ("duplicate_event", F.row_number().over(same_event) > 1),
    ])
    named = F.when(reason == "parse_error", F.col("parse_error")).when(
        reason == "value_error", F.col("value_error")).otherwise(reason)
    return flagged.withColumn("reason", named).drop("_person", "_birth", "_death")


def accepted_events(flagged_persons: DataFrame, flagged_events: DataFrame, run_id: str) -> DataFrame:
    """silver.events rows: birth and gender per person, then every accepted event and the
    events derived from it (a radiograph's erosion and JSN totals beside its mTSS)."""
    ok = flagged_persons.where(F.col("reason").isNull())
    births = ok.select("subject_id", "time", F.lit(BIRTH_CODE).alias("code"), "source_table",
                       "source_row_id")
    # A person whose gender maps to no code is still a patient: only the gender fact is absent.
    genders = ok.where(F.col("code").isNotNull()).select(
        "subject_id", F.lit(None).cast("timestamp").alias("time"), "code", "source_table",
        "source_row_id")
    statics = births.unionByName(genders).select(
        "subject_id", "time", "code", F.lit(None).cast("float").alias("numeric_value"),
        F.lit(None).cast("string").alias("text_value"), F.lit(None).cast("long").alias("visit_id"),
        "source_table", "source_row_id")
    accepted = flagged_events.where(F.col("reason").isNull())
    columns = ["subject_id", "time", "code", "numeric_value", "text_value", "visit_id",
               "source_table", "source_row_id"]
    derived = (accepted.where(F.col("derived").isNotNull())
               .select("*", F.explode("derived").alias("_d"))
               .withColumn("code", F.col("_d.code"))
               .withColumn("numeric_value", F.col("_d.numeric_value")))
    events = accepted.select(columns).unionByName(derived.select(columns))
    return statics.unionByName(events).withColumn("ingest_run_id", F.lit(run_id))


def rejected_rows(flagged: DataFrame, run_id: str) -> DataFrame:
    """silver.rejects rows: the refused source row as JSON with the rule it broke."""
    return flagged.where(F.col("reason").isNotNull()).select(
        "source_table", "source_row_id", "subject_id", "reason", F.col("row").alias("raw"),
        F.lit(run_id).alias("ingest_run_id"))


class IngestAccountingError(RuntimeError):
    """Rows in != rows accepted + rows rejected for some source table."""


def _panel_size(source: Source) -> int | None:
    genes = source.tables.get("ext.omics_genes")
    return genes.count() if genes is not None else None  # small: one row per gene of the panel


def candidates_of(source: Source) -> list[DataFrame]:
    """Candidate events of every event table the source has (not persons, not deaths)."""
    tables, origin = source.tables, source.origin
    found = [event_candidates(tables[s.table], s, origin(s.table))
             for s in EVENT_SOURCES if s.table in tables]
    if "ext.imaging" in tables:
        found.append(imaging_candidates(tables["ext.imaging"], origin("ext.imaging")))
    if "ext.omics" in tables:
        found.append(omics_candidates(tables["ext.omics"], _panel_size(source), origin("ext.omics")))
    return found


def ingest_omop(
    source: Source | dict[str, DataFrame], extract_time: dt.datetime, run_id: str
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.events, silver.rejects, flagged candidates) from the source's tables.

    Persist the flagged candidates while both outputs are written, then unpersist them.
    """
    source = source if isinstance(source, Source) else Source(dict(source))
    if "person" not in source.tables:
        raise SourceError("the OMOP extract has no person table")
    persons = flag_persons(person_candidates(source.tables["person"], source.tables.get("concept"),
                                             source.origin("person")), extract_time)
    candidates = candidates_of(source)
    deaths = None
    if "death" in source.tables:
        deaths = death_candidates(source.tables["death"], source.origin("death"))
        candidates.append(deaths)
    candidates = coded(union_all(candidates), source.tables.get("concept"))
    flagged = persons.unionByName(flag_events(candidates, persons, deaths, extract_time))
    # Only a refused row needs its source row as JSON, and the persisted rows are most of
    # ingest's memory: with the JSON of every row they held about 1.6 KB per event.
    flagged = flagged.withColumn("row", F.when(F.col("reason").isNotNull(), F.col("row"))).persist()
    events = accepted_events(flagged.where(F.col("source_table") == "person"),
                             flagged.where(F.col("source_table") != "person"), run_id)
    return events, rejected_rows(flagged, run_id), flagged


def account_rows(
    source: Source | dict[str, DataFrame], events: DataFrame, rejects: DataFrame
) -> list[dict]:
    """Per source table: rows in, accepted, rejected by reason; raises if any row is lost.

    Each accepted row has exactly one primary event (a person its birth, a radiograph its mTSS;
    gender and the mTSS parts come beside it), so counting primary events also catches a row
    ingested twice.
    """
    tables = source.tables if isinstance(source, Source) else source
    rows_in = {t: tables[t].count() for t in SOURCE_TABLES if t in tables}
    secondary = (((F.col("source_table") == "person") & (F.col("code") != BIRTH_CODE))
                 | ((F.col("source_table") == "ext.imaging")
                    & (F.col("code") != sharp_score.MTSS_CODE)))
    primary = ~secondary
    accepted = dict(events.where(primary).groupBy("source_table").count()
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
