"""A patient who is not in the lake, made into query points by the batch path's own code.

``rdt serve`` answers twin queries for a patient given as MEDS events (the columns of
silver.events: ``time``, ``code``, ``numeric_value``, ``text_value``, ``visit_id``). The events go
through exactly what ``rdt tokenize`` and ``rdt states`` run on the whole lake, on a one-patient
DataFrame: ``timelines.build_timelines`` with the pinned gold.vocab (the version the index's model
was trained on) and ``states.states_and_trajectories``; ``ray_training.embed.Embedder`` (what
``rdt embed`` maps over gold.timelines) then encodes the timeline with the pinned model. So a
patient of the lake, sent as its silver.events rows, gets the embedding and state gold.embeddings
and gold.patient_states hold for it (tests/test_service.py checks it).

Example: events [(null, Gender/F), (1960-01-01, MEDS_BIRTH), (2024-03-01 10:00, Visit/OP,
visit 1), (2024-03-01 10:00, LOINC/1988-5 = 12.0, visit 1)] give one prediction time,
2024-03-02 (the end of the visit day), with the timeline's tokens up to it.
"""

from __future__ import annotations

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from rdt_spark.schemas import SILVER_EVENTS
from rdt_spark.states import StatesConfig, states_and_trajectories
from rdt_spark.timelines import build_timelines, prediction_times

NEW_SUBJECT = -1  # the subject id a new patient's rows carry: it excludes no reference patient
SOURCE_TABLE = "request"  # lineage of a request's events; their order in it breaks time ties


def request_events(spark: SparkSession, events: pd.DataFrame,
                   subject_id: int = NEW_SUBJECT) -> DataFrame:
    """A request's events (time, code, numeric_value, text_value, visit_id; source_table and
    source_row_id when they come from the lake) as silver.events rows of one subject."""
    rows = events.copy()
    rows["subject_id"] = subject_id
    if "source_table" not in rows:
        rows["source_table"] = SOURCE_TABLE
    if "source_row_id" not in rows:
        rows["source_row_id"] = range(len(rows))
    rows["ingest_run_id"] = SOURCE_TABLE
    for column in ("numeric_value", "text_value", "visit_id"):
        if column not in rows:
            rows[column] = None
    rows["time"] = pd.to_datetime(rows["time"], utc=True)
    kinds = {"subject_id": int, "time": pd.Timestamp.to_pydatetime, "code": str,
             "numeric_value": float, "text_value": str, "visit_id": int, "source_table": str,
             "source_row_id": int, "ingest_run_id": str}
    records = [
        tuple(None if pd.isna(v) else kinds[name](v)
              for name, v in zip(SILVER_EVENTS.fieldNames(), record, strict=True))
        for record in rows[SILVER_EVENTS.fieldNames()].itertuples(index=False, name=None)
    ]  # small: one patient's events
    return spark.createDataFrame(records, SILVER_EVENTS)


def _micros(column: str) -> F.Column:
    # Timestamps leave Spark as UTC microseconds: collect() would render them in the driver's
    # local time zone.
    return F.transform(column, lambda t: F.unix_micros(t))


def patient_timeline(events: DataFrame, vocab: DataFrame, fractions: dict[str, float],
                     max_events: int, context: int) -> dict | None:
    """The one patient's gold.timelines row (arrays as lists; ``times`` and
    ``prediction_times`` as UTC microseconds), or None without events."""
    timeline = build_timelines(events, vocab, fractions, max_events, context)
    rows = timeline.withColumn("times", _micros("times")).withColumn(
        "prediction_times", _micros("prediction_times")).collect()  # small: one patient
    return rows[0].asDict() if rows else None


def patient_states(events: DataFrame, cfg: StatesConfig, drug_classes: dict[str, list[str]],
                   fractions: dict[str, float]) -> pd.DataFrame:
    """The patient's gold.patient_states columns at each of its prediction times, with
    ``at_us`` (the prediction time in UTC microseconds)."""
    both = states_and_trajectories(events, prediction_times(events), cfg, drug_classes,
                                   fractions)
    return (both.withColumn("at_us", F.unix_micros("prediction_time"))
            .orderBy("at_us").toPandas())  # small: one patient's prediction times
