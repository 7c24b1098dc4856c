"""Per-patient token sequences (gold.timelines) from silver.events.

Order within a timeline: static facts (no time) first, then by time, with ties broken by code,
source table and source row id, so the same events always give the same sequence. The whole
history is stored; models read windows of it (see ray_training.datasets).

Example: events (1, null, Gender/F), (1, 1960-01-01, MEDS_BIRTH), (1, 2020-01-01 09:00, Visit/OP)
give tokens [Gender/F, MEDS_BIRTH, Visit/OP], ages [null, 0.0, 60.0], deltas [0, 0, 21915].
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from rdt_spark.ingest import BIRTH_CODE
from rdt_spark.splits import split_of
from rdt_spark.vocab import UNK

SECONDS_PER_YEAR = 365.25 * 86400
VALUE_CLIP = 5.0


def prediction_times(events: DataFrame) -> DataFrame:
    """(subject_id, prediction_time): the end of each day on which the patient had a visit.

    Everything recorded during the visit day lies strictly before its prediction time.
    """
    return (events.where(F.col("visit_id").isNotNull() & F.col("time").isNotNull())
            .groupBy("subject_id", "visit_id").agg(F.max("time").alias("last"))
            .select("subject_id",
                    (F.date_trunc("day", "last") + F.expr("INTERVAL 1 DAY"))
                    .alias("prediction_time"))
            .distinct())


def _normalised_value() -> Column:
    z = (F.col("numeric_value") - F.col("value_mean")) / F.when(
        F.col("value_std") > 0, F.col("value_std")).otherwise(F.lit(1.0))
    clipped = F.greatest(F.lit(-VALUE_CLIP), F.least(F.lit(VALUE_CLIP), z))
    return F.when(z.isNotNull(), clipped).cast("float")  # greatest/least would turn null into 5


def _seconds(ts: Column) -> Column:
    return F.unix_micros(ts) / 1e6


def build_timelines(
    events: DataFrame, vocab: DataFrame, fractions: dict[str, float], version: str
) -> DataFrame:
    """gold.timelines rows, one per subject."""
    lookup = F.broadcast(vocab.select("code", "token_id", "value_mean", "value_std"))
    births = (events.where(F.col("code") == BIRTH_CODE)
              .groupBy("subject_id").agg(F.min("time").alias("birth")))
    tokens = (events.join(lookup, "code", "left").join(births, "subject_id", "left")
              .select(
                  "subject_id",
                  F.struct(
                      F.col("time").isNotNull().cast("int").alias("timed"),
                      F.col("time"), F.col("code"), F.col("source_table"),
                      F.col("source_row_id"),
                      F.coalesce("token_id", F.lit(UNK)).alias("token"),
                      ((_seconds(F.col("time")) - _seconds(F.col("birth"))) / SECONDS_PER_YEAR)
                      .cast("float").alias("age"),
                      _normalised_value().alias("value"),
                      F.col("visit_id"),
                  ).alias("event")))
    grouped = (tokens.groupBy("subject_id")
               .agg(F.sort_array(F.collect_list("event")).alias("events"))
               .select("subject_id",
                       F.col("events.token").alias("tokens"),
                       F.col("events.age").alias("ages"),
                       F.col("events.value").alias("values"),
                       F.col("events.visit_id").alias("visit_ids"),
                       F.col("events.time").alias("times")))
    deltas = F.transform(
        "times",
        lambda t, i: F.coalesce(
            ((_seconds(t) - _seconds(F.col("times")[i - 1])) / 86400.0).cast("float"),
            F.lit(0.0).cast("float")),
    )
    predict_at = (prediction_times(events).groupBy("subject_id")
                  .agg(F.sort_array(F.collect_list("prediction_time"))
                       .alias("prediction_times")))
    return (grouped.withColumn("deltas", deltas)
            .join(predict_at, "subject_id", "left")
            .withColumn("prediction_times",
                        F.coalesce("prediction_times", F.array().cast("array<timestamp>")))
            .withColumn("split", split_of(F.col("subject_id"), fractions))
            .withColumn("vocab_version", F.lit(version)))
