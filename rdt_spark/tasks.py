"""Task labels (gold.tasks) at each prediction time.

flare_within_180d: true when a flare code is recorded in (prediction_time, prediction_time +
horizon]. Without a flare, a window that reaches past the patient's last recorded event is
censored: we cannot know it stayed flare-free. Labels look only after the prediction time.

Example: prediction at 2020-01-01 with a flare on 2020-03-01 gives label true; with no flare and
the last event on 2020-02-01 it gives label false, censored true.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from rdt_spark.splits import split_of
from rdt_spark.timelines import prediction_times

FLARE_TASK = "flare_within_180d"


def flare_tasks(
    events: DataFrame, flare_code: str, horizon_days: int, fractions: dict[str, float],
    task: str = FLARE_TASK,
) -> DataFrame:
    points = prediction_times(events)
    flares = events.where(F.col("code") == flare_code).select(
        F.col("subject_id").alias("_s"), F.col("time").alias("flare_time"))
    follow_up = (events.where(F.col("time").isNotNull()).groupBy("subject_id")
                 .agg(F.max("time").alias("last_event")))
    window_end = F.col("prediction_time") + F.make_interval(days=F.lit(horizon_days))
    labelled = (points.join(
        flares,
        (F.col("subject_id") == F.col("_s")) & (F.col("flare_time") > F.col("prediction_time"))
        & (F.col("flare_time") <= window_end),
        "left")
        .groupBy("subject_id", "prediction_time")
        .agg((F.count("flare_time") > 0).alias("label")))
    return (labelled.join(follow_up, "subject_id")
            .select("subject_id", "prediction_time", F.lit(task).alias("task"), "label",
                    F.lit(horizon_days).cast("int").alias("horizon_days"),
                    (~F.col("label") & (F.col("last_event") < window_end)).alias("censored"),
                    split_of(F.col("subject_id"), fractions).alias("split")))
